"""An in-process hypervisor: xenstore, grant tables and event channels for
peers that are threads (or plain objects) of one process.

Rule 1: the same semantics as the simulator processes, without sockets or
compiled code.  Xenstore is :mod:`.xenstored`'s own node tree, permission
check, path rules, watch matching and transaction commit; grants and event
channels check what :mod:`.hypervisor` checks and fail with the same errno.
Every failure is a :class:`~alsa_pvplug.errors.XenError` named after the
libxen* function the call stands for (``xs_read``,
``xengntshr_share_pages``, ``xenevtchn_notify``...), so the transport
adapters (:mod:`alsa_pvplug.transport.memory`) only forward.

Rule 2: one lock.  Every method takes it, so a frontend and a backend may
call in from different threads; nothing here blocks or calls out while
holding it, except the non-blocking eventfd reads and writes that keep each
handle's ``fd`` readable exactly while it has something to report (queued
watch events; a port that is pending and unmasked).

Rule 3: a handle's grants, ports, watches and transactions live as long as
the handle: closing it revokes the grants (mappings made already stay
valid, as in Xen), closes the ports (the peer's goes back to unbound, keeping
its mask and latched event) and drops the rest.

Pages are ``bytearray`` s: a grant is one page of the sharer's array, and a
mapping a view of it, so both sides see the same bytes.  A mapping must
therefore be of refs that are consecutive pages of one share (what a sndif
frontend grants: one share per buffer, directory, ring); other sets fail
with EOPNOTSUPP, as there is no way to join separate arrays into one view.

Event channels follow ``transport/base.py``'s EventChannel: a port that
fires is masked and reported once by ``pending``; it fires again only after
``unmask``, and a notify while it is masked is latched (reported once on
unmask), not lost.  A notify to an unbound port is dropped, as Xen's
``evtchn_send`` does.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from threading import RLock

from ..errors import XenError
from .xenstored import (
    PERM_LETTERS,
    QUOTA_PERMS,
    QUOTA_TRANSACTIONS,
    QUOTA_WATCHES,
    Event,
    Node,
    Perms,
    Transaction,
    Tree,
    XsError,
    canon_path,
    commit,
    watch_fires,
)

logger = logging.getLogger(__name__)

PAGE_SIZE = 4096
#: As in :mod:`.hypervisor`: Xen reserves the low grant refs, port 0 is never valid.
FIRST_GRANT_REF = 8
FIRST_PORT = 1
MAX_PORTS = 4096
MAX_PAGES_PER_CALL = 4096
MAX_GRANTS_PER_DOMAIN = 65536
DOMID_FIRST_RESERVED = 0x7FF0
#: Unread watch events (bytes, as the wire would carry them) beyond which a
#: xenstore connection is dropped, as :mod:`.xenstored` drops a client that
#: does not read.
XS_OUTPUT_MAX = 1024 * 1024
_XS_HEADER = 16


def _xs_error(func: str, exc: XsError, detail: str = "") -> XenError:
    return XenError(func, getattr(errno, exc.name, errno.EIO), detail)


def _check_domid(func: str, domid: object) -> int:
    if type(domid) is not int or not 0 <= domid < DOMID_FIRST_RESERVED:
        raise XenError(func, errno.EINVAL, f"bad domid {domid!r}")
    return domid


def _check_u32(func: str, value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= 0xFFFFFFFF:
        raise XenError(func, errno.EINVAL, f"bad {what} {value!r}")
    return value


def _cstr(func: str, text: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    if b"\0" in data:
        raise XenError(func, errno.EINVAL, f"NUL byte in {text!r}")
    return data


class _Signal:
    """An eventfd that is readable exactly while ``set`` (level, not count)."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._up = False

    def level(self, up: bool) -> None:
        if up == self._up or self.fd < 0:
            return
        self._up = up
        if up:
            os.eventfd_write(self.fd, 1)
        else:
            try:
                os.eventfd_read(self.fd)
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- handles (what one libxen* handle of one domain holds) ----------------------

@dataclass(eq=False)
class _Watch:
    path: str  # absolute, or "@..."
    token: bytes
    relative: bool


@dataclass(eq=False)
class XsHandle:
    """One xenstore connection (``struct xs_handle``) of domain ``domid``."""

    domid: int
    signal: _Signal = field(default_factory=_Signal)
    watches: list[_Watch] = field(default_factory=list)
    transactions: dict[int, Transaction] = field(default_factory=dict)
    events: collections.deque[tuple[str, str]] = field(default_factory=collections.deque)
    queued: int = 0  # bytes of unread events
    kicked: bool = False
    closed: bool = False
    dropped: bool = False  # closed by us: it did not read its events

    @property
    def fd(self) -> int:
        return self.signal.fd


