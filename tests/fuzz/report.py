"""The campaign's table (the rows of issue 9) and the seeds behind each row."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from . import campaign as C
from .peers import STALL_SECONDS

#: takes this close after a backend crash or restart are attributed to it
CRASH_SHADOW = 6.0


def _fmt_kb(kb: int | None) -> str:
    return "?" if kb is None else f"{kb / 1024:.1f} MB"


def guest_summary(gc: C.GuestCampaign) -> dict[str, Any]:
    results = gc.results
    counts = _counts(results)
    verdicts = gc.book.verdicts()
    disrupted = [v for v in verdicts if v["why"]]
    crash_times = [e["t"] for e in gc.world.events if e["what"] in ("backend restart",
                                                                    "world restart")]
    crash_times += [r.t0 for r in results if C.CRASH in r.outcomes]
    for v in disrupted:
        near = [v["t0"] - t for t in crash_times if -1.0 <= v["t0"] - t <= CRASH_SHADOW
                or (t >= v["t0"] and t <= v["t1"])]
        v["after_crash"] = bool(near)
        v["cases"] = [r.key for r in results if r.t0 <= v["t1"] and r.t1 >= v["t0"]]
    gaps = [v["gap"] for v in verdicts if v["gap"] is not None]
    # RSS of the longest-lived backend instance
    by_inst: dict[int, list[tuple[int, int]]] = defaultdict(list)
    parts: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for i, inst, kb, anon, shmem in gc.rss:
        by_inst[inst].append((i, kb))
        parts[inst].append((i, anon, shmem))
    rss: dict[str, Any] = {}
    if by_inst:
        inst, series = max(by_inst.items(), key=lambda kv: len(kv[1]))
        w = min(len(series) - 1, max(1, len(series) // 5))
        warm = series[w]
        rss = {"instance": inst, "cases": len(series), "start_kb": series[0][1],
               "warmup_kb": warm[1], "warmup_case": w, "end_kb": series[-1][1],
               "max_kb": max(kb for _, kb in series),
               "series": series[:: max(1, len(series) // 200)],
               "anon_shmem": parts[inst][:: max(1, len(series) // 200)]}
    # the cases after which the backend's RSS stepped up (same instance)
    steps = []
    for (_i0, inst0, kb0, *_), (i1, inst1, kb1, *_) in zip(gc.rss, gc.rss[1:]):
        if inst0 == inst1 and kb1 - kb0 >= 256 and i1 < len(results):
            sp = results[i1].spec
            steps.append({"case": results[i1].key, "kind": sp.get("kind"), "sub": sp.get("sub"),
                          "kb": kb1, "delta_kb": kb1 - kb0})
    if rss:
        rss["steps"] = steps
    cpus = [r.cpu for r in results if r.cpu is not None]
    return {
        "cases": len(results), "counts": counts,
        "crash_causes": dict(gc.crash_causes),
        "takes": len(verdicts), "disrupted": disrupted,
        "disrupted_after_crash": sum(1 for v in disrupted if v["after_crash"]),
        "longest_gap": max(gaps, default=None), "rss": rss,
        "cpu_max": max(cpus, default=None),
        "cpu": [[r.key, round(r.cpu, 3)] for r in results if r.cpu is not None],
        "events": [{k: v for k, v in e.items() if k != "why"} | {"why": e["why"][-300:]}
                   for e in gc.world.events],
        "results": [r.as_json() for r in results if r.primary != C.CLEAN],
    }


def backend_summary(bc: C.BackendCampaign) -> dict[str, Any]:
    results = bc.results
    plugin = [r for r in results if r.spec["driver"] in ("aplay", "arecord")]
    return {
        "cases": len(results), "plugin_cases": len(plugin), "counts": _counts(results),
        "plugin_counts": _counts(plugin),
        "events": [{k: v for k, v in e.items() if k != "why"} | {"why": e["why"][-300:]}
                   for e in bc.world.events],
        "results": [r.as_json() for r in results if r.primary not in (C.CLEAN, C.TYPED)],
    }


def _counts(results: list[C.CaseResult]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in results:
        out["primary:" + r.primary] += 1
        for o in r.outcomes:
            out[o] += 1
    return dict(out)


def table(g: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    rows: list[tuple[str, str, str]] = []

    def n(summary: dict[str, Any] | None, key: str) -> int:
        return 0 if summary is None else summary["counts"].get(key, 0)

    if g is not None:
        causes = "; ".join(f"{k} ×{v}" for k, v in g["crash_causes"].items())
        rows.append(("backend crashes from guest input",
                     f"{n(g, C.CRASH)} in {g['cases']} cases" + (f" ({causes})" if causes else ""),
                     "0"))
        lg = g["longest_gap"]
        rows.append(("honest guest disrupted",
                     f"{len(g['disrupted'])} of {g['takes']} takes"
                     + (f" ({g['disrupted_after_crash']} within {CRASH_SHADOW:.0f} s of a "
                        "backend crash/restart)" if g["disrupted"] else "")
                     + (f"; longest gap {lg:.2f} s" if lg is not None else ""),
                     f"0, longest gap < {STALL_SECONDS} s"))
    if b is not None:
        pc = b["plugin_counts"]
        rows.append(("client hangs (hostile backend)",
                     f"{n(b, C.HANG)} hang + {n(b, C.RUNAWAY)} runaway output "
                     f"(through the plugin: {pc.get(C.HANG, 0)} + {pc.get(C.RUNAWAY, 0)})", "0"))
        rows.append(("untyped exceptions in the plugin/frontend",
                     f"{n(b, C.UNTYPED)} (through the plugin: {pc.get(C.UNTYPED, 0)})", "0"))
        rows.append(("clients killed by a signal", f"{n(b, C.SIGNAL)}", "0"))
    un_g = n(g, C.UNUSABLE) if g else None
    un_b = n(b, C.UNUSABLE) if b else None
    rows.append(("device left unusable after the peer goes away",
                 " / ".join(x for x in (f"guest side: {un_g}" if g else "",
                                        f"backend side: {un_b}" if b else "") if x), "never"))
    if g is not None:
        rss = g["rss"]
        if rss:
            rows.append(("backend RSS (longest-lived instance)",
                         f"{_fmt_kb(rss['start_kb'])} → {_fmt_kb(rss['warmup_kb'])} after "
                         f"{rss['warmup_case']} of its cases → {_fmt_kb(rss['end_kb'])} after "
                         f"{rss['cases']} (max {_fmt_kb(rss['max_kb'])})",
                         "flat after warm-up, explained"))
        cm = g["cpu_max"]
        rows.append(("backend CPU while a hostile stream runs",
                     f"{n(g, C.CPU)} cases over {C.CPU_HOG:.0%}"
                     + (f" (max {cm:.0%})" if cm is not None else ""), "bounded"))
        rows.append(("answers with wrong id/op/status, writes outside the shared buffer",
                     f"{n(g, C.WRONG)} / {n(g, C.OUTSIDE)}", "0 / 0"))
        rows.append(("hangs (no answer to a hostile guest's request)", f"{n(g, C.HANG)}", "0"))
    hz = " / ".join(x for x in (f"{n(g, C.HARNESS)}" if g else "",
                                f"{n(b, C.HARNESS)}" if b else "") if x)
    rows.append(("harness errors (the fuzzer's own)", hz, "0"))
    info = []
    if b is not None:
        info.append(f"backend side: {n(b, 'primary:' + C.TYPED)} typed errors, "
                    f"{n(b, 'primary:' + C.CLEAN)} clean, {b['plugin_cases']} through the plugin")
    if g is not None:
        info.append(f"guest side: {n(g, 'primary:' + C.CLEAN)} clean")
    rows.append(("(for information)", "; ".join(info), ""))
    w = [max(len(r[i]) for r in rows + [("", "measured", "must be")]) for i in range(3)]
    lines = [f"| {'':{w[0]}} | {'measured':{w[1]}} | {'must be':{w[2]}} |",
             f"|{'-' * (w[0] + 2)}|{'-' * (w[1] + 2)}|{'-' * (w[2] + 2)}|"]
    for a, m, s in rows:
        lines.append(f"| {a:{w[0]}} | {m:{w[1]}} | {s:{w[2]}} |")
    return "\n".join(lines)


def seeds(summary: dict[str, Any], direction: str) -> str:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in summary["results"]:
        for o in r["outcomes"]:
            if o not in (C.CLEAN, C.TYPED):
                groups[o].append(r)
    out = []
    for o in C.SEVERITY:
        rs = groups.get(o)
        if not rs:
            continue
        out.append(f"{direction} / {o}: {len(rs)} case(s)")
        for r in rs[:60]:
            what = r["spec"].get("kind") or r["spec"].get("driver")
            detail = next((d for d in r["details"] if d.startswith(o)), "")
            detail = detail[len(o) + 2:].splitlines()[0][:180] if detail else ""
            out.append(f"  {r['case']:>14} {what:<12} {detail}")
        if len(rs) > 60:
            out.append(f"  ... {len(rs) - 60} more (see --json)")
    if direction == "guest" and summary.get("disrupted"):
        out.append(f"guest / honest guest disrupted: {len(summary['disrupted'])} take(s)")
        for v in summary["disrupted"][:40]:
            cases = ",".join(v["cases"][:4])
            out.append(f"  take {v['k']:>5} during case(s) {cases or '-'}"
                       f"{' (after a backend crash)' if v['after_crash'] else ''}: "
                       f"{'; '.join(v['why'])[:160]}")
    return "\n".join(out)
