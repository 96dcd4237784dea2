"""The simulated xenstore daemon: the real wire protocol over Unix sockets.

Rule 1: the listening socket a client connected to fixes its domid (one
socket per domain, ``sim_dir/dom<N>/xenstored``); the unmodified libxenstore
reaches it through ``XENSTORED_PATH``.  Relative paths resolve against
``/local/domain/<N>``.

Rule 2: every client is untrusted.  A bad request gets an ``ERROR`` reply
with an xs_wire.h errno name; a client that breaks the framing (payload over
``XENSTORE_PAYLOAD_MAX``) or does not read its replies is disconnected.
Nothing a client sends raises out of a selector callback, and no callback
blocks.

Rule 3: semantics follow Xen's docs/misc/xenstore.txt and the C xenstored:
permissions (dom0 privileged, owner, then ACL entries, first entry = owner +
default), watches (fire once when set, for changes at or below the watched
path, relative in -> relative out), transactions that work on their own copy
of the tree and fail with EAGAIN at commit if anything they read or wrote
changed meanwhile (per-node generation numbers).

The semantics live in module-level pieces that know nothing of sockets:
the node store (:class:`Tree`), the permission check (:func:`can`), path
rules (:func:`canon_path`), watch matching (:func:`watch_fires`) and the
commit of a :class:`Transaction` (:func:`commit`).
:mod:`alsa_pvplug.sim.memory` serves the same xenstore in-process with them.

Wire format (xs_wire.h): ``struct xsd_sockmsg {u32 type, req_id, tx_id,
len}`` in host byte order, then ``len`` bytes of NUL-separated strings.
"""

from __future__ import annotations

import collections
import enum
import errno
import itertools
import logging
import pathlib
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import XenError

logger = logging.getLogger(__name__)


class XsType(enum.IntEnum):
    """enum xsd_sockmsg_type (xs_wire.h)."""

    CONTROL = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESET_WATCHES = 21
    DIRECTORY_PART = 22


HEADER = struct.Struct("=IIII")  # xsd_sockmsg, host byte order
PAYLOAD_MAX = 4096  # XENSTORE_PAYLOAD_MAX
ABS_PATH_MAX = 3072  # XENSTORE_ABS_PATH_MAX
REL_PATH_MAX = 2048  # XENSTORE_REL_PATH_MAX
_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-/_@")
PERM_LETTERS = frozenset("nrwb")
# Quotas, C xenstored defaults (xenstored_core.c / xenstored_domain.c).
QUOTA_NODES = 1000
QUOTA_WATCHES = 128
QUOTA_TRANSACTIONS = 10
QUOTA_PERMS = 5 + 1  # ACL entries besides the owner's, plus the owner
# Unread output beyond which we stop reading a client's requests, and
# beyond which (only reachable through watch events) we drop the client.
_HIGH_WATER = 64 * 1024
_OUTPUT_MAX = 1024 * 1024


