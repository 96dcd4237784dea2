"""The simulated hypervisor across processes, and the xen transport off Xen.

The server runs in its own process; "process A" is the test process using
the client classes directly, "process B" a worker subprocess driven by JSON
lines.  Every subprocess runs under a deadline and is killed in teardown.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from alsa_pvplug.errors import ConfigError, XenError
from alsa_pvplug.transport import open_transport
from alsa_pvplug.transport import sim as simt
from alsa_pvplug.transport.sim import (
    SimEventChannel,
    SimGrantMapper,
    SimGrantSharer,
    hypervisor_socket,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEADLINE = 10.0
BACKEND, FRONTEND, OTHER = 0, 1, 2

SERVER = r"""
import logging, pathlib, selectors, sys
from alsa_pvplug.sim.hypervisor import HypervisorServer
logging.basicConfig(level=logging.WARNING)
srv = HypervisorServer(pathlib.Path(sys.argv[1]))
for d in sys.argv[2:]:
    srv.add_domain(int(d))
sel = selectors.DefaultSelector()
srv.register(sel)
running = [True]
def on_stdin(mask):
    if not sys.stdin.buffer.read1(64):
        running[0] = False
sel.register(sys.stdin, selectors.EVENT_READ, on_stdin)
print("ready", flush=True)
while running[0]:
    for key, mask in sel.select(1.0):
        key.data(mask)
srv.close()
"""

WORKER = r"""
import json, select, sys
from alsa_pvplug.errors import XenError
from alsa_pvplug.transport import sim
path = sys.argv[1]
objs = {}
def run(cmd):
    op = cmd["op"]
    if op == "new":
        objs[cmd["name"]] = getattr(sim, cmd["cls"])(path)
        return None
    if op == "call":
        result = getattr(objs[cmd["obj"]], cmd["method"])(*cmd.get("args", []))
        if hasattr(result, "refs"):
            objs[cmd["store"]] = result
            return result.refs
        return result
    if op == "write":
        data = bytes.fromhex(cmd["hex"])
        objs[cmd["name"]].buf[cmd["offset"]:cmd["offset"] + len(data)] = data
        return None
    if op == "read":
        return bytes(objs[cmd["name"]].buf[cmd["offset"]:cmd["offset"] + cmd["len"]]).hex()
    if op == "readonly":
        return objs[cmd["name"]].buf.readonly
    if op == "wait":
        evt = objs[cmd["name"]]
        if not select.select([evt.fileno()], [], [], cmd["timeout"])[0]:
            return None
        return evt.pending()
    if op == "attack":
        # A hostile end abusing what it holds of its own channel.
        import os
        from alsa_pvplug._native import lib
        link = objs[cmd["name"]]._ports[cmd["port"]].link
        lib.pvplug_evtchn_merge(link.peer, cmd["bits"])
        if cmd.get("flood") and link._fds:
            try:
                while True:
                    os.write(link.wake_out, b"x" * 4096)
            except BlockingIOError:
                pass
        swallowed = 0
        for fd in link._fds:
            try:
                swallowed += len(os.read(fd, 1 << 16))
            except OSError:
                pass
        if cmd.get("close"):
            for fd in link._fds:
                os.close(fd)
            link._fds = ()
        return swallowed
    if op == "poke":
        # Store through the raw pointer, bypassing the read-only memoryview.
        from alsa_pvplug._native import ffi
        ffi.cast("char *", objs[cmd["name"]]._base)[0] = b"x"
        return "wrote"
    raise ValueError(op)
for line in sys.stdin:
    cmd = json.loads(line)
    try:
        out = {"result": run(cmd)}
    except XenError as exc:
        out = {"error": exc.errno, "func": exc.func}
    print(json.dumps(out), flush=True)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _readline(proc: subprocess.Popen[bytes], timeout: float = DEADLINE) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no output from pid {proc.pid} within {timeout} s")
    return proc.stdout.readline()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=5)
    except (subprocess.TimeoutExpired, OSError):
        pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


