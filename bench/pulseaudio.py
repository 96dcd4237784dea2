"""PulseAudio on pvplug: underruns and the latency it reports (issue 11).

    .venv/bin/python bench/pulseaudio.py [--ppm 0,200,-200] [--seconds 60]
                                         [--interval-ms 20] [--rt 20] [--repo DIR] [--json F]

For each backend clock skew (``pvplug backend --clock-ppm``): a private
pulseaudio (as in tests/plugin/test_clients_pa_jack.py: ``module-alsa-sink
device=pvplug``, its own socket and dirs, log at info level) and ``paplay``
of a 440 Hz tone to it.  After the first second, for ``--seconds``:

* underruns: PulseAudio's "Underrun!" log lines (and its "events
  suppressed" notes), and what the backend really had: its underruns (a
  running stream with no data left, ``bench/queue_tap.py``);
* latency: ``bench/pa_latency.c`` asks for the sink's info every
  ``--interval-ms`` (what ``pactl list sinks`` prints as "Latency"), each
  answer timestamped; the backend's real queue (written - played, from the
  queue tap, the DAC going on at the skewed rate between its log rows) at
  the middle of each request is compared with it.

Targets: 0 underruns after the first second; |PA's latency - the real
queue| <= 2 ms, the real queue being what the guest has handed the backend
(its WRITEs, taken or still in the ring: ``announced`` in queue_tap.py) less
what the DAC played; what the backend has taken is shown beside it.  The
simulator and the backend run SCHED_FIFO at ``--rt``.
"""

from __future__ import annotations

import argparse
import json
import os
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

RATE = 48000
UNDERRUN_RE = re.compile(r"Underrun!|Buffer underrun")
SUPPRESSED_RE = re.compile(r"(\d+) events suppressed")


def compile_client(work: Path) -> Path:
    exe = work / "pa_latency"
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libpulse"], check=True,
                           capture_output=True, text=True, timeout=30).stdout.split()
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(BENCH / "pa_latency.c"), *flags],
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


def start_pulse(s: System, alsa_env: dict[str, str]) -> tuple[Any, dict[str, str]]:
    root = s.work / "pulse"
    (root / "home").mkdir(parents=True, exist_ok=True)
    (root / "run").mkdir(mode=0o700, exist_ok=True)
    sock = root / "native.sock"
    env = {**alsa_env, "HOME": str(root / "home"), "XDG_RUNTIME_DIR": str(root / "run"),
           "XDG_CONFIG_HOME": str(root / "home" / ".config"),
           "PULSE_RUNTIME_PATH": str(root / "run" / "pulse"), "PULSE_SERVER": f"unix:{sock}",
           "PULSE_CLIENTCONFIG": "/dev/null", "DBUS_SESSION_BUS_ADDRESS": "disabled:"}
    spec = f"rate={RATE} channels=2 format=s16le"
    pa = s.start(["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
                  "--use-pid-file=no", "--system=no", "--log-target=stderr", "--log-level=info",
                  "-L", f"module-alsa-sink device=pvplug sink_name=pv {spec}",
                  "-L", f"module-native-protocol-unix socket={sock} auth-anonymous=1"],
                 "pulseaudio", env=env, rt=0)
    wait_until(lambda: not pa.alive or "Daemon startup complete" in pa.log.read_text(
        errors="replace"), 20, "pulseaudio startup")
    if not pa.alive:
        raise RuntimeError(f"pulseaudio exited:\n{pa.output()}")
    return pa, env


