"""Pointer accuracy and pointer cost of the pvplug ALSA plugin.

    .venv/bin/python bench/run.py [--seconds 30] [--json out.json] [--tap]
                                  [--rt PRIO] [--repo DIR] [--workdir DIR]

Builds the plugin and ``bench/pointer_bench.c``, starts the simulated
hypervisor and the reference backend (``--sink null``, its default CUR_POS
cadence of one report per period), plays S16_LE stereo 48 kHz through
``pcm.pvplug`` for ``--seconds`` while sampling the hardware pointer every
``--interval-us``, then:

* fits hw(t) with a least-squares line and reports how far the pointer
  strays from it (max, p99, median |deviation| in frames) and the fitted rate;
* reports ns per ``snd_pcm_avail_update`` call on pvplug and on alsa-lib's
  ``null`` PCM, timed in the same loop (median, p99.9, ratio);
* with ``--tap``, runs the backend through ``bench/backend_tap.py`` to log
  each CUR_POS it sends, and reports the same deviation for the raw CUR_POS
  step function, the backend's send lateness, and where the worst pointer
  samples sit relative to the reports;
* with ``--rt PRIO``, runs the sim, the backend and the client SCHED_FIFO,
  which keeps other load on a small machine out of the figures;
* with ``--repo DIR``, another checkout's sim, backend and plugin are measured.

Every process is bounded in time and killed at the end.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from harness import REPO as THIS_REPO
from harness import System, repo_arg, wait_until

BENCH = Path(__file__).resolve().parent

REC = np.dtype([("kind", "<i8"), ("seg", "<i8"), ("t0", "<i8"), ("t1", "<i8"),
                ("value", "<i8"), ("extra", "<i8"), ("appl", "<i8")])


def compile_bench(work: Path) -> Path:
    exe = work / "pointer_bench"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(BENCH / "pointer_bench.c"),
                    "-lasound", "-lm"], check=True, timeout=120)
    return exe


# -- analysis ------------------------------------------------------------------

def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else float("nan")


def line_fit(t: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least squares y = a + b t (t in s, relative); returns a, b, residuals."""
    tm, ym = t.mean(), y.mean()
    b = float(((t - tm) * (y - ym)).sum() / ((t - tm) ** 2).sum())
    a = float(ym - b * tm)
    return a, b, y - (a + b * t)


def dev_stats(res: np.ndarray) -> dict[str, float]:
    a = np.abs(res)
    return {"max": float(a.max()), "p99": _pct(a, 99), "p50": _pct(a, 50),
            "rms": float(np.sqrt((res ** 2).mean()))}


def cost_stats(ns: np.ndarray) -> dict[str, float]:
    return {"n": int(len(ns)), "median": _pct(ns, 50), "p99": _pct(ns, 99),
            "p99.9": _pct(ns, 99.9), "max": float(ns.max())}