@dataclass(eq=False)
class _Grant:
    granter: int
    ref: int
    grantee: int
    memory: bytearray
    offset: int
    writable: bool
    owner: GntHandle


@dataclass(eq=False)
class GntHandle:
    """A grant sharer (``xengntshr_handle``) or mapper (``xengnttab_handle``)."""

    domid: int
    grants: dict[int, _Grant] = field(default_factory=dict)
    closed: bool = False


@dataclass(eq=False)
class _Port:
    domid: int
    port: int
    owner: EvtHandle
    remote_domid: int
    peer: _Port | None = None
    pending: bool = False
    masked: bool = False

    @property
    def claimable(self) -> bool:
        return self.pending and not self.masked


@dataclass(eq=False)
class EvtHandle:
    """An event channel handle (``xenevtchn_handle``) of domain ``domid``."""

    domid: int
    signal: _Signal = field(default_factory=_Signal)
    ports: dict[int, _Port] = field(default_factory=dict)
    next: int = 0  # round robin over ports in pending()
    closed: bool = False

    @property
    def fd(self) -> int:
        return self.signal.fd

    def update(self) -> None:
        """Readable while a port is pending and unmasked (lock held)."""
        self.signal.level(any(p.claimable for p in self.ports.values()))


@dataclass(eq=False)
class _Domain:
    domid: int
    next_ref: int = FIRST_GRANT_REF
    grants: dict[int, _Grant] = field(default_factory=dict)
    ports: dict[int, _Port] = field(default_factory=dict)

    def free_port(self, func: str) -> int:
        for port in range(FIRST_PORT, MAX_PORTS):  # lowest free, as Xen's get_free_port
            if port not in self.ports:
                return port
        raise XenError(func, errno.ENOSPC, "no free event channel port")


