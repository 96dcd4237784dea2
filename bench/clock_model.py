"""The position clock alone, on synthetic report lateness: how far ahead of
the backend it runs, how straight its line is, how far it lags.

    .venv/bin/python bench/clock_model.py [--seeds 8] [--seconds 12] [--lean K]
                                          [--repo DIR] [--json out.json]

No processes and no clock: ``protocol/pointer.PositionClock`` (of this
checkout or of ``--repo DIR``) is fed CUR_POS reports, one per 1024-frame
period at 48 kHz, from a backend whose clock runs -300, 0 or +300 ppm off
ours, each report seen late by a lateness model:

* ``vm``: as ``bench/run.py --tap`` measured our VM: never under 100 us,
  median about 300 us, 1 % of reports held 2-10 ms;
* ``exp``: exponential, 0.5 ms mean (a sharp edge, a long tail);
* ``stall``: ``vm`` plus a 50 ms stall of the client every 2 s.

The reports are taken every 0.25 s and the pointer read in between from the
line of the last take, every 0.5 ms, as the C shim reads the line Python
published.  The same seeds give the same figures on any machine: this is
the model's accuracy, not the VM's; ``bench/run.py`` measures the plugin.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from harness import REPO as THIS_REPO
from harness import repo_arg

RATE = 48000
PERIOD = 1024
TAKE = 0.25
READ_EVERY = 0.0005
PPMS = (-300.0, 0.0, 300.0)


def _vm(rng: random.Random) -> float:
    late = 100e-6 + rng.gammavariate(2.0, 50e-6) + rng.uniform(0, 200e-6)
    return late + (rng.uniform(2e-3, 10e-3) if rng.random() < 0.01 else 0.0)


def _exp(rng: random.Random) -> float:
    return rng.expovariate(1 / 0.0005)


MODELS: dict[str, Callable[[random.Random], float]] = {"vm": _vm, "exp": _exp, "stall": _vm}


def one_run(clock_cls: Any, model: str, ppm: float, seed: int, seconds: float) -> dict[str, float]:
    rng = random.Random(seed * 7919 + int(ppm))
    true_rate = RATE * (1 + ppm * 1e-6)
    reports = []
    for k in range(1, int(seconds * true_rate / PERIOD)):
        t = k * PERIOD / true_rate
        late = MODELS[model](rng)
        if model == "stall" and t % 2.0 < 0.05:
            late += 0.05 - t % 2.0  # seen when the 50 ms stall ends
        reports.append((t + late, k * PERIOD))
    reports.sort()
    clock = clock_cls(RATE, RATE)  # (the slack clamp is not what is measured)
    clock.restart(0, 0.0)
    n = int((seconds - 0.5) / READ_EVERY)
    t = np.arange(n) * READ_EVERY
    est = np.empty(n)
    i, line, take, seen = 0, (clock.slope, clock.intercept), 0.0, 0
    for j, now in enumerate(t):
        while i < len(reports) and reports[i][0] <= now:
            clock.observe(reports[i][1], reports[i][0])
            seen = max(seen, reports[i][1])
            i += 1
        if now >= take:
            line, take = (clock.slope, clock.intercept), now + TAKE
        est[j] = max(seen, math.floor(line[0] * now + line[1]))
    est = np.maximum.accumulate(est)  # (the plugin's pointer never goes back)
    err = est - t * true_rate
    out = {"ahead_max": float(err.max()),
           "lag_mean_after_5s": float(-err[t >= 5].mean()),
           "fit_error_ppm": (clock.fitted_rate / true_rate - 1) * 1e6}
    for start in (1.0, 3.0):
        k = t >= start
        b, a = np.polyfit(t[k], est[k], 1)
        out[f"dev_max_after_{start:g}s"] = float(np.abs(est[k] - (a + b * t[k])).max())
    return out


def run(repo: Path, seeds: int, seconds: float, lean: float | None = None) -> dict[str, Any]:
    sys.path.insert(0, str(repo))
    for name in [m for m in sys.modules if m == "alsa_pvplug" or m.startswith("alsa_pvplug.")]:
        del sys.modules[name]
    pointer = importlib.import_module("alsa_pvplug.protocol.pointer")
    if lean is not None:
        pointer.LEAN_SE = lean  # what another lean would do (this checkout's clock)
    clock_cls = pointer.PositionClock
    result: dict[str, Any] = {"repo": str(repo), "seeds": seeds, "seconds": seconds,
                              "lean_se": getattr(pointer, "LEAN_SE", None)}
    for model in MODELS:
        runs = [one_run(clock_cls, model, ppm, seed, seconds)
                for ppm in PPMS for seed in range(1, seeds + 1)]
        col = {key: np.array([r[key] for r in runs]) for key in runs[0]}
        result[model] = {
            "runs": len(runs),
            "runs_ahead": int((col["ahead_max"] > 1).sum()),
            "ahead_max": float(max(col["ahead_max"].max(), 0.0)),
            "dev_max_after_1s": float(col["dev_max_after_1s"].max()),
            "dev_median_after_1s": float(np.median(col["dev_max_after_1s"])),
            "dev_max_after_3s": float(col["dev_max_after_3s"].max()),
            "lag_mean_after_5s": float(col["lag_mean_after_5s"].mean()),
            "fit_error_ppm_max": float(np.abs(col["fit_error_ppm"]).max()),
        }
    return result


def print_table(r: dict[str, Any]) -> None:
    lean = "" if r["lean_se"] is None else f", lean {r['lean_se']:g} standard errors"
    print(f"position clock of {r['repo']}{lean}: {r['seeds']} seeds x {len(PPMS)} skews "
          f"({', '.join(f'{p:+g}' for p in PPMS)} ppm), {r['seconds']:g} s each")
    print(f"  {'lateness':8s} {'ahead >1 fr':>12s} {'ahead max':>10s} {'dev max/med':>12s} "
          f"{'dev max 3 s+':>13s} {'lag 5 s+':>9s} {'fit err':>8s}")
    for model in MODELS:
        m = r[model]
        print(f"  {model:8s} {m['runs_ahead']:5d} of {m['runs']:<4d} {m['ahead_max']:10.1f} "
              f"{m['dev_max_after_1s']:6.1f}/{m['dev_median_after_1s']:<5.1f} "
              f"{m['dev_max_after_3s']:13.1f} {m['lag_mean_after_5s']:9.1f} "
              f"{m['fit_error_ppm_max']:6.1f} ppm")
    print("  (frames; targets, as bench/run.py's: 0 runs ahead, deviation from a line after "
          "1 s <= 2, fitted rate within 5 ppm)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--repo", type=repo_arg, default=THIS_REPO,
                   help="measure another checkout's position clock")
    p.add_argument("--lean", type=float,
                   help="LEAN_SE to use instead of the checkout's (standard errors)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.seconds < 6:
        p.error("--seeds must be >= 1 and --seconds >= 6")
    if args.lean is not None and args.lean < 0:
        p.error("--lean must be >= 0")
    r = run(args.repo, args.seeds, args.seconds, args.lean)
    print_table(r)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