def analyze(recs: np.ndarray, tap: np.ndarray | None, rate: int, warmup: float,
            period: int) -> dict[str, Any]:
    errors = recs[recs["kind"] == 2]
    samples = recs[recs["kind"] == 0]
    writes = recs[(recs["kind"] == 1)]
    # The longest error-free segment (normally the only one).
    segs, counts = np.unique(samples["seg"], return_counts=True)
    seg = segs[np.argmax(counts)]
    s = samples[samples["seg"] == seg]
    origin = s["t0"][0]
    t0 = (s["t0"] - origin) / 1e9
    t1 = (s["t1"] - origin) / 1e9
    tmid = (t0 + t1) / 2
    hw = s["value"].astype(np.float64)
    keep = tmid >= warmup
    t, y = tmid[keep], hw[keep]
    a, b, res = line_fit(t, y)
    # Interval view: how far hw is from the line anywhere inside the call.
    lo, hi = a + b * t0[keep], a + b * t1[keep]
    res_iv = np.where(y < lo, y - lo, np.where(y > hi, y - hi, 0.0))
    # The same samples against the call's start and end instead of its middle.
    res_t0 = y - (a + b * t0[keep])
    res_t1 = y - (a + b * t1[keep])
    out: dict[str, Any] = {
        "samples": int(keep.sum()), "samples_total": int(len(samples)),
        "errors": [int(e) for e in errors["value"]], "segments": int(len(segs)),
        "span_s": float(t[-1] - t[0]), "warmup_s": warmup,
        "fit_rate": b, "fit_rate_ppm": (b / rate - 1) * 1e6,
        "dev": dev_stats(res), "dev_interval": dev_stats(res_iv),
        "dev_call_start": dev_stats(res_t0), "dev_call_end": dev_stats(res_t1),
        "interval_us_median": _pct(np.diff(s["t0"]) / 1e3, 50),
    }
    # Where the deviation is: ordered, so the report can name the samples.
    dt = np.diff(t)
    dy = np.diff(y)
    flat = (dy == 0) & (dt * rate > 4)
    out["flat_steps"] = int(flat.sum())
    out["jump_steps"] = int(((dy - dt * rate) > 4).sum())
    # Residual per phase within the period (report cadence): mean and extreme.
    phase = np.mod(y, period)
    bins = np.linspace(0, period, 9)
    idx = np.digitize(phase, bins) - 1
    out["dev_by_period_phase"] = [
        {"from": int(bins[i]), "mean": float(res[idx == i].mean()),
         "min": float(res[idx == i].min()), "max": float(res[idx == i].max())}
        for i in range(8) if (idx == i).any()]
    # Residual over time: per second, the extremes (drift / window effects).
    sec = np.floor(t).astype(int)
    out["dev_by_second"] = [
        {"s": int(k), "min": float(res[sec == k].min()), "max": float(res[sec == k].max())}
        for k in np.unique(sec)]

    # Costs, over every sample of the run (after the start).
    out["cost_pvplug_ns"] = cost_stats((s["t1"] - s["t0"]).astype(np.float64))
    out["cost_null_ns"] = cost_stats(s["extra"].astype(np.float64))
    out["cost_ratio_median"] = out["cost_pvplug_ns"]["median"] / out["cost_null_ns"]["median"]
    out["cost_ratio_p99.9"] = out["cost_pvplug_ns"]["p99.9"] / out["cost_null_ns"]["p99.9"]
    w = writes[(writes["seg"] == seg) & (writes["t0"] >= origin)]
    if len(w):
        out["cost_writei_ns"] = cost_stats((w["t1"] - w["t0"]).astype(np.float64))

    worst = np.argsort(-np.abs(res))[:10]
    rows = []
    if tap is not None:
        # Only the reports of this segment (positions restart at every prepare).
        tap = tap[(tap[:, 0] >= s["t0"][0]) & (tap[:, 0] <= s["t1"][-1])]
    if tap is not None and len(tap) > 2:
        ts = (tap[:, 0] - origin) / 1e9
        pos = tap[:, 1].astype(np.float64)
        ideal = (tap[:, 2] - origin) / 1e9
        late = (ts - (tap[:, 3] - origin) / 1e9) * 1e6
        out["tap_reports"] = int(len(tap))
        out["backend_late_us"] = {"median": _pct(late, 50), "p99": _pct(late, 99),
                                  "max": float(late.max())}
        # The raw CUR_POS step function sampled at the same instants.
        k = np.searchsorted(ts, t, side="right") - 1
        ok = k >= 0
        step = np.where(ok, pos[np.clip(k, 0, None)], 0.0)
        _, sb, sres = line_fit(t[ok], step[ok])
        out["step_fit_rate"] = sb
        out["step_dev"] = dev_stats(sres)
        # The backend's own clock (ideal send time per position) as the truth:
        # the pointer's lag behind it.
        ia, ib, _ = line_fit(ideal, pos)
        lag = (ia + ib * t) - y
        out["lag_behind_backend_frames"] = {"mean": float(lag.mean()), "min": float(lag.min()),
                                            "max": float(lag.max()), "p1": _pct(lag, 1),
                                            "p99": _pct(lag, 99)}
        # Correctness: the pointer must never pass the backend's clock, even
        # at the end of the call (1 frame of rounding allowed).
        ahead_be = y - (ia + ib * t1[keep])
        bad = ahead_be > 1
        out["fit_vs_backend_ppm"] = (b / ib - 1) * 1e6
        dl = recs[(recs["kind"] == 3) & (recs["seg"] == seg)]
        if len(dl):
            # snd_pcm_delay against what the backend truly holds: what was
            # written minus where its own clock is.
            td = ((dl["t0"] + dl["t1"]) / 2 - origin) / 1e9
            ok_d = td >= warmup
            err = (dl["value"] - (dl["appl"] - (ia + ib * td)))[ok_d] / rate * 1000
            if len(err):
                out["delay_error_ms"] = {"max_abs": float(np.abs(err).max()),
                                         "p99_abs": _pct(np.abs(err), 99),
                                         "mean": float(err.mean()), "n": int(len(err))}
        out["ahead_of_backend"] = {"samples": int(bad.sum()),
                                   "max_frames": float(max(ahead_be.max(), 0.0)),
                                   "first_s": float(t[bad][0]) if bad.any() else None}
        since = np.where(ok, (t - ts[np.clip(k, 0, None)]) * 1e6, np.nan)
        ahead = y - step
        out["hw_ahead_of_report_frames"] = {"max": float(ahead[ok].max()),
                                            "min": float(ahead[ok].min())}
        rep = step
    else:
        since = rep = None
    for i in worst:
        row = {"t_s": round(float(t[i]), 6), "hw": int(y[i]), "dev": round(float(res[i]), 2),
               "call_us": round(float((t1[keep][i] - t0[keep][i]) * 1e6), 1)}
        if since is not None and rep is not None:
            row["since_report_us"] = round(float(since[i]), 1)
            row["hw_minus_report"] = int(y[i] - rep[i])
        rows.append(row)
    out["worst"] = rows
    return out