class XsError(Exception):
    """Becomes an ERROR reply carrying ``name`` (an xsd_errors string)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


Perms = list[tuple[int, str]]
# (path, the node's perms (old and new ones for SET_PERMS), exact match only)
Event = tuple[str, tuple[Perms, ...], bool]
# A handler's reply payload, and what to do once the reply is queued.
_Reply = tuple[bytes, "Callable[[], None] | None"]


def can(domid: int, perms: Perms, want: str) -> bool:
    """perm_for_conn: dom0 and the owner may do anything; else first matching ACL entry."""
    if domid == 0 or perms[0][0] == domid:
        return True
    letter = perms[0][1]
    for entry_domid, entry_letter in perms[1:]:
        if entry_domid == domid:
            letter = entry_letter
            break
    return letter == "b" or letter == want


def parent_path(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def is_child(path: str, ancestor: str) -> bool:
    return path == ancestor or ancestor == "/" or path.startswith(ancestor + "/")


def canon_path(domid: int, raw: bytes, special: bool = False) -> str:
    """Validate a path (charset, length, slashes) and make it absolute
    (relative to ``/local/domain/<domid>``); ``special``: ``@...`` allowed."""
    try:
        path = raw.decode("ascii")
    except UnicodeDecodeError:
        raise XsError("EINVAL") from None
    if path.startswith("@"):
        if not special:
            raise XsError("EINVAL")
    elif not path.startswith("/"):
        if len(path) > REL_PATH_MAX:
            raise XsError("EINVAL")
        path = f"/local/domain/{domid}/{path}"
    if (not path or len(path) > ABS_PATH_MAX or not _PATH_CHARS.issuperset(path)
            or "//" in path or (path.endswith("/") and path != "/")):
        raise XsError("EINVAL")
    return path


def watch_fires(domid: int, watch_path: str, event: Event) -> bool:
    """Whether ``event`` fires a watch on ``watch_path`` set by ``domid``:
    special (``@``) events reach dom0 only and match exactly; others reach
    watchers that may read the node (under its old or new permissions), at
    or above it (only at it for ``exact`` ones, the children of a removed
    node)."""
    path, perms, exact = event
    if path.startswith("@"):
        if domid != 0:
            return False  # special events go to privileged watchers only
    elif not any(can(domid, p, "r") for p in perms):
        return False  # watchers only hear of nodes they may read
    return path == watch_path or (not exact and not path.startswith("@")
                                  and not watch_path.startswith("@")
                                  and is_child(path, watch_path))


@dataclass(eq=False)
class Node:
    value: bytes
    perms: Perms
    gen: int
    children: dict[str, Node] = field(default_factory=dict)


class Tree:
    """The node store; a transaction works on its own copy with ``accessed`` set."""

    def __init__(self, gens: Iterator[int]) -> None:
        self.gens = gens
        self.root = Node(b"", [(0, "n")], next(gens))
        self.owned: collections.Counter[int] = collections.Counter({0: 1})
        # path -> generation when the transaction first touched it (None = absent).
        self.accessed: dict[str, int | None] | None = None

    def copy(self) -> Tree:
        """A deep copy for a transaction (iterative: paths may be ~1500 deep)."""
        new = Tree.__new__(Tree)
        new.gens, new.owned, new.accessed = self.gens, self.owned.copy(), {}
        new.root = Node(self.root.value, list(self.root.perms), self.root.gen)
        stack = [(self.root, new.root)]
        while stack:
            src, dst = stack.pop()
            for name, child in src.children.items():
                twin = Node(child.value, list(child.perms), child.gen)
                dst.children[name] = twin
                stack.append((child, twin))
        return new

    def peek(self, path: str) -> Node | None:
        node: Node | None = self.root
        if path != "/":
            for name in path[1:].split("/"):
                node = node.children.get(name) if node else None
        return node

    def get(self, path: str) -> Node | None:
        node = self.peek(path)
        if self.accessed is not None:
            self.accessed.setdefault(path, node.gen if node else None)
        return node

    def _missing(self, domid: int, path: str, want: str) -> XsError:
        """errno_from_parents: ENOENT only if the nearest existing ancestor grants ``want``."""
        while path != "/":
            path = parent_path(path)
            node = self.get(path)
            if node is not None:
                return XsError("ENOENT" if can(domid, node.perms, want) else "EACCES")
        return XsError("ENOENT")

    def node(self, domid: int, path: str, want: str) -> Node:
        node = self.get(path)
        if node is None:
            raise self._missing(domid, path, want)
        if not can(domid, node.perms, want):
            raise XsError("EACCES")
        return node

    def _create(self, domid: int, path: str, value: bytes) -> None:
        missing, anc = [], path
        while (node := self.get(anc)) is None:
            missing.append(anc)
            anc = parent_path(anc)
        if not can(domid, node.perms, "w"):
            raise XsError("EACCES")
        if domid != 0 and self.owned[domid] + len(missing) > QUOTA_NODES:
            raise XsError("ENOSPC")
        for p in reversed(missing):
            perms = list(node.perms)
            if domid != 0:  # a guest owns what it creates (construct_node)
                perms[0] = (domid, perms[0][1])
            child = Node(b"", perms, next(self.gens))
            node.children[p.rsplit("/", 1)[1]] = child
            node.gen = next(self.gens)
            self.owned[perms[0][0]] += 1
            node = child
        node.value = value

    def write(self, domid: int, path: str, value: bytes) -> list[Event]:
        node = self.get(path)
        if node is None:
            self._create(domid, path, value)
        else:
            if not can(domid, node.perms, "w"):
                raise XsError("EACCES")
            node.value, node.gen = value, next(self.gens)
        return [(path, (self.peek(path).perms,), False)]  # type: ignore[union-attr]

    def mkdir(self, domid: int, path: str) -> list[Event]:
        node = self.get(path)
        if node is not None:
            if not can(domid, node.perms, "w"):
                raise XsError("EACCES")
            return []
        self._create(domid, path, b"")
        return [(path, (self.peek(path).perms,), False)]  # type: ignore[union-attr]

    def rm(self, domid: int, path: str) -> list[Event]:
        if path == "/":
            raise XsError("EINVAL")
        node = self.get(path)
        if node is None:
            err = self._missing(domid, path, "w")
            if err.name == "ENOENT" and self.get(parent_path(path)) is not None:
                return []  # "not an error if <path> does not exist" (xenstore.txt)
            raise err
        if not can(domid, node.perms, "w"):
            raise XsError("EACCES")
        events: list[Event] = [(path, (node.perms,), False)]
        stack = [(path, node)]
        while stack:  # every removed node: conflict record, quota, exact events
            p, n = stack.pop()
            self.get(p)
            self.owned[n.perms[0][0]] -= 1
            for name, child in n.children.items():
                stack.append((f"{p}/{name}", child))
                events.append((f"{p}/{name}", (child.perms,), True))
        parent = self.peek(parent_path(path))
        assert parent is not None
        del parent.children[path.rsplit("/", 1)[1]]
        parent.gen = next(self.gens)
        return events

    def set_perms(self, domid: int, path: str, perms: Perms) -> list[Event]:
        node = self.node(domid, path, "w")
        if domid != 0 and node.perms[0][0] != domid:
            raise XsError("EACCES")  # XS_PERM_OWNER needed
        if domid != 0 and perms[0][0] != node.perms[0][0]:
            raise XsError("EPERM")  # guests cannot give nodes away
        old = node.perms
        self.owned[old[0][0]] -= 1
        self.owned[perms[0][0]] += 1
        node.perms, node.gen = list(perms), next(self.gens)
        return [(path, (old, node.perms), False)]


@dataclass(eq=False)
class _Watch:
    path: str  # absolute, or "@..."
    token: bytes
    relative: bool


@dataclass(eq=False)
class Transaction:
    """A transaction's own copy of the tree and the mutations to replay."""

    tree: Tree
    log: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)


