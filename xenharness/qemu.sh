#!/bin/bash
# Boot Xen + a PV dom0 in QEMU (TCG) from the harness cache.  The serial console (Xen and
# dom0's hvc0) goes to stdout; QEMU exits when dom0 powers off.  exec's QEMU, so the caller
# can bound and kill it by pid.
#   qemu.sh SHARE_DIR           run SHARE_DIR/dom0.sh as dom0's init
# env: PVPLUG_XEN_CACHE, MEM (2G), DOM0_MEM (1024M), SMP (2), AUDIO_WAV (adds an intel-hda card
#      whose output QEMU writes to that file), INTERACTIVE=1 (serial on the terminal, Ctrl-a x quits)
set -euo pipefail
C="${PVPLUG_XEN_CACHE:-/var/tmp/pvplug-xen}"
SHARE="$(cd "${1:?usage: qemu.sh SHARE_DIR}" && pwd)"
SMP="${SMP:-2}"; DOM0_MEM="${DOM0_MEM:-1024M}"
for f in "$C/xen" "$C/vmlinuz" "$C/dom0-initrd.gz" "$C/rootfs/.pvplug-ok"; do
  [ -e "$f" ] || { echo "missing $f: run xenharness/build.sh first" >&2; exit 2; }
done
# -cpu qemu64: with -cpu max the PV dom0 crashes at once under TCG.
args=(-accel tcg,thread=multi,tb-size=512 -cpu qemu64 -m "${MEM:-2G}" -smp "$SMP"
  -nographic -monitor none -no-reboot -net none
  -kernel "$C/xen"
  -append "console=com1 com1=115200,8n1 dom0_mem=$DOM0_MEM,max:$DOM0_MEM dom0_max_vcpus=$SMP loglvl=warning guest_loglvl=warning"
  -initrd "$C/vmlinuz console=hvc0 quiet,$C/dom0-initrd.gz"
  -fsdev local,id=fsroot,path="$C/rootfs",security_model=passthrough,readonly=on
  -device virtio-9p-pci,fsdev=fsroot,mount_tag=rootfs
  -fsdev local,id=fsshare,path="$SHARE",security_model=none
  -device virtio-9p-pci,fsdev=fsshare,mount_tag=share)
if [ -n "${AUDIO_WAV:-}" ]; then
  args+=(-audiodev "wav,id=snd0,path=$AUDIO_WAV,out.frequency=48000,out.channels=2,out.format=s16" -device intel-hda -device hda-output,audiodev=snd0)
fi
if [ "${INTERACTIVE:-0}" = 1 ]; then exec qemu-system-x86_64 "${args[@]}" -serial mon:stdio; fi
exec qemu-system-x86_64 "${args[@]}" -serial stdio </dev/null
