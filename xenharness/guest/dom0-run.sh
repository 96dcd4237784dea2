#!/bin/bash
# dom0 init for one harness run (copied to the share as dom0.sh by run.py).
# Brings up the Xen control plane, starts our vsnd backend (before `xl create`: libxl waits
# for the backend to reach InitWait), creates the PV domU from /mnt/share/domu.cfg, waits
# for it to power off, collects logs into /mnt/share and powers off.
# Lines "PVPLUG-XEN: key=value" on the console are parsed by run.py.
S=/mnt/share
up() { cut -d' ' -f1 /proc/uptime; }
now() { date +%s.%N; }
mark() { echo "PVPLUG-XEN: $*"; echo "$*" >> $S/dom0-marks.txt; }
finish() { sync; echo o > /proc/sysrq-trigger; sleep 30; }
mount -t proc proc /proc 2>/dev/null; mount -t sysfs sys /sys 2>/dev/null
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
mkdir -p /run/xen /run/xenstored /run/lock /var/lib/xen /var/log/xen/console /dev/pts
mount -t devpts devpts /dev/pts
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
. $S/params.sh   # DOMU_TIMEOUT, BACKEND_ARGS, SCENARIO
mark "dom0_init_uptime=$(up)"
for m in xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc; do modprobe $m || mark "error=modprobe_$m"; done
mount -t xenfs xenfs /proc/xen
xenstored --pid-file /run/xenstored.pid
for i in $(seq 100); do xenstore-read /local >/dev/null 2>&1 && break; sleep 0.1; done
xen-init-dom0 >/dev/null || mark "error=xen-init-dom0"
xenconsoled --pid-file /run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
mark "dom0_ready_uptime=$(up)"

# xenstore state timeline of the vsnd devices (backend and frontend), wall clock
( xenstore-watch /local/domain | while read -r p; do
    case "$p" in */vsnd/*/state|*/backend/vsnd/*/state) echo "$(now) $p $(xenstore-read "$p" 2>/dev/null)";; esac
  done ) > $S/xs-timeline.txt 2>&1 &
WATCH=$!

# the emulated Intel HDA card (run.py's AUDIO_WAV): a real ALSA device for the backend's alsa sink
if [ -n "$HDA" ]; then
  modprobe snd-hda-intel
  for i in $(seq 100); do [ -e /dev/snd/pcmC0D0p ] && break; sleep 0.1; done
  amixer -q sset Master 100% unmute 2>/dev/null; amixer -q sset PCM 100% unmute 2>/dev/null
  [ -e /dev/snd/pcmC0D0p ] && mark "hda_ready_uptime=$(up)" || mark "error=no_hda_pcm"
fi
cd /opt/pvplug
start_backend() {  # [extra args]; the pid goes to a file: the restart hook runs in a subshell
  python3 -m alsa_pvplug.cli --log-level ${BACKEND_LOG:-info} backend --transport xen ${1:-$BACKEND_ARGS} >> $S/backend.log 2>&1 &
  echo $! > /run/backend.pid
}
stop_backend() {  # SIGTERM, then SIGKILL after 5 s; prints the exit status
  local pid=$(cat /run/backend.pid)
  kill -TERM $pid 2>/dev/null
  for i in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  kill -0 $pid 2>/dev/null && { mark "error=backend_did_not_exit_on_SIGTERM"; kill -KILL $pid; }
  wait $pid 2>/dev/null; echo $?
}
start_backend
mark "backend_started_uptime=$(up) pid=$(cat /run/backend.pid)"

# first sound: the first sink file with data (wall clock, same Xen clock as the domU)
( while :; do
    for f in $S/out/*.wav; do
      [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt 44 ] && { echo "first_sound_wall=$(now) file=$(basename $f)"; exit 0; }
    done; sleep 0.05
  done ) > $S/first-sound.txt &
FIRST=$!

T0=$(up)
xl create $S/domu.cfg > $S/xl-create.log 2>&1; rc=$?
T1=$(up)
DOMID=$(xl domid domu 2>/dev/null)
mark "xl_create_rc=$rc xl_create_s=$(awk "BEGIN{print $T1 - $T0}") domid=$DOMID"
[ $rc = 0 ] && [ -n "$DOMID" ] || { cat $S/xl-create.log; stop_backend >/dev/null; kill $WATCH $FIRST 2>/dev/null; finish; }

# fault hook: the domU asks for a backend restart by writing 1 to its data/pvplug-restart;
# dom0 kills the backend (SIGKILL: nothing is cleaned up), starts a new one, answers 2.
# Writing "alsa" instead restarts it with the ALSA sink (the HDA card) and $BACKEND_ALSA_ARGS.
( xenstore-watch /local/domain/$DOMID/data/pvplug-restart | while read -r p; do
    v=$(xenstore-read "$p" 2>/dev/null); [ "$v" = 1 ] || [ "$v" = alsa ] || continue
    pid=$(cat /run/backend.pid); kill -KILL $pid
    for i in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    echo "$(now) backend $pid killed, restarting ($v)" >> $S/faults.txt
    if [ "$v" = alsa ]; then start_backend "$BACKEND_ALSA_ARGS"; else start_backend; fi
    xenstore-write "$p" 2
  done ) &
RESTARTER=$!

deadline=$(( $(date +%s) + DOMU_TIMEOUT ))
while xl domid domu >/dev/null 2>&1; do
  [ $(date +%s) -ge $deadline ] && { mark "error=domU_timeout"; xl destroy domu; break; }
  sleep 0.3
done
mark "domU_gone_uptime=$(up)"
kill $RESTARTER 2>/dev/null
mark "backend_rc=$(stop_backend)"
kill $WATCH $FIRST 2>/dev/null
tr -d '\r' < /var/log/xen/console/guest-domu.log > $S/domu-console.log 2>/dev/null
mark "dom0_done_uptime=$(up)"
finish
