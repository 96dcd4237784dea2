"""The memory hypervisor and transport on their own: event channel delivery,
grant checks, xenstore permissions, watches and transactions, the same tree
as `pvplug sim` builds, and no compiled code on the way."""

from __future__ import annotations

import errno
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alsa_pvplug.errors import XenError
from alsa_pvplug.protocol.ring import BufferIndexOps
from alsa_pvplug.sim.memory import MemoryHypervisor
from alsa_pvplug.sim.toolstack import create_domain, create_vsnd
from alsa_pvplug.sim.xenstored import XenstoredServer
from alsa_pvplug.transport.memory import MemoryTransport

REPO = Path(__file__).resolve().parents[2]


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@pytest.fixture
def pair(hv):
    """dom1 and dom0 transports, closed afterwards."""
    fe, be = MemoryTransport(hv, 1), MemoryTransport(hv, 0)
    yield fe, be
    fe.close()
    be.close()


def errno_of(excinfo) -> int:
    assert isinstance(excinfo.value, XenError)
    return excinfo.value.errno


class TestEventChannel:
    @pytest.fixture
    def channel(self, pair):
        fe, be = pair
        a, b = fe.open_event_channel(), be.open_event_channel()
        pa = a.bind_unbound_port(0)
        pb = b.bind_interdomain(1, pa)
        yield a, pa, b, pb
        a.close()
        b.close()

    def test_fires_once_then_latches_while_masked(self, channel):
        a, pa, b, pb = channel
        assert not readable(b.fileno()) and b.pending() is None
        a.notify(pa)
        assert readable(b.fileno())
        assert b.pending() == pb
        assert not readable(b.fileno()), "a reported port is masked"
        a.notify(pa)
        a.notify(pa)
        assert not readable(b.fileno()) and b.pending() is None, "latched while masked"
        b.unmask(pb)
        assert readable(b.fileno())
        assert b.pending() == pb, "the latched notify is reported once on unmask"
        b.unmask(pb)
        assert not readable(b.fileno()) and b.pending() is None

    def test_both_directions_and_fds_are_per_handle(self, channel):
        a, pa, b, pb = channel
        b.notify(pb)
        assert readable(a.fileno()) and not readable(b.fileno())
        assert a.pending() == pa

    def test_unbind_leaves_the_peer_unbound_and_notifies_dropped(self, hv, channel):
        a, pa, b, pb = channel
        b.unbind(pb)
        a.notify(pa)  # to nobody: dropped, not an error
        assert not readable(a.fileno()) and not readable(b.fileno())
        with pytest.raises(XenError) as ei:
            b.notify(pb)
        assert errno_of(ei) == errno.ENOTCONN
        # The unbound port waits for its remote domain again.
        c = MemoryTransport(hv, 0).open_event_channel()
        pc = c.bind_interdomain(1, pa)
        a.notify(pa)
        assert c.pending() == pc
        c.close()

    def test_binding_checks(self, hv, pair):
        fe, be = pair
        a, b = fe.open_event_channel(), be.open_event_channel()
        try:
            pa = a.bind_unbound_port(0)
            with pytest.raises(XenError) as ei:
                b.bind_interdomain(1, pa + 1)
            assert errno_of(ei) == errno.EINVAL
            with pytest.raises(XenError) as ei:
                b.bind_interdomain(7, pa)
            assert errno_of(ei) == errno.ESRCH
            hv.add_domain(2)
            other = MemoryTransport(hv, 2).open_event_channel()
            with pytest.raises(XenError) as ei:
                other.bind_interdomain(1, pa)  # unbound for dom0, not dom2
            assert errno_of(ei) == errno.EINVAL
            other.close()
            with pytest.raises(XenError) as ei:
                a.notify(4095)
            assert errno_of(ei) == errno.ENOTCONN
        finally:
            a.close()
            b.close()
        with pytest.raises(XenError) as ei:
            a.pending()
        assert errno_of(ei) == errno.EBADF

    def test_closing_a_handle_unbinds_its_ports(self, channel):
        a, pa, b, pb = channel
        b.close()
        a.notify(pa)  # dropped
        with pytest.raises(XenError):
            b.notify(pb)


