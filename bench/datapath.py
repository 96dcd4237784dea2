"""The data path's figures, each next to its target (issue 10).

    .venv/bin/python bench/datapath.py onewrite   [--seconds 60] [--repo DIR]
    .venv/bin/python bench/datapath.py cpu        [--seconds 20] [--period 256] [--repo DIR]
    .venv/bin/python bench/datapath.py throughput [--seconds 120] [--period 1024] [--repo DIR]
    .venv/bin/python bench/datapath.py open       [--count 10] [--repo DIR]
    .venv/bin/python bench/datapath.py all        [--repo DIR] [--json F]

* ``onewrite``: a client writing ONE frame per ``snd_pcm_writei`` (44.1 kHz S16
  stereo, buffer 4410, start_threshold = buffer, stop_threshold = boundary,
  avail_min 1; ``bench/pcm_client.c``) for ``--seconds``.  The hw pointer
  (frames written minus the queued part, after every call) is fitted with a
  line: its rate, the largest |deviation| and the largest ``avail``.
* ``cpu``: ``aplay`` of 48 kHz S16 stereo at ``--period`` frames (4 periods of
  buffer); the client's CPU (its rusage) per second of audio.
* ``throughput``: the same ``aplay`` against ``pvplug backend --unpaced --sink
  null`` (with ``--stop-delay``, so that a backend faster than real time is
  not an underrun each period): seconds of audio per second of wall time.
* ``open``: ``snd_pcm_open`` + close of ``pcm.pvplug`` in one fresh process,
  ``--count`` times in a row, each run in a new process (the first open in a
  process starts Python: "warm" is every run after the first).

``--repo DIR`` runs another checkout (simulator, backend, plugin) with the
same measurement, for before/after figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from harness import BENCH, REPO, System, cpu_seconds, repo_arg

TARGETS = {
    "onewrite": "rate 44100 fr/s +-0.05 %, avail never above the buffer, "
                "pointer within 2 frames of a line",
    "cpu": "<= 1 % of a core per audio second at 256-frame periods",
    "throughput": ">= 200x real time at 1024-frame periods",
    "open": "<= 50 ms warm",
}


def compile_client(work: Path) -> Path:
    exe = work / "pcm_client"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(BENCH / "pcm_client.c"),
                    "-lasound", "-lz"], check=True, timeout=120)
    return exe


def noise_wav(path: Path, seconds: float, rate: int = 48000) -> None:
    import struct
    frames = int(seconds * rate)
    data = np.random.default_rng(1).integers(-2**15, 2**15, (frames, 2), dtype="<i2").tobytes()
    hdr = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 2, rate, rate * 4, 4, 16) + b"data" + struct.pack("<I", len(data))
    path.write_bytes(hdr + data)


def _run_timed(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, float, float]:
    """(exit status, wall seconds, CPU seconds of the child) for one run."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    deadline = t0 + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            os.wait4(p.pid, 0)
            raise RuntimeError(f"{argv} did not finish within {timeout} s")
        time.sleep(0.005)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.returncode != 0:
        raise RuntimeError(f"{argv} exited {p.returncode}:\n{err[-2000:]}")
    return p.returncode, wall, ru.ru_utime + ru.ru_stime


def bench_onewrite(args: argparse.Namespace) -> dict[str, Any]:
    rate, buffer = 44100, 4410
    with System(args.repo, backend_args=["--sink", "null"]) as s:
        exe = compile_client(s.work)
        out = s.work / "onewrite.bin"
        p = s.start([str(exe), "onewrite", "pvplug", str(args.seconds), str(rate), str(buffer),
                     str(out)], "onewrite", env=s.alsa_env())
        rc = p.wait(args.seconds * 3 + 60)
        summary = p.output().strip().splitlines()[-1:]
        if rc != 0:
            raise RuntimeError(f"pcm_client exited {rc}:\n{p.output()}")
        rec = np.fromfile(out, dtype="<i8").reshape(-1, 3)
    t = (rec[:, 0] - rec[0, 0]) / 1e9
    hw = rec[:, 1] - (buffer - rec[:, 2])
    keep = t >= 1.0  # after the start
    tk, hk = t[keep], hw[keep].astype(np.float64)
    b, a = np.polyfit(tk, hk, 1)
    dev = np.abs(hk - (a + b * tk))
    return {"calls": int(len(rec)), "seconds": float(t[-1]), "rate": float(b),
            "rate_error_pct": 100 * (b / rate - 1), "max_avail": int(rec[:, 2].max()),
            "buffer": buffer, "dev_max": float(dev.max()), "dev_p99": float(np.percentile(dev, 99)),
            "frames_per_second_total": float(rec[-1, 1] / t[-1]), "summary": summary}


def _steady_cpu(argv: list[str], env: dict[str, str], seconds: float
                ) -> tuple[float, float, str]:
    """(CPU % of a core in steady play, CPU % over the whole run, its
    stderr) of one client playing ``seconds`` of audio: steady is from 2 s
    after it started to 1 s before its audio ends."""
    p = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        time.sleep(2.0)
        c0, t0 = cpu_seconds(p.pid), time.monotonic()
        time.sleep(max(1.0, seconds - 3.0))
        c1, t1 = cpu_seconds(p.pid), time.monotonic()
        _, status, ru = os.wait4(p.pid, 0)
    finally:
        if p.poll() is None:
            p.kill()
    err = p.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[0]} failed:\n{err[-2000:]}")
    return 100 * (c1 - c0) / (t1 - t0), 100 * (ru.ru_utime + ru.ru_stime) / seconds, err


