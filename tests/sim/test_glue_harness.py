"""The plugin's callbacks (``PvPcm``) driven the way alsa-lib's ioplug drives
them (``glue.harness.IoplugHarness``), against the simulated hypervisor and a
paced reference backend: bit-exact audio, rewind, pause, xruns, pointer,
poll readiness, delay and boundary wrap, without alsa-lib in the way."""

from __future__ import annotations

import errno
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alsa_pvplug._native import lib as native
from alsa_pvplug.backend.wavfile import read_wav
from alsa_pvplug.errors import BackendError, LocalProtocolError, PvSndError, Xrun
from alsa_pvplug.glue import alsa
from alsa_pvplug.glue.harness import LONG_MAX, IoplugHarness, State, default_boundary
from alsa_pvplug.protocol.sndif import PcmFormat
from tests.support.audio import make_signal, write_wav
from tests.support.env import Proc, Sim

FMT, CH, RATE = PcmFormat.S16_LE, 2, 48000
HOSTILE_BACKEND = Path(__file__).resolve().parents[1] / "support" / "hostile_backend.py"
FB = 4  # bytes per frame
SOURCE_FRAMES = 36000  # 0.75 s captured from --source
SOURCE = make_signal(FMT, CH, SOURCE_FRAMES, seed=99)
RW, MMAP = alsa.ACCESS_RW_INTERLEAVED, alsa.ACCESS_MMAP_INTERLEAVED


def signal(frames: int, seed: int = 1) -> bytes:
    return make_signal(FMT, CH, frames, seed=seed)


class Rig:
    """A simulated hypervisor, a backend (WAV sink, WAV source; paced unless
    ``backend_args`` say otherwise) and the harnesses opened on it."""

    def __init__(self, root: Path, *backend_args: str) -> None:
        sources = root / "sources"
        sources.mkdir()
        write_wav(str(sources / "source.wav"), FMT, CH, RATE, SOURCE)
        self.out = root / "out"
        self.out.mkdir()
        self.sim = Sim(root)
        self.backend: Proc = self.sim.backend(root, *backend_args, "--sink", f"wav:{self.out}",
                                              "--source", f"wav:{sources}")
        self.harnesses: list[IoplugHarness] = []
        self._wavs_before: dict[int, int] = {}

    def open(self, capture: bool = False, nonblock: bool = False) -> IoplugHarness:
        h = IoplugHarness(transport="sim", sim_dir=self.sim.dir, domid=1, timeout=2,
                          capture=capture, nonblock=nonblock)
        self.harnesses.append(h)
        self._wavs_before[id(h)] = len(list(self.out.glob("*.wav")))
        return h

    def played(self, h: IoplugHarness) -> bytes:
        """Close ``h`` (the backend finishes its WAV at CLOSE) and return what
        it played: the WAVs of every OPEN since it was opened (a prepare after
        the stream ran opens it again), in order."""
        h.close()
        data = b""
        for wav in sorted(self.out.glob("*.wav"))[self._wavs_before[id(h)]:]:
            info, part = read_wav(str(wav))
            assert (info.format, info.channels, info.rate) == (FMT, CH, RATE)
            data += part
        return data

    def close_all(self) -> None:
        while self.harnesses:
            self.harnesses.pop().close()

    def stop(self) -> None:
        try:
            self.close_all()
        finally:
            self.backend.stop()
            self.sim.stop()


@pytest.fixture(scope="module")
def shared_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = Rig(tmp_path_factory.mktemp("harness"))
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def rig(shared_rig: Rig) -> Iterator[Rig]:
    """The module's rig; what a test opened is closed after it."""
    assert shared_rig.backend.alive, shared_rig.backend.output()
    try:
        yield shared_rig
    finally:
        shared_rig.close_all()