def run_one(args: argparse.Namespace, ppm: float, tone: Path, client: Path) -> dict[str, Any]:
    rate = RATE * (1 + ppm * 1e-6)
    with System(args.repo, backend_args=None, rt=args.rt) as s:
        tap_file = s.work / "queue.npy"
        s.start_queue_tap(tap_file, ["--sink", "null", "--clock-ppm", f"{ppm:g}"])
        pa, env = start_pulse(s, s.alsa_env())
        play = s.start(["paplay", "-d", "pv", str(tone)], "paplay", env=env, rt=0)
        time.sleep(1.0)  # the first second is not counted
        start = len(pa.log.read_bytes())
        t0 = time.monotonic_ns()
        lat = s.start([str(client), "pv", f"{args.seconds:g}", f"{args.interval_ms:g}"],
                      "pa_latency", env=env, rt=0)
        time.sleep(min(2.0, args.seconds / 2))
        # The same figure as pactl prints it, once (a sanity check of pa_latency).
        pactl = subprocess.run(["pactl", "list", "sinks"], env={**os.environ, **env},
                               capture_output=True, text=True, timeout=10).stdout
        pactl_lat = [int(x) / 1e3 for x in re.findall(r"Latency: (\d+) usec", pactl)]
        rc = lat.wait(args.seconds + 20)
        t1 = time.monotonic_ns()
        alive = pa.alive and play.alive
        log = pa.log.read_bytes()[start:].decode(errors="replace")
        head = pa.log.read_text(errors="replace")
        lat_out = lat.log.read_text(errors="replace")
        play.stop()
        pa.stop()
        assert s.backend is not None
        s.backend.stop()  # SIGTERM: the tap writes its log as the backend exits
        wait_until(tap_file.exists, 10, "the backend's queue log")
        rows = queue_tap.playback(queue_tap.load(str(tap_file)), t0, t1)
    if rc != 0:
        raise RuntimeError(f"pa_latency exited {rc}:\n{lat_out[-2000:]}")
    samples = np.array([[int(x) for x in ln.split()[1:5]] for ln in lat_out.splitlines()
                        if ln.startswith("lat ")], dtype=np.int64).reshape(-1, 4)
    mid = (samples[:, 0] + samples[:, 1]) // 2
    pa_ms = samples[:, 2] / 1e3
    handed = agreement(rows, samples, pa_ms, rate, "announced")
    taken = agreement(rows, samples, pa_ms, rate, "written")
    req_ms = (samples[:, 1] - samples[:, 0]) / 1e6
    geometry = [ln.split(": ", 1)[-1] for ln in head.splitlines()
                if "Using " in ln and "fragments of size" in ln or "hwbuf_size" in ln][:2]
    return {
        "ppm": ppm, "alive": alive, "seconds": (t1 - t0) / 1e9,
        "pa_underruns": len(UNDERRUN_RE.findall(log)),
        "pa_suppressed": sum(int(n) for n in SUPPRESSED_RE.findall(log)),
        "backend_underruns": int((rows.kind == queue_tap.DRY).sum()),
        "pa_latency_ms": {"median": float(np.median(pa_ms)), "min": float(pa_ms.min()),
                          "max": float(pa_ms.max())},
        "handed": handed, "taken": taken,
        "request_ms": {"median": float(np.median(req_ms)), "max": float(req_ms.max())},
        "configured_latency_ms": float(np.median(samples[:, 3]) / 1e3),
        "pactl_latency_ms": pactl_lat[:1],
        "geometry": geometry,
        # the first samples: (ms since the window opened, PA's latency, the queue handed over)
        "trace": [[round((m - t0) / 1e6, 2), round(a, 2), round(b, 2)]
                  for m, a, b in zip(mid[:300].tolist(), pa_ms[:300].tolist(),
                                     handed.pop("queue_ms_trace"))],
    }


