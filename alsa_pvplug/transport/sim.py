"""Client side of the simulated hypervisor (:mod:`alsa_pvplug.sim.hypervisor`).

Rule 1: each class stands for one libxen* handle and each method for one C
function; failures raise :class:`~alsa_pvplug.errors.XenError` named after
that function, with the errno the simulator (or the socket) gave.

Rule 2: no call waits on the simulator for longer than :data:`TIMEOUT`
seconds; a dead or wedged simulator gives ``ETIMEDOUT``/``ECONNRESET``, never
a hang.  After such an error the handle's connection is dropped, because a
late reply would otherwise be read as the answer to the next request.

Rule 3: replies are untrusted input too: a malformed one is ``EPROTO``.

Rule 4: event delivery does not go through the simulator.  ``notify``,
``pending`` and ``unmask`` work on shared memory and the peers' wake pipes
(:class:`SimEventChannel`); only binding, unbinding and learning a port's
new channel after it connected or closed are requests.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import select
import socket
import threading
from collections.abc import Sequence
from typing import Any

from .._native import ffi, lib
from ..errors import XenError
from ..log import get_logger
from ..protocol.ring import IndexOps
from .base import PAGE_SIZE, EventChannel, GrantMapper, GrantSharer, SharedPages, Transport

logger = get_logger(__name__)

#: Seconds any request may wait for the simulator's reply.
TIMEOUT = 5.0
#: Matches the server's bound on one message.
MAX_MESSAGE = 128 * 1024
#: The server's bound on pages per share/map call.
MAX_PAGES_PER_CALL = 4096

_PENDING = lib.PVPLUG_EVTCHN_PENDING
_MASKED = lib.PVPLUG_EVTCHN_MASKED
_SYNC = lib.PVPLUG_EVTCHN_SYNC
#: A channel as the simulator hands it to one end: the page and four pipe ends.
_CHANNEL_FDS = 5


def hypervisor_socket(sim_dir: str | os.PathLike[str], domid: int) -> str:
    """Path of domain ``domid``'s hypervisor socket under ``sim_dir``."""
    return os.path.join(sim_dir, f"dom{domid}", "hypervisor")


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class _Control:
    """One request/reply connection to the simulator (one request at a time)."""

    def __init__(self, path: str | os.PathLike[str], open_func: str) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(self.path)
        except TimeoutError:
            sock.close()
            raise XenError(open_func, errno.ETIMEDOUT, f"connecting to {self.path}") from None
        except OSError as exc:
            sock.close()
            raise XenError(open_func, exc.errno or errno.EIO,
                           f"simulated hypervisor at {self.path}") from None
        self._sock: socket.socket | None = sock

    @property
    def closed(self) -> bool:
        return self._sock is None

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _lost(self, func: str, code: int, detail: str) -> XenError:
        # Called with the lock held: drop the connection, it is out of sync.
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return XenError(func, code, detail)

    def call(self, func: str, req: dict[str, Any], fds: Sequence[int] = (),
             max_fds: int = 0) -> tuple[dict[str, Any], list[int]]:
        """Send ``req`` (+ ``fds``), return (reply, received fds); raise XenError."""
        data = json.dumps(req, separators=(",", ":")).encode()
        with self._lock:
            sock = self._sock
            if sock is None:
                raise XenError(func, errno.EBADF, "handle is closed")
            try:
                if fds:
                    socket.send_fds(sock, [data], list(fds))
                else:
                    sock.send(data)
                msg, rfds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, max(max_fds, 1),
                                                      socket.MSG_CMSG_CLOEXEC)
            except TimeoutError:
                raise self._lost(func, errno.ETIMEDOUT,
                                 f"no reply from the simulated hypervisor within {TIMEOUT:g} s"
                                 ) from None
            except OSError as exc:
                raise self._lost(func, exc.errno or errno.EIO,
                                 "connection to the simulated hypervisor failed") from None
            if not msg:
                _close_fds(rfds)
                raise self._lost(func, errno.ECONNRESET,
                                 "simulated hypervisor closed the connection")
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                _close_fds(rfds)
                raise self._lost(func, errno.EPROTO, "oversized reply")
        try:
            reply = json.loads(msg)
        except (ValueError, UnicodeDecodeError):
            reply = None
        if not isinstance(reply, dict):
            _close_fds(rfds)
            raise XenError(func, errno.EPROTO, "malformed reply")
        if "errno" in reply:
            _close_fds(rfds)
            code = reply["errno"]
            if type(code) is not int or not 0 < code < 4096:
                raise XenError(func, errno.EPROTO, f"bad errno in reply: {code!r}")
            detail = reply.get("detail")
            raise XenError(func, code, detail if isinstance(detail, str) else "")
        if reply.get("ok") is not True or len(rfds) > max_fds:
            _close_fds(rfds)
            raise XenError(func, errno.EPROTO, "malformed reply")
        return reply, rfds


