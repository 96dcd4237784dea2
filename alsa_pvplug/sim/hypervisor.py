"""The simulated hypervisor: grant tables and event channels for several
simulated domains on one machine, served over Unix sockets.

Rule 1: the listening socket a client connected to fixes its domid (one
socket per domain, ``sim_dir/dom<N>/hypervisor``); nothing a client sends
can change who it is.

Rule 2: every client is untrusted.  A malformed request gets an errno reply
(or, for a connection that breaks the framing, a closed connection); it never
raises out of a selector callback, and no callback ever blocks.

Rule 3: what a connection shared or bound lives exactly as long as the
connection.  When it closes (the process died or closed the handle) its
grants are revoked and its ports closed; mappings a peer already made stay
valid, as in Xen.

Rule 4: events are delivered without this process.  A notify is an atomic
op on memory the two ends share plus at most one write() to the peer's wake
pipe (where Xen's hypercall would set the bit).  This process binds, closes
and tells each end what its port is connected to; it never sees an event.

Wire format (``SOCK_SEQPACKET``, one request -> one reply, in order): a JSON
object ``{"op": ..., ...}`` with optional file descriptors (``SCM_RIGHTS``).
Replies are ``{"ok": true, ...}`` or ``{"errno": N, "detail": "..."}``.

========================  ==========================================  =======================
op                        request fields (+ fds)                      reply fields (+ fds)
========================  ==========================================  =======================
``share``                 ``domid``, ``count``, ``writable`` + 1 fd   ``refs``
``unshare``               ``refs``                                     -
``map``                   ``domid``, ``refs``, ``writable``            ``pages`` [[fd, off]] + fds
``evtchn_open``           -                                           ``table_pages`` + 2 fds (1)
``bind_unbound_port``     ``remote_domid``                            a port state
``bind_interdomain``      ``remote_domid``, ``remote_port``           a port state (+ 5 fds)
``evtchn_resolve``        ``port``                                    a port state (+ 5 fds)
``unbind``                ``port``                                    -
========================  ==========================================  =======================

(1) the push socket and the epoch table.

A port state is ``port``, ``epoch`` and ``state``: ``"unbound"``, or
``"connected"`` with ``channel`` (a serial, never reused), ``end`` (0 for
the port that was unbound, 1 for the one that bound to it) and ``fds``: true
the first time this end asks about this channel, with 5 fds (the channel
page, then this end's wake pipe read end and a spare write end of it, then
the peer's wake pipe write end and a spare read end of it); false after,
when the client has them.  The server keeps nothing of a channel once both
ends fetched it.

Event channels, the design.  Xen keeps per domain a pending and a mask
bitmap in shared memory and raises an upcall; Linux's /dev/xen/evtchn turns
that into "a port that fires is masked and reported once; notifies while it
is masked are latched and reported once more on unmask".  Here the bits are
per channel instead of per domain, and the wake-up is a pipe per channel end
instead of an eventfd per domain, because a page or an eventfd every peer of
a domain could write (or read) would let a hostile guest set, clear or
swallow other channels' events:

- The channel page (a sealed one-page memfd) is mapped by exactly the two
  ends: word ``end`` is that end's state (PENDING 1, MASKED 2).  A peer can
  only disturb the channel it is an end of.
- Each end's wake pipe has the peer as its only writer; the peer's write
  (and spare read) ends are open file descriptions of its own, so it cannot
  make the owner's reads block, and the owner holds a spare write end so its
  pipe never reads EOF.  A notifier writes only when the word goes from idle
  to pending and never blocks: a full pipe means the owner is awake anyway.
- Each handle has an epoch table (a sealed memfd that only this process
  writes): slot P is port P's epoch, bumped when its channel connects or
  closes; slot 0 is the handle's generation, bumped with any of them, after
  which one byte goes down the handle's push socket (dropped if it is full:
  there is one to read already).  A notifier compares its port's epoch (one
  load) and resolves again only when it moved; ``pending`` does the same
  with the generation.  A stale notifier's writes go to a channel nobody
  reads any more.

Xen's ``evtchn_close`` semantics on unbind and on a connection's death: the
peer port goes back to "unbound, remote = the closer's domain" (its epoch
moves, its handle is pushed) and keeps its mask and latched state.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import pathlib
import selectors
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._native import ffi, lib

logger = logging.getLogger(__name__)

PAGE_SIZE = 4096

#: Xen reserves the low grant refs (GNTTAB_NR_RESERVED_ENTRIES = 8, grant_table.h).
FIRST_GRANT_REF = 8
#: Port 0 is never valid in Xen (evtchn.h "port 0 is reserved").
FIRST_PORT = 1
#: 2-level event channel ABI limit for 64-bit guests (event_channel.h).
MAX_PORTS = 4096
#: Channels a handle may leave unfetched (each holds 5 fds here until it asks).
MAX_UNFETCHED_CHANNELS = 64
#: An event channel handle's epoch table: one uint32 per port, slot 0 the generation.
EPOCH_TABLE_PAGES = MAX_PORTS * 4 // PAGE_SIZE
#: Bounds keeping one message and one request's work small.
MAX_PAGES_PER_CALL = 4096
MAX_GRANTS_PER_DOMAIN = 65536
#: SCM_MAX_FD in Linux (include/net/scm.h): fds one message can carry.
MAX_FDS_PER_MESSAGE = 253
#: Largest request/reply; refs are at most ~11 bytes each in JSON.
MAX_MESSAGE = 128 * 1024
#: Valid domids for a remote domain (DOMID_FIRST_RESERVED = 0x7FF0, xen.h).
DOMID_FIRST_RESERVED = 0x7FF0

# Not in Python's fcntl module (Linux >= 5.1, include/uapi/linux/fcntl.h).
_F_SEAL_FUTURE_WRITE = 0x0010


class _Reject(Exception):
    """A request failed with ``code``; turned into an errno reply."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(eq=False)