def wait_for(h: IoplugHarness, cond, timeout: float, what: str) -> None:
    """Poll the PCM's own descriptors until ``cond()``, under a deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        h.poll(0.005)


def same_audio(got: bytes, want: bytes) -> None:
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    assert first is None and len(got) == len(want), \
        f"{len(got)} vs {len(want)} bytes; first difference at frame " \
        f"{None if first is None else first // FB}"


# -- setup --------------------------------------------------------------------

def test_hw_params_applies_alsa_defaults_and_prepares(rig: Rig) -> None:
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=4096)
    assert h.state == State.PREPARED
    b = h.boundary
    assert b == default_boundary(4096) and b % 4096 == 0
    assert b <= LONG_MAX - 4096 < 2 * b
    # The plugin got alsa-lib's default sw_params.
    assert (h.pcm.model.avail_min, h.pcm.model.start_threshold, h.pcm.model.stop_threshold,
            h.pcm.model.boundary) \
        == (1024, 1, 4096, b)
    assert h.avail_update() == 4096 and h.delay() == 0
    with pytest.raises(LocalProtocolError):
        h.pause(True)  # not running
    h.start()
    with pytest.raises(LocalProtocolError) as ei:
        h.start()
    assert ei.value.errno == errno.EBADFD
    with pytest.raises(LocalProtocolError):
        h.readi(10)  # a playback PCM
    h.drop()
    h.hw_params(FMT, CH, RATE, period=2048, buffer=8192)  # hw_free, then again
    m = h.pcm.model
    assert (m.avail_min, m.stop_threshold, h.state) == (2048, 8192, State.PREPARED)
    data = signal(3000, seed=20)
    assert h.writei(data) == 3000
    h.drain()
    same_audio(rig.played(h), data)


# -- data ---------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [None, 1000], ids=["whole", "chunks"])
@pytest.mark.parametrize("access", [RW, MMAP], ids=["rw", "mmap"])
def test_playback_bit_exact(rig: Rig, access: int, chunk: int | None) -> None:
    data = signal(12007)
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=8192, access=access)
    step = (chunk or 12007) * FB
    for i in range(0, len(data), step):
        assert h.writei(data[i:i + step]) == len(data[i:i + step]) // FB, h.last_error
    h.drain()
    assert h.state == State.SETUP
    same_audio(rig.played(h), data)


def test_mmap_application_loop_bit_exact(rig: Rig) -> None:
    """Like PulseAudio: no auto-start, avail_update / mmap_commit one period
    at a time, an explicit start once the buffer is full, wait in between."""
    data = signal(12 * 1024, seed=4)
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=8192, access=MMAP)
    h.sw_params(start_threshold=h.boundary, avail_min=1024)
    pos = 0
    while pos < len(data):
        if h.avail_update() < 1024:
            assert h.state == State.RUNNING
            h.wait()
            continue
        pos += h.mmap_commit(data[pos:pos + 1024 * FB]) * FB
        if h.state == State.PREPARED and h.avail_update() == 0:
            h.start()
    h.drain()
    same_audio(rig.played(h), data)


@pytest.mark.parametrize("access", [RW, MMAP], ids=["rw", "mmap"])
def test_capture_bit_exact(rig: Rig, access: int) -> None:
    h = rig.open(capture=True)
    h.hw_params(FMT, CH, RATE, period=1024, buffer=16384, access=access)
    got = b"".join(h.readi(700) for _ in range(17))  # readi starts the stream
    assert h.state == State.RUNNING
    same_audio(got, SOURCE[:17 * 700 * FB])


def test_capture_never_returns_overwritten_frames(rig: Rig) -> None:
    """Preempted (60 ms injected) between READ's answer and the copy, with
    half the buffer filled: the frames must still be the right ones, or an
    error (an overrun), never other frames."""
    h = rig.open(capture=True)
    h.hw_params(FMT, CH, RATE, period=1024, buffer=4096)
    h.start()
    wait_for(h, lambda: h.avail_update() >= 2048, 1, "half a buffer captured")
    stream = h.pcm.stream
    request = stream._request

    def preempted(req: object, what: str) -> object:
        resp = request(req, what)
        if what == "READ":
            time.sleep(0.060)
        return resp

    stream._request = preempted  # type: ignore[method-assign]
    try:
        got = h.readi(2048)
    except PvSndError as exc:
        assert exc.errno == errno.EPIPE, exc
    else:
        same_audio(got, SOURCE[:2048 * FB])


def test_capture_a_buffer_behind_the_backend_is_an_overrun(rig: Rig) -> None:
    """The client stops reading for longer than the buffer: the READs were
    answered (read-ahead confirmed a buffer less a period), so the pointer's
    avail stays below the buffer, but the backend has recorded over those
    frames since.  The next read is an overrun (-EPIPE, state XRUN), never
    the next lap's frames handed out as these.  (The sleep is a lower bound:
    a busy machine only makes the backend further ahead.)"""
    h = rig.open(capture=True)
    h.hw_params(FMT, CH, RATE, period=1024, buffer=4096)
    got = h.readi(1024)  # starts the stream
    same_audio(got, SOURCE[:1024 * FB])
    time.sleep(3 * 4096 / RATE)
    try:
        got = h.readi(1024)
    except PvSndError as exc:
        assert exc.errno == errno.EPIPE, exc
        assert h.state == State.XRUN
    else:
        same_audio(got, SOURCE[1024 * FB:2048 * FB])  # only a backend that did not move


def test_riding_capture_runs_on_past_a_full_buffer(rig: Rig) -> None:
    """stop_threshold = boundary: a client that does not read for longer
    than the buffer is not stopped; avail reaches the buffer (a paced
    backend overwrote the oldest frames, as hardware does) and reads go on."""
    h = rig.open(capture=True)
    h.hw_params(FMT, CH, RATE, period=1024, buffer=4096)
    h.sw_params(stop_threshold=h.boundary)
    h.start()
    wait_for(h, lambda: h.avail_update() >= 4096, 3, "a full buffer captured")
    assert h.state == State.RUNNING
    assert len(h.readi(1024)) == 1024 * FB and h.state == State.RUNNING


def test_riding_capture_on_an_unpaced_backend_loses_nothing(tmp_path: Path) -> None:
    """An unpaced backend records what READs ask for and a period more, so
    the plugin's READs, not a clock, decide what is overwritten: reading
    ahead past the buffer for a riding client overwrote frames it had not
    read (the soak's capture: 722,944 mismatched samples in a minute)."""
    unpaced = Rig(tmp_path, "--unpaced")
    try:
        h = unpaced.open(capture=True)
        h.hw_params(FMT, CH, RATE, period=1024, buffer=4096)
        h.sw_params(stop_threshold=h.boundary)
        h.start()
        got = b""
        for _ in range(16):
            got += h.readi(1024)
            # A client busy elsewhere for a while, the plugin still polled
            # (as a sound server's other work does): nothing may be lost.
            busy_until = time.monotonic() + 0.02
            while time.monotonic() < busy_until:
                h.poll(0.005)
        same_audio(got, SOURCE[:16 * 1024 * FB])
    finally:
        unpaced.stop()


def test_rewind_then_rewrite_plays_the_new_frames(rig: Rig) -> None:
    old, new = signal(24000, seed=1), signal(12000, seed=2)
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=32768)
    assert h.writei(old) == 24000
    h.avail_update()
    assert h.hw_frames < 12000 - 4800, "the backend played too far to test a rewind"
    back = h.rewind(10**9)
    assert back == 24000 - h.hw_frames and h.appl_frames == h.hw_frames  # rewindable
    assert h.forward(back) == back and h.appl_frames == 24000  # forwardable: avail
    assert h.rewind(12000) == 12000 and h.appl_frames == 12000
    assert h.writei(new) == 12000
    h.drain()
    same_audio(rig.played(h), old[:12000 * FB] + new)


