#!/usr/bin/env python3
"""End-to-end test on real Xen: the ``xen`` transport, the backend in dom0, the ALSA plugin
in a PV domU whose vsnd card comes from ``xl``'s ``vsnd = [...]``.

    sudo python3 xenharness/run.py            # build what is missing, boot, run, compare

1. ``build.sh`` fills the cache (``$PVPLUG_XEN_CACHE``, default /var/tmp/pvplug-xen) from
   Debian packages: Xen 4.17, the 6.1 kernel, a bookworm dom0 root with our package and the
   plugin built inside it, a domU base initramfs.
2. This script writes a run directory (the 9p share): the test signals, dom0's init, the xl
   domain config, and the domU initramfs = base + a small per-run cpio (init, scenario,
   WAVs, the ALSA config).
3. QEMU (TCG) boots Xen; dom0 starts ``pvplug backend --transport xen`` *before* ``xl
   create``; the domU runs ``aplay -D pvplug`` (s16_le, then f32_le) and ``arecord -D
   pvplug``; the capture comes back base64 through the domU console (xenconsoled's log).
4. Here: the backend's WAVs and the capture are compared bit-exact with what was sent;
   timings are printed.  Exit 0 and a final ``PVPLUG-XEN-HARNESS: PASS`` line on success,
   1 on a failed check, 2 on an infrastructure failure, 77 when the machine cannot run it.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from alsa_pvplug.backend.wavfile import WavInfo, WavWriter, read_wav  # noqa: E402
from alsa_pvplug.glue.install import render_conf  # noqa: E402
from alsa_pvplug.protocol.sndif import PcmFormat  # noqa: E402

CACHE = Path(os.environ.get("PVPLUG_XEN_CACHE", "/var/tmp/pvplug-xen"))
SKIP = 77
RATE, CHANNELS = 48000, 2
CAPTURE_FRAMES = 24000
SERIAL_CAP = 8 << 20  # bytes of console log kept

VSND = ("vsnd = [ [ 'CARD, short-name=pvplug, long-name=pvplug real-Xen harness, "
        "sample-rates=44100;48000, sample-formats=s16_le;f32_le, channels-min=1, channels-max=2, "
        "buffer-size=524288', 'PCM, name=main', 'STREAM, unique-id=pb0, type=p', "
        "'STREAM, unique-id=cap0, type=c' ] ]")


def log(msg: str) -> None:
    print(f"[run {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- preflight ----------------------------------------------------------------

def cache_is_warm() -> bool:
    return all((CACHE / f).exists() for f in ("xen", "vmlinuz", "dom0-initrd.gz",
                                                "rootfs/.pvplug-ok", "domU-base.gz"))


def why_not() -> str | None:
    """The reason this machine cannot run the harness, or None."""
    if os.geteuid() != 0:
        return "needs root (apt-get, debootstrap, chroot, 9p passthrough of a root-owned rootfs)"
    if shutil.which("qemu-system-x86_64") is None and shutil.which("apt-get") is None:
        return "no qemu-system-x86_64 and no apt-get to install it"
    if not cache_is_warm():
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            return f"cold cache ({CACHE}) and no apt-get/dpkg-deb to build it"
        try:
            socket.create_connection(("deb.debian.org", 80), timeout=5).close()
        except OSError as exc:
            return f"cold cache ({CACHE}) and no network to deb.debian.org ({exc})"
    return None


# -- test signals -------------------------------------------------------------

def s16_signal(frames: int, f1: float, f2: float, seed: int) -> bytes:
    """Two tones plus a little LCG noise: every sample different, deterministic."""
    out = bytearray()
    x = seed
    for i in range(frames):
        for _ch, f in enumerate((f1, f2)):
            x = (1103515245 * x + 12345) & 0x7FFFFFFF
            v = int(12000 * math.sin(2 * math.pi * f * i / RATE)) + (x >> 20) - 1024
            out += struct.pack("<h", v)
    return bytes(out)


def f32_signal(frames: int, f: float) -> bytes:
    return b"".join(struct.pack("<ff", 0.5 * math.sin(2 * math.pi * f * i / RATE),
                                -0.25 * math.cos(2 * math.pi * f * i / RATE))
                    for i in range(frames))


def tones_signal(frames: int, freqs: tuple[float, ...]) -> bytes:
    out = bytearray()
    for i in range(frames):
        v = int(9000 * sum(math.sin(2 * math.pi * f * i / RATE) for f in freqs))
        out += struct.pack("<hh", v, v)
    return bytes(out)


def correlation(recorded: bytes, sent: bytes) -> tuple[float, float]:
    """(Pearson correlation of ``sent`` with ``recorded`` at their best alignment, lag in s);
    both interleaved s16 stereo, the left channel is used.  The two may overlap only in
    part (QEMU's WAV can miss the first or last milliseconds): the overlap must cover at
    least 90 % of ``sent``, and only the overlap is correlated."""
    import numpy as np

    rec = np.frombuffer(recorded[:len(recorded) // 4 * 4], "<i2")[0::2].astype(float)
    ref = np.frombuffer(sent, "<i2")[0::2].astype(float)
    n = 1 << int(np.ceil(np.log2(len(rec) + len(ref))))
    xc = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(ref, n)), n)
    # lag k >= 0: ref[0] at rec[k]; lag k < 0: rec[0] at ref[-k] (stored at xc[n + k])
    lags = list(range(0, len(rec))) + list(range(-len(ref) + 1, 0))
    vals = np.concatenate([xc[:len(rec)], xc[n - len(ref) + 1:]])
    lag = lags[int(np.argmax(vals))]
    a, b = (rec[lag:], ref) if lag >= 0 else (rec, ref[-lag:])
    m = min(len(a), len(b))
    if m < 0.9 * len(ref) or a[:m].std() == 0:
        return 0.0, lag / RATE
    return float(np.corrcoef(a[:m], b[:m])[0, 1]), lag / RATE


def write_wav(path: Path, fmt: PcmFormat, data: bytes) -> None:
    w = WavWriter(str(path), WavInfo(fmt, CHANNELS, RATE))
    w.write(data)
    w.close()


# -- the run directory --------------------------------------------------------

SCENARIO = f"""
SCENARIO=basic+faults
scenario() {{
  # Each checked take fits in the buffer (up to 1.6 s; the card allows 512 KiB): the domU
  # runs under TCG on a shared host and can stall for half a second, which must not be
  # an xrun in a take that checks bit-exactness.  long.wav (4 s) still streams.
  WHOLE=--buffer-time=1600000
  step play_s16 aplay -q $WHOLE -D pvplug /opt/play-s16.wav
  step play_f32 aplay -q $WHOLE -D pvplug /opt/play-f32.wav
  step capture arecord -q $WHOLE -D pvplug -f S16_LE -c {CHANNELS} -r {RATE} -s {CAPTURE_FRAMES} -t wav /tmp/cap.wav
  [ -f /tmp/cap.wav ] && dump capture /tmp/cap.wav
  [ "$FAULTS" = 1 ] || return 0
  # fault 1: the client is killed (SIGKILL) mid-stream; the next aplay must play
  timeout 60 aplay -q -D pvplug /opt/long.wav > /tmp/killed.log 2>&1 & P=$!
  step wait_kill python3 /opt/xsw.py wait device/vsnd/0/state 4 30
  sleep 1   # deliberately mid-stream: about 1 s into a 4 s file
  kill -9 $P; wait $P; echo "PVPLUG-DOMU: killed-aplay rc=$?"
  step after_kill aplay -q $WHOLE -D pvplug /opt/after-kill.wav
  # fault 2: dom0 kills (SIGKILL) and restarts the backend mid-stream; a new aplay must play
  timeout 60 aplay -q -D pvplug /opt/long.wav > /tmp/orphan.log 2>&1 & P=$!
  step wait_restart python3 /opt/xsw.py wait device/vsnd/0/state 4 30
  sleep 1
  python3 /opt/xsw.py write data/pvplug-restart 1
  step restarted python3 /opt/xsw.py wait data/pvplug-restart 2 30
  wait $P; echo "PVPLUG-DOMU: orphaned-aplay rc=$?"; head -c 2000 /tmp/orphan.log | sed "s/^/[orphaned-aplay] /"
  step after_restart aplay -q $WHOLE -D pvplug /opt/after-restart.wav
  [ "$KFRONT" = 1 ] && kernel_frontend
  [ "$HDA" = 1 ] || return 0
  # the backend's ALSA sink: dom0 restarts it on QEMU's Intel HDA; the host checks QEMU's WAV
  python3 /opt/xsw.py write data/pvplug-restart alsa
  step restarted_alsa python3 /opt/xsw.py wait data/pvplug-restart 2 30
  step play_hda aplay -q $WHOLE -D pvplug /opt/play-hda.wav
}}
kernel_frontend() {{
  # Linux's snd_xen_front takes vsnd 0: the plugin must refuse the device, our backend must
  # serve the kernel driver; once it is unbound the plugin plays again
  for m in $(cat /mods/kfront-order); do insmod /mods/$m.ko || echo "PVPLUG-DOMU: error=insmod_$m"; done
  step kfront_connected python3 /opt/xsw.py wait device/vsnd/0/state 4 30
  echo "PVPLUG-DOMU: kfront-driver=$(basename "$(readlink /sys/bus/xen/devices/vsnd-0/driver)")"
  step kfront_refused aplay -q -D pvplug /opt/play-f32.wav
  step kfront_play aplay -q -D hw:0,0 /opt/kfront.wav
  echo vsnd-0 > /sys/bus/xen/drivers/vsnd/unbind; echo "PVPLUG-DOMU: kfront-unbind rc=$?"
  dmesg | grep -i -e xen_snd -e vsnd -e snd | tail -n 20 | sed "s/^/[dmesg] /"
  step after_unbind aplay -q $WHOLE -D pvplug /opt/after-unbind.wav
}}
"""


def prepare(run: Path, plugin_log: str, backend_log: str, domu_timeout: int,
            faults: bool, hda: bool) -> dict[str, bytes]:
    share = run / "share"
    payload = run / "payload"
    for d in (share / "out", share / "src", payload / "etc", payload / "opt"):
        d.mkdir(parents=True)
    sent = {
        "play_s16": s16_signal(RATE, 440, 660, 1),          # 1 s
        "play_f32": f32_signal(RATE // 2, 1000),            # 0.5 s
        "src_s16": s16_signal(RATE, 300, 500, 7),           # the backend's capture source
    }
    write_wav(payload / "opt/play-s16.wav", PcmFormat.S16_LE, sent["play_s16"])
    write_wav(payload / "opt/play-f32.wav", PcmFormat.FLOAT_LE, sent["play_f32"])
    write_wav(share / "src/src-s16.wav", PcmFormat.S16_LE, sent["src_s16"])
    if faults:
        sent["long"] = s16_signal(4 * RATE, 220, 330, 3)
        sent["after_kill"] = s16_signal(RATE // 2, 550, 770, 11)
        sent["after_restart"] = s16_signal(RATE // 2, 880, 990, 13)
        # played by the kernel's snd_xen_front, then by the plugin after unbinding it
        sent["kfront"] = s16_signal(RATE, 350, 1250, 17)
        sent["after_unbind"] = s16_signal(RATE // 2, 620, 940, 19)
        for name in ("long", "after_kill", "after_restart", "kfront", "after_unbind"):
            write_wav(payload / f"opt/{name.replace('_', '-')}.wav", PcmFormat.S16_LE, sent[name])
    if hda:
        sent["play_hda"] = tones_signal(3 * RATE // 2, (440, 697, 1213))
        write_wav(payload / "opt/play-hda.wav", PcmFormat.S16_LE, sent["play_hda"])
    shutil.copy(HERE / "guest/xsw.py", payload / "opt/xsw.py")

    shutil.copy(HERE / "guest/domU-init", payload / "init")
    (payload / "init").chmod(0o755)
    (payload / "etc/pvplug-scenario.sh").write_text(
        f"FAULTS={int(faults)}\nKFRONT={int(faults)}\nHDA={int(hda)}\n" + SCENARIO)
    lib = Path("/opt/pvplug/plugin/libasound_module_pcm_pvplug.so")
    (payload / "etc/pvplug.conf").write_text(
        render_conf(lib, {"transport": "xen", "timeout": 5, "log_level": plugin_log}))
    # domU initramfs = the cached base + this run's cpio (the kernel unpacks both)
    cpio = subprocess.run("find . | cpio -H newc -o 2>/dev/null | gzip -1", shell=True,
                          cwd=payload, stdout=subprocess.PIPE, check=True, timeout=60).stdout
    with open(share / "domU-initrd.gz", "wb") as f:
        with open(CACHE / "domU-base.gz", "rb") as base:
            shutil.copyfileobj(base, f)
        f.write(cpio)
    shutil.copy(CACHE / "vmlinuz", share / "vmlinuz")

    (share / "domu.cfg").write_text(f"""name = "domu"
type = "pv"
memory = 512
vcpus = 1
kernel = "/mnt/share/vmlinuz"
ramdisk = "/mnt/share/domU-initrd.gz"
extra = "console=hvc0 quiet"
on_poweroff = "destroy"
on_crash = "destroy"
{VSND}
""")
    (share / "params.sh").write_text(
        f"DOMU_TIMEOUT={domu_timeout}\nSCENARIO=basic\nBACKEND_LOG={backend_log}\n"
        "BACKEND_ARGS='--sink wav:/mnt/share/out --source wav:/mnt/share/src'\n"
        f"HDA={'1' if hda else ''}\n"
        "BACKEND_ALSA_ARGS='--sink alsa:plughw:0,0 --source wav:/mnt/share/src'\n")
    shutil.copy(HERE / "guest/dom0-run.sh", share / "dom0.sh")
    (share / "dom0.sh").chmod(0o755)
    return sent


# -- QEMU -----------------------------------------------------------------------

def boot(share: Path, serial_log: Path, timeout: float,
         hda_wav: Path | None) -> tuple[int | None, dict[str, float], float]:
    """Run QEMU to completion (bounded); returns (rc or None on timeout, host time of each
    dom0 marker, wall seconds)."""
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    proc = subprocess.Popen(["bash", str(HERE / "qemu.sh"), str(share)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            env={**os.environ, "PVPLUG_XEN_CACHE": str(CACHE),
                                 "AUDIO_WAV": str(hda_wav or "")})

    def pump() -> None:
        written = 0
        with open(serial_log, "wb") as out:
            for raw in proc.stdout:  # type: ignore[union-attr]
                line = raw.replace(b"\r", b"")
                if written < SERIAL_CAP:
                    out.write(line)
                    written += len(line)
                m = re.search(rb"PVPLUG-XEN: (\w+)=", line)
                if m:
                    marks.setdefault(m.group(1).decode(), time.monotonic() - t0)
                if b"PVPLUG-XEN: FATAL" in line or b"Panic on CPU" in line:
                    sys.stdout.write(line.decode(errors="replace"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc: int | None = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        if proc.poll() is None:  # qemu.sh exec's QEMU: this pid is QEMU
            proc.kill()
            proc.wait(10)
        reader.join(10)
    return rc, marks, time.monotonic() - t0


# -- checks ---------------------------------------------------------------------

def files_from_console(text: str) -> dict[str, bytes]:
    files = {}
    for m in re.finditer(r"PVPLUG-DOMU: begin-file (\S+)\n(.*?)PVPLUG-DOMU: end-file \1", text, re.S):
        files[m.group(1)] = base64.b64decode("".join(m.group(2).split()))
    return files


def exact(got: bytes, want: bytes, fill: int = 0) -> str | None:
    """None when ``got`` is ``want`` (plus only trailing silence), else what differs."""
    if len(got) < len(want):
        return f"{len(got)} bytes, expected {len(want)}"
    if got[:len(want)] != want:
        first = next(i for i in range(len(want)) if got[i] != want[i])
        return f"differs from byte {first} of {len(want)}"
    if any(b != fill for b in got[len(want):]):
        return f"{len(got) - len(want)} trailing bytes are not silence"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-timeout", type=float, default=540)
    ap.add_argument("--boot-timeout", type=float, default=420)
    ap.add_argument("--domu-timeout", type=int, default=330, help="dom0 destroys the domU after this")
    ap.add_argument("--plugin-log", default="info")
    ap.add_argument("--backend-log", default="info")
    ap.add_argument("--no-faults", action="store_true", help="only the aplay/arecord path")
    ap.add_argument("--hda", action="store_true",
                    help="also: the backend's ALSA sink on QEMU's Intel HDA, correlated with the "
                         "input")
    ap.add_argument("--keep", type=int, default=5, help="run directories kept in the cache")
    args = ap.parse_args()

    reason = why_not()
    if reason:
        print(f"PVPLUG-XEN-HARNESS: SKIP {reason}")
        return SKIP
    t_start = time.monotonic()
    warm = cache_is_warm()
    log(f"cache {CACHE} ({'warm' if warm else 'cold'}); building what is missing")
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        b = subprocess.run(["bash", str(HERE / "build.sh"), str(REPO)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=args.build_timeout,
                           env={**os.environ, "PVPLUG_XEN_CACHE": str(CACHE)})
    except subprocess.TimeoutExpired:
        print(f"PVPLUG-XEN-HARNESS: ERROR build took more than {args.build_timeout:.0f} s")
        return 2
    build_out = b.stdout.decode(errors="replace")
    (CACHE / "build.log").write_text(build_out)
    if b.returncode != 0:
        print(build_out[-4000:])
        print(f"PVPLUG-XEN-HARNESS: ERROR build.sh exited {b.returncode}")
        return 2
    t_build = time.monotonic() - t_start
    log(f"build/check: {t_build:.1f} s")

    runs = CACHE / "runs"
    runs.mkdir(exist_ok=True)
    for old in sorted(runs.iterdir())[:-max(args.keep - 1, 0) or None]:
        shutil.rmtree(old, ignore_errors=True)
    run = runs / time.strftime("%Y%m%d-%H%M%S")
    hda = not args.no_faults and args.hda
    sent = prepare(run, args.plugin_log, args.backend_log, args.domu_timeout, not args.no_faults, hda)
    share = run / "share"
    log(f"run directory {run}; booting Xen in QEMU (timeout {args.boot_timeout:.0f} s)")
    hda_wav = run / "hda.wav"
    rc, marks, t_qemu = boot(share, run / "serial.log", args.boot_timeout, hda_wav if hda else None)
    log(f"QEMU exited rc={rc} after {t_qemu:.1f} s")

    failures: list[str] = []
    if rc is None:
        failures.append(f"QEMU still running after {args.boot_timeout:.0f} s (killed)")
    dom0 = dict(kv.split("=", 1) for line in _read(share / "dom0-marks.txt").splitlines()
                for kv in line.split() if "=" in kv)
    console = _read(share / "domu-console.log")
    for line in console.splitlines():
        if line.startswith("PVPLUG-DOMU:") or line.startswith("["):
            print("  domU| " + line)
    for k in ("error",):
        if k in dom0:
            failures.append(f"dom0: {k}={dom0[k]}")
    if dom0.get("xl_create_rc") != "0":
        failures.append(f"xl create rc={dom0.get('xl_create_rc')}: {_read(share / 'xl-create.log')[-1500:]}")
    steps = {m.group(1): (int(m.group(2)), float(m.group(3))) for m in
             re.finditer(r"PVPLUG-DOMU: end (\w+) rc=(\d+) wall=([\d.]+)", console)}
    starts = {m.group(1): float(m.group(2)) for m in
              re.finditer(r"PVPLUG-DOMU: start (\w+) wall=([\d.]+)", console)}
    names = ["play_s16", "play_f32", "capture"]
    if not args.no_faults:
        names += ["wait_kill", "after_kill", "wait_restart", "restarted", "after_restart",
                  "kfront_connected", "kfront_refused", "kfront_play", "after_unbind"]
    if hda:
        names += ["restarted_alsa", "play_hda"]
    must_fail = {"kfront_refused"}  # the plugin must refuse a device the kernel drives
    for name in names:
        if name not in steps:
            failures.append(f"domU step {name} did not run")
        elif (steps[name][0] != 0) != (name in must_fail):
            failures.append(f"domU step {name} exited {steps[name][0]}")
    if "kfront_refused" in steps:
        said = "\n".join(ln for ln in console.splitlines() if ln.startswith("[kfront_refused] "))
        took = steps["kfront_refused"][1] - starts.get("kfront_refused", 0.0)
        print(f"  plugin on a device snd_xen_front drives: rc {steps['kfront_refused'][0]} "
              f"after {took:.2f} s: {said!r}")
        for needle in ("snd_xen_front", "/sys/bus/xen/drivers/vsnd/unbind"):
            if needle not in said:
                failures.append(f"kfront_refused: the plugin's error does not name {needle!r}")

    # playback: every backend WAV; each played file must be one of them, bit-exact
    wavs = sorted((share / "out").glob("*.wav"))
    outs = []
    for w in wavs:
        try:
            outs.append((w.name, *read_wav(str(w))))
        except Exception as exc:  # a file cut short by a killed backend
            outs.append((w.name, None, b""))
            print(f"  {w.name}: unreadable ({exc})")
    print(f"  backend wrote: {[n for n, _i, _d in outs]}")
    expect = [("play_s16", PcmFormat.S16_LE), ("play_f32", PcmFormat.FLOAT_LE)]
    if not args.no_faults:
        expect += [("after_kill", PcmFormat.S16_LE), ("after_restart", PcmFormat.S16_LE),
                   ("kfront", PcmFormat.S16_LE), ("after_unbind", PcmFormat.S16_LE)]
    for name, fmt in expect:
        info_want = WavInfo(fmt, CHANNELS, RATE)
        match = [n for n, info, data in outs if info == info_want and exact(data, sent[name]) is None]
        print(f"  {name}: {len(sent[name])} bytes {fmt.name}, bit-exact backend WAV: {match or 'none'}")
        if not match:
            failures.append(f"{name}: no backend WAV is bit-exact with what aplay played")
    if "long" in sent:
        for n, _info, data in outs:
            if data and data[:64] == sent["long"][:64]:
                cut = next((i for i in range(min(len(data), len(sent["long"])))
                            if data[i] != sent["long"][i]), min(len(data), len(sent["long"])))
                print(f"  interrupted stream {n}: first {cut} of {len(data)} bytes match the "
                      f"4 s file ({cut / (RATE * CHANNELS * 2):.2f} s)")
    # capture: the file arecord wrote in the domU
    got = files_from_console(console).get("capture")
    if got is None:
        failures.append("capture: no file in the domU console")
    else:
        (run / "capture.wav").write_bytes(got)
        info, data = read_wav(str(run / "capture.wav"))
        want = sent["src_s16"][:CAPTURE_FRAMES * CHANNELS * 2]
        diff = exact(data, want) if len(data) == len(want) else f"{len(data)} bytes, expected {len(want)}"
        print(f"  capture: {len(data)} bytes, bit-exact with the backend source: {diff is None}")
        if diff:
            failures.append(f"capture: {diff}")

    if hda:
        try:
            info, data = read_wav(str(hda_wav))
            r, lag = correlation(data, sent["play_hda"]) if info.channels == 2 else (0.0, 0.0)
            print(f"  HDA: QEMU wrote {len(data)} bytes ({info.format.name}/{info.channels}/{info.rate}); "
                  f"correlation with the played file {r:.4f} at {lag:.2f} s")
            if r < 0.99:
                failures.append(f"HDA: correlation {r:.4f} < 0.99")
        except Exception as exc:
            failures.append(f"HDA: {hda_wav}: {exc}")
    # timings
    print("timings:")
    print(f"  build/check of the cache:       {t_build:6.1f} s ({'warm' if warm else 'cold'})")
    if "dom0_ready_uptime" in marks:
        print(f"  QEMU start -> dom0 ready:       {marks['dom0_ready_uptime']:6.1f} s (host clock)")
    if "xl_create_s" in dom0:
        print(f"  xl create (vsnd: backend InitWait): {float(dom0['xl_create_s']):6.1f} s")
    m = re.search(r"PVPLUG-DOMU: up uptime=([\d.]+)", console)
    if m:
        print(f"  domU kernel -> init:            {float(m.group(1)):6.1f} s (domU uptime)")
    first = re.search(r"first_sound_wall=([\d.]+)", _read(share / "first-sound.txt"))
    timeline = _read(share / "xs-timeline.txt")
    connected = [float(ln.split()[0]) for ln in timeline.splitlines()
                 if "/device/vsnd/" in ln and ln.endswith(" 4")]
    if "play_s16" in starts:
        t_open = starts["play_s16"]
        after = [t for t in connected if t >= t_open - 0.5]
        if after:
            print(f"  aplay start -> frontend Connected: {after[0] - t_open:6.2f} s (handshake)")
        played = [float(x) for x in re.findall(r"first frames played \(wall ([\d.]+)\)",
                                                 _read(share / "backend.log"))]
        played = [t for t in played if t >= t_open]
        if played:
            print(f"  aplay start -> first sound (backend's first frames played): "
                  f"{played[0] - t_open:6.2f} s")
        elif first:
            print(f"  aplay start -> sink WAV first has data (dom0; the WAV writer buffers, so an upper bound on first sound): {float(first.group(1)) - t_open:6.2f} s")
        if "play_s16" in steps:
            print(f"  aplay of 1.0 s s16_le:          {steps['play_s16'][1] - t_open:6.2f} s")
    if "play_f32" in steps and "play_f32" in starts:
        print(f"  aplay of 0.5 s f32_le:          {steps['play_f32'][1] - starts['play_f32']:6.2f} s")
    if "capture" in steps and "capture" in starts:
        print(f"  arecord of {CAPTURE_FRAMES / RATE:.1f} s:              {steps['capture'][1] - starts['capture']:6.2f} s")
    print(f"  QEMU wall time:                 {t_qemu:6.1f} s; whole run {time.monotonic() - t_start:.1f} s")
    print(f"  logs: {run}/serial.log, {share}/backend.log, domu-console.log, xs-timeline.txt")
    if failures:
        for f in failures:
            print(f"FAIL: {f}")
        tail = _read(share / "backend.log")[-3000:]
        if tail:
            print("backend.log (tail):\n" + tail)
        print("PVPLUG-XEN-HARNESS: FAIL")
        return 1
    print("PVPLUG-XEN-HARNESS: PASS")
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


if __name__ == "__main__":
    # SIGTERM (a caller's timeout) unwinds through boot()'s finally, which kills QEMU
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
