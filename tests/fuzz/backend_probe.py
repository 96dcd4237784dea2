"""``pvplug backend`` with a memory probe, for the RSS investigation.

    python -m tests.fuzz.backend_probe REPORT.jsonl [--tracemalloc] -- BACKEND ARGS...

Runs exactly what ``pvplug backend BACKEND ARGS`` runs; on SIGUSR1 it appends
one JSON line to REPORT.jsonl: VmRSS and its parts, glibc's ``mallinfo2``
(heap held from the system, in use, free), Python's allocated blocks, live
objects by type (the top 15), live grant mappings, and with
``--tracemalloc`` the top allocation sites.  The campaign uses it with
``--backend-probe`` (``python -m tests.fuzz ... --backend-probe``).
"""

from __future__ import annotations

import ctypes
import gc
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo() -> dict[str, int]:
    libc = ctypes.CDLL(None)
    try:
        f = libc.mallinfo2
    except AttributeError:
        return {}
    f.restype = _Mallinfo2
    m = f()
    return {"heap_from_system": m.arena, "mmapped": m.hblkhd, "in_use": m.uordblks,
            "free_in_heap": m.fordblks, "top_releasable": m.keepcost}


def snapshot(trace: bool) -> dict[str, object]:
    from tests.fuzz.world import mem_kb

    out: dict[str, object] = {"t": time.monotonic(), "mem": mem_kb(int(__import__("os").getpid())),
                              "malloc": _mallinfo(), "py_blocks": sys.getallocatedblocks()}
    gc.collect()
    types = Counter(type(o).__name__ for o in gc.get_objects())
    out["objects"] = dict(types.most_common(15))
    try:
        from alsa_pvplug.transport import sim as simt

        out["mappers"] = [len(o._mapped) for o in gc.get_objects()
                          if isinstance(o, simt.SimGrantMapper)]
    except Exception:  # noqa: BLE001
        pass
    if trace:
        import tracemalloc

        snap = tracemalloc.take_snapshot()
        out["traced"] = tracemalloc.get_traced_memory()
        out["top"] = [f"{s.traceback[0].filename}:{s.traceback[0].lineno} {s.size} {s.count}"
                      for s in snap.statistics("lineno")[:12]]
    return out


def main() -> int:
    args = sys.argv[1:]
    report = Path(args.pop(0))
    trace = False
    if args and args[0] == "--tracemalloc":
        trace = True
        args.pop(0)
        import tracemalloc

        tracemalloc.start(1)
    if args and args[0] == "--":
        args.pop(0)

    def on_usr1(*_: object) -> None:
        with open(report, "a") as f:
            f.write(json.dumps(snapshot(trace), default=repr) + "\n")

    signal.signal(signal.SIGUSR1, on_usr1)
    from alsa_pvplug.cli import main as cli_main

    return cli_main(["--log-level", "warning", "backend", *args])


if __name__ == "__main__":
    sys.exit(main())