class TestGrants:
    def test_mapping_is_the_same_memory(self, pair):
        fe, be = pair
        sharer, mapper = fe.open_grant_sharer(), be.open_grant_mapper()
        pages = sharer.share_pages(0, 3)
        assert len(pages.refs) == 3 and pages.buf.nbytes == 3 * 4096
        assert bytes(pages.buf) == bytes(3 * 4096), "new pages are zeroed"
        m = mapper.map_domain_grant_refs(1, pages.refs[1:])
        pages.buf[4096:4100] = b"abcd"
        assert bytes(m.buf[:4]) == b"abcd"
        m.buf[4096:4098] = b"zz"
        assert bytes(pages.buf[8192:8194]) == b"zz"
        ops = BufferIndexOps(m.buf)
        ops.store(8, 0x1234_5678)
        assert BufferIndexOps(pages.buf).load(4096 + 8) == 0x1234_5678
        # Revoked: no new mapping, but the one made stays valid (as in Xen).
        sharer.unshare(pages)
        sharer.unshare(pages)  # idempotent
        with pytest.raises(XenError) as ei:
            mapper.map_domain_grant_refs(1, pages.refs[:1])
        assert errno_of(ei) == errno.EINVAL
        pages.buf[4096] = 0x41
        assert m.buf[0] == 0x41
        sharer.close()
        mapper.close()

    def test_access_checks(self, hv, pair):
        fe, be = pair
        sharer, mapper = fe.open_grant_sharer(), be.open_grant_mapper()
        ro = sharer.share_pages(0, 1, writable=False)
        with pytest.raises(XenError) as ei:
            mapper.map_domain_grant_refs(1, ro.refs)
        assert errno_of(ei) == errno.EACCES
        view = mapper.map_domain_grant_refs(1, ro.refs, writable=False)
        assert view.buf.readonly
        hv.add_domain(2)
        third = MemoryTransport(hv, 2).open_grant_mapper()
        with pytest.raises(XenError) as ei:
            third.map_domain_grant_refs(1, ro.refs, writable=False)
        assert errno_of(ei) == errno.EPERM
        with pytest.raises(XenError) as ei:
            mapper.map_domain_grant_refs(9, ro.refs, writable=False)
        assert errno_of(ei) == errno.ESRCH
        with pytest.raises(XenError) as ei:
            sharer.share_pages(0, 0)
        assert errno_of(ei) == errno.EINVAL
        a, b = sharer.share_pages(0, 1), sharer.share_pages(0, 1)
        with pytest.raises(XenError) as ei:
            mapper.map_domain_grant_refs(1, [b.refs[0], a.refs[0]])
        assert errno_of(ei) == errno.EOPNOTSUPP
        sharer.close()
        with pytest.raises(XenError) as ei:
            mapper.map_domain_grant_refs(1, a.refs)
        assert errno_of(ei) == errno.EINVAL, "closing the sharer revoked its grants"
        mapper.close()
        third.close()


class TestXenStore:
    def test_permissions_follow_xenstored(self, hv, pair):
        fe, be = pair
        with pytest.raises(XenError) as ei:
            fe.xenstore.read("/local/domain/0/name")
        assert errno_of(ei) == errno.EACCES
        with pytest.raises(XenError) as ei:  # not ENOENT: that would tell it is missing
            fe.xenstore.read("/local/domain/0/nothing-here/x")
        assert errno_of(ei) == errno.EACCES
        fe.xenstore.write("data/x", "1")  # relative: /local/domain/1/data/x
        assert be.xenstore.read("/local/domain/1/data/x") == "1"
        assert fe.xenstore.get_permissions("data/x")[0] == (1, "n")
        with pytest.raises(XenError) as ei:
            fe.xenstore.write("/local/domain/0/x", "1")
        assert errno_of(ei) == errno.EACCES
        assert fe.xenstore.read("data/none") is None
        assert fe.xenstore.directory("data/none") is None
        fe.xenstore.rm("data/none")  # a missing node is not an error
        with pytest.raises(XenError) as ei:
            fe.xenstore.read("bad//path")
        assert errno_of(ei) == errno.EINVAL

    def test_watches(self, pair):
        fe, be = pair
        xs = be.xenstore
        xs.watch("/local/domain/1/data", "abs")
        fe.xenstore.watch("data", "rel")
        assert readable(xs.fileno())
        assert xs.check_watch() == [("/local/domain/1/data", "abs")], "fires once when set"
        assert fe.xenstore.check_watch() == [("data", "rel")], "relative in, relative out"
        assert not readable(xs.fileno())
        fe.xenstore.write("data/a/b", "x")
        assert xs.check_watch() == [("/local/domain/1/data/a/b", "abs")]
        assert fe.xenstore.check_watch() == [("data/a/b", "rel")]
        # dom1 only hears of nodes it may read.
        be.xenstore.write("/local/domain/1/data/secret", "s")
        be.xenstore.set_permissions("/local/domain/1/data/secret", [(0, "n")])
        fe.xenstore.check_watch()
        be.xenstore.write("/local/domain/1/data/secret", "t")
        assert fe.xenstore.check_watch() == []
        with pytest.raises(XenError) as ei:
            xs.watch("/local/domain/1/data", "abs")
        assert errno_of(ei) == errno.EEXIST
        assert [e[0] for e in xs.check_watch()] == ["/local/domain/1/data/secret"] * 3
        xs.unwatch("/local/domain/1/data", "abs")
        fe.xenstore.write("data/c", "y")
        assert xs.check_watch() == []

    def test_transactions(self, pair):
        fe, be = pair
        a, b = fe.xenstore, be.xenstore
        a.write("data/n", "0")
        tx = a.transaction_start()
        assert a.read("data/n", tx) == "0"
        a.write("data/n", "1", tx)
        assert b.read("/local/domain/1/data/n") == "0", "not visible before commit"
        b.write("/local/domain/1/data/n", "2")  # races us
        assert a.transaction_end(tx) is False
        assert a.read("data/n") == "2"

        def bump(tx: int) -> int:
            v = int(a.read("data/n", tx) or 0) + 1
            a.write("data/n", str(v), tx)
            return v

        assert a.transact(bump) == 3
        tx = a.transaction_start()
        a.write("data/n", "9", tx)
        assert a.transaction_end(tx, abort=True) is True
        assert a.read("data/n") == "3"
        with pytest.raises(XenError) as ei:
            a.transaction_end(12345)
        assert errno_of(ei) == errno.ENOENT

    def test_closed_handle(self, hv):
        t = MemoryTransport(hv, 1)
        t.close()
        with pytest.raises(XenError) as ei:
            t.xenstore.read("data")
        assert errno_of(ei) == errno.EBADF
        with pytest.raises(XenError) as ei:
            MemoryTransport(hv, 5)
        assert errno_of(ei) == errno.ENOENT