def bench_cpu(args: argparse.Namespace) -> dict[str, Any]:
    """Steady state (start-up -- Python, the handshake -- is the ``open``
    figure's), and over the whole run for comparison; next to the reference
    (``pcm_client pace``: aplay's system calls on a kernel driver, without
    the driver) in the same run, for this machine's cost of a wake-up."""
    with System(args.repo, backend_args=["--sink", "null"]) as s:
        wav = s.work / "in.wav"
        noise_wav(wav, args.seconds)
        steady, whole, err = _steady_cpu(
            ["aplay", "-q", "-D", "pvplug", f"--period-size={args.period}",
             f"--buffer-size={4 * args.period}", str(wav)], s.alsa_env(), args.seconds)
        if err.strip():  # (an xrun's recovery would be measured, not steady play)
            print(f"aplay said:\n{err[-1500:]}", file=sys.stderr)
        ref, _, _ = _steady_cpu([str(compile_client(s.work)), "pace", str(wav), str(args.seconds),
                              str(args.period)], {}, args.seconds)
    return {"period": args.period, "audio_s": args.seconds,
            "cpu_pct_per_audio_second": steady, "cpu_pct_whole_run": whole,
            "reference_cpu_pct": ref}


def bench_throughput(args: argparse.Namespace) -> dict[str, Any]:
    with System(args.repo, backend_args=["--unpaced", "--sink", "null"]) as s:
        wav = s.work / "in.wav"
        noise_wav(wav, args.seconds)
        # --stop-delay: a backend faster than real time drains the buffer at
        # once; with aplay's stop_threshold (the buffer) every period would be
        # an underrun and its recovery, not the data path, would be measured.
        _, wall, cpu = _run_timed(["aplay", "-q", "-D", "pvplug", f"--period-size={args.period}",
                                   f"--buffer-size={4 * args.period}",
                                   "--stop-delay=100000000", str(wav)],
                                  s.alsa_env(), args.seconds * 2 + 60)
    return {"period": args.period, "audio_s": args.seconds, "wall_s": wall, "client_cpu_s": cpu,
            "realtime_x": args.seconds / wall}


def bench_open(args: argparse.Namespace) -> dict[str, Any]:
    with System(args.repo, backend_args=["--sink", "null"]) as s:
        exe = compile_client(s.work)
        env = {**os.environ, **s.alsa_env()}
        first, again = [], []
        for _ in range(args.count):
            out = subprocess.run([str(exe), "open", "pvplug", "2"], env=env, timeout=60,
                                 capture_output=True, text=True, check=True).stdout
            ms = [float(line.split()[1]) for line in out.splitlines()
                  if line.startswith("open_ms")]
            first.append(ms[0])
            again.append(ms[1])
    return {"count": args.count, "process_first_ms": first, "in_process_again_ms": again,
            "cold_ms": first[0], "warm_median_ms": float(np.median(first[1:])),
            "warm_max_ms": float(max(first[1:])),
            "second_open_same_process_median_ms": float(np.median(again))}


def show(name: str, r: dict[str, Any]) -> None:
    if name == "onewrite":
        line = (f"rate {r['rate']:.2f} fr/s ({r['rate_error_pct']:+.3f} %), max avail "
                f"{r['max_avail']} of {r['buffer']}, |pointer - line| max {r['dev_max']:.1f} "
                f"p99 {r['dev_p99']:.1f} frames, {r['calls']} calls in {r['seconds']:.0f} s")
    elif name == "cpu":
        line = (f"aplay CPU {r['cpu_pct_per_audio_second']:.2f} % of a core per audio second "
                f"in steady play (period {r['period']}; whole run with start-up "
                f"{r['cpu_pct_whole_run']:.2f} %); reference (pcm_client pace) "
                f"{r['reference_cpu_pct']:.2f} %, ratio "
                f"{r['cpu_pct_per_audio_second'] / max(r['reference_cpu_pct'], 1e-3):.1f}x")
    elif name == "throughput":
        line = (f"{r['realtime_x']:.1f}x real time ({r['audio_s']:g} s of audio in "
                f"{r['wall_s']:.2f} s, period {r['period']})")
    else:
        line = (f"warm {r['warm_median_ms']:.1f} ms median (max {r['warm_max_ms']:.1f}), "
                f"cold {r['cold_ms']:.1f} ms, again in the same process "
                f"{r['second_open_same_process_median_ms']:.1f} ms")
    print(f"{name:11} {line}\n{'':11} target: {TARGETS[name]}")


BENCHES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "onewrite": bench_onewrite, "cpu": bench_cpu, "throughput": bench_throughput,
    "open": bench_open}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=[*BENCHES, "all"])
    p.add_argument("--seconds", type=float, help="audio seconds (default per benchmark)")
    p.add_argument("--period", type=int, help="frames (default: cpu 256, throughput 1024)")
    p.add_argument("--count", type=int, default=10, help="open: processes")
    p.add_argument("--repo", type=repo_arg, default=REPO, help="the checkout to measure")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    defaults = {"onewrite": (60, None), "cpu": (20, 256), "throughput": (120, 1024),
                "open": (None, None)}
    results = {}
    print(f"data path of {args.repo}")
    for name in BENCHES if args.what == "all" else [args.what]:
        sub = argparse.Namespace(**vars(args))
        sec, per = defaults[name]
        sub.seconds = args.seconds if args.seconds is not None else sec
        sub.period = args.period if args.period is not None else per
        results[name] = BENCHES[name](sub)
        show(name, results[name])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