def test_pause_keeps_position_and_data(rig: Rig) -> None:
    data = signal(14400, seed=3)  # 0.3 s
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=16384)
    t0 = time.monotonic()
    h.writei(data)
    wait_for(h, lambda: h.avail_update() >= 16384 - 14400 + 4800, 2, "0.1 s played")
    h.pause(True)
    avail, delay = h.avail_update(), h.delay()
    assert delay > 4800
    paused = time.monotonic()
    while time.monotonic() - paused < 0.15:
        assert h.poll(0.02) == 0, "ready while paused"
        assert h.avail_update() == avail and h.delay() == delay
    h.pause(False)
    h.drain()
    assert time.monotonic() - t0 >= 0.3 + 0.15 - 0.03, "the pause did not hold playback"
    same_audio(rig.played(h), data)


# -- xruns ----------------------------------------------------------------------

def test_underrun_is_epipe_and_prepare_recovers(rig: Rig) -> None:
    first, second = signal(4096, seed=5), signal(4800, seed=6)
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=4096)  # stop_threshold = buffer
    h.writei(first)
    t0 = time.monotonic()
    with pytest.raises(Xrun) as ei:
        deadline = t0 + 1.5
        while time.monotonic() < deadline:
            assert h.avail_update() < 4096
            h.poll(0.005)
    assert ei.value.errno == errno.EPIPE
    assert time.monotonic() - t0 >= 4096 / RATE - 0.02, "xrun before the buffer ran out"
    assert h.state == State.XRUN
    with pytest.raises(Xrun):
        h.writei(second)
    h.prepare()
    assert (h.state, h.appl, h.hw, h.avail_update()) == (State.PREPARED, 0, 0, 4096)
    assert h.pcm.pointer(0) == 0
    assert h.writei(second) == 4800
    h.drain()
    # All of ``first`` played: the underrun was not called early.
    same_audio(rig.played(h), first + second)