def test_toolstack_builds_the_tree_xenstored_serves(tmp_path):
    """create_domain/create_vsnd on both stores: the same nodes, values and
    permissions (so a test here sees what a guest of `pvplug sim` sees)."""
    hv = MemoryHypervisor()
    xsd = XenstoredServer(tmp_path)
    try:
        for store in (hv, xsd):
            for domid in (0, 1):
                if store is hv:
                    hv.add_domain(domid)
                else:
                    xsd.add_domain(domid)
                create_domain(store, domid, f"dom{domid}")
            create_vsnd(store, 1, 0)

        def tree(t):
            out = {}
            stack = ["/"]
            while stack:
                path = stack.pop()
                node = t.peek(path)
                out[path] = (node.value, node.perms)
                stack += [f"{path.rstrip('/')}/{c}" for c in node.children]
            return out

        assert tree(hv._tree) == tree(xsd._tree)
        assert len(tree(hv._tree)) > 30
    finally:
        xsd.close()
        hv.close()


def test_nothing_compiled_on_the_memory_path():
    """A frontend and a backend play over the memory transport in a process
    where alsa_pvplug._native cannot be imported at all."""
    script = textwrap.dedent("""
        import sys, threading

        class NoNative:
            def find_spec(self, name, path=None, target=None):
                if name == "alsa_pvplug._native" or name.startswith("_cffi"):
                    raise ImportError("compiled code is not allowed here: " + name)
                return None

        sys.meta_path.insert(0, NoNative())
        from alsa_pvplug.backend.io import NullSink, PatternSource
        from alsa_pvplug.backend.server import Backend, BackendOptions
        from alsa_pvplug.frontend import Card
        from alsa_pvplug.protocol.sndif import PcmFormat
        from alsa_pvplug.sim.memory import MemoryHypervisor
        from alsa_pvplug.sim.toolstack import create_domain, create_vsnd
        from alsa_pvplug.transport.memory import MemoryTransport
        import alsa_pvplug.cardpool

        hv = MemoryHypervisor()
        for d in (0, 1):
            hv.add_domain(d)
            create_domain(hv, d, str(d))
        create_vsnd(hv, 1, 0)
        bt = MemoryTransport(hv, 0)
        be = Backend(bt, NullSink(), PatternSource(), BackendOptions(paced=False))
        stop = threading.Event()
        th = threading.Thread(target=be.run, args=(stop.is_set,), daemon=True)
        th.start()
        card = Card.open(MemoryTransport(hv, 1), timeout=2)
        st = card.stream(0, 1)
        st.open(PcmFormat.S16_LE, 2, 48000, 1024, 256)
        assert len(st.read(2048)) == 2048 * 4
        card.close()
        stop.set()
        bt.xenstore.wake()
        th.join(3)
        assert not th.is_alive()
        be.close()
        bad = [m for m in sys.modules if "_native" in m or "cffi" in m]
        assert not bad, bad
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