class _Memory:
    """One shared memfd as the server holds it; closed when its last ref goes."""

    fd: int
    refs: set[int] = field(default_factory=set)

    def drop(self, ref: int) -> None:
        self.refs.discard(ref)
        if not self.refs and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(eq=False)
class _Grant:
    granter: int
    ref: int
    grantee: int
    memory: _Memory
    offset: int
    writable: bool
    owner: _Connection


@dataclass(eq=False)
class _Port:
    domid: int
    port: int
    owner: _Connection
    remote_domid: int
    epoch: int = 0
    channel: _Channel | None = None
    end: int = 0  # our index in channel.ends


@dataclass(eq=False)
class _Channel:
    """A connected pair of ports: ``ends[0]`` was unbound, ``ends[1]`` bound to it.

    Until an end has fetched them (``evtchn_resolve``, or the bind reply for
    ``ends[1]``), the server holds what that end gets: the channel page's
    memfd and four pipe ends (see :func:`_channel_resources`).
    """

    serial: int
    ends: tuple[_Port, _Port]
    memory: int
    handover: list[tuple[int, ...] | None]

    def release(self) -> None:
        """Close whatever the ends have not fetched (idempotent)."""
        for i, held in enumerate(self.handover):
            if held is not None:
                for fd in held:
                    os.close(fd)
                self.handover[i] = None
        if self.memory >= 0:
            os.close(self.memory)
            self.memory = -1


@dataclass(eq=False)
class _Domain:
    domid: int
    listener: socket.socket
    path: pathlib.Path
    next_ref: int = FIRST_GRANT_REF
    grants: dict[int, _Grant] = field(default_factory=dict)
    ports: dict[int, _Port] = field(default_factory=dict)

    def free_port(self) -> int:
        # Lowest free port, as Xen's get_free_port() does.
        for port in range(FIRST_PORT, MAX_PORTS):
            if port not in self.ports:
                return port
        raise _Reject(errno.ENOSPC, "no free event channel port")


