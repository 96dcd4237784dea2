"""Requests end to end in one process: OPEN/WRITE/drain/CLOSE played
bit-exact into the backend's sinks, captures frame-exact from its sources,
HW_PARAM_QUERY, a refused OPEN, pause and resume."""

from __future__ import annotations

import time

import numpy as np
import pytest

from alsa_pvplug.backend.io import Loopback, WavDirSink, pattern_sample
from alsa_pvplug.backend.wavfile import read_wav
from alsa_pvplug.errors import ConfigError, LocalProtocolError
from alsa_pvplug.protocol import sndif
from alsa_pvplug.protocol.sndif import HwParams, PcmFormat
from alsa_pvplug.protocol.stream import StreamState


@pytest.mark.parametrize("fmt,channels,rate", [
    (PcmFormat.S16_LE, 2, 48000),
    (PcmFormat.S24_LE, 6, 44100),
    (PcmFormat.FLOAT_LE, 1, 96000),
    (PcmFormat.U8, 2, 8000),
], ids=lambda v: getattr(v, "name", str(v)))
def test_playback_bit_exact(backend, card, recorder, signal, fmt, channels, rate):
    backend()
    st = card().stream(0, 0)
    frames = 3 * 1024 + 7  # several buffers, not a whole number of periods
    data = signal(fmt, channels, frames, seed=channels)
    st.open(fmt, channels, rate, buffer_frames=1024, period_frames=256)
    assert st.state == StreamState.OPENED
    assert st.write(data) == frames
    st.drain()
    assert st.state == StreamState.OPENED and st.drained
    st.close()
    assert st.state == StreamState.CLOSED
    assert recorder.closed == 1, "the backend closed its sink on CLOSE"
    info = recorder.infos[-1]
    assert (info.format, info.channels, info.rate) == (fmt, channels, rate)
    assert recorder.played() == data


def test_playback_into_a_wav_file(backend, card, signal, tmp_path):
    out = tmp_path / "out"
    backend(sink=WavDirSink(str(out)))
    st = card().stream(0, 0)
    data = signal(PcmFormat.S32_LE, 2, 5000, seed=9)
    st.open(PcmFormat.S32_LE, 2, 48000, buffer_frames=2048, period_frames=512)
    st.write(data)
    st.drain()
    st.close()
    (wav,) = out.glob("*.wav")
    info, got = read_wav(str(wav))
    assert (info.format, info.channels, info.rate) == (PcmFormat.S32_LE, 2, 48000)
    assert got == data


def test_second_take_after_drain_starts_from_zero(backend, card, recorder, signal):
    backend()
    st = card().stream(0, 0)
    st.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=1024, period_frames=256)
    first, second = signal(PcmFormat.S16_LE, 2, 1500, 1), signal(PcmFormat.S16_LE, 2, 900, 2)
    st.write(first)
    st.drain()
    st.write(second)  # prepares again: a new OPEN on the same buffer
    assert st.appl == 900
    st.drain()
    st.close()
    assert [bytes(t) for t in recorder.takes] == [first, second]


def test_capture_from_the_pattern_source_is_frame_exact(backend, card):
    backend()  # PatternSource by default
    st = card().stream(0, 1)
    st.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=2048, period_frames=512)
    frames = 6000
    got = np.frombuffer(st.read(frames), dtype="<u2").reshape(frames, 2)
    want = np.array([[pattern_sample(i, c) for c in range(2)] for i in range(frames)])
    np.testing.assert_array_equal(got, want)
    st.close()


def test_loopback_captures_what_was_played(backend, card, signal):
    cards: dict = {}  # this test's own cable (parse_sink("loop") shares one per process)
    backend(sink=Loopback(capture=False, cards=cards), source=Loopback(capture=True, cards=cards))
    c = card()
    out, inp = c.stream(0, 0), c.stream(0, 1)
    data = signal(PcmFormat.S16_LE, 2, 4000, seed=4)
    out.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=1024, period_frames=256)
    out.write(data)
    out.drain()
    inp.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=1024, period_frames=256)
    got = inp.read(4000)
    assert got == data
    inp.close()
    out.close()


