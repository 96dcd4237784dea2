"""What goes wrong, and how each side says so: the backend's validation of
requests, its limits, a backend that stops answering, and the give-up rules
(protocol/giveup.py) that end a retry loop against a failing backend."""

from __future__ import annotations

import errno
import logging
import time

import pytest

from alsa_pvplug.backend.limits import StreamLimits
from alsa_pvplug.errors import BackendError, BackendTimeout, ConfigError, RemoteProtocolError
from alsa_pvplug.protocol import giveup, sndif
from alsa_pvplug.protocol.sndif import (
    CurPosEvt,
    HwParams,
    Op,
    OpenReq,
    PcmFormat,
    RwReq,
    Trigger,
    TriggerReq,
    UnknownReq,
)
from alsa_pvplug.protocol.stream import StreamState

S16 = PcmFormat.S16_LE


def raw(card, st, req) -> sndif.Resp:
    """Put ``req`` on the stream's ring as is (no local checks) and take its
    answer off the ring (the Stream knows nothing of it)."""
    st.ring.put_request(sndif.encode_request(req))
    if st.ring.push_requests():
        card.evtchn.notify(st.req_port)
    deadline = time.monotonic() + 2
    while not st.ring.has_responses():
        assert time.monotonic() < deadline, "backend did not answer"
        card.process(0.01)
    (slot,) = st.ring.take_responses()
    resp = sndif.decode_response(slot)
    assert resp.id == req.id
    return resp


def test_backend_answers_bad_requests_with_statuses_and_keeps_serving(
        backend, card, recorder, signal):
    backend()
    c = card()
    st = c.stream(0, 0)
    assert raw(c, st, TriggerReq(1001, Trigger.START)).status == -errno.EBADFD
    assert raw(c, st, UnknownReq(1002, 99)).status == -errno.ENOSYS
    dirp, pages = c.sharer.share_pages(0, 1), c.sharer.share_pages(0, 1)
    dirp.buf[:4096] = sndif.encode_page_directory(dirp.refs, pages.refs)[0]
    base = dict(pcm_rate=48000, pcm_format=int(S16), pcm_channels=2, buffer_sz=4096,
                gref_directory=dirp.refs[0], period_sz=1024)
    for bad in (dict(pcm_rate=12345), dict(pcm_channels=9), dict(buffer_sz=4098),
                dict(period_sz=8192), dict(gref_directory=pages.refs[0] + 100)):
        assert raw(c, st, OpenReq(1003, **{**base, **bad})).status == -errno.EINVAL, bad
    assert raw(c, st, OpenReq(1004, **base)).status == 0
    assert raw(c, st, RwReq(1005, Op.WRITE, 4000, 100)).status == -errno.EINVAL  # past the end
    assert raw(c, st, RwReq(1006, Op.WRITE, 0, 3)).status == -errno.EINVAL  # not a frame
    assert raw(c, st, RwReq(1007, Op.READ, 0, 64)).status == -errno.EINVAL  # playback
    assert raw(c, st, TriggerReq(1008, Trigger.RESUME)).status == -errno.EINVAL  # not paused
    assert raw(c, st, sndif.CloseReq(1009)).status == 0
    # The same stream, through the Stream, plays bit-exact afterwards.
    data = signal(S16, 2, 2000, seed=5)
    st.open(S16, 2, 48000, 1024, 256)
    st.write(data)
    st.drain()
    st.close()
    assert recorder.played() == data


def test_a_period_below_the_backends_minimum_is_refused(backend, card, caplog):
    backend(limits=StreamLimits(min_period_us=1000, max_request_rate=1e9, max_event_rate=1e9))
    st = card().stream(0, 0)
    with caplog.at_level(logging.INFO, logger="alsa_pvplug.backend.server"):
        with pytest.raises(ConfigError) as ei:
            st.open(S16, 2, 48000, buffer_frames=1024, period_frames=47)  # 0.98 ms
    assert "status -22" in str(ei.value)
    assert "shorter than this backend's minimum of 1000 us" in caplog.text
    assert st.state == StreamState.CLOSED and st.buffer is None
    assert st.offered().period_frames_min == 96, "1 ms at 96 kHz, the card's highest rate"
    st.open(S16, 2, 48000, buffer_frames=1024, period_frames=48)
    assert st.state == StreamState.OPENED


