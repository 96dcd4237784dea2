"""A timer-scheduled writer on pvplug, without any sound server (issue 11).

    .venv/bin/python bench/timer.py [--quanta 1024,256,128,64] [--seconds 10]
                                    [--access rw|mmap] [--buffer 32768] [--rt 20] [--repo DIR]

``bench/timer_client.c`` drives pcm.pvplug as PipeWire's alsa-pcm does
(no poll: a timer; about one quantum queued; start and stop thresholds at
the boundary) for ``--seconds`` at each quantum, and the backend runs
through ``bench/queue_tap.py``.  Printed: the frames the client wrote per
second of real time (1.000 x is what a card whose pointer follows its clock
gives), its early wake-ups (the plugin's delay said more was queued than a
quantum), and what the backend really had: its underruns (a running stream
with no data left) and its queue (written - played).  This is the minimal
reproduction of what bench/pipewire.py finds with PipeWire.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

import numpy as np
import queue_tap
from harness import BENCH, REPO, System, repo_arg, wait_until

RATE = 48000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quanta", default="1024,256,128,64")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--access", choices=("rw", "mmap", "poll", "pollmmap"), default="mmap",
                   help="poll: period = quantum, poll() and fill the buffer (as aplay)")
    p.add_argument("--buffer", type=int, default=32768)
    p.add_argument("--rt", type=int, default=20, help="SCHED_FIFO of sim and backend (0: off)")
    p.add_argument("--repo", type=repo_arg, default=REPO)
    args = p.parse_args()
    print(f"timer-scheduled writer on pvplug ({args.repo}), {args.access}, buffer "
          f"{args.buffer}, {args.seconds:g} s each; target 1.000 x real time, 0 underruns")
    for quantum in [int(q) for q in args.quanta.split(",")]:
        with System(args.repo, backend_args=None, rt=args.rt) as s:
            exe = s.work / "timer_client"
            subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(BENCH / "timer_client.c"),
                            "-lasound"], check=True, timeout=120)
            tap_file = s.work / "queue.npy"
            s.start_queue_tap(tap_file, ["--sink", "null"])
            env = s.alsa_env()
            t0 = time.monotonic_ns()
            c = s.start([str(exe), "pvplug", f"{args.seconds:g}", str(quantum), str(args.buffer),
                         args.access], f"timer_client-{quantum}", env=env, rt=0)
            rc = c.wait(args.seconds + 30)
            t1 = time.monotonic_ns()
            out = c.output()
            assert s.backend is not None
            s.backend.stop()
            wait_until(tap_file.exists, 10, "the backend's queue log")
            rows = queue_tap.playback(queue_tap.load(str(tap_file)), t0, t1)
        m = re.search(r"rate (\d+) \(([\d.]+) x real time\) cycles (\d+) early (\d+).*"
                      r"delay_after_write_ms median ([\d.]+)", out)
        if rc != 0 or m is None:
            print(f"  quantum {quantum}: timer_client failed ({rc}):\n{out}")
            continue
        grid = np.arange(rows.t_ns[0], rows.t_ns[-1], 1_000_000)
        q = queue_tap.queue_frames(rows, grid, RATE) / RATE * 1e3
        dry = int((rows.kind == queue_tap.DRY).sum())
        w = rows[rows.kind == queue_tap.WRITE]
        after_write = (w.written - w.played) / RATE * 1e3
        print(f"  quantum {quantum:5d} ({quantum / 48:5.2f} ms): {float(m[2]):.3f} x real time, "
              f"{m[3]} cycles, {m[4]} early wake-ups; backend: {dry} underruns, queue median "
              f"{np.median(q):.2f} ms, p10 {np.percentile(q, 10):.2f} ms; after a write: the "
              f"plugin's delay {float(m[5]):.2f} ms, the backend's queue "
              f"{np.median(after_write):.2f} ms (medians)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