def test_pointer_not_ahead_of_the_backend_after_preemption(rig: Rig) -> None:
    """The process is preempted (here: 10 ms injected) between reading the
    clock and reading the events for a while; later the pointer must still not
    claim frames the backend has not played, or the underrun comes early and
    STOP drops the tail.  (A report must count as observed when it was read.)"""
    first, second = signal(16384, seed=15), signal(1024, seed=16)
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=16384)
    process = h.pcm.card.process

    def preempted(timeout: float) -> None:
        time.sleep(0.010)
        process(timeout)

    h.pcm.card.process = preempted  # type: ignore[method-assign]
    h.writei(first)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.2:
        h.avail_update()
    h.pcm.card.process = process  # type: ignore[method-assign]
    with pytest.raises(Xrun):
        while time.monotonic() - t0 < 1.5:  # the application asks again and again
            h.avail_update()
    h.prepare()
    h.writei(second)
    h.drain()
    same_audio(rig.played(h), first + second)


def test_underrun_seen_by_wait_is_epipe(rig: Rig) -> None:
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=4096)
    h.writei(signal(4096))
    wait_for(h, lambda: h.pcm.model.state.name == "XRUN" or h.poll_revents() & alsa.POLLERR, 1.5,
             "the plugin to see the underrun")
    # An application that sleeps, then calls snd_pcm_wait (aplay does after a
    # short write) with its stale avail < avail_min: -EPIPE from the wait, or
    # from the call after it; -EIO makes snd_pcm_recover give up.
    try:
        h.wait()
    except PvSndError as exc:
        assert exc.errno == errno.EPIPE, exc
    else:
        with pytest.raises(Xrun):
            h.writei(signal(1024))


def test_no_xrun_when_stop_threshold_is_boundary(rig: Rig) -> None:
    first, second = signal(2048, seed=7), signal(2048, seed=8)
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=4096)
    h.sw_params(stop_threshold=h.boundary)
    h.writei(first)
    t0, seen = time.monotonic(), [0]
    while time.monotonic() - t0 < 3 * 4096 / RATE:
        h.avail_update()
        assert h.hw_frames >= seen[-1]
        seen.append(h.hw_frames)
        h.poll(0.005)
    # Ran to the end of the data without an error, and stays there (the
    # plugin's pointer never passes what the backend was given).
    assert h.state == State.RUNNING and h.hw_frames == 2048 and len(set(seen)) > 3
    assert h.avail_update() == 4096 and h.delay() == 0
    assert h.poll_revents() == alsa.POLLOUT
    h.writei(second)
    h.drain()
    same_audio(rig.played(h), first + second)


def test_forward_on_playback_skips_with_silence(rig: Rig) -> None:
    a, b = signal(2000, seed=9), signal(2000, seed=10)
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=16384)
    h.writei(a)
    h.avail_update()
    assert h.forward(1000) == 1000
    assert h.writei(b) == 2000
    h.drain()
    same_audio(rig.played(h), a + bytes(1000 * FB) + b)


# -- pointer, poll, delay -------------------------------------------------------

