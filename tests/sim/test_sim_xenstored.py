"""The simulated xenstored against the UNMODIFIED libxenstore (through
LibXenStore) and the real xenstore-utils CLI tools, plus hostile raw clients.

The server runs in a background thread with a small selector loop; its
in-process (dom0) methods are called from the test thread, which the
server's lock allows.
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alsa_pvplug.errors import XenError
from alsa_pvplug.sim.xenstored import HEADER, XenstoredServer, XsType

try:
    import alsa_pvplug._native  # noqa: F401  (built by pvplug_build.py)
    from alsa_pvplug.transport.xenstore import LibXenStore
except ImportError:  # pragma: no cover - native module not built
    pytest.skip("alsa_pvplug._native not built", allow_module_level=True)

DEADLINE = 5.0


class ServerThread:
    """XenstoredServer + a selector loop in a thread; ``stop()`` joins it."""

    def __init__(self, sim_dir: Path) -> None:
        self.server = XenstoredServer(sim_dir)
        self.paths = {domid: self.server.add_domain(domid) for domid in (0, 1, 2)}
        self.sel = selectors.DefaultSelector()
        self.server.register(self.sel)
        self._wake_r, self._wake_w = socket.socketpair()
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        self.thread = threading.Thread(target=self._loop, name="xenstored", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop:
            for key, mask in self.sel.select(1.0):
                if key.data is not None:
                    key.data(mask)

    def stop(self) -> None:
        if self._stop:
            return
        self._stop = True
        self._wake_w.send(b"x")
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "server loop did not stop"
        self.server.close()
        self.sel.close()
        self._wake_r.close()
        self._wake_w.close()


@pytest.fixture
def xsd(tmp_path: Path) -> Iterator[ServerThread]:
    st = ServerThread(tmp_path)
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture
def clients(xsd: ServerThread) -> Iterator[dict[str, LibXenStore]]:
    """Three libxenstore connections: two as dom0, one as guest dom1."""
    opened = {"a": LibXenStore.open(str(xsd.paths[0])),
              "b": LibXenStore.open(str(xsd.paths[0])),
              "g": LibXenStore.open(str(xsd.paths[1]))}
    try:
        yield opened
    finally:
        for xs in opened.values():
            xs.close()


def wait_events(xs: LibXenStore, count: int, timeout: float = DEADLINE) -> list[tuple[str, str]]:
    """Collect at least ``count`` watch events, polling ``fileno()`` with a deadline."""
    events: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    fd = xs.fileno()
    while len(events) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        select.select([fd], [], [], left)
        events += xs.check_watch()
    return events


def settle(xs: LibXenStore) -> None:
    """A round trip: every event the server sent before it is already queued."""
    xs.get_domain_path(0)


# -- libxenstore: data operations ------------------------------------------


class TestData:
    def test_write_read_directory_rm(self, clients: dict[str, LibXenStore]) -> None:
        xs = clients["a"]
        xs.write("/t/a/b", "hello")  # creates missing parents
        assert xs.read("/t/a/b") == "hello"
        assert xs.read("/t/a") == ""
        assert xs.directory("/t") == ["a"]
        xs.mkdir("/t/dir")
        xs.mkdir("/t/dir")  # existing: fine, value kept
        assert xs.directory("/t") == ["a", "dir"]
        assert xs.read("/t/missing") is None
        assert xs.directory("/t/missing") is None
        xs.rm("/t/a")
        assert xs.read("/t/a/b") is None
        xs.rm("/t/a")  # missing node, parent exists: not an error
        assert xs.directory("/t") == ["dir"]

    def test_binary_value_and_empty(self, clients: dict[str, LibXenStore]) -> None:
        xs = clients["a"]
        xs.write("/v", "")
        assert xs.read("/v") == ""
        xs.write("/v", "x" * 3000)
        assert xs.read("/v") == "x" * 3000

    def test_bad_paths_rejected(self, clients: dict[str, LibXenStore]) -> None:
        xs = clients["a"]
        for bad in ("/a//b", "/a/", "/a b", "/é", "@introduceDomain", "/" + "a" * 3100):
            with pytest.raises(XenError) as info:
                xs.write(bad, "1")
            assert info.value.errno in (errno.EINVAL, errno.E2BIG), bad
        with pytest.raises(XenError):
            xs.rm("/")

    def test_large_directory_uses_directory_part(self, clients: dict[str, LibXenStore]) -> None:
        xs = clients["a"]
        names = [f"child-{i:04d}" for i in range(600)]  # ~6600 bytes > XENSTORE_PAYLOAD_MAX

        def fill(tx: int) -> None:
            for name in names:
                xs.write(f"/big/{name}", "", tx)
        xs.transact(fill)
        assert xs.directory("/big") == names

    def test_domain_path_and_relative_paths(self, clients: dict[str, LibXenStore],
                                            xsd: ServerThread) -> None:
        assert clients["g"].get_domain_path(7) == "/local/domain/7"
        xsd.server.mkdir("/local/domain/1")
        xsd.server.set_perms("/local/domain/1", [(1, "n")])
        xsd.server.write("/local/domain/1/name", "guest1")  # inherits: owned by dom1
        g = clients["g"]
        assert g.read("name") == "guest1"
        g.write("data/x", "42")
        assert clients["a"].read("/local/domain/1/data/x") == "42"
        assert clients["a"].read("data/x") is None  # dom0's relative base differs


# -- permissions ------------------------------------------------------------


class TestPermissions:
    def test_guest_denied_then_granted(self, clients: dict[str, LibXenStore]) -> None:
        a, g = clients["a"], clients["g"]
        a.write("/secret", "s")
        assert a.get_permissions("/secret") == [(0, "n")]  # inherited from /
        with pytest.raises(XenError) as info:
            g.read("/secret")
        assert info.value.errno == errno.EACCES
        with pytest.raises(XenError) as info:
            g.write("/secret", "x")
        assert info.value.errno == errno.EACCES
        with pytest.raises(XenError) as info:
            g.write("/secret/child", "x")  # creating needs write on the parent
        assert info.value.errno == errno.EACCES
        a.set_permissions("/secret", [(0, "n"), (1, "r")])
        assert a.get_permissions("/secret") == [(0, "n"), (1, "r")]
        assert g.read("/secret") == "s"
        with pytest.raises(XenError) as info:
            g.write("/secret", "x")
        assert info.value.errno == errno.EACCES
        # Missing node under a readable parent: ENOENT, i.e. None.
        assert g.read("/secret/none") is None

    def test_guest_owns_what_it_creates(self, clients: dict[str, LibXenStore]) -> None:
        a, g = clients["a"], clients["g"]
        a.mkdir("/local/domain/1")
        a.set_permissions("/local/domain/1", [(1, "n")])
        a.mkdir("/local/domain/2")
        a.set_permissions("/local/domain/2", [(2, "n"), (1, "r")])
        g.write("/local/domain/1/device/vsnd/0/state", "1")
        assert a.get_permissions("/local/domain/1/device/vsnd/0/state") == [(1, "n")]
        with pytest.raises(XenError) as info:
            g.write("/local/domain/2/x", "1")
        assert info.value.errno == errno.EACCES
        # The owner may grant access but may not give the node away.
        g.set_permissions("/local/domain/1/device", [(1, "n"), (2, "b")])
        with pytest.raises(XenError) as info:
            g.set_permissions("/local/domain/1/device", [(2, "n")])
        assert info.value.errno == errno.EPERM
        with pytest.raises(XenError) as info:
            g.set_permissions("/local/domain/2", [(2, "b")])  # readable, not owned
        assert info.value.errno == errno.EACCES


# -- transactions ----------------------------------------------------------


class TestTransactions:
    def test_isolation_commit_abort(self, clients: dict[str, LibXenStore]) -> None:
        a, b = clients["a"], clients["b"]
        a.write("/tx/v", "0")
        tx = a.transaction_start()
        a.write("/tx/v", "1", tx)
        a.write("/tx/new", "n", tx)
        assert a.read("/tx/v", tx) == "1"
        assert b.read("/tx/v") == "0" and b.read("/tx/new") is None
        assert a.transaction_end(tx) is True
        assert b.read("/tx/v") == "1" and b.read("/tx/new") == "n"

        tx = a.transaction_start()
        a.rm("/tx/new", tx)
        assert a.read("/tx/new", tx) is None
        assert a.transaction_end(tx, abort=True) is True
        assert b.read("/tx/new") == "n"

    def test_conflict_gives_eagain(self, clients: dict[str, LibXenStore]) -> None:
        a, b = clients["a"], clients["b"]
        a.write("/c", "0")
        tx = a.transaction_start()
        assert a.read("/c", tx) == "0"
        b.write("/c", "b")  # someone else changes what the transaction read
        a.write("/c", "a", tx)
        assert a.transaction_end(tx) is False
        assert a.read("/c") == "b"
        # An unrelated change does not conflict.
        tx = a.transaction_start()
        a.write("/c", "a", tx)
        b.write("/other", "x")
        assert a.transaction_end(tx) is True
        assert b.read("/c") == "a"

    def test_transact_retries(self, clients: dict[str, LibXenStore]) -> None:
        a, b = clients["a"], clients["b"]
        a.write("/n", "0")
        calls = []

        def bump(tx: int) -> int:
            value = int(a.read("/n", tx) or 0)
            if not calls:
                b.write("/n", "10")  # lose the first race
            calls.append(value)
            a.write("/n", str(value + 1), tx)
            return value + 1
        assert a.transact(bump) == 11
        assert calls == [0, 10]
        assert b.read("/n") == "11"

    def test_unknown_transaction(self, clients: dict[str, LibXenStore]) -> None:
        with pytest.raises(XenError) as info:
            clients["a"].write("/x", "1", 12345)
        assert info.value.errno == errno.ENOENT


# -- watches ---------------------------------------------------------------


class TestWatches:
    def test_fire_on_set_change_and_rm(self, clients: dict[str, LibXenStore]) -> None:
        a, b = clients["a"], clients["b"]
        b.write("/w/sub/leaf", "0")
        a.watch("/w", "tok")
        a.watch("/w/sub/leaf", "leaf")
        assert sorted(wait_events(a, 2)) == [("/w", "tok"), ("/w/sub/leaf", "leaf")]
        b.write("/w/sub/leaf", "1")
        assert sorted(wait_events(a, 2)) == [("/w/sub/leaf", "leaf"), ("/w/sub/leaf", "tok")]
        b.write("/elsewhere", "1")
        b.rm("/w/sub")
        events = wait_events(a, 2)
        # The watcher of the removed child hears its own path.
        assert sorted(events) == [("/w/sub", "tok"), ("/w/sub/leaf", "leaf")]
        a.unwatch("/w", "tok")
        b.write("/w/again", "1")
        settle(b)
        settle(a)
        assert a.check_watch() == []
        with pytest.raises(XenError) as info:
            a.unwatch("/w", "tok")
        assert info.value.errno == errno.ENOENT

    def test_transaction_events_only_on_commit(self, clients: dict[str, LibXenStore]) -> None:
        a, b = clients["a"], clients["b"]
        a.watch("/txw", "t")
        assert wait_events(a, 1) == [("/txw", "t")]
        tx = b.transaction_start()
        b.write("/txw/x", "1", tx)
        settle(a)
        assert a.check_watch() == []
        assert b.transaction_end(tx)
        assert wait_events(a, 1) == [("/txw/x", "t")]
        tx = b.transaction_start()
        b.write("/txw/y", "1", tx)
        b.transaction_end(tx, abort=True)
        settle(a)
        assert a.check_watch() == []

    def test_relative_watch_and_privileged_writes(self, clients: dict[str, LibXenStore],
                                                  xsd: ServerThread) -> None:
        xsd.server.mkdir("/local/domain/1")
        xsd.server.set_perms("/local/domain/1", [(1, "n")])
        g = clients["g"]
        g.watch("device", "dev")
        assert wait_events(g, 1) == [("device", "dev")]
        xsd.server.write("/local/domain/1/device/vsnd/0/state", "1")  # toolstack, dom0
        assert wait_events(g, 1) == [("device/vsnd/0/state", "dev")]

    def test_guest_does_not_hear_unreadable_nodes(self, clients: dict[str, LibXenStore]) -> None:
        a, g = clients["a"], clients["g"]
        a.write("/pub", "")
        a.set_permissions("/pub", [(0, "r")])
        a.write("/pub/hidden", "1")
        a.set_permissions("/pub/hidden", [(0, "n")])
        g.watch("/pub", "p")
        assert wait_events(g, 1) == [("/pub", "p")]
        a.write("/pub/hidden", "2")
        a.write("/pub/open", "1")
        events = wait_events(g, 1)
        settle(g)
        events += g.check_watch()
        assert events == [("/pub/open", "p")]

    def test_special_watch_and_duplicates(self, clients: dict[str, LibXenStore]) -> None:
        a = clients["a"]
        a.watch("@introduceDomain", "i")
        assert wait_events(a, 1) == [("@introduceDomain", "i")]
        with pytest.raises(XenError) as info:
            a.watch("@introduceDomain", "i")
        assert info.value.errno == errno.EEXIST


# -- in-process (toolstack) API --------------------------------------------


class TestPrivilegedApi:
    def test_roundtrip(self, xsd: ServerThread, clients: dict[str, LibXenStore]) -> None:
        srv = xsd.server
        srv.write("/p/q", "v")
        srv.mkdir("/p/dir")
        assert srv.read("/p/q") == "v"
        assert srv.directory("/p") == ["q", "dir"]
        assert srv.read("/p/none") is None and srv.directory("/p/none") is None
        srv.set_perms("/p/q", [(1, "r"), (2, "b")])
        assert clients["a"].get_permissions("/p/q") == [(1, "r"), (2, "b")]
        srv.rm("/p/q")
        srv.rm("/p/q")
        assert clients["a"].read("/p/q") is None
        with pytest.raises(XenError) as info:
            srv.write("/bad//path", "x")
        assert info.value.errno == errno.EINVAL
        with pytest.raises(XenError) as info:
            srv.rm("/nothere/child")  # the parent is missing too
        assert info.value.errno == errno.ENOENT
        with pytest.raises(XenError):
            srv.set_perms("/p", [(0, "x")])


# -- the real CLI tools -----------------------------------------------------


@pytest.fixture
def cli_env(xsd: ServerThread) -> dict[str, str]:
    if shutil.which("xenstore-read") is None:
        pytest.skip("xenstore-utils not installed")
    return {**os.environ, "XENSTORED_PATH": str(xsd.paths[0])}


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=DEADLINE,
                          stdin=subprocess.DEVNULL)


class TestCli:
    def test_write_read_ls_rm(self, cli_env: dict[str, str], xsd: ServerThread) -> None:
        assert run(["xenstore-write", "/cli/a", "1", "/cli/b/c", "two"], cli_env).returncode == 0
        assert xsd.server.read("/cli/b/c") == "two"
        done = run(["xenstore-read", "/cli/a", "/cli/b/c"], cli_env)
        assert done.returncode == 0 and done.stdout.split("\n")[:2] == ["1", "two"]
        done = run(["xenstore-ls", "/cli"], cli_env)
        assert done.returncode == 0
        assert done.stdout.splitlines() == ['a = "1"', 'b = ""', ' c = "two"']
        assert run(["xenstore-rm", "/cli/b"], cli_env).returncode == 0
        assert xsd.server.directory("/cli") == ["a"]
        done = run(["xenstore-read", "/cli/b/c"], cli_env)
        assert done.returncode != 0

    def test_watch_prints_events(self, cli_env: dict[str, str], xsd: ServerThread) -> None:
        xsd.server.write("/cw", "")
        proc = subprocess.Popen(["xenstore-watch", "-n", "2", "/cw"], env=cli_env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], DEADLINE)
            assert ready, "xenstore-watch printed nothing"
            assert proc.stdout.readline() == "/cw\n"  # the initial firing
            xsd.server.write("/cw/x", "1")
            out, _ = proc.communicate(timeout=DEADLINE)
            assert out == "/cw/x\n" and proc.returncode == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(DEADLINE)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


# -- hostile raw clients ----------------------------------------------------


class RawClient:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(DEADLINE)
        self.sock.connect(str(path))

    def send(self, type_: int, payload: bytes, req_id: int = 7, tx_id: int = 0,
             length: int | None = None) -> None:
        self.sock.sendall(HEADER.pack(type_, req_id, tx_id,
                                      len(payload) if length is None else length) + payload)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def reply(self) -> tuple[int, int, bytes]:
        type_, req_id, _, length = HEADER.unpack(self._exact(HEADER.size))
        return type_, req_id, self._exact(length)

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


@pytest.fixture
def raw(xsd: ServerThread) -> Iterator[RawClient]:
    client = RawClient(xsd.paths[0])
    try:
        yield client
    finally:
        client.sock.close()


class TestHostile:
    @pytest.mark.parametrize("type_, payload, expected", [
        (999, b"x\0", b"ENOSYS\0"),
        (XsType.WATCH_EVENT, b"/a\0t\0", b"ENOSYS\0"),
        (XsType.INTRODUCE, b"5\0" b"1\0" b"1\0", b"ENOSYS\0"),
        (XsType.READ, b"/no-nul", b"EINVAL\0"),
        (XsType.READ, b"/a\0/b\0", b"EINVAL\0"),
        (XsType.READ, b"/\xff\0", b"EINVAL\0"),
        (XsType.READ, b"\0", b"EINVAL\0"),
        (XsType.WRITE, b"no-separator", b"EINVAL\0"),
        (XsType.SET_PERMS, b"/local\0x1\0", b"EINVAL\0"),
        (XsType.SET_PERMS, b"/local\0r99999\0", b"EINVAL\0"),
        (XsType.TRANSACTION_END, b"T\0", b"ENOENT\0"),
        (XsType.GET_DOMAIN_PATH, b"-1\0", b"EINVAL\0"),
        (XsType.DIRECTORY_PART, b"/\0" b"99999\0", b"EINVAL\0"),
    ])
    def test_error_replies(self, raw: RawClient, type_: int, payload: bytes,
                           expected: bytes) -> None:
        raw.send(type_, payload, req_id=42)
        assert raw.reply() == (XsType.ERROR, 42, expected)
        raw.send(XsType.GET_DOMAIN_PATH, b"1\0", req_id=43)  # the connection still works
        assert raw.reply() == (XsType.GET_DOMAIN_PATH, 43, b"/local/domain/1\0")

    def test_guest_may_not_introduce(self, xsd: ServerThread) -> None:
        guest = RawClient(xsd.paths[1])
        try:
            guest.send(XsType.INTRODUCE, b"5\0" b"1\0" b"1\0", req_id=3)
            assert guest.reply() == (XsType.ERROR, 3, b"EACCES\0")
        finally:
            guest.sock.close()

    def test_oversize_len_disconnects_only_that_client(self, xsd: ServerThread,
                                                       raw: RawClient) -> None:
        other = LibXenStore.open(str(xsd.paths[0]))
        try:
            other.watch("/h", "h")
            assert wait_events(other, 1) == [("/h", "h")]
            raw.send(XsType.WRITE, b"", length=0xFFFFFFF0)
            assert raw.closed_by_peer()
            other.write("/h/x", "1")
            assert other.read("/h/x") == "1"
            assert wait_events(other, 1) == [("/h/x", "h")]
        finally:
            other.close()

    def test_garbage_and_abrupt_disconnects(self, xsd: ServerThread) -> None:
        for junk in (os.urandom(3), b"\xff" * 15, os.urandom(2000)):
            client = RawClient(xsd.paths[2])
            client.sock.sendall(junk)
            client.sock.close()
        # A client that leaves with an open transaction and a watch.
        client = RawClient(xsd.paths[0])
        client.send(XsType.TRANSACTION_START, b"\0")
        type_, _, tx = client.reply()
        assert type_ == XsType.TRANSACTION_START and int(tx.rstrip(b"\0")) > 0
        client.send(XsType.WATCH, b"/\0tok\0")
        assert client.reply()[0] == XsType.WATCH
        client.sock.close()
        xs = LibXenStore.open(str(xsd.paths[0]))
        try:
            xs.write("/after", "ok")
            assert xs.read("/after") == "ok"
        finally:
            xs.close()

    def test_pipelined_requests_without_reading(self, xsd: ServerThread, raw: RawClient) -> None:
        # Many requests in one go: all answered in order once we read.
        burst = b"".join(HEADER.pack(XsType.GET_DOMAIN_PATH, i, 0, 2) + b"1\0" for i in range(500))
        raw.sock.sendall(burst)
        ids = [raw.reply()[1] for _ in range(500)]
        assert ids == list(range(500))

    def test_guest_node_quota(self, xsd: ServerThread) -> None:
        xsd.server.mkdir("/local/domain/1")
        xsd.server.set_perms("/local/domain/1", [(1, "n")])
        guest = RawClient(xsd.paths[1])
        try:
            answers = []
            for i in range(1005):
                guest.send(XsType.WRITE, f"q/{i}\0".encode(), req_id=i)
                answers.append(guest.reply())
            assert answers[0] == (XsType.WRITE, 0, b"OK\0")
            assert answers[-1] == (XsType.ERROR, 1004, b"ENOSPC\0")
        finally:
            guest.sock.close()


class TestClientErrors:
    def test_open_missing_socket(self, tmp_path: Path) -> None:
        with pytest.raises(XenError) as info:
            LibXenStore.open(str(tmp_path / "nothing"))
        assert info.value.func == "xs_open" and info.value.errno == errno.ENOENT
        assert "XENSTORED_PATH" not in os.environ or os.environ["XENSTORED_PATH"] != str(
            tmp_path / "nothing")

    def test_server_gone(self, xsd: ServerThread) -> None:
        xs = LibXenStore.open(str(xsd.paths[0]))
        try:
            xs.watch("/", "root")
            assert wait_events(xs, 1) == [("/", "root")]
            xsd.stop()
            deadline = time.monotonic() + DEADLINE
            with pytest.raises(XenError):
                while time.monotonic() < deadline:  # until the reader thread notices
                    xs.check_watch()
                    time.sleep(0.01)
            with pytest.raises(XenError):
                xs.read("/x")
        finally:
            xs.close()
            xs.close()  # idempotent
        with pytest.raises(XenError) as info:
            xs.read("/x")
        assert info.value.errno == errno.EBADF

    def test_nul_in_path(self, clients: dict[str, LibXenStore]) -> None:
        with pytest.raises(XenError) as info:
            clients["a"].write("/a\0b", "1")
        assert info.value.errno == errno.EINVAL


def test_struct_header_is_xsd_sockmsg() -> None:
    assert HEADER.size == 16 == struct.calcsize("=IIII")