def _want_int(req: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = req.get(key)
    if type(value) is not int or not lo <= value <= hi:
        raise _Reject(errno.EINVAL, f"{key!r} must be an integer in [{lo}, {hi}]")
    return value


def _want_bool(req: dict[str, Any], key: str) -> bool:
    value = req.get(key)
    if type(value) is not bool:
        raise _Reject(errno.EINVAL, f"{key!r} must be a boolean")
    return value


def _want_refs(req: dict[str, Any]) -> list[int]:
    refs = req.get("refs")
    if (not isinstance(refs, list) or not 1 <= len(refs) <= MAX_PAGES_PER_CALL
            or any(type(r) is not int or not 0 <= r <= 0xFFFFFFFF for r in refs)):
        raise _Reject(errno.EINVAL, f"'refs' must be 1..{MAX_PAGES_PER_CALL} uint32 values")
    return refs


class _Connection:
    """One client connection of one domain: a sharer, mapper or evtchn handle."""

    def __init__(self, server: HypervisorServer, domain: _Domain, sock: socket.socket) -> None:
        self.server = server
        self.domain = domain
        self.sock = sock
        self.grants: dict[int, _Grant] = {}
        self.ports: dict[int, _Port] = {}
        # An event channel handle (after evtchn_open): the push socket, and
        # the epoch table (slot 0 = generation), mapped here and by the client.
        self.push_sock: socket.socket | None = None
        self.table: _Table | None = None
        self.gen = 0
        self.closed = False

    @property
    def is_evtchn(self) -> bool:
        return self.push_sock is not None

    # -- selector callbacks ------------------------------------------------

    def on_control(self, mask: int) -> None:
        if self.closed:
            return
        try:
            msg, fds, flags, _addr = socket.recv_fds(
                self.sock, MAX_MESSAGE, 1, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            logger.debug("dom%d connection error: %s", self.domain.domid, exc)
            self.server._drop(self)
            return
        if not msg and not fds:
            self.server._drop(self)  # EOF: the client closed or died
            return
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            for fd in fds:
                os.close(fd)
            logger.warning("dom%d sent an oversized message; closing it", self.domain.domid)
            self.server._drop(self)
            return
        reply_fds: list[int] = []
        after: list[int] = []
        try:
            try:
                req = json.loads(msg)
            except (ValueError, UnicodeDecodeError):
                raise _Reject(errno.EINVAL, "request is not JSON") from None
            if not isinstance(req, dict):
                raise _Reject(errno.EINVAL, "request is not a JSON object")
            fds, received = [], fds  # the handler owns (and closes) received fds
            reply, reply_fds, after = self.server._handle(self, req, received)
        except _Reject as rej:
            reply = {"errno": rej.code, "detail": rej.detail}
        except Exception:  # a bug here must not take the whole simulator down
            logger.exception("dom%d request failed unexpectedly", self.domain.domid)
            reply = {"errno": errno.EIO, "detail": "internal error in the simulator"}
        finally:
            for fd in fds:
                os.close(fd)
        try:
            self._reply(reply, reply_fds)
        finally:
            for fd in after:
                os.close(fd)  # our copy of an fd handed over in the reply

    # -- output ------------------------------------------------------------

    def _reply(self, reply: dict[str, Any], fds: list[int]) -> None:
        data = json.dumps(reply, separators=(",", ":")).encode()
        try:
            if fds:
                socket.send_fds(self.sock, [data], fds, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            else:
                self.sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except BlockingIOError:
            # The client pipelines requests without reading replies: that is
            # not the protocol, and we must not block or queue without bound.
            logger.warning("dom%d does not read its replies; closing it", self.domain.domid)
            self.server._drop(self)
        except OSError as exc:
            logger.debug("dom%d reply failed: %s", self.domain.domid, exc)
            self.server._drop(self)

    def push(self) -> None:
        """Tell the client its epoch table changed: one datagram, or none if
        the socket is full (the client has one to read already)."""
        if self.push_sock is None or self.closed:
            return
        try:
            self.push_sock.send(b"\x01", socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except OSError:
            pass  # full, or the client dropped its end: nothing to tell


class HypervisorServer:
    """Grant tables and event channels of the simulated domains.

    Parameters
    ----------
    sim_dir
        Directory holding one ``dom<N>/hypervisor`` socket per domain.

    Notes
    -----
    Single-threaded: the owner's selector loop calls ``key.data(mask)`` for
    every ready key registered by :meth:`register`; callbacks never block.
    """

    def __init__(self, sim_dir: pathlib.Path) -> None:
        self.sim_dir = pathlib.Path(sim_dir)
        self._domains: dict[int, _Domain] = {}
        self._connections: set[_Connection] = set()
        self._sel: selectors.BaseSelector | None = None
        self._epoch = 0
        self._channels = 0

    # -- public API --------------------------------------------------------

    def add_domain(self, domid: int) -> pathlib.Path:
        """Create domain ``domid`` and its listening socket; return the socket path."""
        if not 0 <= domid < DOMID_FIRST_RESERVED:
            raise ValueError(f"domid {domid} out of range")
        if domid in self._domains:
            return self._domains[domid].path
        path = self.sim_dir / f"dom{domid}" / "hypervisor"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.unlink()  # a stale socket from an earlier run
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.bind(str(path))
            listener.listen(64)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        domain = _Domain(domid, listener, path)
        self._domains[domid] = domain
        if self._sel is not None:
            self._sel.register(listener, selectors.EVENT_READ, self._acceptor(domain))
        logger.debug("dom%d hypervisor socket at %s", domid, path)
        return path

    def register(self, sel: selectors.BaseSelector) -> None:
        """Register the listening sockets (and later connections) with ``sel``.

        Each key's ``data`` is a callable taking the event mask.
        """
        self._sel = sel
        for domain in self._domains.values():
            sel.register(domain.listener, selectors.EVENT_READ, self._acceptor(domain))

    def close(self) -> None:
        """Drop every connection, close the listening sockets (idempotent)."""
        for conn in list(self._connections):
            self._drop(conn)
        for domain in self._domains.values():
            self._unregister(domain.listener)
            domain.listener.close()
            try:
                domain.path.unlink()
            except OSError:
                pass
        self._domains.clear()

    # -- connections -------------------------------------------------------

    def _acceptor(self, domain: _Domain) -> Callable[[int], None]:
        def accept(mask: int) -> None:
            try:
                sock, _ = domain.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("dom%d accept failed: %s", domain.domid, exc)
                return
            sock.setblocking(False)
            conn = _Connection(self, domain, sock)
            self._connections.add(conn)
            if self._sel is not None:
                self._sel.register(sock, selectors.EVENT_READ, conn.on_control)
        return accept

    def _unregister(self, sock: socket.socket) -> None:
        if self._sel is not None:
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass

    def _drop(self, conn: _Connection) -> None:
        """Close ``conn`` and revoke/close everything it shared or bound."""
        if conn.closed:
            return
        conn.closed = True
        self._connections.discard(conn)
        for grant in list(conn.grants.values()):
            self._revoke(grant)
        for port in list(conn.ports.values()):
            self._close_port(port)
        if conn.push_sock is not None:
            conn.push_sock.close()
            conn.push_sock = None
        conn.table = None  # unmapped with the last reference
        self._unregister(conn.sock)
        conn.sock.close()
        logger.debug("dom%d connection closed", conn.domain.domid)

    # -- requests ----------------------------------------------------------

    def _handle(self, conn: _Connection, req: dict[str, Any], fds: list[int]
                ) -> tuple[dict[str, Any], list[int], list[int]]:
        """Run one request: (reply, fds to send, fds to close after sending).

        Owns ``fds`` (closes whatever it does not keep).
        """
        op = req.get("op")
        if op == "share":
            return self._share(conn, req, fds), [], []
        for fd in fds:
            os.close(fd)
        if fds:
            raise _Reject(errno.EINVAL, f"op {op!r} takes no file descriptors")
        if op == "unshare":
            return self._unshare(conn, req), [], []
        if op == "map":
            reply, out_fds = self._map(conn, req)
            return reply, out_fds, []
        if op == "evtchn_open":
            return self._evtchn_open(conn)
        if op in ("bind_unbound_port", "bind_interdomain", "evtchn_resolve", "unbind"):
            if not conn.is_evtchn:
                raise _Reject(errno.EBADF, "not an event channel handle (evtchn_open first)")
            handler: Callable[[_Connection, dict[str, Any]],
                              tuple[dict[str, Any], list[int], list[int]]] = getattr(self, f"_{op}")
            return handler(conn, req)
        raise _Reject(errno.ENOSYS, f"unknown op {op!r}")

    # grants

    def _share(self, conn: _Connection, req: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        if len(fds) != 1:
            for extra in fds:
                os.close(extra)
            raise _Reject(errno.EINVAL, "share needs exactly one memory fd")
        fd = fds.pop()
        try:
            grantee = _want_int(req, "domid", 0, DOMID_FIRST_RESERVED - 1)
            count = _want_int(req, "count", 1, MAX_PAGES_PER_CALL)
            writable = _want_bool(req, "writable")
            domain = conn.domain
            if len(domain.grants) + count > MAX_GRANTS_PER_DOMAIN:
                raise _Reject(errno.ENOSPC, "grant table full")
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size < count * PAGE_SIZE:
                raise _Reject(errno.EINVAL, "memory fd is not a file of count pages")
            # Seal the size so the sharer cannot SIGBUS a mapper by truncating.
            try:
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
            except OSError:
                raise _Reject(errno.EINVAL, "memory fd must be a sealable memfd") from None
            if writable:
                held = fd
                fd = -1
            else:
                # A read-only open file description: a mapper cannot mmap it
                # writable.  Best-effort seal so a reopen through /proc cannot
                # either (the sharer's own mapping predates the seal).
                held = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _F_SEAL_FUTURE_WRITE)
                except OSError:
                    logger.debug("F_SEAL_FUTURE_WRITE unsupported; read-only fd only")
        finally:
            if fd >= 0:
                os.close(fd)
        memory = _Memory(held)
        refs = []
        for i in range(count):
            ref = domain.next_ref
            domain.next_ref += 1  # never reused (refs are uint32; 4e9 shares is far off)
            grant = _Grant(domain.domid, ref, grantee, memory, i * PAGE_SIZE, writable, conn)
            memory.refs.add(ref)
            domain.grants[ref] = grant
            conn.grants[ref] = grant
            refs.append(ref)
        logger.debug("dom%d shares refs %s with dom%d (%s)", domain.domid, refs, grantee,
                     "rw" if writable else "ro")
        return {"ok": True, "refs": refs}

    def _revoke(self, grant: _Grant) -> None:
        self._domains_grants(grant.granter).pop(grant.ref, None)
        grant.owner.grants.pop(grant.ref, None)
        grant.memory.drop(grant.ref)

    def _domains_grants(self, domid: int) -> dict[int, _Grant]:
        domain = self._domains.get(domid)
        return domain.grants if domain is not None else {}

    def _unshare(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        refs = _want_refs(req)
        if any(ref not in conn.grants for ref in refs):
            raise _Reject(errno.EINVAL, "ref not shared by this handle")
        for ref in refs:
            self._revoke(conn.grants[ref])
        return {"ok": True}

    def _map(self, conn: _Connection, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        granter_id = _want_int(req, "domid", 0, DOMID_FIRST_RESERVED - 1)
        refs = _want_refs(req)
        writable = _want_bool(req, "writable")
        granter = self._domains.get(granter_id)
        if granter is None:
            raise _Reject(errno.ESRCH, f"no domain {granter_id}")
        me = conn.domain.domid
        fds: list[int] = []
        index: dict[int, int] = {}
        pages = []
        # Check every ref before handing out anything: all or nothing.
        for ref in refs:
            grant = granter.grants.get(ref)
            if grant is None:
                raise _Reject(errno.EINVAL, f"dom{granter_id} has no grant ref {ref}")
            if grant.grantee != me:
                raise _Reject(errno.EPERM, f"ref {ref} is not granted to dom{me}")
            if writable and not grant.writable:
                raise _Reject(errno.EACCES, f"ref {ref} is granted read-only")
            fd = grant.memory.fd
            if fd not in index:
                index[fd] = len(fds)
                fds.append(fd)
            pages.append([index[fd], grant.offset])
        if len(fds) > MAX_FDS_PER_MESSAGE:
            raise _Reject(errno.E2BIG, "refs span too many separate shares")
        return {"ok": True, "pages": pages}, fds

    # event channels

    def _evtchn_open(self, conn: _Connection) -> tuple[dict[str, Any], list[int], list[int]]:
        if conn.is_evtchn:
            raise _Reject(errno.EBUSY, "already an event channel handle")
        table_fd = _sealed_memfd("pvplug-evtchn-epochs", EPOCH_TABLE_PAGES)
        try:
            base = lib.pvplug_map_fd(table_fd, EPOCH_TABLE_PAGES, 1)
            if base == ffi.NULL:
                raise _Reject(ffi.errno or errno.ENOMEM, "mapping the epoch table")
            base = ffi.gc(base, lambda p: lib.pvplug_unmap_pages(p, EPOCH_TABLE_PAGES))
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except BaseException:
            os.close(table_fd)
            raise
        ours.setblocking(False)
        ours.shutdown(socket.SHUT_RD)  # one-way: server -> client
        conn.push_sock = ours
        conn.table = _Table(base)
        push_fd = theirs.detach()
        return ({"ok": True, "table_pages": EPOCH_TABLE_PAGES}, [push_fd, table_fd],
                [push_fd, table_fd])

    def _next_epoch(self) -> int:
        self._epoch = self._epoch % 0xFFFFFFFF + 1  # 1..2**32-1: 0 is "never bound"
        return self._epoch

    def _bump(self, port: _Port, wake: bool) -> None:
        """Give ``port`` a new epoch; with ``wake``, tell its handle."""
        port.epoch = self._next_epoch()
        conn = port.owner
        if conn.closed or conn.table is None:
            return
        conn.table.set(port.port, port.epoch)
        if wake:
            conn.gen = (conn.gen + 1) & 0xFFFFFFFF
            conn.table.set(0, conn.gen)
            conn.push()

    def _own_port(self, conn: _Connection, req: dict[str, Any], func: str) -> _Port:
        port_no = _want_int(req, "port", 0, 0xFFFFFFFF)
        port = conn.ports.get(port_no)
        if port is None:
            # Linux evtchn: a port not bound by this handle is ENOTCONN.
            raise _Reject(errno.ENOTCONN, f"{func}: port {port_no} not bound by this handle")
        return port

    def _new_port(self, conn: _Connection, remote_domid: int) -> _Port:
        domain = conn.domain
        if len(conn.ports) >= MAX_PORTS:
            raise _Reject(errno.ENOSPC, "too many ports")
        port = _Port(domain.domid, domain.free_port(), conn, remote_domid)
        domain.ports[port.port] = port
        conn.ports[port.port] = port
        self._bump(port, wake=False)  # the reply carries the epoch
        return port

    def _bind_unbound_port(self, conn: _Connection, req: dict[str, Any]
                           ) -> tuple[dict[str, Any], list[int], list[int]]:
        remote = _want_int(req, "remote_domid", 0, DOMID_FIRST_RESERVED - 1)
        port = self._new_port(conn, remote)
        logger.debug("dom%d port %d unbound for dom%d", port.domid, port.port, remote)
        return self._resolution(port)

    def _bind_interdomain(self, conn: _Connection, req: dict[str, Any]
                          ) -> tuple[dict[str, Any], list[int], list[int]]:
        remote_id = _want_int(req, "remote_domid", 0, DOMID_FIRST_RESERVED - 1)
        remote_port = _want_int(req, "remote_port", 0, 0xFFFFFFFF)
        remote = self._domains.get(remote_id)
        if remote is None:
            raise _Reject(errno.ESRCH, f"no domain {remote_id}")
        rport = remote.ports.get(remote_port)
        me = conn.domain.domid
        # Xen evtchn_bind_interdomain: EINVAL unless ECS_UNBOUND naming us.
        if rport is None or rport.channel is not None or rport.remote_domid != me:
            raise _Reject(errno.EINVAL,
                          f"dom{remote_id} port {remote_port} is not unbound for dom{me}")
        owner = rport.owner
        if sum(1 for p in owner.ports.values()
               if p.channel is not None and p.channel.handover[p.end] is not None
               ) >= MAX_UNFETCHED_CHANNELS:
            # Its owner never asks for what it is given: do not pile up fds.
            raise _Reject(errno.EAGAIN, f"dom{remote_id} leaves its channels unfetched")
        memory, handover = _channel_resources()
        self._channels += 1
        try:
            port = self._new_port(conn, remote_id)
        except BaseException:
            _Channel(self._channels, (rport, rport), memory, handover).release()
            raise
        channel = _Channel(self._channels, (rport, port), memory, handover)
        rport.channel, rport.end = channel, 0
        port.channel, port.end = channel, 1
        self._bump(rport, wake=True)
        logger.debug("dom%d port %d <-> dom%d port %d", me, port.port, remote_id, remote_port)
        return self._resolution(port)

    def _evtchn_resolve(self, conn: _Connection, req: dict[str, Any]
                        ) -> tuple[dict[str, Any], list[int], list[int]]:
        return self._resolution(self._own_port(conn, req, "evtchn_resolve"))

    def _resolution(self, port: _Port) -> tuple[dict[str, Any], list[int], list[int]]:
        """What ``port``'s owner needs to deliver on it: its epoch and, the
        first time it asks about a channel, that channel's page and sockets."""
        reply: dict[str, Any] = {"ok": True, "port": port.port, "epoch": port.epoch}
        channel = port.channel
        if channel is None:
            reply["state"] = "unbound"
            return reply, [], []
        reply.update(state="connected", channel=channel.serial, end=port.end)
        held = channel.handover[port.end]
        reply["fds"] = held is not None
        if held is None:
            return reply, [], []  # fetched already: the client has them
        channel.handover[port.end] = None
        fds = [channel.memory, *held]
        after = list(held)
        if all(h is None for h in channel.handover):
            after.append(channel.memory)  # both ends have it now
            channel.memory = -1
        return reply, fds, after

    def _unbind(self, conn: _Connection, req: dict[str, Any]
                ) -> tuple[dict[str, Any], list[int], list[int]]:
        self._close_port(self._own_port(conn, req, "unbind"))
        return {"ok": True}, [], []

    def _close_port(self, port: _Port) -> None:
        domain = self._domains.get(port.domid)
        if domain is not None:
            domain.ports.pop(port.port, None)
        port.owner.ports.pop(port.port, None)
        channel = port.channel
        if channel is not None:
            # Xen evtchn_close: the peer becomes unbound, remote = our domain.
            peer = channel.ends[1 - port.end]
            channel.release()
            port.channel = peer.channel = None
            peer.remote_domid = port.domid
            self._bump(peer, wake=True)
        self._bump(port, wake=False)


class _Table:
    """The server's mapping of one handle's epoch table."""

    __slots__ = ("_base", "_words")

    def __init__(self, base: Any) -> None:
        self._base = base  # the ffi.gc pointer: unmapped when this goes
        self._words = ffi.cast("uint32_t *", base)

    def set(self, slot: int, value: int) -> None:
        lib.pvplug_evtchn_set_epoch(self._words, slot, value)


def _sealed_memfd(name: str, pages: int) -> int:
    """A zeroed memfd of ``pages`` pages whose size nobody can change, so that
    no process mapping it can be made to SIGBUS by another one truncating it."""
    try:
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError as exc:
        raise _Reject(exc.errno or errno.ENOMEM, f"creating {name}") from None
    try:
        os.ftruncate(fd, pages * PAGE_SIZE)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    except OSError as exc:
        os.close(fd)
        raise _Reject(exc.errno or errno.ENOMEM, f"creating {name}") from None
    return fd


def _reopen(fd: int, mode: int) -> int:
    """A new open file description of pipe end ``fd``'s pipe (through /proc)."""
    return os.open(f"/proc/self/fd/{fd}", mode | os.O_NONBLOCK | os.O_CLOEXEC)


def _channel_resources() -> tuple[int, list[tuple[int, ...] | None]]:
    """A channel page and one wake pipe per end.

    End i gets the page; the read end of pipe i, plus a write end of its own
    that it never writes, so the pipe never reads EOF whatever the peer
    closes; and the write end of pipe 1 - i (its peer's), plus a read end of
    its own that it never reads, so that writing after the peer closed its
    read end is EAGAIN at worst, never SIGPIPE (the plugin runs inside
    programs that do not ignore it).  Every one of these fds is its own open
    file description, so nobody can make another process's read or write
    block by clearing O_NONBLOCK on a description they share.
    """
    memory = _sealed_memfd("pvplug-evtchn-channel", 1)
    fds = [memory]
    pipes = []
    try:
        for _ in range(2):
            read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            fds += [read_end, write_end]
            keep_write = _reopen(read_end, os.O_WRONLY)
            fds.append(keep_write)
            keep_read = _reopen(write_end, os.O_RDONLY)
            fds.append(keep_read)
            pipes.append((read_end, keep_write, write_end, keep_read))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise _Reject(exc.errno or errno.ENFILE, "creating the channel's wake pipes") from None
    (r0, kw0, w0, kr0), (r1, kw1, w1, kr1) = pipes
    return memory, [(r0, kw0, w1, kr1), (r1, kw1, w0, kr0)]