def test_pointer_monotonic_and_zero_after_prepare(rig: Rig) -> None:
    data = signal(14400, seed=11)
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=8192)
    assert h.pcm.pointer(0) == 0 and h.avail_update() == 8192  # PREPARED
    trace = []
    for i in range(0, len(data), 1000 * FB):
        h.writei(data[i:i + 1000 * FB])  # the harness asserts every delta >= 0
        h.avail_update()
        trace.append((h.hw_frames, h.appl_frames))
    assert all(a[0] <= b[0] for a, b in zip(trace, trace[1:]))
    assert all(hw <= appl for hw, appl in trace)  # never beyond what it was given
    assert trace[-1][0] > 14400 - 8192 - 1024
    h.drop()
    last = h.hw
    assert h.pcm.pointer(h.appl) == last  # not 0 "because stopped"
    assert h.avail_update() == 8192 - (h.appl - last)
    h.prepare()
    assert h.pcm.pointer(0) == 0 and h.avail_update() == 8192 and h.hw_frames == 0


def steady_playback(h: IoplugHarness, seconds: float) -> dict[str, list]:
    """Write avail_min frames at every POLLOUT for ``seconds``; record what
    poll, avail and delay said."""
    data = signal(int(RATE * (seconds + 0.2)) + h.buffer, seed=12)
    h.writei(data[:h.buffer * FB])
    pos = h.buffer
    assert h.poll_revents() == 0, "ready with a full buffer"
    rec: dict[str, list] = {"polls": [], "ready": [], "samples": []}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        revents = h.poll(0.2)
        rec["polls"].append(revents)
        if not revents:
            continue
        assert revents == alsa.POLLOUT, f"revents {revents:#x}"
        avail = h.avail_update()
        rec["ready"].append(avail)
        rec["samples"].append((time.monotonic(), avail, h.delay(), h.appl_frames))
        pos += h.writei(data[pos * FB:(pos + h.avail_min) * FB])
    return rec


@pytest.mark.parametrize("avail_min", [1024, 2048])
def test_poll_playback_ready_once_per_avail_min(rig: Rig, avail_min: int) -> None:
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=8192)
    h.sw_params(avail_min=avail_min)
    assert h.poll(0) == alsa.POLLOUT  # PREPARED, empty: ready
    rec = steady_playback(h, 0.5)
    periods = 0.5 * RATE / avail_min
    assert min(rec["ready"]) >= avail_min, "POLLOUT with avail < avail_min"
    assert 0.4 * periods <= len(rec["ready"]) <= 1.4 * periods + 2, rec["ready"]
    # Each CUR_POS (one per period) may wake the poller too, ready or not.
    assert len(rec["polls"]) <= 4 * 0.5 * RATE / h.period + 10, "the poller spins"
    assert h.state == State.RUNNING
    h.drain()


def test_poll_capture_ready_once_per_period(rig: Rig) -> None:
    h = rig.open(capture=True)
    h.hw_params(FMT, CH, RATE, period=1024, buffer=8192)
    assert h.poll_revents() == 0  # PREPARED capture: nothing to read
    h.start()
    got, ready, polls, t0 = bytearray(), [], 0, time.monotonic()
    while time.monotonic() - t0 < 0.4:
        revents = h.poll(0.2)
        polls += 1
        if revents:
            assert revents == alsa.POLLIN, f"revents {revents:#x}"
            avail = h.avail_update()
            assert avail >= h.avail_min, "POLLIN with avail < avail_min"
            ready.append(avail)
            got += h.readi(avail)
    periods = 0.4 * RATE / 1024
    assert 0.4 * periods <= len(ready) <= 1.4 * periods + 2, ready  # late when starved
    assert polls <= 4 * periods + 10, "the poller spins"
    same_audio(bytes(got), SOURCE[:len(got)])


def test_poll_no_idle_wakeup_after_each_write(rig: Rig) -> None:
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=8192)
    rec = steady_playback(h, 0.3)
    idle = rec["polls"].count(0)
    assert idle <= len(rec["ready"]) / 3 + 2, f"{idle} idle, {len(rec['ready'])} ready"
    h.drain()


