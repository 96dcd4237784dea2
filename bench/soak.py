"""A long unpaced run end to end: bit-exact, nothing lost, memory and fds flat.

    .venv/bin/python bench/soak.py [--minutes 60] [--period 1024] [--repo DIR] [--json F]

One backend (``--unpaced --sink hash:DIR --source pattern``) serves two guests
for ``--minutes``: guest 1 plays the pattern through the plugin as fast as it
goes (``pcm_client soak-play``), guest 2 records (``pcm_client soak-capture``)
and checks every frame.  At the end the CRC-32 and frame count of what guest 1
wrote must equal what the backend played, and guest 2 must have no mismatch.
Every 10 s it samples the RSS and open fds of both clients, the simulator and
the backend; it prints them at the start, after the warm-up (the first tenth)
and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from datapath import compile_client
from harness import REPO, System, repo_arg, rss_kib

SAMPLE_SECONDS = 10.0


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.minutes * 60
    with System(args.repo, guests=[1, 2], backend_args=None) as s:
        out = s.work / "hashes"
        s.start_backend(["--unpaced", "--sink", f"hash:{out}", "--source", "pattern"])
        exe = compile_client(s.work)
        play = s.start([str(exe), "soak-play", "pvplug", str(seconds), str(args.period)],
                       "play", env=s.alsa_env(1))
        cap = s.start([str(exe), "soak-capture", "pvplug", str(seconds), str(args.period)],
                      "capture", env=s.alsa_env(2))
        procs = {"play": play, "capture": cap, "sim": s.sim, "backend": s.backend}
        samples: list[dict[str, Any]] = []
        t0 = time.monotonic()
        while play.alive or cap.alive:
            row: dict[str, Any] = {"t": round(time.monotonic() - t0, 1)}
            for name, p in procs.items():
                if p is not None and p.alive:
                    try:
                        row[name] = (rss_kib(p.pid), fds(p.pid))
                    except OSError:
                        pass
            samples.append(row)
            if time.monotonic() - t0 > seconds + 120:
                raise RuntimeError("the clients did not end")
            time.sleep(min(SAMPLE_SECONDS, max(0.1, seconds / 50)))
        wall = time.monotonic() - t0
        play_line = play.output().strip().splitlines()[-1]
        cap_line = cap.output().strip().splitlines()[-1]
        s.backend.stop()  # the hash sink writes at CLOSE; the client closed already
        got = {kv.split("=")[0]: kv.split("=")[1] for kv in play_line.split()[1:]}
        rec = {kv.split("=")[0]: kv.split("=")[1] for kv in cap_line.split()[1:]}
        hashes = sorted(out.glob("dom1-*.hash"))
        played = [h.read_text().split() for h in hashes]
    frames = int(got.get("frames", 0))
    exact = len(played) == 1 and int(played[0][0]) == frames and played[0][1] == got.get("crc")
    warm = samples[max(1, len(samples) // 10)] if len(samples) > 2 else samples[-1]
    return {"minutes": args.minutes, "period": args.period, "wall_s": wall,
            "play_frames": frames, "play_realtime_x": frames / 48000 / wall,
            "played_by_backend": played, "play_bit_exact": exact,
            "capture_frames": int(rec.get("frames", 0)),
            "capture_mismatches": int(rec.get("mismatches", -1)),
            "first_mismatch": int(rec.get("first_mismatch", 0)),
            "samples": {"start": samples[0], "after_warmup": warm, "end": samples[-1]},
            "all_samples": samples, "play_log": play_line, "capture_log": cap_line}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--period", type=int, default=1024)
    p.add_argument("--repo", type=repo_arg, default=REPO)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    r = run(args)
    print(f"soak ({args.minutes:g} min unpaced, period {args.period}): playback "
          f"{r['play_frames']} frames ({r['play_realtime_x']:.0f}x real time), bit-exact at the "
          f"backend: {r['play_bit_exact']} {r['played_by_backend']}; capture "
          f"{r['capture_frames']} frames, {r['capture_mismatches']} mismatches")
    print(f"  {'':10}" + "".join(f"{k:>22}" for k in ("start", "after warm-up", "end")))
    for name in ("play", "capture", "sim", "backend"):
        cells = []
        for key in ("start", "after_warmup", "end"):
            v = r["samples"][key].get(name)
            cells.append("-" if v is None else f"{v[0] / 1024:.1f} MiB {v[1]} fds")
        print(f"  {name:10}" + "".join(f"{c:>22}" for c in cells))
    if args.json:
        args.json.write_text(json.dumps(r, indent=1) + "\n")
    ok = r["play_bit_exact"] and r["capture_mismatches"] == 0 and r["capture_frames"] > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