def commit(tree: Tree, tx: Transaction, domid: int) -> list[Event]:
    """Commit ``tx`` (of ``domid``) into ``tree``: EAGAIN if a node it read
    or wrote changed meanwhile, else replay its log; the events to fire."""
    assert tx.tree.accessed is not None
    for path, gen in tx.tree.accessed.items():
        node = tree.peek(path)
        if (node.gen if node else None) != gen:
            raise XsError("EAGAIN")
    events: list[Event] = []
    for op, args in tx.log:  # nothing it touched changed: same ops, same result
        try:
            events += getattr(tree, op)(*args)
        except XsError as exc:
            logger.error("dom%d: commit replay of %s failed: %s", domid, op, exc.name)
    return events


@dataclass(eq=False)
class _Connection:
    domid: int
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)
    events: int = 0  # what the selector watches for us now
    closed: bool = False
    watches: list[_Watch] = field(default_factory=list)
    transactions: dict[int, Transaction] = field(default_factory=dict)


class XenstoredServer:
    """The xenstore daemon of the simulated domains.

    Parameters
    ----------
    sim_dir
        Directory holding one ``dom<N>/xenstored`` socket per domain.

    Notes
    -----
    The owner's selector loop calls ``key.data(mask)`` for every ready key
    registered by :meth:`register`.  An internal lock makes the in-process
    methods (:meth:`write`, :meth:`read`, ...) safe to call from another
    thread than the loop's.
    """

    def __init__(self, sim_dir: pathlib.Path) -> None:
        self.sim_dir = pathlib.Path(sim_dir)
        self._gens = itertools.count(1)
        self._tree = Tree(self._gens)
        self._tx_ids = itertools.count(1)
        self._listeners: dict[int, tuple[socket.socket, pathlib.Path]] = {}
        self._connections: set[_Connection] = set()
        self._sel: selectors.BaseSelector | None = None
        self._lock = threading.RLock()

    # -- public API --------------------------------------------------------

    def add_domain(self, domid: int) -> pathlib.Path:
        """Create the listening socket of ``domid``; return its path."""
        if not 0 <= domid < 0x7FF0:  # DOMID_FIRST_RESERVED (xen.h)
            raise ValueError(f"domid {domid} out of range")
        with self._lock:
            if domid in self._listeners:
                return self._listeners[domid][1]
            path = self.sim_dir / f"dom{domid}" / "xenstored"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)  # a stale socket from an earlier run
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(str(path))
                listener.listen(64)
                listener.setblocking(False)
            except BaseException:
                listener.close()
                raise
            self._listeners[domid] = (listener, path)
            if self._sel is not None:
                self._sel.register(listener, selectors.EVENT_READ, self._acceptor(domid))
            self._fire([("@introduceDomain", ([(0, "n")],), False)])
            return path

    def register(self, sel: selectors.BaseSelector) -> None:
        """Register the listening sockets (and later connections) with ``sel``.

        Each key's ``data`` is a callable taking the event mask.
        """
        with self._lock:
            self._sel = sel
            for domid, (listener, _) in self._listeners.items():
                sel.register(listener, selectors.EVENT_READ, self._acceptor(domid))
            for conn in self._connections:
                conn.events = 0
                self._update_interest(conn)

    def write(self, path: str, value: str | bytes) -> None:
        """Write as dom0 (creating parents) and fire watches."""
        data = value.encode() if isinstance(value, str) else bytes(value)
        self._privileged("write", path, data)

    def mkdir(self, path: str) -> None:
        self._privileged("mkdir", path)

    def rm(self, path: str) -> None:
        """Remove the subtree; a missing node with an existing parent is fine."""
        self._privileged("rm", path)

    def set_perms(self, path: str, perms: list[tuple[int, str]]) -> None:
        """Set the ACL, ``[(owner, default), (domid, letter), ...]``; letters n/r/w/b."""
        if not perms or any(letter not in PERM_LETTERS or not 0 <= d <= 0xFFFF
                            for d, letter in perms):
            raise XenError("set_perms", errno.EINVAL, f"bad permissions {perms!r}")
        self._privileged("set_perms", path, [(int(d), str(letter)) for d, letter in perms])

    def read(self, path: str) -> str | None:
        with self._lock:
            node = self._tree.peek(self._check_path("read", path))
            return None if node is None else node.value.decode(errors="surrogateescape")

    def directory(self, path: str) -> list[str] | None:
        with self._lock:
            node = self._tree.peek(self._check_path("directory", path))
            return None if node is None else list(node.children)

    def close(self) -> None:
        """Drop every connection, close and unlink the sockets (idempotent)."""
        with self._lock:
            for conn in list(self._connections):
                self._drop(conn)
            for listener, path in self._listeners.values():
                self._unregister(listener)
                listener.close()
                path.unlink(missing_ok=True)
            self._listeners.clear()

    def _check_path(self, func: str, path: str) -> str:
        try:
            return canon_path(0, path.encode())
        except (XsError, UnicodeError):
            raise XenError(func, errno.EINVAL, f"bad path {path!r}") from None

    def _privileged(self, func: str, path: str, *args: object) -> None:
        with self._lock:
            canon = self._check_path(func, path)
            try:
                events = getattr(self._tree, func)(0, canon, *args)
            except XsError as exc:
                raise XenError(func, getattr(errno, exc.name), path) from None
            self._fire(events)

    # -- connections -------------------------------------------------------

    def _acceptor(self, domid: int) -> Callable[[int], None]:
        def accept(mask: int) -> None:
            with self._lock:
                if domid not in self._listeners:
                    return
                try:
                    sock, _ = self._listeners[domid][0].accept()
                except OSError:  # EAGAIN after a racing accept, EMFILE, ...
                    return
                sock.setblocking(False)
                conn = _Connection(domid, sock)
                self._connections.add(conn)
                self._update_interest(conn)
        return accept

    def _unregister(self, sock: socket.socket) -> None:
        if self._sel is not None:
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass

    def _update_interest(self, conn: _Connection) -> None:
        """Read while output is small, write while output is pending."""
        want = ((selectors.EVENT_READ if len(conn.out) < _HIGH_WATER else 0)
                | (selectors.EVENT_WRITE if conn.out else 0))
        if self._sel is None or conn.closed or want == conn.events:
            return
        if conn.events:
            self._sel.modify(conn.sock, want, self._callback(conn))
        else:
            self._sel.register(conn.sock, want, self._callback(conn))
        conn.events = want

    def _callback(self, conn: _Connection) -> Callable[[int], None]:
        def on_ready(mask: int) -> None:
            with self._lock:
                if mask & selectors.EVENT_WRITE:
                    self._flush(conn)
                if mask & selectors.EVENT_READ and not conn.closed:
                    try:
                        data = conn.sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        data = None
                    except OSError:
                        data = b""
                    if data == b"":
                        self._drop(conn)
                        return
                    conn.inbuf += data or b""
                self._process(conn)
        return on_ready

    def _process(self, conn: _Connection) -> None:
        """Handle every complete request, pausing while output backs up."""
        while not conn.closed and len(conn.out) < _HIGH_WATER and len(conn.inbuf) >= HEADER.size:
            type_, req_id, tx_id, length = HEADER.unpack_from(conn.inbuf)
            if length > PAYLOAD_MAX:  # xenstore.txt: the connection is killed
                logger.warning("dom%d: payload of %d bytes, disconnecting", conn.domid, length)
                self._drop(conn)
                return
            if len(conn.inbuf) < HEADER.size + length:
                break
            payload = bytes(conn.inbuf[HEADER.size:HEADER.size + length])
            del conn.inbuf[:HEADER.size + length]
            self._request(conn, type_, req_id, tx_id, payload)
        self._update_interest(conn)

    def _send(self, conn: _Connection, type_: int, req_id: int, tx_id: int, payload: bytes) -> None:
        if conn.closed:
            return
        conn.out += HEADER.pack(type_, req_id, tx_id, len(payload)) + payload
        self._flush(conn)

    def _flush(self, conn: _Connection) -> None:
        while conn.out and not conn.closed:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(conn)
                return
            del conn.out[:sent]
        if len(conn.out) > _OUTPUT_MAX:
            logger.warning("dom%d: client does not read its events, disconnecting", conn.domid)
            self._drop(conn)
            return
        self._update_interest(conn)

    def _drop(self, conn: _Connection) -> None:
        """Close ``conn``; its watches and open transactions go with it."""
        if conn.closed:
            return
        conn.closed = True
        self._connections.discard(conn)
        conn.watches.clear()
        conn.transactions.clear()
        self._unregister(conn.sock)
        conn.sock.close()

    # -- requests ----------------------------------------------------------

    def _request(self, conn: _Connection, type_: int, req_id: int, tx_id: int,
                 payload: bytes) -> None:
        then: Callable[[], None] | None = None
        try:
            handler = self._HANDLERS.get(type_)
            if handler is None:
                raise XsError("EACCES" if conn.domid != 0 and type_ in _DOM0_ONLY else "ENOSYS")
            reply, then = handler(self, conn, tx_id, payload)
        except XsError as exc:
            self._send(conn, XsType.ERROR, req_id, tx_id, exc.name.encode() + b"\0")
            return
        except Exception:  # a bug here must not take the other clients down
            logger.exception("dom%d: request type %d failed", conn.domid, type_)
            self._send(conn, XsType.ERROR, req_id, tx_id, b"EIO\0")
            return
        self._send(conn, type_, req_id, tx_id, reply)
        if then is not None:  # after the reply, as C xenstored sends the ack first
            then()

    @staticmethod
    def _strings(payload: bytes, count: int, exact: bool = True) -> list[bytes]:
        """The NUL-terminated strings of a payload (C onearg/get_strings)."""
        if not payload.endswith(b"\0"):
            raise XsError("EINVAL")
        parts = payload[:-1].split(b"\0")
        if len(parts) < count or (exact and len(parts) != count):
            raise XsError("EINVAL")
        return parts

    def _tree_for(self, conn: _Connection, tx_id: int) -> tuple[Tree, Transaction | None]:
        if tx_id == 0:
            return self._tree, None
        tx = conn.transactions.get(tx_id)
        if tx is None:
            raise XsError("ENOENT")
        return tx.tree, tx

    def _mutate(self, conn: _Connection, tx_id: int, op: str, *args: object) -> _Reply:
        tree, tx = self._tree_for(conn, tx_id)
        events = getattr(tree, op)(conn.domid, *args)
        if tx is not None:  # replayed on commit; events fire only then
            tx.log.append((op, (conn.domid, *args)))
            return b"OK\0", None
        return b"OK\0", lambda: self._fire(events)

    def _path_arg(self, conn: _Connection, payload: bytes) -> str:
        return canon_path(conn.domid, self._strings(payload, 1)[0])

    def _op_read(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        path = self._path_arg(conn, payload)
        return self._tree_for(conn, tx_id)[0].node(conn.domid, path, "r").value, None

    def _op_write(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        raw, sep, value = payload.partition(b"\0")
        if not sep:
            raise XsError("EINVAL")
        return self._mutate(conn, tx_id, "write", canon_path(conn.domid, raw), value)

    def _op_mkdir(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        return self._mutate(conn, tx_id, "mkdir", self._path_arg(conn, payload))

    def _op_rm(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        return self._mutate(conn, tx_id, "rm", self._path_arg(conn, payload))

    def _op_directory(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        path = self._path_arg(conn, payload)
        node = self._tree_for(conn, tx_id)[0].node(conn.domid, path, "r")
        reply = b"".join(name.encode() + b"\0" for name in node.children)
        if len(reply) > PAYLOAD_MAX:
            raise XsError("E2BIG")  # libxenstore then falls back to DIRECTORY_PART
        return reply, None

    def _op_directory_part(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        raw, offset_raw = self._strings(payload, 2)
        path = canon_path(conn.domid, raw)
        node = self._tree_for(conn, tx_id)[0].node(conn.domid, path, "r")
        if not offset_raw.isdigit():
            raise XsError("EINVAL")
        offset = int(offset_raw)
        head = b"%d\0" % node.gen  # <gencnt>|, then the list from byte <offset>
        names = [name.encode() + b"\0" for name in node.children]
        pos, chunk = 0, bytearray()
        for name in names:
            if pos >= offset:
                if len(head) + len(chunk) + len(name) + 1 > PAYLOAD_MAX:
                    return head + bytes(chunk), None
                chunk += name
            pos += len(name)
        if offset > pos:
            raise XsError("EINVAL")
        return head + bytes(chunk) + b"\0", None  # empty name marks the end

    def _op_get_perms(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        path = self._path_arg(conn, payload)
        node = self._tree_for(conn, tx_id)[0].node(conn.domid, path, "r")
        return b"".join(f"{letter}{domid}".encode() + b"\0" for domid, letter in node.perms), None

    def _op_set_perms(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        parts = self._strings(payload, 2, exact=False)
        path = canon_path(conn.domid, parts[0])
        if len(parts) - 1 > QUOTA_PERMS:
            raise XsError("ENOSPC")
        perms: Perms = []
        for item in parts[1:]:
            letter, digits = item[:1].decode("latin-1"), item[1:]
            if letter not in PERM_LETTERS or not digits.isdigit() or int(digits) > 0xFFFF:
                raise XsError("EINVAL")
            perms.append((int(digits), letter))
        return self._mutate(conn, tx_id, "set_perms", path, perms)

    def _op_watch(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        raw, token = self._strings(payload, 2, exact=False)[:2]
        path = canon_path(conn.domid, raw, special=True)
        if any(w.path == path and w.token == token for w in conn.watches):
            raise XsError("EEXIST")
        if len(conn.watches) >= QUOTA_WATCHES:
            raise XsError("E2BIG")
        watch = _Watch(path, token, not raw.startswith((b"/", b"@")))
        conn.watches.append(watch)
        # "When a watch is first set up it is triggered once straight away."
        return b"OK\0", lambda: self._event(conn, watch, path)

    def _op_unwatch(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        raw, token = self._strings(payload, 2, exact=False)[:2]
        path = canon_path(conn.domid, raw, special=True)
        for watch in conn.watches:
            if watch.path == path and watch.token == token:
                conn.watches.remove(watch)
                return b"OK\0", None
        raise XsError("ENOENT")

    def _op_transaction_start(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        if tx_id != 0:
            raise XsError("EBUSY")
        if len(conn.transactions) >= QUOTA_TRANSACTIONS:
            raise XsError("ENOSPC")
        new_id = next(self._tx_ids) & 0xFFFFFFFF or next(self._tx_ids)
        conn.transactions[new_id] = Transaction(self._tree.copy())
        return b"%d\0" % new_id, None

    def _op_transaction_end(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        arg = self._strings(payload, 1)[0]
        if arg not in (b"T", b"F"):
            raise XsError("EINVAL")
        tx = conn.transactions.pop(tx_id, None)
        if tx is None:
            raise XsError("ENOENT")
        if arg == b"F":
            return b"OK\0", None
        events = commit(self._tree, tx, conn.domid)
        return b"OK\0", lambda: self._fire(events)

    def _op_get_domain_path(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        return b"/local/domain/%d\0" % self._domid_arg(payload), None

    def _op_is_domain_introduced(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        return (b"T\0" if self._domid_arg(payload) in self._listeners else b"F\0"), None

    def _op_reset_watches(self, conn: _Connection, tx_id: int, payload: bytes) -> _Reply:
        conn.watches.clear()
        conn.transactions.clear()
        return b"OK\0", None

    def _domid_arg(self, payload: bytes) -> int:
        raw = self._strings(payload, 1)[0]
        if not raw.isdigit() or int(raw) > 0xFFFF:
            raise XsError("EINVAL")
        return int(raw)

    # -- watches -----------------------------------------------------------

    def _fire(self, events: list[Event]) -> None:
        for conn in list(self._connections):
            for event in events:
                if conn.closed:
                    break
                for watch in list(conn.watches):
                    if watch_fires(conn.domid, watch.path, event):
                        self._event(conn, watch, event[0])

    def _event(self, conn: _Connection, watch: _Watch, path: str) -> None:
        if watch.relative:
            path = path[len(f"/local/domain/{conn.domid}/"):]
        self._send(conn, XsType.WATCH_EVENT, 0, 0, path.encode() + b"\0" + watch.token + b"\0")

    _HANDLERS: dict[int, Callable[[XenstoredServer, _Connection, int, bytes], _Reply]] = {
        XsType.READ: _op_read, XsType.WRITE: _op_write, XsType.MKDIR: _op_mkdir,
        XsType.RM: _op_rm, XsType.DIRECTORY: _op_directory,
        XsType.DIRECTORY_PART: _op_directory_part, XsType.GET_PERMS: _op_get_perms,
        XsType.SET_PERMS: _op_set_perms, XsType.WATCH: _op_watch, XsType.UNWATCH: _op_unwatch,
        XsType.TRANSACTION_START: _op_transaction_start,
        XsType.TRANSACTION_END: _op_transaction_end,
        XsType.GET_DOMAIN_PATH: _op_get_domain_path,
        XsType.IS_DOMAIN_INTRODUCED: _op_is_domain_introduced,
        XsType.RESET_WATCHES: _op_reset_watches,
    }


_DOM0_ONLY = frozenset({XsType.INTRODUCE, XsType.RELEASE, XsType.RESUME, XsType.SET_TARGET,
                        XsType.CONTROL})