def test_hw_param_query_is_refined_by_the_backend(backend, card):
    from alsa_pvplug.backend.limits import StreamLimits

    backend(limits=StreamLimits(min_period_us=2000, max_request_rate=1e9, max_event_rate=1e9))
    st = card().stream(0, 0)
    wide = HwParams(sndif.format_mask(list(PcmFormat)), (1, 10**6), (1, 64), (1, 1 << 30),
                    (1, 1 << 30))
    q = st.query_hw_params(wide)
    cfg = st.config
    assert set(sndif.formats_from_mask(q.formats)) == set(cfg.formats)
    assert q.rates == (min(cfg.rates), max(cfg.rates)) == (8000, 96000)
    assert q.channels == (1, 8)
    assert q.period[0] == 192, "2 ms at 96 kHz, the highest rate left"
    narrow = st.query_hw_params(HwParams(sndif.format_mask([PcmFormat.S16_LE]), (44100, 48000),
                                         (2, 2), (1, 1 << 30), (1, 1 << 30)))
    assert sndif.formats_from_mask(narrow.formats) == [PcmFormat.S16_LE]
    assert narrow.rates == (44100, 48000) and narrow.channels == (2, 2)
    assert narrow.period[0] == 96, "2 ms at 48 kHz"
    offered = st.offered()
    assert offered.period_frames_min == 192 and offered.channels == (1, 8)


def test_a_refused_open_is_a_config_error_and_the_format_is_not_offered(backend, card):
    """snd_be (--compat sndbe) refuses FLOAT_LE at OPEN although xenstore and
    its HW_PARAM_QUERY allow it."""
    backend(compat="sndbe")
    c = card()
    st = c.stream(0, 0)
    assert PcmFormat.FLOAT_LE in st.offered().formats
    with pytest.raises(ConfigError) as ei:
        st.open(PcmFormat.FLOAT_LE, 2, 48000, 1024, 256)
    assert "refused FLOAT_LE" in str(ei.value) and "-22" in str(ei.value)
    assert c.refused_formats == {PcmFormat.FLOAT_LE}
    assert st.state == StreamState.CLOSED and st.buffer is None
    offered = st.offered().formats
    assert PcmFormat.FLOAT_LE not in offered and PcmFormat.S16_LE in offered
    st.open(PcmFormat.S16_LE, 2, 48000, 1024, 256)
    assert st.state == StreamState.OPENED


def test_pause_keeps_position_and_data(backend, card, recorder, signal, wait_for):
    backend(paced=True)
    c = card()
    st = c.stream(0, 0)
    rate, period, fb = 48000, 480, 4
    data = signal(PcmFormat.S16_LE, 2, 9600, seed=11)
    st.open(PcmFormat.S16_LE, 2, rate, buffer_frames=4800, period_frames=period)
    st.write(data[:4800 * fb])  # a full buffer: auto-starts
    assert st.state == StreamState.RUNNING
    wait_for(lambda: st.hw >= 960, "some playback", poll=c.process)
    st.pause()
    assert st.state == StreamState.PAUSED
    at_pause = st.hw
    end = time.monotonic() + 0.06  # three periods of the clock
    while time.monotonic() < end:
        c.process(0.01)
    assert st.hw - at_pause <= period, "the position moved while paused"
    # Paused, the buffer may be filled up, but not waited on.
    room = st.avail
    assert 960 <= room < 4800
    st.write(data[4800 * fb:(4800 + room) * fb])
    with pytest.raises(LocalProtocolError):
        st.write(data[(4800 + room) * fb:(4801 + room) * fb])
    st.resume()
    assert st.state == StreamState.RUNNING
    st.write(data[(4800 + room) * fb:])
    st.drain()
    st.close()
    assert recorder.played() == data


def test_a_caller_that_starts_waiting_arms_the_ring(backend, card, signal):
    """Answers taken while nobody waited leave ``rsp_event`` behind (no
    wake-ups needed); a caller that then waits for an answer must arm it, or
    the backend's answer does not notify and the wait lasts until the next
    0.5 s look (the fuzz campaign's honest guest: a STOP at the end of a
    drain, after the WRITE answers were taken unarmed)."""
    from alsa_pvplug.protocol.ring import RSP_EVENT_OFF

    be = backend()
    st = card().stream(0, 0)
    st.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=4096, period_frames=1024)
    be.freeze()  # what we send now stays unanswered
    st.write(signal(PcmFormat.S16_LE, 2, 1024))
    assert st.proto.outstanding
    ring = st.ring
    ring._ops.store(RSP_EVENT_OFF, ring.rsp_cons)  # as after answers taken unarmed
    assert not ring.armed()
    with st.waiting_for_answers():
        st.poll()
    assert ring.armed(), "a waiting caller left rsp_event behind: the answer would not wake it"
    be.thaw()


