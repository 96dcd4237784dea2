"""One card connection per process and vsnd device, shared by its PCMs.

PulseAudio opens a card's playback and capture in one process: both PCMs use
one ``Card`` (one handshake, one event channel).  Another process gets
``DeviceBusy`` (-EBUSY): the backend serves one frontend per device.  The
claim is an ``flock`` on a lock file, so it ends when the owner closes the
card or dies, whatever way it dies.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import DeviceBusy, PvSndError
from .frontend import Card
from .log import get_logger
from .transport import open_transport
from .transport.base import Transport

if TYPE_CHECKING:  # the glue's options; this module only reads their fields
    from .glue.options import PluginOptions

logger = get_logger(__name__)

_pool_lock = threading.Lock()
_entries: dict[tuple[object, ...], _Entry] = {}


class _Entry:
    def __init__(self, key: tuple[object, ...], card: Card, transport: Transport,
                 lock_fd: int) -> None:
        self.key = key
        self.card = card
        self.transport = transport
        self.lock_fd = lock_fd
        self.lock = threading.RLock()  # serialises callbacks
        self.streams: set[tuple[int, int]] = set()


class CardLease:
    """A PCM's share of a card: the card, the lock every callback holds, and
    the claim on one of its streams.  ``release()`` exactly once."""

    def __init__(self, entry: _Entry, stream: tuple[int, int]) -> None:
        self._entry = entry
        self.card = entry.card
        self.lock = entry.lock
        self.stream_key = stream
        self._released = False

    def release(self) -> None:
        with _pool_lock:
            if self._released:
                return
            self._released = True
            e = self._entry
            e.streams.discard(self.stream_key)
            if e.streams:
                return
            del _entries[e.key]
        with e.lock:
            _disconnect(e)


def _disconnect(e: _Entry) -> None:
    try:
        e.card.close()
    finally:
        _close_quietly(e.transport)
        os.close(e.lock_fd)


def _close_quietly(transport: Transport) -> None:
    try:
        transport.close()
    except PvSndError as exc:
        logger.warning("closing transport: %s", exc)


def lock_path(opts: PluginOptions) -> str:
    if opts.transport == "sim":
        assert opts.sim_dir is not None
        return os.path.join(opts.sim_dir, f"dom{opts.domid}", f"vsnd{opts.card}.lock")
    # /run/lock is the FHS place; a minimal guest may lack it (every process
    # on the machine falls back the same way, so they still agree).
    base = "/run/lock" if os.path.isdir("/run/lock") else "/tmp"
    return os.path.join(base, f"pvplug-vsnd{opts.card}.lock")


def _claim(path: str, card: int) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise PvSndError(f"cannot open the lock file {path}: {exc.strerror}",
                         code=exc.errno) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise DeviceBusy(f"vsnd card {card} is in use by process {holder} "
                             f"(lock {path})") from None
        raise PvSndError(f"cannot lock {path}: {exc.strerror}", code=exc.errno) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


#: Opens the transport a new card connection uses.
TransportFactory = Callable[["PluginOptions"], Transport]


def _open_transport(opts: PluginOptions) -> Transport:
    return open_transport(opts.transport, sim_dir=opts.sim_dir, domid=opts.domid)


def acquire(opts: PluginOptions, stream: tuple[int, int] | None = None,
            capture: bool = False, *,
            transport_factory: TransportFactory | None = None) -> CardLease:
    """Share (or connect) the card ``opts`` names and claim one stream:
    ``stream`` = (pcm, index), or the first of direction ``capture`` in
    ``opts.device``.  ``transport_factory`` opens the transport when the card
    is not connected yet (default: ``open_transport`` as ``opts`` says; the
    in-process tests pass a memory transport); ``opts`` still chooses the
    pool entry and the lock file.  Raises DeviceBusy, ConfigError,
    BackendError, XenError."""
    key = (opts.transport, opts.sim_dir, opts.domid, opts.card)
    with _pool_lock:
        entry = _entries.get(key)
        fresh = entry is None
        if entry is None:
            entry = _connect(key, opts, transport_factory or _open_transport)
        try:
            if stream is None:
                stream = _pick_stream(entry.card, opts, capture)
            if stream in entry.streams:
                raise DeviceBusy(f"vsnd card {opts.card} stream {stream[0]}/{stream[1]} is "
                                 "already open in this process")
        except BaseException:
            if fresh:
                _disconnect(entry)
            raise
        entry.streams.add(stream)
        entry.card.stream(*stream).claim()
        _entries[key] = entry
        return CardLease(entry, stream)


def _connect(key: tuple[object, ...], opts: PluginOptions,
             transport_factory: TransportFactory) -> _Entry:
    if opts.transport == "sim":
        domain_dir = os.path.dirname(lock_path(opts))
        if not os.path.isdir(domain_dir):
            raise PvSndError(f"no simulated hypervisor at {opts.sim_dir} for domain "
                             f"{opts.domid} ({domain_dir} missing; is `pvplug sim` running?)",
                             code=errno.ENOENT)
    lock_fd = _claim(lock_path(opts), opts.card)
    transport = None
    try:
        transport = transport_factory(opts)
        card = Card.open(transport, opts.card, timeout=opts.timeout)
    except BaseException:
        if transport is not None:
            _close_quietly(transport)
        os.close(lock_fd)
        raise
    entry = _Entry(key, card, transport, lock_fd)
    if opts.backend_domid is not None and card.be_domid != opts.backend_domid:
        _disconnect(entry)
        raise PvSndError(f"vsnd card {opts.card} is served by domain {card.be_domid}, "
                         f"not backend_domid {opts.backend_domid}", code=errno.ENODEV)
    return entry


def _pick_stream(card: Card, opts: PluginOptions, capture: bool) -> tuple[int, int]:
    direction = "capture" if capture else "playback"
    candidates = sorted(k for k, st in card.streams.items()
                        if k[0] == opts.device and st.config.is_capture == capture
                        and (opts.stream is None or k[1] == opts.stream))
    if not candidates:
        which = f"stream {opts.stream}" if opts.stream is not None else f"{direction} stream"
        raise PvSndError(f"vsnd card {opts.card} pcm {opts.device} has no {which} "
                         f"for {direction}", code=errno.ENOENT)
    return candidates[0]
