"""Ring index access on real shared memory, through the compiled helper.

The protocol layer's rings take an ``IndexOps``; this is the one that does
the loads, stores and barriers in C (docs/protocol.md section 5.5: Python
cannot order memory accesses).  Slot copies stay in Python.

Rule: only the transports whose pages another process (or domain) maps
import this module, from their ``index_ops`` (``sim``, ``xen``); it loads
the compiled ``_native`` at import.
"""

from __future__ import annotations

from .._native import ffi, lib


class NativeIndexOps:
    """``IndexOps`` over a writable buffer (an mmap or a mapped grant)."""

    __slots__ = ("_base", "_keep")

    def __init__(self, buf: memoryview) -> None:
        # Pin the exporter (the mmap, or the cffi buffer of a mapping), not the
        # memoryview: a memoryview caught in a reference cycle together with a
        # from_buffer of it was freed twice by the GC (a segfault, seen with
        # CPython 3.11 when a Card and its Streams were collected).
        owner = buf.obj if isinstance(buf, memoryview) and buf.obj is not None else buf
        if memoryview(owner).nbytes != memoryview(buf).nbytes:
            owner = buf  # a slice: fall back to the view itself
        self._keep = owner
        self._base = ffi.from_buffer(owner, require_writable=True)

    def load(self, off: int) -> int:
        return int(lib.pvplug_load_u32(self._base, off))

    def store(self, off: int, value: int) -> None:
        lib.pvplug_store_u32(self._base, off, value & 0xFFFFFFFF)

    def mb(self) -> None:
        lib.pvplug_mb()

    def rmb(self) -> None:
        lib.pvplug_rmb()

    def wmb(self) -> None:
        lib.pvplug_wmb()