def test_steady_playback_writes_are_sent_by_the_shim(rig: Rig) -> None:
    """Running, a period's transfer copies and sends its WRITE in C
    (pvplug_fast.h); Python takes the WRITEs in as its own: nothing is lost,
    nothing is sent twice, and the answers match."""
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=8192)
    steady_playback(h, 0.4)
    st = h.pcm.stream
    assert st.outside_writes >= 5, st.outside_writes
    played = h.appl_frames
    h.drain()
    assert st.outside_writes <= played // 1024 and st.acked == played
    same_audio(rig.played(h), signal(int(RATE * 0.6) + h.buffer, seed=12)[:played * FB])


def test_steady_playback_pointer_is_answered_in_c(rig: Rig) -> None:
    """Between Python's looks the shim answers the pointer itself, also past
    reports and answers Python has not taken yet (pvplug_fast_seen_bounds); the
    pointer it hands out never goes back and never passes what was written."""
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=8192)
    data = signal(RATE + 8192, seed=21)
    pos = h.writei(data[:8192 * FB])
    calls = in_c = last = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.5:
        r = native.pvplug_fast_pointer(h.pcm.fast, h.appl, time.monotonic())
        calls += 1
        if r >= 0:
            in_c += 1
            hw = h.pcm.fast.hw
            assert last <= hw <= h.appl_frames, (last, hw, h.appl_frames)
            last = hw
        if h.avail_update() >= 1024:
            pos += h.writei(data[pos * FB:(pos + 1024) * FB])
        time.sleep(0.001)
    assert h.state == State.RUNNING, h.last_error
    assert in_c >= calls / 2, f"{in_c} of {calls} pointer calls answered in C"
    h.drain()
    same_audio(rig.played(h), data[:pos * FB])
    # It took answers off the ring too, and each WRITE was answered once.
    st = h.pcm.stream
    assert st.outside_answers >= 1, "the shim took no WRITE answers off the ring"
    assert st.acked == h.appl_frames and not st.proto.outstanding


def test_delay_consistent_with_avail_and_smooth(rig: Rig) -> None:
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=8192)
    samples = steady_playback(h, 0.5)["samples"]
    assert len(samples) > 10
    tol = int(RATE * 0.005)
    played = []
    for t, avail, delay, appl in samples:
        assert delay >= 0
        assert abs(avail + delay - h.buffer) <= tol, (avail, delay)
        played.append((t, appl - delay))
    for (t1, p1), (t2, p2) in zip(played, played[1:]):
        assert p2 >= p1, "the playing position went back"
        assert p2 - p1 <= (t2 - t1) * RATE + h.period, "the playing position jumped"
    h.drain()


# -- nonblocking, boundary wrap ------------------------------------------------

def test_nonblocking_write_and_drain(rig: Rig) -> None:
    data = signal(8192, seed=13)
    h = rig.open(nonblock=True)
    h.hw_params(FMT, CH, RATE, period=1024, buffer=4096)
    assert h.writei(data) == 4096  # a short count, not an error
    with pytest.raises(PvSndError) as ei:
        h.writei(data[4096 * FB:])
    assert ei.value.errno == errno.EAGAIN
    with pytest.raises(PvSndError) as ei:
        h.drain()
    assert ei.value.errno == errno.EAGAIN and h.state == State.DRAINING
    wait_for(h, lambda: h.poll_revents() == alsa.POLLOUT, 2, "drain readiness")
    h.drain()
    assert h.state == State.SETUP
    same_audio(rig.played(h), data[:4096 * FB])


@pytest.mark.parametrize("capture", [False, True], ids=["playback", "capture"])
def test_boundary_wrap(rig: Rig, capture: bool) -> None:
    h = rig.open(capture=capture)
    h.hw_params(FMT, CH, RATE, period=1024, buffer=8192, boundary=16384)
    assert h.pcm.model.boundary == 16384
    frames, got = 36000, bytearray()
    data = signal(frames, seed=14)
    for i in range(0, frames, 700):
        n = min(700, frames - i)
        if capture:
            got += h.readi(n)
        else:
            assert h.writei(data[i * FB:(i + n) * FB]) == n, h.last_error
        assert 0 <= h.appl < 16384 and 0 <= h.hw < 16384
        assert 0 <= h.delay() <= 8192 + 1024
        assert h.pcm.positions()[0] == h.appl_frames  # the plugin unwraps appl_ptr right
    assert h.appl_frames == frames > 2 * 16384
    if capture:
        same_audio(bytes(got), SOURCE[:frames * FB])
    else:
        h.drain()
        same_audio(rig.played(h), data)