# -- the run -----------------------------------------------------------------

def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pvplug-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    be_args = ["--sink", "null"] + (["--clock-ppm", str(args.clock_ppm)] if args.clock_ppm else [])
    tap_file = work / "curpos.npy"
    try:
        with System(args.repo, work=work / "system", backend_args=None, rt=args.rt) as sysm:
            if args.tap:
                # The tap is this checkout's script run by the measured checkout's Python.
                sysm.backend = sysm.start(
                    [sysm.python, str(BENCH / "backend_tap.py"), str(tap_file),
                     "--log-level", "warning", "backend", "--sim-dir", str(sysm.sim_dir),
                     *be_args], "backend")
            else:
                sysm.start_backend(be_args)
            exe = compile_bench(work)
            recs_file = work / "samples.bin"
            client = sysm.start([str(exe), "pvplug", "null", str(args.seconds), str(args.rate),
                                 str(args.period), str(args.buffer), str(args.interval_us),
                                 str(recs_file)], "client", env=sysm.alsa_env())
            load0 = Path("/proc/loadavg").read_text().split()[:3]
            rc = client.wait(args.seconds + 60)
            load1 = Path("/proc/loadavg").read_text().split()[:3]
            summary = client.output().strip()
            if rc != 0:
                raise RuntimeError(f"pointer_bench exited {rc}:\n{summary}")
            assert sysm.backend is not None
            sysm.backend.stop()  # SIGTERM: the tap writes its log as the backend exits
            tap = None
            if args.tap:
                wait_until(tap_file.exists, 10, "the CUR_POS log")
                tap = np.load(tap_file)
        recs = np.fromfile(recs_file, dtype=REC)
        line = next((ln for ln in summary.splitlines() if ln.startswith("pointer_bench:")), "")
        fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        result = analyze(recs, tap, args.rate, args.warmup, int(fields.get("period", args.period)))
        result["setup"] = {
            "seconds": args.seconds, "rate": args.rate, "format": "S16_LE", "channels": 2,
            "period": int(fields.get("period", 0)), "buffer": int(fields.get("buffer", 0)),
            "null_period": int(fields.get("null_period", 0)),
            "null_buffer": int(fields.get("null_buffer", 0)),
            "interval_us": args.interval_us, "clock_gettime_pair_ns": float(fields["clock_ns"]),
            "final_state": fields.get("final_state"), "tap": bool(args.tap),
            "client_cpu_s": float(fields.get("cpu_s", "nan")),
            "client_involuntary_switches": int(fields.get("nivcsw", -1)),
            "loadavg_before": load0, "loadavg_after": load1, "cpus": os.cpu_count(),
            "backend": " ".join(be_args), "workdir": str(work),
            "repo": str(args.repo), "rt_priority": args.rt}
        return result
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept: {work}", file=sys.stderr)


