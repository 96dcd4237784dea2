"""The xenbus handshake between a real Card and a real Backend: connect,
close, and the frontend's recovery from state it did not leave itself."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from alsa_pvplug.errors import BackendTimeout
from alsa_pvplug.frontend import Card
from alsa_pvplug.protocol import sndif
from alsa_pvplug.protocol.config import is_card_branch
from alsa_pvplug.protocol.sndif import PcmFormat
from alsa_pvplug.sim.toolstack import create_domain, create_vsnd
from alsa_pvplug.transport.memory import MemoryTransport

BE_DIR = "/local/domain/0/backend/vsnd/1/0"
FE_DIR = "/local/domain/1/device/vsnd/0"
RING_KEYS = (sndif.FIELD_RING_REF, sndif.FIELD_EVT_CHNL, sndif.FIELD_EVT_RING_REF,
             sndif.FIELD_EVT_EVT_CHNL)


def published(hv) -> dict[str, str]:
    return {f"{path}/{k}": hv.read(f"{FE_DIR}/{path}/{k}")
            for path in ("0/0", "0/1") for k in RING_KEYS}


def test_open_reaches_connected_on_both_sides(hv, backend, card):
    be = backend()
    c = card()
    assert c.connected and c.lost is None
    assert hv.read(f"{FE_DIR}/state") == "4" and hv.read(f"{BE_DIR}/state") == "4"
    keys = published(hv)
    assert all(v is not None and v.isdigit() for v in keys.values()), keys
    # The backend mapped both streams' rings and bound their ports.
    (dev,) = be.backend.devices.values()
    assert sorted(st.cfg.path for st in dev.streams) == ["0/0", "0/1"]
    for st in dev.streams:
        assert st.ring is not None and st.evt is not None
        assert st.req_port in be.backend.ports


def test_close_hands_both_sides_back(hv, backend, card, wait_for):
    be = backend()
    c = card()
    st = c.stream(0, 0)
    st.open(sndif.PcmFormat.S16_LE, 2, 48000, 1024, 256)
    c.close()
    assert hv.read(f"{FE_DIR}/state") == "1"
    wait_for(lambda: hv.read(f"{BE_DIR}/state") == "2", "backend InitWait")
    (dev,) = be.backend.devices.values()
    assert dev.streams == [] and be.backend.ports == {}
    # Nothing of the guest's is left shared or bound.
    assert hv._domains[1].grants == {} and hv._domains[1].ports == {}
    c.close()  # idempotent
    assert hv.read(f"{FE_DIR}/state") == "1"


def test_a_second_card_connects_after_the_first_closed(hv, backend, card):
    backend()
    first = card()
    refs = published(hv)
    first.close()
    second = card()
    assert second.connected and hv.read(f"{BE_DIR}/state") == "4"
    assert published(hv) != refs, "fresh rings, never the old grants"


def test_a_slow_handshake_does_not_stall_a_playing_guest(hv, backend, card, recorder, signal,
                                                          monkeypatch):
    """The xenbus work has a thread of its own: while a second guest's
    connect waits on xenstore, the first guest's stream is served."""
    hv.add_domain(2)
    create_domain(hv, 2, "guest2")
    create_vsnd(hv, 2, 0)
    be = backend()
    st = card().stream(0, 0)
    st.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=1024, period_frames=256)
    xs = be.backend.xs
    entered, release = threading.Event(), threading.Event()
    read_tree = xs.read_tree

    def slow_read_tree(base: str, *args: Any) -> dict[str, str]:
        if base.startswith("/local/domain/2/"):
            entered.set()
            release.wait(5)
        return read_tree(base, *args)

    monkeypatch.setattr(xs, "read_tree", slow_read_tree)
    t2 = MemoryTransport(hv, 2)
    second: list[Card] = []
    opener = threading.Thread(target=lambda: second.append(Card.open(t2, 0, timeout=10)))
    opener.start()
    try:
        assert entered.wait(5), "the second guest's connect never reached the backend"
        data = signal(PcmFormat.S16_LE, 2, 3000)
        st.write(data)
        st.drain()
        assert opener.is_alive(), "played only after the second handshake went on"
        assert recorder.played() == data
    finally:
        release.set()
        opener.join(10)
        connected = bool(second) and second[0].connected
        for c in second:
            c.close()
        t2.close()
    assert connected, "the second guest connected once its xenstore read went on"


def test_connect_times_out_without_a_backend(hv, card):
    with pytest.raises(BackendTimeout) as ei:
        card(timeout=0.2)
    assert "InitWait" in str(ei.value)
    assert hv.read(f"{FE_DIR}/state") == "1"


def test_stale_state_of_a_dead_owner_is_reset(hv, backend, card, caplog):
    """A previous owner died Connected: its grants and ports died with it,
    its state 4 stayed.  The next Card resets it and connects afresh."""
    be = backend()
    t = MemoryTransport(hv, 1)
    dead = Card.open(t, timeout=2.0)
    old = published(hv)
    # Dies: the hypervisor revokes its grants and closes its ports; nobody
    # writes a state.
    assert dead.evtchn is not None and dead.sharer is not None
    dead.evtchn.close()
    dead.sharer.close()
    t.close()
    assert hv.read(f"{FE_DIR}/state") == "4"
    with caplog.at_level(logging.INFO, logger="alsa_pvplug.frontend"):
        c = card()
    assert "stale frontend state '4', resetting" in caplog.text
    assert c.connected and hv.read(f"{BE_DIR}/state") == "4"
    assert published(hv) != old
    (dev,) = be.backend.devices.values()
    assert len(dev.streams) == 2


@pytest.mark.parametrize("garbage", ["abc", "", "\u00b2", "99", "4 4"])
def test_garbage_in_our_own_state_node_is_reset(hv, backend, card, garbage):
    """dom0 may write anything into the frontend's state node: it is ours to
    reset, not a reason to fail every open."""
    backend()
    hv.write(f"{FE_DIR}/state", garbage)
    c = card()
    assert c.connected and hv.read(f"{FE_DIR}/state") == "4"


def test_the_card_tree_is_read_without_listing_properties(hv):
    # Only the pcm and stream indexes are directories in sndif's layout: a
    # property is read, not listed (a xenstored round trip each).
    xs = MemoryTransport(hv, 1).xenstore
    fe = FE_DIR
    xs.write(f"{fe}/short-name/stray", "x")  # a child no reader of the layout looks at
    listed: list[str] = []
    directory = xs.directory

    def counting_directory(path: str) -> list[str] | None:
        listed.append(path[len(fe):] or "/")
        return directory(path)

    xs.directory = counting_directory  # type: ignore[method-assign]
    tree = xs.read_tree(fe, is_card_branch)
    assert "short-name/stray" not in tree and "0/0/type" in tree
    assert sorted(listed) == ["/", "/0", "/0/0", "/0/1"]
    full = xs.read_tree(fe)
    assert full["short-name/stray"] == "x"
    assert {k: v for k, v in full.items() if k != "short-name/stray"} == tree
