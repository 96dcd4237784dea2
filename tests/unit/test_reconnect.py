"""The backend goes away and comes back: stream calls fail with BackendGone
(or time out, if it died without a word), and the next prepare reconnects
the card and opens the stream again as it was (Card.ensure_connected, the
frontend table of protocol/xenbus.py)."""

from __future__ import annotations

import pytest

from alsa_pvplug.errors import BackendGone, BackendTimeout
from alsa_pvplug.protocol import sndif
from alsa_pvplug.protocol.sndif import HwParams, PcmFormat
from alsa_pvplug.protocol.stream import StreamState
from alsa_pvplug.protocol.xenbus import XenbusState

BE_STATE = "/local/domain/0/backend/vsnd/1/0/state"
FE_STATE = "/local/domain/1/device/vsnd/0/state"
S16 = PcmFormat.S16_LE
GEOMETRY = (S16, 2, 48000, 1024, 256)
QUERY = HwParams(sndif.format_mask([S16]), (48000, 48000), (2, 2), (1, 4096), (1, 4096))


def test_backend_closed_then_restarted(hv, backend, card, recorder, signal, wait_for):
    first = backend()
    c = card(timeout=1.0)
    st = c.stream(0, 0)
    st.open(*GEOMETRY)
    st.write(signal(S16, 2, 300, seed=1))
    first.close()  # `pvplug backend` exiting: Closing, Closed
    assert hv.read(BE_STATE) == "6"
    with pytest.raises(BackendGone) as ei:
        st.write(signal(S16, 2, 300, seed=2))
    assert "CONNECTED -> CLOSED" in str(ei.value)
    assert not c.connected and c.lost is not None
    assert hv.read(FE_STATE) == "1", "the card handed the device back (Initialising)"
    with pytest.raises(BackendGone):
        st.prepare()  # nobody offers InitWait yet
    assert st.state == StreamState.CLOSED
    takes = len(recorder.takes)
    backend()  # waits for its InitWait
    st.prepare()  # reconnects, then opens again as it was
    assert c.connected and c.lost is None and c.be_state == XenbusState.CONNECTED
    assert st.state == StreamState.OPENED
    assert (st.format, st.channels, st.rate, st.buffer_frames, st.period_frames) == GEOMETRY
    assert len(recorder.takes) == takes + 1, "a new OPEN on the new backend"
    data = signal(S16, 2, 2500, seed=3)
    st.write(data)
    st.drain()
    st.close()
    assert recorder.played() == data


def test_backend_died_then_restarted(hv, backend, card, recorder, signal, wait_for):
    """Died without a word: its state stays Connected, so the card only sees
    requests go unanswered; the new backend's InitWait tells it to reconnect."""
    first = backend()
    c = card(timeout=0.3)
    st = c.stream(0, 0)
    st.open(*GEOMETRY)
    first.kill()
    assert hv.read(BE_STATE) == "4"
    with pytest.raises(BackendTimeout):
        st.query_hw_params(QUERY)
    assert c.connected, "nothing told the card yet"
    backend()
    wait_for(lambda: c.lost is not None, "the card notices the new backend", poll=c.process)
    st.prepare()
    assert c.connected and st.state == StreamState.OPENED
    data = signal(S16, 2, 2000, seed=4)
    st.write(data)
    st.drain()
    st.close()
    assert recorder.played() == data


def test_capture_stream_reopens_too(backend, card):
    first = backend()
    c = card(timeout=1.0)
    out, inp = c.stream(0, 0), c.stream(0, 1)
    out.open(*GEOMETRY)
    inp.open(S16, 1, 16000, 2048, 512)
    first.close()
    backend()
    inp.prepare()  # the first call after the restart reconnects the card
    assert inp.state == StreamState.OPENED and (inp.channels, inp.rate) == (1, 16000)
    assert out.state == StreamState.CLOSED, "the other stream reopens at its own prepare"
    out.prepare()
    assert out.state == StreamState.OPENED
    assert len(inp.read(1000)) == 1000 * 2

