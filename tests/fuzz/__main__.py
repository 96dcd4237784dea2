"""``python -m tests.fuzz``: a fuzz campaign, the table of issue 9, the seeds.

    .venv/bin/python -m tests.fuzz --direction guest|backend|both --cases 1000 \\
        [--seed S] [--json out.json] [--dir WORK] [--plugin-share 0.25]
    .venv/bin/python -m tests.fuzz --direction guest --seed S --case I [--show]
    .venv/bin/python -m tests.fuzz --spec case.json      # a spec printed by --show / --json

Run from the repository root.  ``--cases`` is per direction.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import campaign as C
from . import gen, report


def _progress(start: float, total: int, direction: str):
    counts: dict[str, int] = {}

    def log(r: C.CaseResult) -> None:
        counts[r.primary] = counts.get(r.primary, 0) + 1
        done = sum(counts.values())
        if r.primary not in (C.CLEAN, C.TYPED):
            first = r.details[0].splitlines()[0][:150] if r.details else ""
            print(f"  {direction} {r.key}: {r.primary} - {first}", flush=True)
        if done % 50 == 0 or done == total:
            el = time.monotonic() - start
            summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(f"[{direction}] {done}/{total} cases in {el:.0f} s: {summary}", flush=True)
    return log


def make_specs(direction: str, cases: int, seed: int, plugin_share: float | None = None,
               indices: list[int] | None = None, kinds: set[str] | None = None) -> list[dict]:
    """``cases`` specs (or those of ``indices``); with ``kinds``, indices whose
    case is of another kind (guest) or driver (backend) are skipped."""
    out: list[dict] = []
    i = 0
    todo = list(indices) if indices is not None else None
    while (len(out) < cases) if todo is None else todo:
        idx = todo.pop(0) if todo is not None else i
        i += 1
        spec = gen.guest_case(seed, idx) if direction == "guest" else \
            gen.backend_case(seed, idx, plugin_share)
        if kinds and (spec.get("kind") or spec.get("driver")) not in kinds:
            continue
        out.append(spec)
    return out


def run(direction: str, cases: int, seed: int, root: Path, plugin_share: float | None = None,
        indices: list[int] | None = None, specs: list[dict] | None = None,
        kinds: set[str] | None = None, probe: str | None = None) -> dict:
    """Run one direction; returns its summary (see ``report``)."""
    if specs is None:
        specs = make_specs(direction, cases, seed, plugin_share, indices, kinds)
    t0 = time.monotonic()
    s = C.run_direction(direction, specs, root, case_log=_progress(t0, len(specs), direction),
                        probe=probe)
    s["seed"] = seed
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--direction", choices=("guest", "backend", "both"), default="both")
    p.add_argument("--cases", type=int, default=200, help="cases per direction")
    p.add_argument("--seed", type=int, help="default: random (printed)")
    p.add_argument("--case", type=int, action="append", help="run only this index (repeatable)")
    p.add_argument("--spec", type=Path, help="run the case spec(s) in this JSON file")
    p.add_argument("--show", action="store_true", help="print the spec(s) and exit")
    p.add_argument("--json", type=Path, help="write the summary and every non-clean case")
    p.add_argument("--dir", type=Path, help="work directory (default: a temporary one, "
                                            "kept when something was found)")
    p.add_argument("--kinds", help="only these guest kinds / backend drivers, comma-separated "
                                   "(xs,req,stress,kill,revoke / api-play,api-cap,harness-play,"
                                   "harness-cap,aplay,arecord)")
    p.add_argument("--backend-probe", choices=("on", "tracemalloc"),
                   help="guest direction: run the backend under tests/fuzz/backend_probe.py "
                        "and snapshot its memory every 100 cases (DIR/guest/probe.jsonl)")
    p.add_argument("--plugin-share", type=float, default=None,
                   help="share of backend cases through aplay/arecord (default 0.25)")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.randrange(2**31)
    specs_by_dir: dict[str, list[dict] | None] = {}
    if a.spec:
        data = json.loads(a.spec.read_text())
        data = data if isinstance(data, list) else [data]
        for d in ("guest", "backend"):
            sel = [s for s in data if s.get("dir") == d]
            if sel:
                specs_by_dir[d] = sel
    else:
        dirs = ["guest", "backend"] if a.direction == "both" else [a.direction]
        for d in dirs:
            specs_by_dir[d] = None
    if a.show:
        kinds = set(a.kinds.split(",")) if a.kinds else None
        for d, given in specs_by_dir.items():
            for spec in given or make_specs(d, a.cases, seed, a.plugin_share, a.case, kinds):
                print(json.dumps(spec))
        return 0
    root = a.dir or Path(tempfile.mkdtemp(prefix="pvplug-fuzz-"))
    n = len(a.case) if a.case else a.cases
    what = f"the specs in {a.spec}" if a.spec else f"seed {seed}, {n} case(s) per direction"
    print(f"fuzz campaign: {what}, work directory {root}", flush=True)
    summaries: dict[str, dict] = {}
    found = False
    for d, specs in specs_by_dir.items():
        kinds = set(a.kinds.split(",")) if a.kinds else None
        s = run(d, a.cases, seed, root / d, a.plugin_share, a.case, specs, kinds,
                a.backend_probe)
        summaries[d] = s
        bad = [r for r in s["results"] if r["outcome"] not in (C.CLEAN, C.TYPED)]
        found = found or bool(bad) or bool(s.get("disrupted"))
    g, b = summaries.get("guest"), summaries.get("backend")
    print()
    print(f"seed {seed}; " + ", ".join(f"{d}: {s['cases']} cases in {s['seconds']:.0f} s"
                                       for d, s in summaries.items()))
    print(report.table(g, b))
    print()
    for d, s in summaries.items():
        text = report.seeds(s, d)
        if text:
            print(text)
    print(f"\nreproduce one case: .venv/bin/python -m tests.fuzz --direction DIR --seed {seed} "
          f"--case INDEX   (the case column is seed:index)")
    if a.json:
        a.json.write_text(json.dumps({"seed": seed, **summaries}, indent=1, default=repr))
        print(f"summary written to {a.json}")
    if not found and a.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"work directory kept: {root}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PVPLUG_LOG_LEVEL", "warning")
    sys.exit(main())
