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

Wire format (``SOCK_SEQPACKET``, one request -> one reply, in order): a JSON
object ``{"op": ..., ...}`` with optional file descriptors (``SCM_RIGHTS``).
Replies are ``{"ok": true, ...}`` or ``{"errno": N, "detail": "..."}``.

========================  ==========================================  =======================
op                        request fields (+ fds)                      reply fields (+ fds)
========================  ==========================================  =======================
``share``                 ``domid``, ``count``, ``writable`` + 1 fd   ``refs``
``unshare``               ``refs``                                     -
``map``                   ``domid``, ``refs``, ``writable``            ``pages`` [[fd_index, offset]] + fds
``evtchn_open``           -                                           - + 1 fd (notification socket)
``bind_unbound_port``     ``remote_domid``                            ``port``
``bind_interdomain``      ``remote_domid``, ``remote_port``           ``port``
``notify``                ``port``                                    -
``unmask``                ``port``                                    -
``unbind``                ``port``                                    -
========================  ==========================================  =======================

The notification socket (a ``SOCK_SEQPACKET`` socketpair end handed over by
``evtchn_open``) carries one little-endian ``uint32`` port per message, each
time a port of that handle fires.  Keeping it apart from the control
connection means a request/reply exchange can never swallow a notification.

Event-channel semantics follow Linux's /dev/xen/evtchn: a port that fires is
masked and reported once; notifications while it is masked are latched and
reported once more on unmask.  Xen's ``evtchn_close`` semantics on unbind: the
peer port goes back to "unbound, remote = the closer's domain".
"""

from __future__ import annotations

import collections
import errno
import fcntl
import json
import logging
import os
import pathlib
import selectors
import socket
import stat
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

logger = logging.getLogger(__name__)

PAGE_SIZE = 4096

#: Xen reserves the low grant refs (GNTTAB_NR_RESERVED_ENTRIES = 8, grant_table.h).
FIRST_GRANT_REF = 8
#: Port 0 is never valid in Xen (evtchn.h "port 0 is reserved").
FIRST_PORT = 1
#: 2-level event channel ABI limit for 64-bit guests (event_channel.h).
MAX_PORTS = 4096
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

_PORT = struct.Struct("<I")


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
    owner: "_Connection"


@dataclass(eq=False)
class _Port:
    domid: int
    port: int
    owner: "_Connection"
    remote_domid: int
    peer: "_Port | None" = None
    masked: bool = False
    latched: bool = False


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

    def __init__(self, server: "HypervisorServer", domain: _Domain, sock: socket.socket) -> None:
        self.server = server
        self.domain = domain
        self.sock = sock
        self.grants: dict[int, _Grant] = {}
        self.ports: dict[int, _Port] = {}
        self.notify_sock: socket.socket | None = None
        self.outbox: collections.deque[int] = collections.deque()
        self.closed = False

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
        after: list[socket.socket] = []
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
            for sock in after:
                sock.close()  # our copy of an fd handed over in the reply

    def on_notify_writable(self, mask: int) -> None:
        self._flush()

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

    def deliver(self, port: int) -> None:
        """Queue "port fired" on the notification socket."""
        if self.notify_sock is None or self.closed:
            return
        self.outbox.append(port)
        self._flush()

    def _flush(self) -> None:
        sock = self.notify_sock
        if sock is None:
            return
        while self.outbox:
            try:
                sock.send(_PORT.pack(self.outbox[0]), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except BlockingIOError:
                break
            except OSError:
                # The client dropped its notification end; nothing to deliver to.
                self.outbox.clear()
                break
            self.outbox.popleft()
        self.server._want_write(sock, self, bool(self.outbox))


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
        self._write_wanted: set[socket.socket] = set()

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
        self._write_wanted.discard(sock)
        if self._sel is not None:
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass

    def _want_write(self, sock: socket.socket, conn: _Connection, want: bool) -> None:
        if self._sel is None or want == (sock in self._write_wanted):
            return
        if want:
            self._sel.register(sock, selectors.EVENT_WRITE, conn.on_notify_writable)
            self._write_wanted.add(sock)
        else:
            self._unregister(sock)

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
        if conn.notify_sock is not None:
            self._unregister(conn.notify_sock)
            conn.notify_sock.close()
            conn.notify_sock = None
        self._unregister(conn.sock)
        conn.sock.close()
        logger.debug("dom%d connection closed", conn.domain.domid)

    # -- requests ----------------------------------------------------------

    def _handle(self, conn: _Connection, req: dict[str, Any], fds: list[int]
                ) -> tuple[dict[str, Any], list[int], list[socket.socket]]:
        """Run one request: (reply, fds to send, sockets to close after sending).

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
        if op in ("bind_unbound_port", "bind_interdomain", "notify", "unmask", "unbind"):
            if conn.notify_sock is None:
                raise _Reject(errno.EBADF, "not an event channel handle (evtchn_open first)")
            handler = getattr(self, f"_{op}")
            return handler(conn, req), [], []
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

    def _evtchn_open(self, conn: _Connection
                     ) -> tuple[dict[str, Any], list[int], list[socket.socket]]:
        if conn.notify_sock is not None:
            raise _Reject(errno.EBUSY, "already an event channel handle")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        ours.shutdown(socket.SHUT_RD)  # one-way: server -> client
        conn.notify_sock = ours
        return {"ok": True}, [theirs.fileno()], [theirs]

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
        return port

    def _bind_unbound_port(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        remote = _want_int(req, "remote_domid", 0, DOMID_FIRST_RESERVED - 1)
        port = self._new_port(conn, remote)
        logger.debug("dom%d port %d unbound for dom%d", port.domid, port.port, remote)
        return {"ok": True, "port": port.port}

    def _bind_interdomain(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        remote_id = _want_int(req, "remote_domid", 0, DOMID_FIRST_RESERVED - 1)
        remote_port = _want_int(req, "remote_port", 0, 0xFFFFFFFF)
        remote = self._domains.get(remote_id)
        if remote is None:
            raise _Reject(errno.ESRCH, f"no domain {remote_id}")
        rport = remote.ports.get(remote_port)
        me = conn.domain.domid
        # Xen evtchn_bind_interdomain: EINVAL unless ECS_UNBOUND naming us.
        if rport is None or rport.peer is not None or rport.remote_domid != me:
            raise _Reject(errno.EINVAL,
                          f"dom{remote_id} port {remote_port} is not unbound for dom{me}")
        port = self._new_port(conn, remote_id)
        port.peer = rport
        rport.peer = port
        logger.debug("dom%d port %d <-> dom%d port %d", me, port.port, remote_id, remote_port)
        return {"ok": True, "port": port.port}

    def _notify(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        port = self._own_port(conn, req, "notify")
        if port.peer is not None:
            self._fire(port.peer)
        # Unbound: Xen's evtchn_send silently drops the notification.
        return {"ok": True}

    def _fire(self, port: _Port) -> None:
        if port.masked:
            port.latched = True
            return
        port.masked = True
        port.owner.deliver(port.port)

    def _unmask(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        port_no = _want_int(req, "port", 0, 0xFFFFFFFF)
        port = conn.ports.get(port_no)
        # Linux evtchn_write ignores ports this handle does not own.
        if port is not None and port.masked:
            port.masked = False
            if port.latched:
                port.latched = False
                self._fire(port)
        return {"ok": True}

    def _unbind(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        self._close_port(self._own_port(conn, req, "unbind"))
        return {"ok": True}

    def _close_port(self, port: _Port) -> None:
        domain = self._domains.get(port.domid)
        if domain is not None:
            domain.ports.pop(port.port, None)
        port.owner.ports.pop(port.port, None)
        peer = port.peer
        if peer is not None:
            # Xen evtchn_close: the peer becomes unbound, remote = our domain.
            peer.peer = None
            peer.remote_domid = port.domid
            port.peer = None