def agreement(rows: Any, samples: Any, pa_ms: Any, rate: float, column: str) -> dict[str, Any]:
    """PA's latency against the backend's queue (``column``, queue_tap.py) at
    the middle of each request, and anywhere inside it (its ends bound it)."""
    mid = (samples[:, 0] + samples[:, 1]) // 2
    real_ms = queue_tap.queue_frames(rows, mid, rate, column) / RATE * 1e3
    lo = queue_tap.queue_frames(rows, samples[:, 1], rate, column) / RATE * 1e3
    hi = queue_tap.queue_frames(rows, samples[:, 0], rate, column) / RATE * 1e3
    ok = ~np.isnan(real_ms)
    diff = (pa_ms - real_ms)[ok]
    outside = np.where(pa_ms > hi, pa_ms - hi, np.where(pa_ms < lo, pa_ms - lo, 0.0))[ok]
    return {
        "samples": int(ok.sum()),
        "queue_ms": {"median": float(np.nanmedian(real_ms)),
                     "min": float(np.nanmin(real_ms)), "max": float(np.nanmax(real_ms))},
        "diff_ms": {"median": float(np.median(diff)), "mean": float(diff.mean()),
                    "p5": float(np.percentile(diff, 5)), "p95": float(np.percentile(diff, 95)),
                    "max_abs": float(np.abs(diff).max()),
                    "within_2ms": float((np.abs(diff) <= 2).mean())},
        "outside_request_ms": {"max_abs": float(np.abs(outside).max()),
                               "within_2ms": float((np.abs(outside) <= 2).mean())},
        "queue_ms_trace": [round(x, 2) for x in real_ms[:300].tolist()],
    }


def show_agreement(what: str, a: dict[str, Any], target: bool) -> str:
    d, o = a["diff_ms"], a["outside_request_ms"]
    return (f"             PA - the queue {what}: median {d['median']:+.2f} p5 {d['p5']:+.2f} "
            f"p95 {d['p95']:+.2f} max |{d['max_abs']:.2f}| ms, {d['within_2ms'] * 100:.1f} % "
            f"within 2 ms (queue median {a['queue_ms']['median']:.2f} ms, {a['samples']} "
            f"samples; against the queue anywhere in the request: max "
            f"|{o['max_abs']:.2f}| ms, {o['within_2ms'] * 100:.1f} % within 2 ms)"
            f"{'   target |.| <= 2 ms' if target else ''}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ppm", default="0,200,-200", help="backend clock skews (--clock-ppm)")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--interval-ms", type=float, default=20.0)
    p.add_argument("--rt", type=int, default=20, help="SCHED_FIFO of sim and backend (0: off)")
    p.add_argument("--repo", type=repo_arg, default=REPO)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    for prog in ("pulseaudio", "paplay", "pkg-config", "gcc"):
        if shutil.which(prog) is None:
            sys.exit(f"not installed: {prog}")
    work = Path(tempfile.mkdtemp(prefix="pvplug-pa-"))
    results = []
    try:
        client = compile_client(work)
        tone = work / "tone.wav"
        write_tone(tone, args.seconds + 10)
        print(f"PulseAudio on pvplug ({args.repo}), paplay, {args.seconds:g} s after the first "
              f"second, sim/backend "
              f"{'SCHED_FIFO ' + str(args.rt) if args.rt else 'normal priority'}; targets: "
              f"0 underruns, |PA latency - real queue| <= 2 ms")
        for ppm in [float(x) for x in args.ppm.split(",")]:
            r = run_one(args, ppm, tone, client)
            results.append(r)
            supp = f" (+{r['pa_suppressed']} suppressed)" if r["pa_suppressed"] else ""
            r["taken"].pop("queue_ms_trace")
            print(f"  {ppm:+5g} ppm: underruns: PA {r['pa_underruns']}{supp}"
                  f", backend {r['backend_underruns']}   target 0"
                  f"{'' if r['alive'] else '   pulseaudio or paplay DIED'}\n"
                  f"             latency: PA median {r['pa_latency_ms']['median']:.2f} ms "
                  f"(configured {r['configured_latency_ms']:.1f}; pactl once: "
                  f"{', '.join(f'{x:.2f}' for x in r['pactl_latency_ms'])})\n"
                  + show_agreement("handed to the backend", r["handed"], True) + "\n"
                  + show_agreement("the backend took", r["taken"], False), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if results and results[-1]["geometry"]:
        print("  " + "; ".join(results[-1]["geometry"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
