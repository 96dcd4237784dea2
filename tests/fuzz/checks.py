"""Assertions of the issue's "must be" column over a campaign summary; each
failure names the cases (seed:index), what happened and how to rerun one."""

from __future__ import annotations

import os
from typing import Any

from . import campaign as C
from .peers import STALL_SECONDS

#: the in-suite campaigns' seed; PVPLUG_FUZZ_SEED=N explores another one
SEED = int(os.environ.get("PVPLUG_FUZZ_SEED", "9"))


def cases_with(summary: dict[str, Any], *outcomes: str) -> list[dict[str, Any]]:
    return [r for r in summary["results"] if any(o in r["outcomes"] for o in outcomes)]


def describe(summary: dict[str, Any], direction: str, rs: list[dict[str, Any]],
             *outcomes: str) -> str:
    lines = []
    for r in rs[:15]:
        what = r["spec"].get("kind") or r["spec"].get("driver")
        details = [d for d in r["details"] if any(d.startswith(o) for o in outcomes)]
        lines.append(f"  case {r['case']} ({what}): " +
                     (details[0].splitlines()[0][:400] if details else r["outcome"]))
        seed, _, index = r["case"].partition(":")
        if seed.isdigit():
            lines.append(f"    rerun: .venv/bin/python -m tests.fuzz --direction {direction} "
                         f"--seed {seed} --case {index}")
    if len(rs) > 15:
        lines.append(f"  ... and {len(rs) - 15} more")
    return "\n".join(lines)


def assert_none(summary: dict[str, Any], direction: str, *outcomes: str) -> None:
    rs = cases_with(summary, *outcomes)
    assert not rs, (f"{len(rs)} of {summary['cases']} {direction}-direction case(s): "
                    f"{' / '.join(outcomes)}\n" + describe(summary, direction, rs, *outcomes))


def assert_honest_guest_undisturbed(summary: dict[str, Any]) -> None:
    bad = summary["disrupted"]
    lines = [f"  take {v['k']} during case(s) {','.join(v['cases'][:4]) or '-'}"
             f"{' (after a backend crash)' if v.get('after_crash') else ''}: "
             f"{'; '.join(v['why'])[:300]}" for v in bad[:15]]
    assert summary["takes"] > 0, "the honest guest played no take at all"
    assert not bad, (f"{len(bad)} of {summary['takes']} honest takes disrupted\n"
                     + "\n".join(lines))
    assert summary["longest_gap"] is None or summary["longest_gap"] < STALL_SECONDS


def assert_rss_flat(summary: dict[str, Any], slack_kb: int = 2048) -> None:
    rss = summary["rss"]
    assert rss, "no RSS sample of the backend"
    grown = rss["end_kb"] - rss["warmup_kb"]
    assert grown <= slack_kb, (
        f"backend RSS grew {grown} kB after warm-up: {rss['start_kb']} kB at the start, "
        f"{rss['warmup_kb']} kB after {rss['warmup_case']} cases, {rss['end_kb']} kB after "
        f"{rss['cases']} (max {rss['max_kb']} kB)")


ALL_BAD_GUEST = (C.CRASH, C.HANG, C.UNUSABLE, C.WRONG, C.OUTSIDE, C.CPU, C.HARNESS)
ALL_BAD_BACKEND = (C.HANG, C.RUNAWAY, C.UNTYPED, C.SIGNAL, C.UNUSABLE, C.HARNESS)
