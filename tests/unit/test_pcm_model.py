"""protocol.pcm: the PCM position model on synthetic report sequences (no
processes, no clock: every time is an argument)."""

from __future__ import annotations

import pytest

from alsa_pvplug.errors import BackendTimeout, RemoteProtocolError, Xrun
from alsa_pvplug.protocol.pcm import PcmModel, PcmState, check_report

RATE, PERIOD, BUFFER = 48000, 1024, 4096
BOUNDARY = BUFFER << 40


def model(capture: bool = False, stop: int | None = None, avail_min: int = PERIOD) -> PcmModel:
    m = PcmModel(capture, RATE, PERIOD, BUFFER, timeout=1.0)
    m.sw_params(avail_min, 1, BUFFER if stop is None else stop, BOUNDARY)
    m.prepare()
    return m


def playing(appl: int = BUFFER, stop: int | None = None, at: float = 10.0) -> PcmModel:
    """A playback stream with ``appl`` frames written (all acked), started at ``at``."""
    m = model(stop=stop)
    m.set_appl(appl)
    m.observe(0, None, appl, at)
    m.start(at)
    return m


class TestCheckReport:
    def test_past_the_data_is_clamped_not_refused(self) -> None:
        check_report(5000, capture=False, data_end=4096, buffer=BUFFER, period=PERIOD,
                     rate=RATE, running_s=0.01, position=20000)

    def test_impossible_is_refused(self) -> None:
        with pytest.raises(RemoteProtocolError, match="more than real time allows"):
            check_report(2**58, capture=False, data_end=4096, buffer=BUFFER, period=PERIOD,
                         rate=RATE, running_s=1.0, position=2**60)

    def test_capture_may_run_buffers_ahead_of_the_reads(self) -> None:
        # 10 s of capture with nothing read: an overrun, not a protocol error
        check_report(RATE * 10, capture=True, data_end=0, buffer=BUFFER, period=PERIOD,
                     rate=RATE, running_s=10.0, position=RATE * 40)
        with pytest.raises(RemoteProtocolError):
            check_report(RATE * 100, capture=True, data_end=0, buffer=BUFFER, period=PERIOD,
                         rate=RATE, running_s=10.0, position=RATE * 400)


class TestPlayback:
    def test_pointer_follows_the_clock_and_never_passes_the_data(self) -> None:
        m = playing(appl=BUFFER, stop=BOUNDARY)
        assert m.position(10.0 + 1024 / RATE) == pytest.approx(1024, abs=1)
        m.observe(2048, 10.0 + 2048 / RATE, BUFFER, 10.05)
        assert m.position(10.0 + 8192 / RATE) <= BUFFER  # slack or data bound it

    def test_underrun_at_stop_threshold(self) -> None:
        m = playing(appl=BUFFER)
        t = 10.0
        for k in range(1, 4):
            m.observe(k * PERIOD, t + k * PERIOD / RATE, BUFFER, t + k * PERIOD / RATE)
            m.position(t + k * PERIOD / RATE)
            m.check_running(t + k * PERIOD / RATE)
        m.observe(BUFFER, t + BUFFER / RATE, BUFFER, t + BUFFER / RATE)
        m.position(t + BUFFER / RATE + 0.001)
        with pytest.raises(Xrun, match="underrun"):
            m.check_running(t + BUFFER / RATE + 0.001)
        assert m.state == PcmState.XRUN

    def test_boundary_threshold_rides_through_and_goes_dry(self) -> None:
        m = playing(appl=BUFFER, stop=BOUNDARY)
        m.observe(BUFFER, 10.0 + BUFFER / RATE, BUFFER, 10.1)
        m.position(10.1)
        m.check_running(10.1)  # no xrun
        assert m.dry and m.hw == BUFFER and not m.clock.running
        # New data after the dry spell: the clock restarts from there.
        m.set_appl(BUFFER + PERIOD)
        m.observe(BUFFER, None, BUFFER + PERIOD, 10.2)
        assert not m.dry and m.clock.running
        assert m.position(10.2 + 512 / RATE) == pytest.approx(BUFFER + 512, abs=1)

    def test_ready_and_wake_like_a_period_interrupt(self) -> None:
        m = playing(appl=BUFFER)
        assert not m.ready(drained=False)  # full buffer
        wake = m.next_wake(10.0)
        assert wake == pytest.approx(10.0 + PERIOD / RATE, abs=1e-4)
        m.position(wake + 1e-5)
        assert m.ready(drained=False)

    def test_delay_is_interpolated_and_bounded(self) -> None:
        m = playing(appl=BUFFER)
        assert m.delay(10.0 + 1024 / RATE) == pytest.approx(BUFFER - 1024, abs=1)
        m.appl = 2**70  # whatever the counters say, delay fits a snd_pcm_sframes_t
        assert abs(m.delay(11.0)) <= BOUNDARY

    def test_a_stalled_backend_is_a_timeout(self) -> None:
        m = playing(appl=BUFFER, stop=BOUNDARY)
        m.position(10.5)
        m.check_running(10.5)
        with pytest.raises(BackendTimeout):
            m.position(11.5)
            m.check_running(11.5)