def _map_fd(func: str, fd: int, pages: int, what: str) -> Any:
    """Map ``pages`` shared pages of ``fd``; unmapped when the result goes."""
    if os.fstat(fd).st_size < pages * PAGE_SIZE:
        raise XenError(func, errno.EPROTO, f"{what} is too small")
    base = lib.pvplug_map_fd(fd, pages, 1)
    if base == ffi.NULL:
        raise XenError(func, ffi.errno or errno.ENOMEM, f"mapping the {what}")
    return ffi.gc(base, lambda p, n=pages: lib.pvplug_unmap_pages(p, n))


def _check_domid(func: str, domid: int) -> None:
    if type(domid) is not int or not 0 <= domid < 0x7FF0:
        raise XenError(func, errno.EINVAL, f"bad domid {domid!r}")


class SimSharedPages(SharedPages):
    """Pages this process shares: a memfd mapped with Python's mmap."""

    def __init__(self, refs: list[int], mm: mmap.mmap) -> None:
        self.refs = refs
        self._mmap: mmap.mmap | None = mm
        self.buf = memoryview(mm)


class SimMappedPages(SharedPages):
    """Pages granted by another domain, mapped into one contiguous range."""

    def __init__(self, refs: list[int], base: Any, writable: bool) -> None:
        self.refs = refs
        self._base: Any = base
        self.writable = writable
        # ffi.buffer keeps ``base`` (an ffi.gc pointer) alive: the pages stay
        # mapped while any view of them exists.
        buf = memoryview(ffi.buffer(base, len(refs) * PAGE_SIZE))
        # A read-only view so Python code gets TypeError instead of SIGSEGV.
        self.buf = buf if writable else buf.toreadonly()