def test_requests_over_the_rate_limit_are_answered_ebusy(backend, card):
    limits = StreamLimits(max_request_rate=40, max_event_rate=1e9)
    backend(limits=limits)
    st = card().stream(0, 0)
    q = HwParams(sndif.format_mask([S16]), (48000, 48000), (2, 2), (1, 4096), (256, 256))
    answered = 0
    with pytest.raises(BackendError) as ei:
        for _ in range(200):
            st.query_hw_params(q)
            answered += 1
    assert ei.value.status == -errno.EBUSY
    # The burst first (64 tokens), and not forever.
    assert 64 <= answered < 200


def test_a_backend_that_stops_answering_is_a_timeout(backend, card):
    be = backend()
    c = card(timeout=0.3)
    st = c.stream(0, 0)
    st.open(S16, 2, 48000, 1024, 256)
    be.freeze()
    q = HwParams(sndif.format_mask([S16]), (48000, 48000), (2, 2), (1, 4096), (256, 256))
    t0 = time.monotonic()
    with pytest.raises(BackendTimeout) as ei:
        st.query_hw_params(q)
    took = time.monotonic() - t0
    assert 0.3 <= took < 0.3 + 0.25, took
    assert ei.value.status == -errno.ETIMEDOUT and "HW_PARAM_QUERY" in str(ei.value)
    # Still Connected as far as xenstore says: the card did not give up on it.
    assert c.connected and c.lost is None
    be.thaw()
    st.open(S16, 2, 48000, 1024, 256)  # answered again
    assert st.state == StreamState.OPENED


def test_impossible_positions_make_prepare_give_up(backend, card, wait_for):
    """A backend reporting positions beyond the data: each report is an
    error of the stream; after MAX_VIOLATIONS prepare refuses to go on."""
    be = backend()
    c = card()
    st = c.stream(0, 0)
    st.open(S16, 2, 48000, 1024, 256)
    be.freeze()  # from here the test is the (hostile) backend
    (dev,) = be.backend.devices.values()
    be_st = next(s for s in dev.streams if s.cfg.path == "0/0")
    for i in range(giveup.MAX_VIOLATIONS):
        assert be_st.evt.put_event(sndif.encode_event(CurPosEvt(100 + i, 10**6 * (i + 1))))
        be.backend.evtchn.notify(be_st.evt_port)
        wait_for(lambda i=i: st.violations > i, "the report taken", poll=c.process)
        with pytest.raises(RemoteProtocolError):
            st.check()
    assert st.violations == giveup.MAX_VIOLATIONS and st.reported == 0
    with pytest.raises(RemoteProtocolError) as ei:
        st.prepare()
    assert "keeps breaking the protocol" in str(ei.value)
    st.claim()  # a new user starts with a clean record, as the glue does
    assert st.giveup.timeouts == 0
    be.thaw()  # so that closing in teardown is answered


def test_a_backend_that_answers_too_late_twice_makes_prepare_give_up(backend, card):
    """Answers that come after the timeout (the backend stalls, then catches
    up), twice in a row without the stream moving: prepare fails with
    -ETIMEDOUT instead of starting the same stall again."""
    be = backend()
    c = card(timeout=0.15)
    st = c.stream(0, 0)
    st.open(S16, 2, 48000, buffer_frames=1024, period_frames=256)
    period = bytes(256 * 4)
    for _ in range(giveup.MAX_TIMEOUTS):
        st.prepare()  # answered: the backend is serving
        be.freeze()
        st.write(period)  # its WRITE goes unanswered
        end = time.monotonic() + c.timeout + 0.05
        while time.monotonic() < end:
            c.process(0.02)
        with pytest.raises(BackendTimeout) as ei:
            st.write(period)
        assert "WRITE" in str(ei.value)
        be.thaw()
    assert st.giveup.timeouts == giveup.MAX_TIMEOUTS
    with pytest.raises(BackendTimeout) as ei:
        st.prepare()
    assert "giving up" in str(ei.value) and ei.value.status == -errno.ETIMEDOUT