class Worker:
    """Process B: one domain's client classes in a subprocess."""

    def __init__(self, sim_dir: pathlib.Path, domid: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(hypervisor_socket(sim_dir, domid))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=_env())

    def __call__(self, **cmd: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()
        line = _readline(self.proc)
        if not line:
            raise EOFError(f"worker died: {self.proc.wait(timeout=5)}")
        out = json.loads(line)
        if "error" in out:
            raise XenError(out["func"], out["error"])
        return out["result"]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[subprocess.Popen[bytes]]:
    """A running HypervisorServer process with domains 0, 1 and 2 in tmp_path."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(tmp_path), str(BACKEND), str(FRONTEND), str(OTHER)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=_env())
    try:
        assert _readline(proc) == b"ready\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
        _stop(proc)


@pytest.fixture
def sim_dir(server: subprocess.Popen[bytes], tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path


@pytest.fixture
def worker(sim_dir: pathlib.Path) -> Iterator[Callable[[int], Worker]]:
    started: list[Worker] = []

    def start(domid: int) -> Worker:
        w = Worker(sim_dir, domid)
        started.append(w)
        return w

    try:
        yield start
    finally:
        for w in started:
            _stop(w.proc)


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """Close the client handles a test opens, in reverse order."""
    handles: list[Any] = []

    def track(handle: Any) -> Any:
        handles.append(handle)
        return handle

    try:
        yield track
    finally:
        for handle in reversed(handles):
            handle.close()


def _path(sim_dir: pathlib.Path, domid: int) -> pathlib.Path:
    return pathlib.Path(hypervisor_socket(sim_dir, domid))


def _until(check: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


class TestGrants:
    def test_writable_share_is_shared_both_ways(self, sim_dir, worker, closing):
        sharer = closing(SimGrantSharer(_path(sim_dir, FRONTEND)))
        pages = sharer.share_pages(BACKEND, 2)
        assert len(pages.refs) == 2 and min(pages.refs) >= 8
        assert len(set(pages.refs)) == 2 and len(pages.buf) == 2 * 4096
        assert bytes(pages.buf) == bytes(2 * 4096)  # zeroed like gntalloc pages

        b = worker(BACKEND)
        b(op="new", cls="SimGrantMapper", name="m")
        assert b(op="call", obj="m", method="map_domain_grant_refs",
                 args=[FRONTEND, pages.refs, True], store="p") == pages.refs
        assert b(op="readonly", name="p") is False

        b(op="write", name="p", offset=4096 + 10, hex="deadbeef")
        assert bytes(pages.buf[4096 + 10:4096 + 14]) == b"\xde\xad\xbe\xef"
        pages.buf[0:3] = b"abc"
        assert b(op="read", name="p", offset=0, len=3) == b"abc".hex()

        # A second share gets new refs; refs are never reused while they exist.
        more = sharer.share_pages(BACKEND, 1)
        assert set(more.refs).isdisjoint(pages.refs)
        sharer.unshare(pages)
        sharer.unshare(pages)  # idempotent

    def test_map_is_contiguous_across_separate_shares(self, sim_dir, closing):
        sharer = closing(SimGrantSharer(_path(sim_dir, FRONTEND)))
        mapper = closing(SimGrantMapper(_path(sim_dir, BACKEND)))
        first, second = sharer.share_pages(BACKEND, 1), sharer.share_pages(BACKEND, 2)
        first.buf[0] = 1
        second.buf[4096] = 3
        mapped = mapper.map_domain_grant_refs(FRONTEND, second.refs[::-1] + first.refs)
        assert len(mapped.buf) == 3 * 4096
        assert mapped.buf[0] == 3 and mapped.buf[2 * 4096] == 1
        mapped.buf[4096 + 5] = 9
        assert second.buf[5] == 9
        mapper.unmap(mapped)
        mapper.unmap(mapped)  # idempotent

    def test_read_only_grant(self, sim_dir, worker, closing):
        sharer = closing(SimGrantSharer(_path(sim_dir, FRONTEND)))
        pages = sharer.share_pages(BACKEND, 1, writable=False)
        pages.buf[0:2] = b"ro"  # the granting domain still writes its own page

        b = worker(BACKEND)
        b(op="new", cls="SimGrantMapper", name="m")
        with pytest.raises(XenError) as info:
            b(op="call", obj="m", method="map_domain_grant_refs",
              args=[FRONTEND, pages.refs, True], store="p")
        assert info.value.errno == errno.EACCES
        assert info.value.func == "xengnttab_map_domain_grant_refs"

        b(op="call", obj="m", method="map_domain_grant_refs",
          args=[FRONTEND, pages.refs, False], store="p")
        assert b(op="read", name="p", offset=0, len=2) == b"ro".hex()
        assert b(op="readonly", name="p") is True
        # The page itself is mapped PROT_READ: a raw store kills the process.
        with pytest.raises(EOFError):
            b(op="poke", name="p")
        assert b.proc.wait(timeout=5) == -signal.SIGSEGV
        assert bytes(pages.buf[0:2]) == b"ro"

    def test_wrong_domain_and_bad_refs_cannot_map(self, sim_dir, worker, closing):
        sharer = closing(SimGrantSharer(_path(sim_dir, FRONTEND)))
        pages = sharer.share_pages(BACKEND, 2)

        third = worker(OTHER)
        third(op="new", cls="SimGrantMapper", name="m")
        with pytest.raises(XenError) as info:
            third(op="call", obj="m", method="map_domain_grant_refs",
                  args=[FRONTEND, pages.refs, False], store="p")
        assert info.value.errno in (errno.EPERM, errno.EACCES)

        mapper = closing(SimGrantMapper(_path(sim_dir, BACKEND)))
        bad_ref = max(pages.refs) + 100
        for refs, granter in (([bad_ref], FRONTEND),
                              ([pages.refs[0], bad_ref], FRONTEND),  # all or nothing
                              ([0], FRONTEND),  # reserved refs never exist
                              (pages.refs, OTHER)):  # right refs, wrong granter
            with pytest.raises(XenError) as info:
                mapper.map_domain_grant_refs(granter, refs)
            assert info.value.errno == errno.EINVAL, (refs, granter)
        with pytest.raises(XenError) as info:
            mapper.map_domain_grant_refs(77, pages.refs)
        assert info.value.errno == errno.ESRCH

    def test_unshare_revokes(self, sim_dir, closing):
        sharer = closing(SimGrantSharer(_path(sim_dir, FRONTEND)))
        mapper = closing(SimGrantMapper(_path(sim_dir, BACKEND)))
        pages = sharer.share_pages(BACKEND, 1)
        sharer.unshare(pages)
        with pytest.raises(XenError) as info:
            mapper.map_domain_grant_refs(FRONTEND, pages.refs)
        assert info.value.errno == errno.EINVAL


class TestEventChannels:
    def test_bind_unbound_port_accepts_only_the_named_domain(self, sim_dir, worker, closing):
        front = closing(SimEventChannel(_path(sim_dir, FRONTEND)))
        port = front.bind_unbound_port(BACKEND)
        assert port >= 1

        third = worker(OTHER)
        third(op="new", cls="SimEventChannel", name="e")
        with pytest.raises(XenError) as info:
            third(op="call", obj="e", method="bind_interdomain", args=[FRONTEND, port])
        assert (info.value.func, info.value.errno) == ("xenevtchn_bind_interdomain",
                                                       errno.EINVAL)

        back = worker(BACKEND)
        back(op="new", cls="SimEventChannel", name="e")
        assert back(op="call", obj="e", method="bind_interdomain", args=[FRONTEND, port]) >= 1
        with pytest.raises(XenError):  # now connected: nobody else may bind it
            back(op="call", obj="e", method="bind_interdomain", args=[FRONTEND, port])

    def test_notify_wakes_poll_in_the_other_process(self, sim_dir, worker, closing):
        front = closing(SimEventChannel(_path(sim_dir, FRONTEND)))
        port = front.bind_unbound_port(BACKEND)
        back = worker(BACKEND)
        back(op="new", cls="SimEventChannel", name="e")
        back_port = back(op="call", obj="e", method="bind_interdomain", args=[FRONTEND, port])

        assert front.pending() is None
        assert not _readable(front.fileno(), 0)
        back(op="call", obj="e", method="notify", args=[back_port])
        poller = select.poll()
        poller.register(front.fileno(), select.POLLIN)
        assert poller.poll(int(DEADLINE * 1000))
        assert front.pending() == port

        front.notify(port)
        assert back(op="wait", name="e", timeout=DEADLINE) == back_port

    def test_notifications_while_masked_are_latched_once(self, sim_dir, worker, closing):
        front = closing(SimEventChannel(_path(sim_dir, FRONTEND)))
        port = front.bind_unbound_port(BACKEND)
        back = worker(BACKEND)
        back(op="new", cls="SimEventChannel", name="e")
        back_port = back(op="call", obj="e", method="bind_interdomain", args=[FRONTEND, port])

        back(op="call", obj="e", method="notify", args=[back_port])
        assert _readable(front.fileno(), DEADLINE)
        assert front.pending() == port  # now masked
        # notify() returns after the simulator acted, so these checks are not racy.
        back(op="call", obj="e", method="notify", args=[back_port])
        back(op="call", obj="e", method="notify", args=[back_port])
        assert front.pending() is None
        front.unmask(port)
        assert front.pending() == port  # the two latched ones, delivered once
        assert front.pending() is None
        front.unmask(port)
        assert front.pending() is None
        assert not _readable(front.fileno(), 0)
        back(op="call", obj="e", method="notify", args=[back_port])
        assert _readable(front.fileno(), DEADLINE) and front.pending() == port

    def test_unbind_and_unconnected_ports(self, sim_dir, closing):
        front = closing(SimEventChannel(_path(sim_dir, FRONTEND)))
        back = closing(SimEventChannel(_path(sim_dir, BACKEND)))
        port = front.bind_unbound_port(BACKEND)
        front.notify(port)  # unbound: silently dropped
        back_port = back.bind_interdomain(FRONTEND, port)
        back.unbind(back_port)
        front.notify(port)  # peer closed: silently dropped
        assert front.pending() is None
        with pytest.raises(XenError) as info:
            back.unbind(back_port)
        assert info.value.errno == errno.ENOTCONN
        with pytest.raises(XenError) as info:
            back.notify(back_port)
        assert info.value.errno == errno.ENOTCONN
        # As in Xen's evtchn_close, the survivor is unbound for us again.
        again = back.bind_interdomain(FRONTEND, port)
        back.notify(again)
        assert _readable(front.fileno(), DEADLINE) and front.pending() == port
        front.close()
        front.close()  # idempotent
        with pytest.raises(XenError):
            front.notify(port)


def _connected(sim_dir: pathlib.Path, closing: Callable[[Any], Any]
               ) -> tuple[SimEventChannel, int, SimEventChannel, int]:
    """A frontend and a backend handle in this process, one channel between them."""
    front = closing(SimEventChannel(_path(sim_dir, FRONTEND)))
    back = closing(SimEventChannel(_path(sim_dir, BACKEND)))
    port = front.bind_unbound_port(BACKEND)
    return front, port, back, back.bind_interdomain(FRONTEND, port)


def _fired(evt: SimEventChannel, timeout: float = DEADLINE) -> list[int]:
    """Wait until ``evt`` is readable; every port it reports, unmasked."""
    assert _readable(evt.fileno(), timeout)
    ports = []
    while (port := evt.pending()) is not None:
        ports.append(port)
        evt.unmask(port)
    return ports


class TestDirectDelivery:
    """Events go from end to end; the simulator only binds (issue 10, sec. 2)."""

    def test_delivery_needs_no_simulator(self, server, sim_dir, worker, closing):
        front = closing(SimEventChannel(_path(sim_dir, FRONTEND)))
        port = front.bind_unbound_port(BACKEND)
        back = worker(BACKEND)
        back(op="new", cls="SimEventChannel", name="e")
        back_port = back(op="call", obj="e", method="bind_interdomain", args=[FRONTEND, port])
        back(op="call", obj="e", method="notify", args=[back_port])
        assert _fired(front) == [port]  # the first one resolves the new channel

        server.send_signal(signal.SIGSTOP)
        try:
            for _ in range(3):
                front.notify(port)
                assert back(op="wait", name="e", timeout=DEADLINE) == back_port
                back(op="call", obj="e", method="unmask", args=[back_port])
                back(op="call", obj="e", method="notify", args=[back_port])
                assert _readable(front.fileno(), DEADLINE) and front.pending() == port
                back(op="call", obj="e", method="notify", args=[back_port])  # latched
                assert front.pending() is None
                front.unmask(port)  # the latched one fires again
                assert _readable(front.fileno(), DEADLINE) and front.pending() == port
                front.unmask(port)
                assert front.pending() is None and not _readable(front.fileno(), 0)
        finally:
            server.send_signal(signal.SIGCONT)

    def test_flood_never_blocks_the_notifier(self, sim_dir, closing):
        front, port, back, back_port = _connected(sim_dir, closing)
        back.notify(back_port)
        assert _fired(front) == [port]
        t0 = time.monotonic()
        # Each round makes the port pending again, so each notify writes a
        # wake-up that nobody drains: far more than a pipe holds.
        for _ in range(80_000):
            back.notify(back_port)
            assert front.pending() == port
            front.unmask(port)
        for _ in range(1000):
            back.notify(back_port)  # pending already: no write at all
        assert time.monotonic() - t0 < 60
        assert front.pending() == port
        assert front.pending() is None  # one call drains the wake-ups
        front.unmask(port)
        assert not _readable(front.fileno(), 0)
        back.notify(back_port)
        assert _fired(front) == [port]

    def test_hostile_owner_cannot_block_the_notifier(self, sim_dir, closing):
        import fcntl

        from alsa_pvplug._native import lib

        front, port, back, back_port = _connected(sim_dir, closing)
        front.notify(port)
        assert _fired(back) == [back_port]
        # The frontend turns hostile: it makes every fd it holds blocking and
        # keeps resetting its state word without ever reading its pipe, so
        # every notify writes a wake-up.
        link = front._ports[port].link
        for fd in link._fds:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        for _ in range(80_000):
            back.notify(back_port)
            lib.pvplug_store_u32(link.own, 0, 0)
        # The backend never blocked, and its own channel still works.
        front.notify(port)
        assert _fired(back) == [back_port]

    def test_mask_and_latch_survive_a_change_of_peer(self, sim_dir, closing):
        front, port, back, back_port = _connected(sim_dir, closing)
        back.notify(back_port)
        assert _readable(front.fileno(), DEADLINE) and front.pending() == port  # masked
        back.notify(back_port)  # latched
        back.unbind(back_port)
        assert front.pending() is None  # learns the peer is gone; still masked
        again = back.bind_interdomain(FRONTEND, port)
        back.notify(again)  # latched too (still masked): one report for both
        assert front.pending() is None
        front.unmask(port)
        assert _readable(front.fileno(), DEADLINE) and front.pending() == port
        assert front.pending() is None
        front.unmask(port)
        assert not _readable(front.fileno(), 0)

    @pytest.mark.parametrize("bits,flood,close", [
        (2, False, False),  # masks the owner's port: only its own channel stops
        (1, True, False),  # pending + a full wake pipe: spurious reports, own channel
        (3, True, True),  # closes everything it holds
    ])
    def test_hostile_peer_disturbs_only_its_own_channel(self, sim_dir, worker, closing,
                                                        bits, flood, close):
        front = closing(SimEventChannel(_path(sim_dir, FRONTEND)))
        honest_port = front.bind_unbound_port(BACKEND)
        hostile_port = front.bind_unbound_port(OTHER)
        back = closing(SimEventChannel(_path(sim_dir, BACKEND)))
        back_port = back.bind_interdomain(FRONTEND, honest_port)
        hostile = worker(OTHER)
        hostile(op="new", cls="SimEventChannel", name="e")
        h_port = hostile(op="call", obj="e", method="bind_interdomain",
                         args=[FRONTEND, hostile_port])
        assert front.pending() is None  # both channels resolved
        # Requests name ports of the caller's own domain, so the honest
        # channel's page and pipes are out of its reach; binding it fails.
        with pytest.raises(XenError) as info:
            hostile(op="call", obj="e", method="bind_interdomain", args=[FRONTEND, honest_port])
        assert info.value.errno == errno.EINVAL

        for _ in range(3):
            back.notify(back_port)  # the wake-up is in flight ...
            hostile(op="attack", name="e", port=h_port, bits=bits, flood=flood,
                    close=close)  # ... while the hostile peer does its worst
            fired = _fired(front)
            assert honest_port in fired
            assert set(fired) <= {honest_port, hostile_port}
            front.notify(honest_port)
            assert _fired(back) == [back_port]
        assert front.pending() is None
        front.unmask(hostile_port)
        while front.pending() is not None:  # what it left set, reported once
            pass
        assert not _readable(front.fileno(), 0)  # no EOF, no busy loop


    def test_owner_that_never_fetches_cannot_pile_up_fds(self, sim_dir, closing):
        from alsa_pvplug.sim.hypervisor import MAX_UNFETCHED_CHANNELS

        front = closing(SimEventChannel(_path(sim_dir, FRONTEND)))
        back = closing(SimEventChannel(_path(sim_dir, BACKEND)))
        ports = [front.bind_unbound_port(BACKEND) for _ in range(MAX_UNFETCHED_CHANNELS + 1)]
        for port in ports[:-1]:
            back.bind_interdomain(FRONTEND, port)
        with pytest.raises(XenError) as info:  # the frontend never looked
            back.bind_interdomain(FRONTEND, ports[-1])
        assert info.value.errno == errno.EAGAIN
        assert front.pending() is None  # now it has fetched them all
        last = back.bind_interdomain(FRONTEND, ports[-1])
        back.notify(last)
        assert _fired(front) == [ports[-1]]


class TestProcessDeath:
    def test_death_revokes_grants_and_closes_ports(self, sim_dir, worker, closing):
        front = worker(FRONTEND)
        front(op="new", cls="SimGrantSharer", name="s")
        refs = front(op="call", obj="s", method="share_pages", args=[BACKEND, 1], store="p")
        front(op="write", name="p", offset=0, hex="cafe")
        front(op="new", cls="SimEventChannel", name="e")
        front_port = front(op="call", obj="e", method="bind_unbound_port", args=[BACKEND])

        mapper = closing(SimGrantMapper(_path(sim_dir, BACKEND)))
        mapped = mapper.map_domain_grant_refs(FRONTEND, refs)
        evt = closing(SimEventChannel(_path(sim_dir, BACKEND)))
        port = evt.bind_interdomain(FRONTEND, front_port)

        front.kill()

        def revoked() -> bool:
            try:
                mapper.unmap(mapper.map_domain_grant_refs(FRONTEND, refs))
                return False
            except XenError as exc:
                assert exc.errno == errno.EINVAL
                return True

        _until(revoked)
        assert bytes(mapped.buf[0:2]) == b"\xca\xfe"  # existing mappings stay valid
        evt.notify(port)  # the peer is gone: dropped, not an error
        with pytest.raises(XenError) as info:
            evt.bind_interdomain(FRONTEND, front_port)
        assert info.value.errno == errno.EINVAL  # the dead port is closed

        # Our port is unbound for dom1 again, so a restarted frontend can reconnect.
        reborn = closing(SimEventChannel(_path(sim_dir, FRONTEND)))
        reborn_port = reborn.bind_interdomain(BACKEND, port)
        reborn.notify(reborn_port)
        assert _readable(evt.fileno(), DEADLINE) and evt.pending() == port

    def test_dead_simulator_gives_errors_not_hangs(self, tmp_path, closing):
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path), "0"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                cwd=ROOT, env=_env())
        try:
            assert _readline(proc) == b"ready\n"
            evt = closing(SimEventChannel(_path(tmp_path, 0)))
            mapper = closing(SimGrantMapper(_path(tmp_path, 0)))
        finally:
            proc.kill()
            _stop(proc)
        assert _readable(evt.fileno(), DEADLINE)
        with pytest.raises(XenError) as info:
            evt.pending()
        assert info.value.errno == errno.ECONNRESET
        with pytest.raises(XenError) as info:
            mapper.map_domain_grant_refs(0, [8])
        assert info.value.func == "xengnttab_map_domain_grant_refs"
        with pytest.raises(XenError) as info:
            SimGrantSharer(_path(tmp_path, 0))
        assert info.value.func == "xengntshr_open"


class TestRobustness:
    def test_garbage_requests_get_errors_and_server_survives(self, sim_dir, closing):
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        raw.settimeout(DEADLINE)
        try:
            raw.connect(str(_path(sim_dir, BACKEND)))
            for junk in (b"\xff\x00", b"[1]", b'{"op": "nope"}',
                         b'{"op": "map", "domid": "x", "refs": [8], "writable": true}',
                         b'{"op": "map", "domid": 1, "refs": [], "writable": true}',
                         b'{"op": "notify", "port": 1}',
                         b'{"op": "evtchn_resolve", "port": 1}',
                         b'{"op": "share", "domid": 1, "count": 1, "writable": true}'):
                raw.send(junk)
                reply = json.loads(raw.recv(65536))
                assert isinstance(reply.get("errno"), int) and reply["errno"] > 0, junk
            # A plain file descriptor (not a sealable memfd) is refused too.
            with open(os.devnull, "rb") as f:
                socket.send_fds(raw, [b'{"op":"share","domid":1,"count":1,"writable":true}'],
                                [f.fileno()])
            assert json.loads(raw.recv(65536))["errno"] == errno.EINVAL
        finally:
            raw.close()
        sharer = closing(SimGrantSharer(_path(sim_dir, BACKEND)))
        assert sharer.share_pages(FRONTEND, 1).refs

    def test_client_times_out_on_a_silent_server(self, tmp_path, monkeypatch):
        monkeypatch.setattr(simt, "TIMEOUT", 0.2)
        path = tmp_path / "hypervisor"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.bind(str(path))
            listener.listen(4)  # never accepts: connect succeeds, nothing answers
            with pytest.raises(XenError) as info:
                SimEventChannel(path)
            assert (info.value.func, info.value.errno) == ("xenevtchn_open", errno.ETIMEDOUT)
        finally:
            listener.close()

    def test_missing_simulator(self, tmp_path):
        with pytest.raises(XenError) as info:
            SimGrantMapper(tmp_path / "nothing")
        assert (info.value.func, info.value.errno) == ("xengnttab_open", errno.ENOENT)


class TestServerInProcess:
    def test_register_and_close(self, tmp_path):
        from alsa_pvplug.sim.hypervisor import HypervisorServer

        server = HypervisorServer(tmp_path)
        path = server.add_domain(3)
        assert path == tmp_path / "dom3" / "hypervisor" and path.exists()
        sel = selectors.DefaultSelector()
        try:
            server.register(sel)
            assert len(sel.get_map()) == 1
            late = server.add_domain(4)  # added after register(): registered too
            assert len(sel.get_map()) == 2 and late.exists()
        finally:
            server.close()
            sel.close()
        assert not path.exists()


needs_no_xen = pytest.mark.skipif(os.path.exists("/dev/xen"), reason="this is a Xen guest")


@needs_no_xen
class TestXenTransportWithoutXen:
    def test_opening_handles_gives_xen_error(self):
        from alsa_pvplug.transport import xen

        for cls, func in ((xen.XenGrantSharer, "xengntshr_open"),
                          (xen.XenGrantMapper, "xengnttab_open"),
                          (xen.XenEventChannel, "xenevtchn_open")):
            with pytest.raises(XenError) as info:
                cls()
            assert info.value.func == func
            assert info.value.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO)

    def test_xen_transport_open_fails_cleanly(self):
        pytest.importorskip("alsa_pvplug.transport.xenstore")
        with pytest.raises(XenError):
            open_transport("xen")


class TestOpenTransport:
    def test_unknown_kind(self):
        with pytest.raises(ConfigError):
            open_transport("carrier-pigeon")

    def test_sim_needs_dir_and_domid(self, tmp_path):
        with pytest.raises(ConfigError):
            open_transport("sim", domid=1)
        with pytest.raises(ConfigError):
            open_transport("sim", sim_dir=tmp_path)