class SimGrantSharer(GrantSharer):
    """xengntshr_* against the simulator: pages are memfds handed over by SCM_RIGHTS.

    Parameters
    ----------
    path
        The domain's hypervisor socket (``sim_dir/dom<N>/hypervisor``).

    Raises
    ------
    XenError
        ``xengntshr_open`` with ENOENT/ECONNREFUSED when no simulator listens.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._ctl = _Control(path, "xengntshr_open")
        self._shared: list[SimSharedPages] = []

    def share_pages(self, domid: int, count: int, writable: bool = True) -> SimSharedPages:
        func = "xengntshr_share_pages"
        _check_domid(func, domid)
        if type(count) is not int or not 1 <= count <= MAX_PAGES_PER_CALL:
            raise XenError(func, errno.EINVAL, f"bad page count {count!r}")
        size = count * PAGE_SIZE
        fd = os.memfd_create("pvplug-grant", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            # Map before handing it over: for a read-only grant the simulator
            # seals the memfd against new writable mappings.
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                reply, _ = self._ctl.call(func, {"op": "share", "domid": domid, "count": count,
                                                 "writable": bool(writable)}, fds=[fd])
                refs = reply.get("refs")
                if (not isinstance(refs, list) or len(refs) != count
                        or any(type(r) is not int for r in refs)):
                    raise XenError(func, errno.EPROTO, "malformed refs in reply")
            except BaseException:
                mm.close()
                raise
        finally:
            os.close(fd)
        pages = SimSharedPages(refs, mm)
        self._shared.append(pages)
        return pages

    def unshare(self, pages: SharedPages) -> None:
        if not isinstance(pages, SimSharedPages) or pages._mmap is None:
            return
        mm, pages._mmap = pages._mmap, None
        if pages in self._shared:
            self._shared.remove(pages)
        if not self._ctl.closed:
            self._ctl.call("xengntshr_unshare", {"op": "unshare", "refs": pages.refs})
        # The grant is revoked; the memory itself goes with the last Python
        # reference.  Closing the mmap here would leave views (a ring's index
        # accessor, say) pointing at unmapped memory: a crash, not an error.
        del mm

    def close(self) -> None:
        """Close the handle; the simulator revokes whatever is still shared."""
        self._ctl.close()  # first, so unshare() below skips the round trips
        for pages in list(self._shared):
            self.unshare(pages)


class SimGrantMapper(GrantMapper):
    """xengnttab_* against the simulator: fds from SCM_RIGHTS, mapped contiguously."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._ctl = _Control(path, "xengnttab_open")
        self._mapped: list[SimMappedPages] = []

    def map_domain_grant_refs(self, domid: int, refs: Sequence[int],
                              writable: bool = True) -> SimMappedPages:
        func = "xengnttab_map_domain_grant_refs"
        _check_domid(func, domid)
        refs = list(refs)
        if (not 1 <= len(refs) <= MAX_PAGES_PER_CALL
                or any(type(r) is not int or not 0 <= r <= 0xFFFFFFFF for r in refs)):
            raise XenError(func, errno.EINVAL, "bad refs")
        reply, fds = self._ctl.call(func, {"op": "map", "domid": domid, "refs": refs,
                                           "writable": bool(writable)}, max_fds=253)
        try:
            pages = reply.get("pages")
            if (not isinstance(pages, list) or len(pages) != len(refs)
                    or not all(isinstance(p, list) and len(p) == 2
                               and type(p[0]) is int and 0 <= p[0] < len(fds)
                               and type(p[1]) is int and p[1] >= 0 and p[1] % PAGE_SIZE == 0
                               for p in pages)):
                raise XenError(func, errno.EPROTO, "malformed pages in reply")
            base = lib.pvplug_reserve_pages(len(refs))
            if base == ffi.NULL:
                raise XenError(func, ffi.errno or errno.ENOMEM, "reserving address space")
            for i, (fd_index, offset) in enumerate(pages):
                if lib.pvplug_map_page_at(base, i, fds[fd_index], offset, int(bool(writable))):
                    code = ffi.errno or errno.EIO
                    lib.pvplug_unmap_pages(base, len(refs))
                    raise XenError(func, code, f"mapping ref {refs[i]}")
        finally:
            _close_fds(fds)  # the mappings hold their own references
        # Unmapped when the last view of it dies (see unmap).
        n_pages = len(refs)
        base = ffi.gc(base, lambda p: lib.pvplug_unmap_pages(p, n_pages))
        mapped = SimMappedPages(refs, base, bool(writable))
        self._mapped.append(mapped)
        return mapped

    def unmap(self, pages: SharedPages) -> None:
        """Drop the mapping (idempotent).  The pages are unmapped once no view
        of ``pages.buf`` is left, so a stale view reads old data instead of
        crashing the process; the grant side no longer sees it as ours."""
        if not isinstance(pages, SimMappedPages) or pages._base is None:
            return
        pages._base = None
        if pages in self._mapped:
            self._mapped.remove(pages)

    def close(self) -> None:
        self._ctl.close()
        for pages in list(self._mapped):
            try:
                self.unmap(pages)
            except XenError as exc:
                logger.warning("closing grant mapper: %s", exc)


class _Link:
    """One connected channel as one of its ends holds it.  Never changed
    after creation: :meth:`SimEventChannel.notify` reads it without the
    lock, and a link in use keeps its page mapped and its fds open."""

    __slots__ = ("channel", "own", "peer", "wake_in", "wake_out", "_fds", "_page")

    def __init__(self, channel: int, end: int, page: Any, pipes: Sequence[int]) -> None:
        words = ffi.cast("uint32_t *", page)
        self.channel = channel
        self._page = page  # the ffi.gc pointer: unmapped when the last user goes
        self.own = words + end
        self.peer = words + (1 - end)
        # Our wake pipe's read end (and a write end we hold only so that it
        # never reads EOF); the peer's write end (and a read end we hold only
        # so that writing never raises SIGPIPE).
        self.wake_in, _, self.wake_out, _ = pipes
        self._fds = tuple(pipes)

    def __del__(self) -> None:
        _close_fds(self._fds)


class _PortState:
    """A port this handle bound.  ``local`` holds its state bits while it is
    unbound, so masking and a latched notify survive a change of peer."""

    __slots__ = ("port", "epoch", "epoch_word", "link", "local", "word")

    def __init__(self, port: int, table: Any) -> None:
        self.port = port
        self.epoch = 0
        self.epoch_word = table + port
        self.link: _Link | None = None
        self.local = ffi.new("uint32_t *")
        self.word = self.local  # the state word in use: link.own or local


def _claimable(state: int) -> bool:
    return bool(state & (_PENDING | _MASKED) == _PENDING)