# -- the data path: copies that return, answers that come later ---------------

def _hostile_rig(tmp_path: Path, mode: str) -> tuple[Sim, Proc]:
    sim = Sim(tmp_path)
    be = Proc([sys.executable, str(HOSTILE_BACKEND), str(sim.dir), mode], tmp_path / "hostile.log")
    return sim, be


def test_write_failure_surfaces_on_the_next_callback(tmp_path: Path) -> None:
    """transfer returns before the WRITE is answered; the failed answer (-EIO)
    is the error of the callback that takes it, with the backend's status."""
    sim, be = _hostile_rig(tmp_path, "fail-write")
    try:
        h = IoplugHarness(transport="sim", sim_dir=sim.dir, domid=1, timeout=2)
        h.hw_params(FMT, CH, RATE, period=1024, buffer=8192)
        t0 = time.monotonic()
        h.writei(signal(1024))  # two WRITEs (one a period), answered fine
        h.writei(signal(1024, seed=3))
        assert time.monotonic() - t0 < 0.5  # copies, no waiting on the backend
        h.writei(signal(1024, seed=2))  # the third WRITE fails at the backend
        deadline = time.monotonic() + 2
        while h.last_error is None and time.monotonic() < deadline:
            try:
                h.avail_update()
            except PvSndError as exc:
                h.last_error = exc
                break
            h.poll(0.01)  # (poll_revents records its error in last_error)
        err = h.last_error
        assert isinstance(err, BackendError), err
        assert err.status == -errno.EIO and "WRITE of frames 2048..3072" in str(err), err
        h.close()
    finally:
        be.stop()
        sim.stop()


def test_drain_waits_for_outstanding_writes(tmp_path: Path) -> None:
    """WRITE answers 0.2 s late: writei does not wait for them, drain does
    (and for the playing of what they carried)."""
    sim, be = _hostile_rig(tmp_path, "slow-write")
    try:
        h = IoplugHarness(transport="sim", sim_dir=sim.dir, domid=1, timeout=2)
        h.hw_params(FMT, CH, RATE, period=1024, buffer=4096)
        h.sw_params(start_threshold=4096)  # (a START would wait behind the WRITE)
        t0 = time.monotonic()
        h.writei(signal(1024))
        wrote = time.monotonic() - t0
        h.drain()
        drained = time.monotonic() - t0
        assert wrote < 0.15 <= 0.2 <= drained, (wrote, drained)
        assert h.pcm.stream.acked == h.pcm.stream.appl == 1024
        h.close()
    finally:
        be.stop()
        sim.stop()


def test_rewind_after_a_coalesced_write_plays_the_new_frames(rig: Rig) -> None:
    """Frames written in pieces smaller than a period are announced in one
    WRITE; rewinding over them and writing again replaces them at the backend."""
    h = rig.open()
    h.hw_params(FMT, CH, RATE, period=1024, buffer=16384)
    h.sw_params(start_threshold=16384)  # played only at the drain: no race with the writes
    first = signal(8000, seed=20)
    for i in range(0, 8000, 100):  # 100-frame pieces: coalesced
        h.writei(first[i * FB:(i + 100) * FB])
    assert h.pcm.stream.sent < 8000 or len(h.pcm.stream._ranges) < 80
    h.rewind(2000)
    second = signal(2000, seed=21)
    h.writei(second)
    h.drain()
    same_audio(rig.played(h), first[:6000 * FB] + second)


def test_capture_reads_ahead_of_the_application(rig: Rig) -> None:
    """READs go out as the backend reports captured frames, before readi asks;
    readi then copies without waiting, and the data is right from frame 0."""
    h = rig.open(capture=True)
    h.hw_params(FMT, CH, RATE, period=1024, buffer=8192)
    h.start()
    st = h.pcm.stream
    wait_for(h, lambda: st.confirmed >= 4096, 2, "READs answered before any readi")
    assert st.read_sent >= st.confirmed >= 4096 and st.appl == 0
    t0 = time.monotonic()
    got = h.readi(4096)
    assert time.monotonic() - t0 < 0.05, "readi waited although the data was confirmed"
    same_audio(got, SOURCE[:4096 * FB])
