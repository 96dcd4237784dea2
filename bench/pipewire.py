"""PipeWire on pvplug: xruns at short quanta and a drifting card clock (issue 11).

    .venv/bin/python bench/pipewire.py [--quanta 256,64] [--ppm 0,200,-200]
                                       [--seconds 60] [--duplex] [--rt 20]
                                       [--repo DIR] [--json F]

For each quantum and backend clock skew (``pvplug backend --clock-ppm``): a
private headless ``pipewire`` (no session manager; its quantum fixed with
min = max = default) with an ``api.alsa.pcm.sink`` (and, ``--duplex``, an
``api.alsa.pcm.source``) node on ``pcm.pvplug``, ``pw-play`` of a 440 Hz
tone linked to it by hand (PortConfig + ``pw-link``, what WirePlumber would
do), and after a second, ``--seconds`` of PipeWire's own profiler
(``bench/pw_profile.c``: the counters pw-top shows) for the xruns.  Also
counted: the daemon's "XRun!" log lines and the plugin's xrun warnings.

The simulator and the backend run SCHED_FIFO at ``--rt`` (as a dom0 backend
on its own vCPU would not queue behind the guest); PipeWire's data thread at
SCHED_FIFO 10 (module-rt, below them; as jackd in bench/jack.py).  Target:
0 xruns in 60 s at quantum 256 and 64, at 0 and +-200 ppm.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import queue_tap
from harness import BENCH, REPO, System, repo_arg, wait_until

from tests.support.pipewire import PipeWireDaemon

RATE = 48000

PROFILE_RE = re.compile(r"pw_profile t=(?P<t>[\d.]+) driver=(?P<driver>\S+) id=\d+ "
                        r"quantum=(?P<quantum>\d+) rate=\d+ cycles=(?P<cycles>\d+) "
                        r"xruns=(?P<xruns>-?\d+) unfinished=(?P<unfinished>\d+) "
                        r"max_period_us=(?P<max_period>\d+) max_busy_us=(?P<max_busy>\d+) "
                        r"counted=(?P<counted>\d+)")
XRUN_LOG_RE = re.compile(r"XRun!|xrun of")
PLUGIN_XRUN_RE = re.compile(r"pvplug: .*(underrun|overrun)")


def compile_profiler(work: Path) -> Path:
    exe = work / "pw_profile"
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libpipewire-0.3"], check=True,
                           capture_output=True, text=True, timeout=30).stdout.split()
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(BENCH / "pw_profile.c"), *flags],
                   check=True, timeout=120)
    return exe


def write_tone(path: Path, seconds: float) -> None:
    t = np.arange(int(RATE * seconds)) / RATE
    x = np.round(0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.stack([x, x], 1).tobytes())


def run_one(args: argparse.Namespace, quantum: int, ppm: float, tone: Path,
            profiler: Path) -> dict[str, Any]:
    backend = ["--sink", "null", "--source", "sine:1000", "--clock-ppm", f"{ppm:g}",
               *args.backend_arg]
    with System(args.repo, backend_args=None, rt=args.rt, keep=args.keep) as s:
        if args.keep:
            print(f"  (keeping {s.work})")
        tap_file = s.work / "queue.npy"
        s.start_queue_tap(tap_file, backend)
        pw = PipeWireDaemon(s.work / f"pipewire-{quantum}", s.alsa_env(), quantum=quantum,
                            rate=RATE, alsa_props=args.alsa_props,
                            start=lambda argv, env: s.start(argv, f"pipewire-{quantum}",
                                                            env=env, rt=0))
        play = s.start(["pw-play", "--target", "0", "-P", "{ node.name = pvplay }", str(tone)],
                       "pw-play", env=pw.env, rt=0)
        pw.connect(play, "pvplay", playback=True)
        if args.duplex:
            rec = s.start(["pw-record", "--target", "0", "-P", "{ node.name = pvrec }",
                           "--rate", str(RATE), "--channels", "2", "/dev/null"],
                          "pw-record", env=pw.env, rt=0)
            pw.connect(rec, "pvrec", playback=False)
        time.sleep(1.0)  # links, the first cycles
        start = len(pw.log.read_bytes())
        t0 = time.monotonic_ns()
        prof = s.start([str(profiler), f"{args.seconds:g}"], f"pw_profile-{quantum}", env=pw.env,
                       rt=0)
        prof.wait(args.seconds + 20)
        t1 = time.monotonic_ns()
        alive = pw.proc.alive and play.alive
        log = pw.log.read_bytes()[start:].decode(errors="replace")
        prof_out = prof.log.read_text(errors="replace")
        geometry = [ln.split("()] ", 1)[-1] for ln in pw.log.read_text(errors="replace")
                    .splitlines() if "spa_alsa_set_format" in ln]
        for proc in reversed(s.procs[2:]):  # the clients and pipewire, then the backend
            proc.stop()
        assert s.backend is not None
        s.backend.stop()  # SIGTERM: the tap writes its log as the backend exits
        wait_until(tap_file.exists, 10, "the backend's queue log")
        rows = queue_tap.playback(queue_tap.load(str(tap_file)), t0, t1)
    grid = np.arange(t0, t1, 1_000_000)
    q_ms = queue_tap.queue_frames(rows, grid, RATE * (1 + ppm * 1e-6)) / RATE * 1e3
    q_ms = q_ms[~np.isnan(q_ms)]
    backend = {"dry": int((rows.kind == queue_tap.DRY).sum()),
               "queue_ms_min": float(q_ms.min()) if len(q_ms) else float("nan"),
               "queue_ms_median": float(np.median(q_ms)) if len(q_ms) else float("nan"),
               "writes": int((rows.kind == queue_tap.WRITE).sum()),
               # frames the guest wrote in the window per frame of real time
               "realtime": float((rows.written[-1] - rows.written[0]) * 1e9
                                 / ((rows.t_ns[-1] - rows.t_ns[0]) * RATE)) if len(rows) > 1
               else float("nan")}
    drivers: dict[str, dict[str, Any]] = {}
    for m in PROFILE_RE.finditer(prof_out):
        drivers[m["driver"]] = {k: float(v) if k == "t" else int(v)
                                for k, v in m.groupdict().items() if k != "driver"}
    if "pw_profile end" not in prof_out or "no profiler" in prof_out:
        raise RuntimeError(f"pw_profile failed:\n{prof_out[-2000:]}")
    sink = drivers.get("pvsink", {})
    return {"quantum": quantum, "ppm": ppm, "duplex": args.duplex, "alive": alive,
            "seconds": sink.get("t", 0.0), "drivers": drivers,
            "xruns": sum(d["xruns"] for n, d in drivers.items() if n.startswith("pv")),
            "cycles": sink.get("cycles", 0),
            "max_period_us": sink.get("max_period", 0), "max_busy_us": sink.get("max_busy", 0),
            "log_xrun_lines": len(XRUN_LOG_RE.findall(log)),
            "plugin_xrun_warnings": len(PLUGIN_XRUN_RE.findall(log)),
            "geometry": geometry, "backend": backend}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quanta", default="256,64")
    p.add_argument("--ppm", default="0,200,-200", help="backend clock skews (--clock-ppm)")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--duplex", action="store_true", help="pw-record from the source meanwhile")
    p.add_argument("--rt", type=int, default=20, help="SCHED_FIFO of sim and backend (0: off)")
    p.add_argument("--repo", type=repo_arg, default=REPO)
    p.add_argument("--json", type=Path)
    p.add_argument("--alsa-props", default="", metavar="PROPS",
                   help='extra properties of the ALSA nodes, e.g. "api.alsa.headroom = 1024"')
    p.add_argument("--backend-arg", action="append", default=[], metavar="ARG",
                   help="an extra pvplug backend argument (repeat), "
                        "e.g. --backend-arg=--pos-frames=64")
    p.add_argument("--keep", action="store_true", help="keep each run's logs and queue log")
    args = p.parse_args()
    for prog in ("pipewire", "pw-play", "pw-record", "pw-cli", "pw-link", "pkg-config", "gcc"):
        if shutil.which(prog) is None:
            sys.exit(f"not installed: {prog}")
    work = Path(tempfile.mkdtemp(prefix="pvplug-pw-"))
    profiler = compile_profiler(work)
    tone = work / "tone.wav"
    write_tone(tone, args.seconds + 15)
    version = subprocess.run(["pipewire", "--version"], capture_output=True,
                             text=True).stdout.split()[-1]
    print(f"PipeWire {version}"
          f" on pvplug ({args.repo}), {args.seconds:g} s each, sim/backend "
          f"{'SCHED_FIFO ' + str(args.rt) if args.rt else 'normal priority'}"
          f"{', duplex' if args.duplex else ''}; target 0 xruns")
    results = []
    try:
        for quantum in [int(x) for x in args.quanta.split(",")]:
            for ppm in [float(x) for x in args.ppm.split(",")]:
                r = run_one(args, quantum, ppm, tone, profiler)
                results.append(r)
                others = "".join(f", {n} {d['xruns']}" for n, d in r["drivers"].items()
                                 if n != "pvsink")
                print(f"  quantum {quantum:4d} ({quantum / 48:.2f} ms) {ppm:+5g} ppm: "
                      f"{r['xruns']:3d} xruns "
                      f"(pvsink {r['drivers'].get('pvsink', {}).get('xruns', '?')}"
                      f"{others}; {r['log_xrun_lines']} log lines, "
                      f"{r['plugin_xrun_warnings']} plugin warnings) in {r['seconds']:.0f} s, "
                      f"{r['cycles']} cycles (of {r['seconds'] * RATE / quantum:.0f} in real "
                      f"time), longest cycle gap {r['max_period_us'] / 1000:.2f} ms; "
                      f"backend: {r['backend']['dry']} underruns, fed at "
                      f"{r['backend']['realtime']:.3f} x real time, queue min "
                      f"{r['backend']['queue_ms_min']:.1f} ms median "
                      f"{r['backend']['queue_ms_median']:.1f} ms"
                      f"{'' if r['alive'] else '  pipewire or pw-play DIED'}   target 0",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if results:
        print("  ALSA geometry: " + "; ".join(results[-1]["geometry"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