def test_a_short_queue_keeps_the_guest_notifying(backend, card, signal, wait_for):
    """A paced backend with two cadences or more queued takes the next WRITE
    at its next cadence and tells the guest not to notify (``req_event`` left
    behind): a wake-up per WRITE spared.  With less queued (PipeWire keeps a
    quantum or two in a long period) a WRITE left in the ring until then is
    data the queue lacks: the guest must go on notifying."""
    from alsa_pvplug.protocol.ring import REQ_EVENT_OFF

    backend(paced=True)
    c = card()
    st = c.stream(0, 0)
    # A 1 s cadence: the takes below come well within one, even on a busy machine.
    period = 8192
    st.open(PcmFormat.S16_LE, 2, 8000, buffer_frames=8 * period, period_frames=period)
    ring = st.ring

    def notifies_next() -> bool:  # ring.h: req_event just past what was pushed
        return ring._ops.load(REQ_EVENT_OFF) == (ring.req_prod_pvt + 1) & 0xFFFFFFFF

    def write(frames: int, seed: int) -> None:
        st.write(signal(PcmFormat.S16_LE, 2, frames, seed=seed))
        wait_for(lambda: not st.proto.outstanding, "the WRITE answered", poll=c.process)

    write(period, 1)
    st.start()
    write(1024, 2)  # taken with less than a cadence queued
    assert notifies_next(), "a short queue, yet the guest was told not to notify"
    for seed in (3, 4, 5):  # the last taken with more than two queued
        write(period, seed)
    assert not notifies_next(), "three cadences queued: a notification per WRITE is waste"
    st.stop()
    st.close()


def _held_write(backend, card, signal, frames: int):
    """A stream whose first ``frames`` went at once and whose next ``frames``
    wait for their WRITE; (stream, the two pieces still to write, when)."""
    backend(paced=False)
    st = card().stream(0, 0)
    st.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=4096, period_frames=1024)
    data = signal(PcmFormat.S16_LE, 2, 4 * frames, seed=frames)
    n = len(data) // 4
    t = time.monotonic()
    st.write_at(0, data[:n], now=t)  # the first: sent at once
    st.write_at(frames, data[n:2 * n], now=t + 0.001)
    assert st.sent == frames and st.dirty_from == frames, "held: half a period is not up"
    return st, (data[2 * n:3 * n], data[3 * n:]), t + 0.001


def test_a_write_due_while_the_host_sleeps_goes_with_its_next_write(backend, card, signal):
    """Frames left unannounced fall due half a period after the last WRITE;
    the timer wakes the host then.  Its callbacks wait WRITE_GRACE for the
    write that a wake brings, and that write sends everything in one WRITE
    at once (PulseAudio's wakes: what it wrote waited another half period).
    A host that writes nothing has it sent after the grace."""
    from alsa_pvplug.frontend import WRITE_GRACE

    st, (third, fourth), t = _held_write(backend, card, signal, 256)
    due = st.write_due()
    assert due > t and st.flush_due(t) == due
    st.poll(now=due)  # the wake, before the host writes
    assert st.sent == 256, "sent before the host could write"
    assert st.flush_due(due) == due + WRITE_GRACE
    st.write_at(512, third, now=due + WRITE_GRACE / 2)
    assert st.sent == 768 and st.dirty_from is None, "the wake's write did not go at once"
    st.write_at(768, fourth, now=due + WRITE_GRACE / 2)  # not due: waits
    due = st.write_due()
    st.poll(now=due + WRITE_GRACE / 2)
    assert st.sent == 768
    st.poll(now=due + WRITE_GRACE)  # no write came: after the grace
    assert st.sent == 1024 and st.dirty_from is None
    st.close()


def test_the_first_write_after_pollout_goes_at_once(backend, card, signal):
    """A host told it may write (POLLOUT, ``note_ready``) refills on that
    wake: its first write goes with what waited, before any deadline; later
    writes coalesce again."""
    st, (third, fourth), t = _held_write(backend, card, signal, 128)
    st.note_ready(t + 0.001)
    st.write_at(256, third, now=t + 0.0011)
    assert st.sent == 384 and st.dirty_from is None, "the wake's write waited"
    st.write_at(384, fourth, now=t + 0.0012)
    assert st.sent == 384, "a second write after one POLLOUT went at once too"
    st.close()