class MemoryHypervisor:
    """Xenstore, grant tables and event channels of in-process domains.

    Create the domains with :meth:`add_domain`, then the devices with
    :func:`alsa_pvplug.sim.toolstack.create_domain` / ``create_vsnd`` (this
    object is their ``PrivilegedStore``), and give each peer a
    :class:`alsa_pvplug.transport.memory.MemoryTransport`.
    """

    def __init__(self) -> None:
        self._lock = RLock()
        self._gens = itertools.count(1)
        self._tree = Tree(self._gens)
        self._tx_ids = itertools.count(1)
        self._domains: dict[int, _Domain] = {}
        self._stores: set[XsHandle] = set()
        self._evtchns: set[EvtHandle] = set()

    # -- domains -----------------------------------------------------------

    def add_domain(self, domid: int) -> None:
        """Create domain ``domid`` (fires ``@introduceDomain``)."""
        if not 0 <= domid < DOMID_FIRST_RESERVED:
            raise ValueError(f"domid {domid} out of range")
        with self._lock:
            if domid in self._domains:
                return
            self._domains[domid] = _Domain(domid)
            self._fire([("@introduceDomain", ([(0, "n")],), False)])

    @property
    def domids(self) -> list[int]:
        with self._lock:
            return sorted(self._domains)

    def close(self) -> None:
        """Close every handle still open (their fds); idempotent."""
        with self._lock:
            for h in list(self._stores):
                self.xs_close(h)
            for e in list(self._evtchns):
                self.xenevtchn_close(e)

    # -- xenstore: privileged (the toolstack's PrivilegedStore) ------------

    def _privileged(self, func: str, op: str, path: str, *args: object) -> None:
        with self._lock:
            canon = self._check_path(func, path)
            try:
                events = getattr(self._tree, op)(0, canon, *args)
            except XsError as exc:
                raise _xs_error(func, exc, path) from None
            self._fire(events)

    @staticmethod
    def _check_path(func: str, path: str) -> str:
        try:
            return canon_path(0, path.encode())
        except (XsError, UnicodeError):
            raise XenError(func, errno.EINVAL, f"bad path {path!r}") from None

    def write(self, path: str, value: str | bytes) -> None:
        """Write as dom0 (creating parents) and fire watches."""
        data = value.encode() if isinstance(value, str) else bytes(value)
        self._privileged("write", "write", path, data)

    def mkdir(self, path: str) -> None:
        self._privileged("mkdir", "mkdir", path)

    def rm(self, path: str) -> None:
        """Remove the subtree; a missing node with an existing parent is fine."""
        self._privileged("rm", "rm", path)

    def set_perms(self, path: str, perms: list[tuple[int, str]]) -> None:
        """Set the ACL, ``[(owner, default), (domid, letter), ...]``; letters n/r/w/b."""
        if not perms or any(letter not in PERM_LETTERS or not 0 <= d <= 0xFFFF
                            for d, letter in perms):
            raise XenError("set_perms", errno.EINVAL, f"bad permissions {perms!r}")
        self._privileged("set_perms", "set_perms", path,
                         [(int(d), str(letter)) for d, letter in perms])

    def read(self, path: str) -> str | None:
        with self._lock:
            node = self._tree.peek(self._check_path("read", path))
            return None if node is None else node.value.decode(errors="surrogateescape")

    def directory(self, path: str) -> list[str] | None:
        with self._lock:
            node = self._tree.peek(self._check_path("directory", path))
            return None if node is None else list(node.children)

    # -- xenstore: connections (xs_*) ---------------------------------------

    def xs_open(self, domid: int) -> XsHandle:
        with self._lock:
            if domid not in self._domains:
                raise XenError("xs_open", errno.ENOENT, f"no domain {domid}")
            h = XsHandle(domid)
            self._stores.add(h)
            return h

    def _live(self, func: str, h: XsHandle) -> None:
        if h.dropped:
            raise XenError(func, errno.ECONNRESET, "xenstore dropped the connection "
                           "(watch events left unread)")
        if h.closed:
            raise XenError(func, errno.EBADF, "handle closed")

    def _xs_path(self, func: str, h: XsHandle, path: str, special: bool = False) -> str:
        try:
            return canon_path(h.domid, _cstr(func, path), special)
        except XsError as exc:
            raise _xs_error(func, exc, path) from None

    def _tree_for(self, func: str, h: XsHandle, tx: int) -> tuple[Tree, Transaction | None]:
        if tx == 0:
            return self._tree, None
        t = h.transactions.get(tx)
        if t is None:
            raise XenError(func, errno.ENOENT, f"no transaction {tx}")
        return t.tree, t

    def _reader(self, func: str, h: XsHandle, path: str, tx: int) -> Node:
        self._live(func, h)
        canon = self._xs_path(func, h, path)
        tree, _ = self._tree_for(func, h, tx)
        try:
            return tree.node(h.domid, canon, "r")
        except XsError as exc:
            raise _xs_error(func, exc, path) from None

    def xs_read(self, h: XsHandle, path: str, tx: int = 0) -> str:
        """The value; ENOENT when the node does not exist."""
        with self._lock:
            value = self._reader("xs_read", h, path, tx).value
            return value.decode("utf-8", "surrogateescape")

    def xs_directory(self, h: XsHandle, path: str, tx: int = 0) -> list[str]:
        with self._lock:
            return list(self._reader("xs_directory", h, path, tx).children)

    def xs_get_permissions(self, h: XsHandle, path: str, tx: int = 0) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._reader("xs_get_permissions", h, path, tx).perms)

    def _mutate(self, func: str, h: XsHandle, tx: int, op: str, path: str,
                *args: object) -> None:
        with self._lock:
            self._live(func, h)
            canon = self._xs_path(func, h, path)
            tree, t = self._tree_for(func, h, tx)
            try:
                events = getattr(tree, op)(h.domid, canon, *args)
            except XsError as exc:
                raise _xs_error(func, exc, path) from None
            if t is not None:  # replayed on commit; events fire only then
                t.log.append((op, (h.domid, canon, *args)))
            else:
                self._fire(events)

    def xs_write(self, h: XsHandle, path: str, value: str, tx: int = 0) -> None:
        self._mutate("xs_write", h, tx, "write", path, value.encode("utf-8", "surrogateescape"))

    def xs_mkdir(self, h: XsHandle, path: str, tx: int = 0) -> None:
        self._mutate("xs_mkdir", h, tx, "mkdir", path)

    def xs_rm(self, h: XsHandle, path: str, tx: int = 0) -> None:
        """Remove a subtree; ENOENT when its parent does not exist either."""
        self._mutate("xs_rm", h, tx, "rm", path)

    def xs_set_permissions(self, h: XsHandle, path: str, perms: Sequence[tuple[int, str]],
                           tx: int = 0) -> None:
        func = "xs_set_permissions"
        if not perms:
            raise XenError(func, errno.EINVAL, "empty permission list")
        checked: Perms = []
        for entry in perms:
            domid, letter = entry
            if letter not in PERM_LETTERS or type(domid) is not int or not 0 <= domid <= 0xFFFF:
                raise XenError(func, errno.EINVAL, f"bad entry {entry!r}")
            checked.append((domid, letter))
        if len(checked) > QUOTA_PERMS:
            raise XenError(func, errno.ENOSPC, path)
        self._mutate(func, h, tx, "set_perms", path, checked)

    def xs_transaction_start(self, h: XsHandle) -> int:
        func = "xs_transaction_start"
        with self._lock:
            self._live(func, h)
            if len(h.transactions) >= QUOTA_TRANSACTIONS:
                raise XenError(func, errno.ENOSPC, "too many transactions")
            tx = next(self._tx_ids) & 0xFFFFFFFF or next(self._tx_ids)
            h.transactions[tx] = Transaction(self._tree.copy())
            return tx

    def xs_transaction_end(self, h: XsHandle, tx: int, abort: bool = False) -> None:
        """Commit (or abort); EAGAIN if something it touched changed meanwhile."""
        func = "xs_transaction_end"
        with self._lock:
            self._live(func, h)
            t = h.transactions.pop(tx, None)
            if t is None:
                raise XenError(func, errno.ENOENT, f"no transaction {tx}")
            if abort:
                return
            try:
                events = commit(self._tree, t, h.domid)
            except XsError as exc:
                raise _xs_error(func, exc) from None
            self._fire(events)

    def xs_watch(self, h: XsHandle, path: str, token: str) -> None:
        func = "xs_watch"
        with self._lock:
            self._live(func, h)
            canon = self._xs_path(func, h, path, special=True)
            tok = _cstr(func, token)
            if any(w.path == canon and w.token == tok for w in h.watches):
                raise XenError(func, errno.EEXIST, path)
            if len(h.watches) >= QUOTA_WATCHES:
                raise XenError(func, errno.E2BIG, "too many watches")
            watch = _Watch(canon, tok, not path.startswith(("/", "@")))
            h.watches.append(watch)
            # "When a watch is first set up it is triggered once straight away."
            self._event(h, watch, canon)

    def xs_unwatch(self, h: XsHandle, path: str, token: str) -> None:
        func = "xs_unwatch"
        with self._lock:
            self._live(func, h)
            canon = self._xs_path(func, h, path, special=True)
            tok = _cstr(func, token)
            for watch in h.watches:
                if watch.path == canon and watch.token == tok:
                    h.watches.remove(watch)
                    return
            raise XenError(func, errno.ENOENT, path)

    def xs_check_watch(self, h: XsHandle) -> list[tuple[str, str]]:
        """Every queued watch event (path, token); never blocks."""
        with self._lock:
            self._live("xs_check_watch", h)
            events = list(h.events)
            h.events.clear()
            h.queued = 0
            h.kicked = False
            h.signal.level(False)
            return events

    def xs_kick(self, h: XsHandle) -> None:
        """Make ``h.fd`` readable with no event queued: wakes a loop waiting on it."""
        with self._lock:
            if not h.closed:
                h.kicked = True
                h.signal.level(True)

    def xs_close(self, h: XsHandle) -> None:
        with self._lock:
            self._stores.discard(h)
            h.closed = True
            h.watches.clear()
            h.transactions.clear()
            h.events.clear()
            h.signal.close()

    def _fire(self, events: list[Event]) -> None:
        for h in list(self._stores):
            for event in events:
                if h.closed:
                    break
                for watch in list(h.watches):
                    if watch_fires(h.domid, watch.path, event):
                        self._event(h, watch, event[0])

    def _event(self, h: XsHandle, watch: _Watch, path: str) -> None:
        if watch.relative:
            path = path[len(f"/local/domain/{h.domid}/"):]
        token = watch.token.decode("utf-8", "surrogateescape")
        h.events.append((path, token))
        h.queued += _XS_HEADER + len(path) + len(watch.token) + 2
        if h.queued > XS_OUTPUT_MAX:
            logger.warning("dom%d: xenstore client does not read its events, dropping it",
                           h.domid)
            self.xs_close(h)
            h.dropped = True
            return
        h.signal.level(True)

    # -- grant tables (xengntshr_*, xengnttab_*) -----------------------------

    def gnt_open(self, domid: int, func: str = "xengntshr_open") -> GntHandle:
        with self._lock:
            if domid not in self._domains:
                raise XenError(func, errno.ENOENT, f"no domain {domid}")
            return GntHandle(domid)

    @staticmethod
    def _gnt_live(func: str, h: GntHandle) -> None:
        if h.closed:
            raise XenError(func, errno.EBADF, "handle is closed")

    def xengntshr_share_pages(self, h: GntHandle, domid: int, count: int,
                              writable: bool = True) -> tuple[list[int], bytearray]:
        """Grant ``count`` new zeroed pages to ``domid``: (refs, the pages)."""
        func = "xengntshr_share_pages"
        grantee = _check_domid(func, domid)
        if type(count) is not int or not 1 <= count <= MAX_PAGES_PER_CALL:
            raise XenError(func, errno.EINVAL, f"bad page count {count!r}")
        with self._lock:
            self._gnt_live(func, h)
            domain = self._domains[h.domid]
            if len(domain.grants) + count > MAX_GRANTS_PER_DOMAIN:
                raise XenError(func, errno.ENOSPC, "grant table full")
            memory = bytearray(count * PAGE_SIZE)
            refs = []
            for i in range(count):
                ref = domain.next_ref
                domain.next_ref += 1  # never reused
                grant = _Grant(h.domid, ref, grantee, memory, i * PAGE_SIZE, bool(writable), h)
                domain.grants[ref] = grant
                h.grants[ref] = grant
                refs.append(ref)
            return refs, memory

    def xengntshr_unshare(self, h: GntHandle, refs: Sequence[int]) -> None:
        """Revoke grants this handle made (EINVAL for any other ref)."""
        func = "xengntshr_unshare"
        with self._lock:
            self._gnt_live(func, h)
            if any(ref not in h.grants for ref in refs):
                raise XenError(func, errno.EINVAL, "ref not shared by this handle")
            for ref in refs:
                self._revoke(h.grants[ref])

    def _revoke(self, grant: _Grant) -> None:
        domain = self._domains.get(grant.granter)
        if domain is not None:
            domain.grants.pop(grant.ref, None)
        grant.owner.grants.pop(grant.ref, None)

    def xengnttab_map_domain_grant_refs(self, h: GntHandle, domid: int, refs: Sequence[int],
                                        writable: bool = True) -> memoryview:
        """A view of the pages ``refs`` of ``domid`` granted to us, in order."""
        func = "xengnttab_map_domain_grant_refs"
        granter_id = _check_domid(func, domid)
        refs = list(refs)
        if not 1 <= len(refs) <= MAX_PAGES_PER_CALL:
            raise XenError(func, errno.EINVAL, "bad refs")
        for ref in refs:
            _check_u32(func, ref, "ref")
        with self._lock:
            self._gnt_live(func, h)
            granter = self._domains.get(granter_id)
            if granter is None:
                raise XenError(func, errno.ESRCH, f"no domain {granter_id}")
            grants = []
            for ref in refs:  # every ref checked before anything is mapped
                grant = granter.grants.get(ref)
                if grant is None:
                    raise XenError(func, errno.EINVAL, f"dom{granter_id} has no grant ref {ref}")
                if grant.grantee != h.domid:
                    raise XenError(func, errno.EPERM, f"ref {ref} is not granted to dom{h.domid}")
                if writable and not grant.writable:
                    raise XenError(func, errno.EACCES, f"ref {ref} is granted read-only")
                grants.append(grant)
            first = grants[0]
            if any(g.memory is not first.memory or g.offset != first.offset + i * PAGE_SIZE
                   for i, g in enumerate(grants)):
                raise XenError(func, errno.EOPNOTSUPP, "the memory hypervisor maps only refs "
                               "that are consecutive pages of one share")
            view = memoryview(first.memory)[first.offset:first.offset + len(refs) * PAGE_SIZE]
            return view if writable else view.toreadonly()

    def gnt_close(self, h: GntHandle) -> None:
        """Close a sharer or mapper; a sharer's grants are revoked."""
        with self._lock:
            h.closed = True
            for grant in list(h.grants.values()):
                self._revoke(grant)

    # -- event channels (xenevtchn_*) ----------------------------------------

    def xenevtchn_open(self, domid: int) -> EvtHandle:
        with self._lock:
            if domid not in self._domains:
                raise XenError("xenevtchn_open", errno.ENOENT, f"no domain {domid}")
            h = EvtHandle(domid)
            self._evtchns.add(h)
            return h

    @staticmethod
    def _evt_live(func: str, h: EvtHandle) -> None:
        if h.closed:
            raise XenError(func, errno.EBADF, "handle is closed")

    @staticmethod
    def _own_port(func: str, h: EvtHandle, port: int) -> _Port:
        _check_u32(func, port, "port")
        p = h.ports.get(port)
        if p is None:
            # Linux evtchn: a port not bound by this handle is ENOTCONN.
            raise XenError(func, errno.ENOTCONN, f"port {port} not bound by this handle")
        return p

    def _new_port(self, func: str, h: EvtHandle, remote_domid: int) -> _Port:
        domain = self._domains[h.domid]
        port = _Port(h.domid, domain.free_port(func), h, remote_domid)
        domain.ports[port.port] = port
        h.ports[port.port] = port
        return port

    def xenevtchn_bind_unbound_port(self, h: EvtHandle, remote_domid: int) -> int:
        func = "xenevtchn_bind_unbound_port"
        remote = _check_domid(func, remote_domid)
        with self._lock:
            self._evt_live(func, h)
            return self._new_port(func, h, remote).port

    def xenevtchn_bind_interdomain(self, h: EvtHandle, remote_domid: int,
                                   remote_port: int) -> int:
        func = "xenevtchn_bind_interdomain"
        remote_id = _check_domid(func, remote_domid)
        _check_u32(func, remote_port, "port")
        with self._lock:
            self._evt_live(func, h)
            remote = self._domains.get(remote_id)
            if remote is None:
                raise XenError(func, errno.ESRCH, f"no domain {remote_id}")
            rport = remote.ports.get(remote_port)
            # Xen evtchn_bind_interdomain: EINVAL unless ECS_UNBOUND naming us.
            if rport is None or rport.peer is not None or rport.remote_domid != h.domid:
                raise XenError(func, errno.EINVAL, f"dom{remote_id} port {remote_port} is not "
                               f"unbound for dom{h.domid}")
            port = self._new_port(func, h, remote_id)
            port.peer, rport.peer = rport, port
            return port.port

    def xenevtchn_notify(self, h: EvtHandle, port: int) -> None:
        func = "xenevtchn_notify"
        with self._lock:
            self._evt_live(func, h)
            peer = self._own_port(func, h, port).peer
            if peer is None:
                return  # unbound: dropped, as Xen's evtchn_send does
            if not peer.pending:
                peer.pending = True
                if peer.claimable:
                    peer.owner.update()

    def xenevtchn_pending(self, h: EvtHandle) -> int | None:
        """The next fired port, now masked; None if none (never blocks)."""
        with self._lock:
            self._evt_live("xenevtchn_pending", h)
            ports = list(h.ports.values())
            n = len(ports)
            for i in range(n):
                k = (h.next + i) % n
                p = ports[k]
                if p.claimable:
                    p.masked, p.pending = True, False
                    h.next = (k + 1) % n
                    h.update()
                    return p.port
            h.update()
            return None

    def xenevtchn_unmask(self, h: EvtHandle, port: int) -> None:
        func = "xenevtchn_unmask"
        with self._lock:
            self._evt_live(func, h)
            _check_u32(func, port, "port")
            p = h.ports.get(port)
            if p is None:
                return  # Linux ignores ports not ours
            p.masked = False
            if p.pending:
                h.update()  # a notify latched meanwhile: reportable again

    def xenevtchn_unbind(self, h: EvtHandle, port: int) -> None:
        func = "xenevtchn_unbind"
        with self._lock:
            self._evt_live(func, h)
            self._close_port(self._own_port(func, h, port))

    def _close_port(self, p: _Port) -> None:
        domain = self._domains.get(p.domid)
        if domain is not None:
            domain.ports.pop(p.port, None)
        p.owner.ports.pop(p.port, None)
        peer = p.peer
        if peer is not None:
            # Xen evtchn_close: the peer becomes unbound, remote = our domain;
            # its mask and latched notify stay.
            p.peer = peer.peer = None
            peer.remote_domid = p.domid
        p.owner.update()

    def xenevtchn_close(self, h: EvtHandle) -> None:
        with self._lock:
            if h.closed:
                return
            for p in list(h.ports.values()):
                self._close_port(p)
            h.closed = True
            self._evtchns.discard(h)
            h.signal.close()