class TestCapture:
    def test_pointer_is_what_is_confirmed(self) -> None:
        m = model(capture=True)
        m.start(10.0)
        m.observe(2048, 10.05, 1024, 10.05)  # reported 2048, READ answered for 1024
        assert m.position(10.05) == 1024
        assert not m.ready(drained=False) or m.avail() >= PERIOD

    def test_overrun_is_an_xrun_unless_riding(self) -> None:
        m = model(capture=True)
        m.start(10.0)
        with pytest.raises(Xrun, match="overwritten"):
            m.check_running(10.01, overrun=True)
        r = model(capture=True, stop=BOUNDARY)
        r.start(10.0)
        r.observe(BUFFER * 3, 10.3, BUFFER * 3, 10.3)
        r.position(10.3)
        r.check_running(10.3, overrun=True)  # the kernel keeps going; so do we
        assert r.avail() == BUFFER * 3 > BUFFER

    def test_a_client_a_buffer_behind_the_recording_is_an_overrun(self) -> None:
        # The READs confirmed only what read-ahead allows (a buffer less a
        # period), so the pointer's avail never reaches the buffer; the
        # backend's reports say it recorded a whole buffer past the client.
        m = model(capture=True)
        m.start(10.0)
        m.observe(BUFFER - PERIOD, 10.0 + (BUFFER - PERIOD) / RATE, BUFFER - PERIOD, 10.07)
        m.position(10.07)
        m.check_running(10.07)  # 3072 frames behind: still data
        assert not m.lapped(10.07, 0)
        m.observe(BUFFER, 10.0 + BUFFER / RATE, BUFFER - PERIOD, 10.09)
        m.position(10.09)
        assert m.avail() == BUFFER - PERIOD < m.stop_threshold
        assert m.lapped(10.09, 0) and not m.lapped(10.09, PERIOD)
        with pytest.raises(Xrun, match="recorded 4096 frames past the application"):
            m.check_running(10.09)
        assert m.state == PcmState.XRUN

    def test_the_clock_carries_the_recording_past_a_late_report(self) -> None:
        # Reports arrive a period apart: between them the backend records on.
        m = model(capture=True)
        m.start(10.0)
        for k in range(1, 4):
            m.observe(k * PERIOD, 10.0 + k * PERIOD / RATE, k * PERIOD, 10.0 + k * PERIOD / RATE)
        later = 10.0 + (BUFFER + PERIOD // 2) / RATE  # no report for the last 1.5 periods
        assert m.lapped(later, 0)

    def test_a_client_riding_through_overruns_is_never_lapped(self) -> None:
        r = model(capture=True, stop=BOUNDARY)
        r.start(10.0)
        r.observe(BUFFER * 3, 10.3, BUFFER - PERIOD, 10.3)
        assert not r.lapped(10.3, 0)
        r.check_running(10.3)
