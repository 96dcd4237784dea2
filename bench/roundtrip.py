"""Round-trip latency through pvplug and the backend's loopback (issue 11).

    .venv/bin/python bench/roundtrip.py [--configs 256:1024,480:1920,1024:4096]
                                        [--seconds 20] [--rt 20] [--repo DIR] [--json F]

For each PERIOD:BUFFER: ``tests/plugin/c/roundtrip.c`` plays and captures
``pcm.pvplug`` in one process (the playback buffer kept full, the capture
read a period at a time) with the backend as a loopback cable (``--sink
loop --source loop``, run through ``bench/queue_tap.py``).  The signal has a
burst every second; each is found in the capture by cross-correlation.

Per burst (start frame s in the playback stream, found at frame c of the
capture stream):

* measured: the round trip as the application sees it, from the write call
  that handed frame s over to the read call that returned frame c
  (CLOCK_MONOTONIC);
* its parts: the playback queue ahead of frame s at that write (the
  plugin's snd_pcm_delay then, less the frames written after s in the same
  call), the backend queue (from the playback DAC reaching frame s to the
  capture reaching frame c, by the backend's own positions in the queue
  log), and the capture queue (how long frame c had been in the capture
  buffer when it was read: the plugin's snd_pcm_delay before that read, less
  the frames captured after c).

Target: measured = playback + capture + backend queue within 1 ms.  Also
printed: the configured playback buffer and capture period.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import queue_tap
from harness import REPO, System, repo_arg, wait_until

from tests.support.audio import align

RATE = 48000
LEAD, BURST, EVERY = RATE * 3 // 10, RATE // 5, RATE  # as in tests/plugin/c/roundtrip.c
SOURCE = Path(__file__).resolve().parent.parent / "tests" / "plugin" / "c" / "roundtrip.c"


def crossing(t_ns: np.ndarray, pos: np.ndarray, frame: float) -> float:
    """When a stream position (rows t_ns, pos: non-decreasing) reached
    ``frame``, interpolated linearly between the rows around it (ns)."""
    k = int(np.searchsorted(pos, frame, side="left"))
    if k == 0 or k >= len(pos):
        return float("nan")
    p0, p1, t0, t1 = pos[k - 1], pos[k], t_ns[k - 1], t_ns[k]
    return float(t0 + (t1 - t0) * (frame - p0) / (p1 - p0)) if p1 > p0 else float(t1)


def run_one(args: argparse.Namespace, exe: Path, period: int, buffer: int) -> dict[str, Any]:
    with System(args.repo, backend_args=None, rt=args.rt) as s:
        tap_file = s.work / "queue.npy"
        s.start_queue_tap(tap_file, ["--sink", "loop", "--source", "loop"])
        prefix = s.work / "rt"
        c = s.start([str(exe), "pvplug", f"{args.seconds:g}", str(period), str(buffer),
                     str(prefix)], f"roundtrip-{period}", env=s.alsa_env(), rt=args.client_rt)
        rc = c.wait(args.seconds + 40)
        out = c.output()
        assert s.backend is not None
        s.backend.stop()
        wait_until(tap_file.exists, 10, "the backend's queue log")
        tap = queue_tap.load(str(tap_file))
        played = np.fromfile(prefix.with_suffix(".play"), "<i2").reshape(-1, 2).astype(float)
        captured = np.fromfile(prefix.with_suffix(".cap"), "<i2").reshape(-1, 2).astype(float)
        log = np.fromfile(prefix.with_suffix(".log"), "<i8").reshape(-1, 4)
    if rc != 0:
        raise RuntimeError(f"roundtrip exited {rc}:\n{out}")
    summary = next(ln for ln in out.splitlines() if ln.startswith("roundtrip:"))
    xruns = [int(x) for x in re.findall(r"(?:playback|capture) (\d+)", summary)]
    writes, reads = log[log[:, 0] == 0], log[log[:, 0] == 1]
    pb = queue_tap.playback(tap)
    cap = tap[(tap.capture == 1) & (tap.kind == queue_tap.EVENT)]
    cap = cap[cap.seg == cap.seg.max()] if len(cap) else cap
    rows = []
    for start in range(LEAD, len(played) - BURST + 1, EVERY):
        if not played[start: start + BURST].any():
            continue  # past the signal
        lag, corr = align(captured, played[start: start + BURST])
        iw = int(np.searchsorted(writes[:, 2], start + 1))  # the write that handed s over
        ir = int(np.searchsorted(reads[:, 2], lag + 1))     # the read that returned c
        if iw >= len(writes) or ir >= len(reads):
            continue
        measured = (reads[ir, 1] - writes[iw, 1]) / 1e6
        play_q = (writes[iw, 3] - (writes[iw, 2] - start)) / RATE * 1e3
        # frames captured after c when that read began: its delay then, less
        # the unread ones before c (from the read's start, appl - period)
        cap_q = (reads[ir, 3] - (lag - (reads[ir, 2] - period))) / RATE * 1e3
        # the backend: its DAC reaching s (playback clock), its capture reaching c
        t_dac = crossing(pb.t_ns, pb.played, start)
        t_adc = crossing(cap.t_ns, cap.done, lag + 1)
        backend_q = (t_adc - t_dac) / 1e6
        rows.append({"start": start, "found_at": lag, "corr": corr, "measured_ms": measured,
                     "playback_ms": play_q, "backend_ms": backend_q, "capture_ms": cap_q,
                     "sum_ms": play_q + backend_q + cap_q})
    ok = [r for r in rows if not np.isnan(r["backend_ms"])]
    diff = np.array([r["measured_ms"] - r["sum_ms"] for r in ok])

    def med(key: str) -> float:
        return float(np.median([r[key] for r in ok])) if ok else float("nan")
    return {"period": period, "buffer": buffer, "xruns": xruns, "bursts": len(rows),
            "min_corr": min((r["corr"] for r in rows), default=0.0),
            "measured_ms": med("measured_ms"), "playback_ms": med("playback_ms"),
            "backend_ms": med("backend_ms"), "capture_ms": med("capture_ms"),
            "sum_ms": med("sum_ms"),
            "measured_range_ms": [min(r["measured_ms"] for r in ok), max(r["measured_ms"]
                                                                      for r in ok)] if ok else [],
            "max_abs_diff_ms": float(np.abs(diff).max()) if len(diff) else float("nan"),
            "within_1ms": float((np.abs(diff) <= 1).mean()) if len(diff) else 0.0,
            "rows": rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="256:1024,480:1920,1024:4096", help="PERIOD:BUFFER,...")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rt", type=int, default=20, help="SCHED_FIFO of sim and backend (0: off)")
    p.add_argument("--client-rt", type=int, default=10,
                   help="SCHED_FIFO of the client, below sim and backend (0: off), as jackd -R")
    p.add_argument("--repo", type=repo_arg, default=REPO)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import tempfile
    work = Path(tempfile.mkdtemp(prefix="pvplug-rt-"))
    exe = work / "roundtrip"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(SOURCE), "-lasound", "-lm"],
                   check=True, timeout=120)
    print(f"Round trip on pvplug ({args.repo}), backend --sink loop --source loop, "
          f"{args.seconds:g} s each (a burst a second), sim/backend "
          f"{'SCHED_FIFO ' + str(args.rt) if args.rt else 'normal priority'}, client "
          f"{'SCHED_FIFO ' + str(args.client_rt) if args.client_rt else 'normal priority'}; "
          "target: "
          f"measured = playback + capture + backend queue within 1 ms")
    results = []
    for cfg in args.configs.split(","):
        period, buffer = (int(x) for x in cfg.split(":"))
        r = run_one(args, exe, period, buffer)
        results.append(r)
        print(f"  period {period:4d} buffer {buffer:5d} (playback buffer {buffer / 48:.2f} ms, "
              f"capture period {period / 48:.2f} ms): round trip {r['measured_ms']:.2f} ms "
              f"(range {r['measured_range_ms'][0]:.2f}..{r['measured_range_ms'][1]:.2f}) = "
              f"playback {r['playback_ms']:.2f} + backend {r['backend_ms']:.2f} + capture "
              f"{r['capture_ms']:.2f} = {r['sum_ms']:.2f} ms (medians); |measured - sum| max "
              f"{r['max_abs_diff_ms']:.2f} ms, {r['within_1ms'] * 100:.0f} % within 1 ms "
              f"(target 1 ms); {r['bursts']} bursts, correlation >= {r['min_corr']:.4f}, xruns "
              f"{r['xruns']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    import shutil
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
