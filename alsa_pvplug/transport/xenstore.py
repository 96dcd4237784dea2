"""XenStore over the real libxenstore (``xs_*`` through ``alsa_pvplug._native``).

Rule: each method is one libxenstore call, named after it; a NULL/false
result becomes :class:`~alsa_pvplug.errors.XenError` carrying the errno and
the C function's name.  The only translations are the ones the interface
documents: ENOENT from read/directory -> None, from rm -> success, and EAGAIN
from transaction_end -> False.

The same unmodified library talks to real Xen (``/dev/xen/xenbus`` or the
xenstored socket) or to :class:`alsa_pvplug.sim.xenstored.XenstoredServer`:
libxenstore connects to ``$XENSTORED_PATH`` when it is set (xs.c
``xs_domain_dev()`` / ``xenstore_daemon_path()``).

Threads and fork: one handle may be shared between threads (libxenstore
serialises requests with its own mutex).  ``xs_watch`` starts a reader thread
inside libxenstore; after ``fork()`` the child must not use the parent's
handle (the thread is gone), it should open its own.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import XenError
from ..log import get_logger
from .base import XenStore

logger = get_logger(__name__)

_LETTER_TO_BITS = {"n": 0, "r": 1, "w": 2, "b": 3}  # XS_PERM_READ = 1, XS_PERM_WRITE = 2
_BITS_TO_LETTER = {bits: letter for letter, bits in _LETTER_TO_BITS.items()}
# xs_open() reads XENSTORED_PATH from the process environment; two threads
# opening different simulated sockets at once must not interleave.
_ENV_LOCK = threading.Lock()


def _native() -> tuple[Any, Any]:
    from .._native import ffi, lib  # built by pvplug_build.py
    return ffi, lib


def _cstr(func: str, text: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    if b"\0" in data:
        raise XenError(func, errno.EINVAL, f"NUL byte in {text!r}")
    return data


class LibXenStore(XenStore):
    """One libxenstore connection (``struct xs_handle``).

    Use :meth:`open` to create one.
    """

    def __init__(self, handle: Any, ffi: Any, lib: Any) -> None:
        self._h = handle
        self._ffi = ffi
        self._lib = lib

    @classmethod
    def open(cls, socket_path: str | None = None) -> LibXenStore:
        """Connect to xenstored.

        Parameters
        ----------
        socket_path
            A (simulated) xenstored socket, or None for real Xen
            (``xs_open(0)``: the daemon socket, else the xenbus device).

        Raises
        ------
        XenError
            ``xs_open`` failed (ENOENT/ECONNREFUSED: nothing there, EACCES).
        """
        ffi, lib = _native()
        if socket_path is None:
            handle = lib.xs_open(0)
        else:
            with _ENV_LOCK:
                old = os.environ.get("XENSTORED_PATH")
                os.environ["XENSTORED_PATH"] = socket_path  # putenv: libc sees it
                try:
                    handle = lib.xs_open(lib.XS_OPEN_SOCKETONLY)
                finally:
                    if old is None:
                        del os.environ["XENSTORED_PATH"]
                    else:
                        os.environ["XENSTORED_PATH"] = old
        if handle == ffi.NULL:
            raise XenError("xs_open", ffi.errno or errno.EIO, socket_path or "")
        return cls(handle, ffi, lib)

    # -- helpers -----------------------------------------------------------

    def _handle(self, func: str) -> Any:
        if self._h is None:
            raise XenError(func, errno.EBADF, "handle closed")
        return self._h

    def _fail(self, func: str, path: str = "") -> XenError:
        return XenError(func, self._ffi.errno or errno.EIO, path)

    def _take_string(self, ptr: Any, length: int) -> bytes:
        try:
            return bytes(self._ffi.buffer(ptr, length))
        finally:
            self._lib.free(ptr)

    def _take_strings(self, ptr: Any, count: int) -> list[str]:
        """A char ** from xs_directory/xs_check_watch: one malloc block."""
        try:
            return [self._ffi.string(ptr[i]).decode("utf-8", "surrogateescape")
                    for i in range(count)]
        finally:
            self._lib.free(ptr)

    # -- XenStore ----------------------------------------------------------

    def read(self, path: str, tx: int = 0) -> str | None:
        h = self._handle("xs_read")
        length = self._ffi.new("unsigned int *")
        ptr = self._lib.xs_read(h, tx, _cstr("xs_read", path), length)
        if ptr == self._ffi.NULL:
            if self._ffi.errno == errno.ENOENT:
                return None
            raise self._fail("xs_read", path)
        return self._take_string(ptr, length[0]).decode("utf-8", "surrogateescape")

    def write(self, path: str, value: str, tx: int = 0) -> None:
        h = self._handle("xs_write")
        data = value.encode("utf-8", "surrogateescape")
        if not self._lib.xs_write(h, tx, _cstr("xs_write", path), data, len(data)):
            raise self._fail("xs_write", path)

    def mkdir(self, path: str, tx: int = 0) -> None:
        if not self._lib.xs_mkdir(self._handle("xs_mkdir"), tx, _cstr("xs_mkdir", path)):
            raise self._fail("xs_mkdir", path)

    def rm(self, path: str, tx: int = 0) -> None:
        if not self._lib.xs_rm(self._handle("xs_rm"), tx, _cstr("xs_rm", path)):
            if self._ffi.errno != errno.ENOENT:
                raise self._fail("xs_rm", path)

    def directory(self, path: str, tx: int = 0) -> list[str] | None:
        h = self._handle("xs_directory")
        num = self._ffi.new("unsigned int *")
        ptr = self._lib.xs_directory(h, tx, _cstr("xs_directory", path), num)
        if ptr == self._ffi.NULL:
            if self._ffi.errno == errno.ENOENT:
                return None
            raise self._fail("xs_directory", path)
        return self._take_strings(ptr, num[0])

    def get_permissions(self, path: str, tx: int = 0) -> list[tuple[int, str]]:
        h = self._handle("xs_get_permissions")
        num = self._ffi.new("unsigned int *")
        ptr = self._lib.xs_get_permissions(h, tx, _cstr("xs_get_permissions", path), num)
        if ptr == self._ffi.NULL:
            raise self._fail("xs_get_permissions", path)
        try:
            return [(int(ptr[i].id), _BITS_TO_LETTER[ptr[i].perms & 3]) for i in range(num[0])]
        finally:
            self._lib.free(ptr)

    def set_permissions(self, path: str, perms: Sequence[tuple[int, str]], tx: int = 0) -> None:
        h = self._handle("xs_set_permissions")
        if not perms:
            raise XenError("xs_set_permissions", errno.EINVAL, "empty permission list")
        array = self._ffi.new("struct xs_permissions[]", len(perms))
        for i, (domid, letter) in enumerate(perms):
            if letter not in _LETTER_TO_BITS or not 0 <= domid <= 0xFFFF:
                raise XenError("xs_set_permissions", errno.EINVAL, f"bad entry {(domid, letter)!r}")
            array[i].id = domid
            array[i].perms = _LETTER_TO_BITS[letter]
        if not self._lib.xs_set_permissions(h, tx, _cstr("xs_set_permissions", path),
                                            array, len(perms)):
            raise self._fail("xs_set_permissions", path)

    def transaction_start(self) -> int:
        tx = self._lib.xs_transaction_start(self._handle("xs_transaction_start"))
        if tx == 0:  # XBT_NULL
            raise self._fail("xs_transaction_start")
        return int(tx)

    def transaction_end(self, tx: int, abort: bool = False) -> bool:
        if self._lib.xs_transaction_end(self._handle("xs_transaction_end"), tx, abort):
            return True
        if self._ffi.errno == errno.EAGAIN and not abort:
            return False
        raise self._fail("xs_transaction_end")

    def watch(self, path: str, token: str) -> None:
        if not self._lib.xs_watch(self._handle("xs_watch"), _cstr("xs_watch", path),
                                  _cstr("xs_watch", token)):
            raise self._fail("xs_watch", path)

    def unwatch(self, path: str, token: str) -> None:
        if not self._lib.xs_unwatch(self._handle("xs_unwatch"), _cstr("xs_unwatch", path),
                                    _cstr("xs_unwatch", token)):
            raise self._fail("xs_unwatch", path)

    def fileno(self) -> int:
        fd = self._lib.xs_fileno(self._handle("xs_fileno"))
        if fd < 0:
            raise self._fail("xs_fileno")
        return int(fd)

    def check_watch(self) -> list[tuple[str, str]]:
        """All queued watch events; never blocks.

        libxenstore's reader thread queues events; ``xs_check_watch`` hands
        out one per call and reports EAGAIN when the queue is empty (and
        drains the :meth:`fileno` pipe byte with the last one).
        """
        h = self._handle("xs_check_watch")
        events: list[tuple[str, str]] = []
        while True:
            ptr = self._lib.xs_check_watch(h)
            if ptr == self._ffi.NULL:
                code = self._ffi.errno
                if code == errno.EAGAIN or events:
                    return events  # an error surfaces on the next call
                # EINVAL with an empty queue: the reader thread lost the connection.
                raise XenError("xs_check_watch", code or errno.EIO, "connection lost?")
            path, token = self._take_strings(ptr, 2)
            events.append((path, token))

    def get_domain_path(self, domid: int) -> str:
        ptr = self._lib.xs_get_domain_path(self._handle("xs_get_domain_path"), domid)
        if ptr == self._ffi.NULL:
            raise self._fail("xs_get_domain_path", str(domid))
        try:
            return str(self._ffi.string(ptr).decode("utf-8", "surrogateescape"))
        finally:
            self._lib.free(ptr)

    def close(self) -> None:
        """xs_close (idempotent); joins libxenstore's reader thread if any."""
        handle, self._h = self._h, None
        if handle is not None:
            self._lib.xs_close(handle)

    def __enter__(self) -> LibXenStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