def print_table(r: dict[str, Any]) -> None:
    su = r["setup"]
    rt = f" (SCHED_FIFO {su['rt_priority']})" if su["rt_priority"] else ""
    print(f"pvplug pointer benchmark{rt} ({su['repo']}): {su['seconds']} s, "
          f"{su['rate']} Hz S16_LE x2, "
          f"period {su['period']}, buffer {su['buffer']}, sample every {su['interval_us']} us "
          f"(median {r['interval_us_median']:.0f} us), backend: {su['backend']}")
    print(f"  samples {r['samples']} (after {r['warmup_s']} s warm-up), errors {r['errors']}, "
          f"segments {r['segments']}, final state {su['final_state']}")
    print(f"  client CPU {su['client_cpu_s']:.1f} s, involuntary context switches "
          f"{su['client_involuntary_switches']}; load average {' '.join(su['loadavg_before'])}"
          f" -> {' '.join(su['loadavg_after'])} on {su['cpus']} CPUs")
    print("  |hw pointer - least-squares line| (frames), the sample taken at the call's:")
    print(f"    {'':24}{'max':>9}{'p99':>9}{'p50':>9}{'rms':>9}")
    for name, key in (("pvplug, middle", "dev"), ("  start", "dev_call_start"),
                      ("  end", "dev_call_end"), ("  nearest instant", "dev_interval")):
        d = r[key]
        print(f"    {name:24}{d['max']:9.2f}{d['p99']:9.2f}{d['p50']:9.2f}{d['rms']:9.2f}")
    if "step_dev" in r:
        sd = r["step_dev"]
        print(f"    {'raw CUR_POS steps':24}{sd['max']:9.2f}{sd['p99']:9.2f}{sd['p50']:9.2f}"
              f"{sd['rms']:9.2f}")
    print(f"    fitted rate {r['fit_rate']:.3f} frames/s ({r['fit_rate_ppm']:+.1f} ppm)")
    if "lag_behind_backend_frames" in r:
        lg, bl = r["lag_behind_backend_frames"], r["backend_late_us"]
        print(f"    lag behind the backend's clock: mean {lg['mean']:.1f}, "
              f"range {lg['min']:.1f} .. {lg['max']:.1f} frames")
        print(f"    CUR_POS sent after its period boundary by median {bl['median']:.0f} us, "
              f"p99 {bl['p99']:.0f} us, max {bl['max']:.0f} us")
        ah, ab = r["hw_ahead_of_report_frames"], r["ahead_of_backend"]
        print(f"    fitted rate against the backend's clock: {r['fit_vs_backend_ppm']:+.2f} ppm")
        if "delay_error_ms" in r:
            de = r["delay_error_ms"]
            print(f"    snd_pcm_delay - the backend's true queue: max |{de['max_abs']:.3f}| ms, "
                  f"p99 {de['p99_abs']:.3f} ms, mean {de['mean']:+.3f} ms ({de['n']} samples)")
        print(f"    hw - last CUR_POS sent: {ah['min']:.0f} .. {ah['max']:.0f} frames; "
              f"samples ahead of the backend's clock (> 1 frame at the call's end): "
              f"{ab['samples']}, by up to {ab['max_frames']:.1f} frames")
    cp, cn = r["cost_pvplug_ns"], r["cost_null_ns"]
    print(f"  snd_pcm_avail_update, ns per call (clock_gettime pair "
          f"{su['clock_gettime_pair_ns']:.0f} ns included)")
    print(f"    {'':24}{'n':>9}{'median':>10}{'p99':>10}{'p99.9':>10}{'max':>11}")
    for name, c in (("pvplug", cp), ("null", cn)):
        print(f"    {name:24}{c['n']:9d}{c['median']:10.0f}{c['p99']:10.0f}{c['p99.9']:10.0f}"
              f"{c['max']:11.0f}")
    print(f"    ratio pvplug/null: median {r['cost_ratio_median']:.0f}x, "
          f"p99.9 {r['cost_ratio_p99.9']:.0f}x")
    if "cost_writei_ns" in r:
        cw = r["cost_writei_ns"]
        print(f"  snd_pcm_writei (1 period) on pvplug: median {cw['median'] / 1e3:.0f} us, "
              f"p99.9 {cw['p99.9'] / 1e3:.0f} us, max {cw['max'] / 1e3:.0f} us")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rate", type=int, default=48000)
    p.add_argument("--period", type=int, default=1024)
    p.add_argument("--buffer", type=int, default=4096)
    p.add_argument("--interval-us", type=int, default=200, help="pointer sampling interval")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds left out of the fit")
    p.add_argument("--tap", action="store_true",
                   help="log the backend's CUR_POS events (bench/backend_tap.py)")
    p.add_argument("--repo", type=repo_arg, default=THIS_REPO,
                   help="measure another checkout (its sim, backend and plugin)")
    p.add_argument("--rt", type=int, default=0, metavar="PRIO",
                   help="run the sim, the backend and the client SCHED_FIFO at PRIO "
                        "(isolates the measurement from other load; needs privileges)")
    p.add_argument("--clock-ppm", type=float, default=0.0,
                   help="the backend's clock runs this far off ours (pvplug backend --clock-ppm)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--workdir", help="keep everything here (default: a temp dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args(argv)
    if args.seconds <= args.warmup + 1:
        p.error("--seconds must exceed --warmup by more than 1 s")
    r = run(args)
    print_table(r)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