class SimEventChannel(EventChannel):
    """xenevtchn_* against the simulator, delivering without it.

    Binding goes through the simulator; delivery does not (the design and
    why it is per channel: :mod:`alsa_pvplug.sim.hypervisor`).  Each
    connected channel has a page only its two ends map, with one state word
    per end (PENDING, MASKED), and a wake pipe per end that only the peer
    writes.  ``notify`` sets the peer's PENDING and, if that made it newly
    pending and unmasked, writes one byte to the peer's pipe: one atomic op
    and at most one syscall.  ``pending`` scans this handle's words in C,
    masking and reporting a fired port, and drains the wake-ups only when
    nothing is left to report; ``unmask`` clears MASKED and, when a notify
    was latched meanwhile, wakes this handle through a private eventfd.

    :meth:`fileno` is an epoll set of this handle's wake pipes, that eventfd
    and the simulator's push socket.  The simulator keeps an epoch per port
    in a table only it writes (slot 0 counts changes): it bumps a port's
    epoch when its channel connects or closes, then pushes a byte.
    ``notify`` compares its port's epoch (one load) and ``pending`` the
    generation; only when one moved do they ask the simulator
    (``evtchn_resolve``) for the port's new channel, or learn that it is
    unbound (the notify is then dropped, as Xen does).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        func = "xenevtchn_open"
        self._ctl = _Control(path, func)
        self._lock = threading.Lock()
        # Binds and unbinds one at a time, without _lock: the simulator's
        # round trip must not hold up pending() and unmask() in another thread
        # (a backend's audio loop), and a port freed by an unbind must leave
        # _ports before a bind can be given its number again.
        self._binding = threading.Lock()
        self._ports: dict[int, _PortState] = {}
        self._arrays: tuple[Any, ...] = ()
        fds: list[int] = []
        try:
            reply, fds = self._ctl.call(func, {"op": "evtchn_open"}, max_fds=2)
            pages = reply.get("table_pages")
            if len(fds) != 2 or type(pages) is not int or not 1 <= pages <= 64:
                raise XenError(func, errno.EPROTO, "malformed evtchn_open reply")
            self._push = socket.socket(fileno=fds.pop(0))
            self._table_base = _map_fd(func, fds[0], pages, "epoch table")
            self._table = ffi.cast("uint32_t *", self._table_base)
            self._max_port = pages * PAGE_SIZE // 4 - 1
            self._self_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._epoll = select.epoll()
            self._epoll.register(self._push.fileno(), select.EPOLLIN)
            self._epoll.register(self._self_fd, select.EPOLLIN)
        except BaseException:
            self._ctl.close()
            self._teardown()
            raise
        finally:
            _close_fds(fds)
        h = ffi.new("struct pvplug_evtchn *")
        h.epfd = self._epoll.fileno()
        h.push_fd = self._push.fileno()
        h.self_fd = self._self_fd
        h.table = self._table
        h.gen = lib.pvplug_evtchn_epoch(self._table, 0)
        self._h: Any = h

    # -- lookups -------------------------------------------------------------

    def _port(self, func: str, port: int) -> _PortState | None:
        """This handle's state for ``port``, or None if it did not bind it."""
        if self._h is None:
            raise XenError(func, errno.EBADF, "handle is closed")
        if type(port) is not int or not 0 <= port <= 0xFFFFFFFF:
            raise XenError(func, errno.EINVAL, f"bad port {port!r}")
        return self._ports.get(port)

    def _bound(self, func: str, port: int) -> _PortState:
        st = self._port(func, port)
        if st is None:
            # Linux evtchn: a port not bound by this handle is ENOTCONN.
            raise XenError(func, errno.ENOTCONN, f"port {port} not bound by this handle")
        return st

    def fileno(self) -> int:
        if self._h is None:
            raise XenError("xenevtchn_fd", errno.EBADF, "handle is closed")
        return self._epoll.fileno()

    # -- binding (through the simulator) -------------------------------------

    def bind_unbound_port(self, remote_domid: int) -> int:
        func = "xenevtchn_bind_unbound_port"
        _check_domid(func, remote_domid)
        return self._bind(func, {"op": "bind_unbound_port", "remote_domid": remote_domid})

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        func = "xenevtchn_bind_interdomain"
        _check_domid(func, remote_domid)
        if type(remote_port) is not int or not 0 <= remote_port <= 0xFFFFFFFF:
            raise XenError(func, errno.EINVAL, f"bad port {remote_port!r}")
        return self._bind(func, {"op": "bind_interdomain", "remote_domid": remote_domid,
                                 "remote_port": remote_port})

    def _bind(self, func: str, req: dict[str, Any]) -> int:
        with self._binding:
            if self._h is None:
                raise XenError(func, errno.EBADF, "handle is closed")
            # The new port is not in _ports yet, so no _sync can see it.
            reply, fds = self._ctl.call(func, req, max_fds=_CHANNEL_FDS)
            with self._lock:
                if self._h is None:
                    _close_fds(fds)
                    raise XenError(func, errno.EBADF, "handle closed meanwhile")
                port = reply.get("port")
                if type(port) is not int or not 0 < port <= self._max_port \
                        or port in self._ports:
                    _close_fds(fds)
                    raise XenError(func, errno.EPROTO, f"bad port in reply: {port!r}")
                st = _PortState(port, self._table)
                self._ports[port] = st
                try:
                    self._apply(func, st, reply, fds)
                finally:
                    self._rebuild()
                return port

    def unbind(self, port: int) -> None:
        func = "xenevtchn_unbind"
        with self._binding:
            self._port(func, port)
            try:
                self._ctl.call(func, {"op": "unbind", "port": port})
            finally:
                with self._lock:
                    st = self._ports.pop(port, None)
                    if st is not None:
                        self._detach(st)
                        self._rebuild()

    def _resolve(self, func: str, st: _PortState) -> None:
        """Ask the simulator what ``st`` is connected to now (lock held)."""
        try:
            reply, fds = self._ctl.call(func, {"op": "evtchn_resolve", "port": st.port},
                                        max_fds=_CHANNEL_FDS)
        except XenError as exc:
            if exc.errno != errno.ENOTCONN:
                raise
            reply, fds = {"epoch": st.epoch, "state": "unbound"}, []  # closed under us
        try:
            self._apply(func, st, reply, fds)
        finally:
            self._rebuild()

    def _apply(self, func: str, st: _PortState, reply: dict[str, Any], fds: list[int]) -> None:
        """Take a resolution reply for ``st`` (owns ``fds``; lock held)."""
        try:
            epoch, state = reply.get("epoch"), reply.get("state")
            if type(epoch) is not int:
                raise XenError(func, errno.EPROTO, f"bad epoch in reply: {epoch!r}")
            if state == "unbound" and not fds:
                self._detach(st)
            elif state != "connected" or reply.get("end") not in (0, 1):
                raise XenError(func, errno.EPROTO, "malformed port state in reply")
            elif reply.get("fds") is True and len(fds) == _CHANNEL_FDS:
                page = _map_fd(func, fds[0], 1, "channel page")
                link = _Link(int(reply["channel"]), reply["end"], page, fds[1:])
                os.close(fds[0])
                fds = []
                self._detach(st)
                self._attach(st, link)
            elif fds or st.link is None or st.link.channel != reply.get("channel"):
                raise XenError(func, errno.EPROTO, "channel without its page and sockets")
            st.epoch = epoch
        finally:
            _close_fds(fds)

    def _attach(self, st: _PortState, link: _Link) -> None:
        lib.pvplug_evtchn_merge(link.own, st.local[0])
        st.local[0] = 0
        st.link = link
        st.word = link.own
        self._epoll.register(link.wake_in, select.EPOLLIN)
        if _claimable(lib.pvplug_evtchn_state(link.own)):
            lib.pvplug_evtchn_wake_self(self._self_fd)

    def _detach(self, st: _PortState) -> None:
        link = st.link
        if link is None:
            return
        # The closed channel's state stays the port's: mask, latched notify.
        st.local[0] = lib.pvplug_evtchn_state(link.own) & (_PENDING | _MASKED)
        st.link = None
        st.word = st.local
        self._epoll.unregister(link.wake_in)
        if _claimable(st.local[0]):
            lib.pvplug_evtchn_wake_self(self._self_fd)

    def _rebuild(self) -> None:
        """Hand C the current ports and state words (lock held)."""
        states = list(self._ports.values())
        ports = ffi.new("uint32_t[]", [st.port for st in states] or [0])
        words = ffi.new("uint32_t *[]", [st.word for st in states] or [ffi.NULL])
        # Keep the words (links' pages, unbound ports' local words) alive
        # as long as C may read them.
        self._arrays = (ports, words, states, [st.link for st in states])
        h = self._h
        if h is not None:
            h.ports, h.words, h.count, h.next = ports, words, len(states), 0

    def _sync(self, func: str) -> None:
        """Resolve every port whose epoch moved (lock held)."""
        self._h.gen = lib.pvplug_evtchn_epoch(self._table, 0)
        for st in list(self._ports.values()):
            if lib.pvplug_evtchn_epoch(self._table, st.port) != st.epoch:
                self._resolve(func, st)

    # -- delivery (no simulator) ---------------------------------------------

    def notify(self, port: int) -> None:
        func = "xenevtchn_notify"
        st = self._ports.get(port) if type(port) is int else None
        if st is None:
            st = self._bound(func, port)  # raises the right error
        link = st.link
        if not lib.pvplug_evtchn_notify(st.epoch_word, st.epoch,
                                        link.peer if link else ffi.NULL,
                                        link.wake_out if link else -1):
            return
        with self._lock:  # the channel changed: connected, closed or replaced
            if self._bound(func, port) is not st:
                raise XenError(func, errno.ENOTCONN, f"port {port} unbound meanwhile")
            self._resolve(func, st)
            link = st.link
            if link is not None:
                lib.pvplug_evtchn_notify(st.epoch_word, st.epoch, link.peer, link.wake_out)

    def native_notify(self, port: int) -> tuple[Any, int, Any, int, Any] | None:
        st = self._ports.get(port) if type(port) is int else None
        link = st.link if st is not None else None
        if st is None or link is None:
            return None
        return st.epoch_word, st.epoch, link.peer, link.wake_out, link

    def pending(self) -> int | None:
        func = "xenevtchn_pending"
        with self._lock:
            h = self._h
            if h is None:  # (C would take None for NULL)
                raise XenError(func, errno.EBADF, "handle is closed")
            for _ in range(4):
                got = int(lib.pvplug_evtchn_pending(h))
                if got > 0:
                    return got
                if got == _SYNC:
                    self._sync(func)
                elif got < 0:
                    detail = "simulated hypervisor went away" if -got == errno.ECONNRESET else ""
                    raise XenError(func, -got, detail)
                else:
                    return None
            # Ports keep changing under us: report nothing now, come back soon.
            lib.pvplug_evtchn_wake_self(self._self_fd)
            return None

    def unmask(self, port: int) -> None:
        st = self._ports.get(port) if type(port) is int else None
        if st is None:
            self._port("xenevtchn_unmask", port)  # Linux ignores ports not ours
            return
        with self._lock:  # not while _sync moves the port's state
            lib.pvplug_evtchn_unmask(st.word, self._self_fd)

    def close(self) -> None:
        """Close the handle (idempotent); the simulator closes its ports."""
        with self._lock:
            self._ctl.close()
            if getattr(self, "_h", None) is None:
                self._teardown()
                return
            self._h = None
            ports, self._ports = self._ports, {}
            for st in ports.values():
                st.link = None  # the links close their sockets when unused
                st.word = st.local
            self._teardown()

    def _teardown(self) -> None:
        # The epoch table stays mapped until this object goes: a notify
        # racing close() may still read its port's epoch.
        self._h = None
        self._arrays = ()
        for name in ("_epoll", "_push"):
            obj = getattr(self, name, None)
            if obj is not None:
                obj.close()
                setattr(self, name, None)
        fd = getattr(self, "_self_fd", -1)
        if fd >= 0:
            os.close(fd)
            self._self_fd = -1


class SimTransport(Transport):
    """Everything one process of simulated domain ``domid`` can reach.

    Parameters
    ----------
    sim_dir
        The simulator's directory (``dom<N>/hypervisor``, ``dom<N>/xenstored``).
    domid
        Our domain.
    """

    kind = "sim"

    def __init__(self, sim_dir: str | os.PathLike[str], domid: int) -> None:
        # Imported here so the grant/evtchn classes work without the xenstore client.
        from .xenstore import LibXenStore

        self.sim_dir = os.fspath(sim_dir)
        self.domid = domid
        self.hypervisor_path = hypervisor_socket(sim_dir, domid)
        self.xenstore = LibXenStore.open(os.path.join(sim_dir, f"dom{domid}", "xenstored"))

    def open_grant_sharer(self) -> SimGrantSharer:
        return SimGrantSharer(self.hypervisor_path)

    def open_grant_mapper(self) -> SimGrantMapper:
        return SimGrantMapper(self.hypervisor_path)

    def open_event_channel(self) -> SimEventChannel:
        return SimEventChannel(self.hypervisor_path)

    def index_ops(self, buf: memoryview) -> IndexOps:
        from .native_index import NativeIndexOps

        return NativeIndexOps(buf)
