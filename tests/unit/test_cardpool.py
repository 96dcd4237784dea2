"""cardpool: one Card per process and device, shared by its PCMs, claimed
against other processes with a lock file.  The options name a simulated
domain so that the lock file lives in this test's tmp dir; the transport is
the memory one (``transport_factory``)."""

from __future__ import annotations

import fcntl
import os

import pytest

from alsa_pvplug import cardpool
from alsa_pvplug.errors import DeviceBusy, PvSndError
from alsa_pvplug.glue.options import PluginOptions
from alsa_pvplug.transport.memory import MemoryTransport

BE_STATE = "/local/domain/0/backend/vsnd/1/0/state"
FE_STATE = "/local/domain/1/device/vsnd/0/state"


@pytest.fixture
def pool(hv, backend, tmp_path):
    """``pool.acquire(capture=False)`` -> lease; ``pool.opened`` counts the
    transports made; leases still held are released in teardown."""
    backend()
    (tmp_path / "dom1").mkdir()
    opts = PluginOptions(transport="sim", sim_dir=str(tmp_path), domid=1, timeout=2.0)

    class Pool:
        def __init__(self) -> None:
            self.opts = opts
            self.opened = 0
            self.leases: list[cardpool.CardLease] = []

        def factory(self, o: PluginOptions) -> MemoryTransport:
            assert (o.transport, o.sim_dir, o.domid) == ("sim", opts.sim_dir, 1)
            self.opened += 1
            return MemoryTransport(hv, o.domid)

        def acquire(self, **kw):
            lease = cardpool.acquire(opts, transport_factory=self.factory, **kw)
            self.leases.append(lease)
            return lease

    p = Pool()
    yield p
    for lease in p.leases:
        lease.release()
    assert not any(k[1] == str(tmp_path) for k in cardpool._entries), "a card left pooled"


def test_playback_and_capture_share_one_card(hv, pool):
    out = pool.acquire(capture=False)
    inp = pool.acquire(capture=True)
    assert out.card is inp.card and out.lock is inp.lock
    assert (out.stream_key, inp.stream_key) == ((0, 0), (0, 1))
    assert pool.opened == 1, "one connection for both"
    assert out.card.connected and hv.read(FE_STATE) == "4"


def test_the_same_stream_twice_is_busy(pool):
    first = pool.acquire(capture=False)
    with pytest.raises(DeviceBusy) as ei:
        pool.acquire(capture=False)
    assert "already open in this process" in str(ei.value)
    assert first.card.connected, "the failed claim left the card alone"
    with pytest.raises(DeviceBusy):
        pool.acquire(stream=(0, 0))


def test_release_order(hv, pool, wait_for):
    out = pool.acquire(capture=False)
    inp = pool.acquire(capture=True)
    card = out.card
    out.release()
    assert card.connected and hv.read(FE_STATE) == "4", "capture still holds the card"
    out.release()  # exactly once: a second call does nothing
    assert card.connected
    again = pool.acquire(capture=False)  # the playback stream is free again
    assert again.card is card and pool.opened == 1
    again.release()
    inp.release()
    assert not card.connected and hv.read(FE_STATE) == "1"
    wait_for(lambda: hv.read(BE_STATE) == "2", "backend InitWait")
    fresh = pool.acquire(capture=True)
    assert fresh.card is not card and fresh.card.connected and pool.opened == 2


def test_another_process_holding_the_card_is_busy(pool):
    # flock locks belong to open file descriptions: a second open of the lock
    # file conflicts even inside one process, as another process's would.
    path = cardpool.lock_path(pool.opts)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, b"4242\n", 0)
        with pytest.raises(DeviceBusy) as ei:
            pool.acquire(capture=False)
        assert "in use by process 4242" in str(ei.value)
        assert pool.opened == 0, "no transport opened for a card we could not claim"
    finally:
        os.close(fd)
    lease = pool.acquire(capture=False)
    assert lease.card.connected


def test_a_card_without_such_a_stream_is_an_error_and_not_pooled(pool, tmp_path):
    opts = PluginOptions(transport="sim", sim_dir=str(tmp_path), domid=1, timeout=2.0,
                         device=3)
    with pytest.raises(PvSndError) as ei:
        cardpool.acquire(opts, transport_factory=pool.factory)
    assert "has no playback stream" in str(ei.value)
    assert pool.opened == 1
    lease = pool.acquire(capture=False)  # the failed connection was closed and unlocked
    assert lease.card.connected
