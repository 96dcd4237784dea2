"""End to end: a Python frontend process (the test) and a backend process,
through the simulated hypervisor process.  Bit-exact audio, positions
against the clock, backend and frontend deaths."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from alsa_pvplug.backend.wavfile import read_wav
from alsa_pvplug.errors import BackendGone, BackendTimeout
from alsa_pvplug.frontend import Card
from alsa_pvplug.protocol.sndif import PcmFormat
from alsa_pvplug.transport import open_transport
from tests.support.audio import make_signal, write_wav
from tests.support.env import PY, Proc, Sim, wait_until


def latest_wav(out: Path, n_before: int = 0) -> Path:
    wait_until(lambda: len(sorted(out.glob("*.wav"))) > n_before, 5, "a new WAV file")
    return sorted(out.glob("*.wav"))[-1]


@pytest.fixture(scope="module")
def unpaced(tmp_path_factory):
    """One sim + one unpaced WAV backend for the format matrix."""
    root = tmp_path_factory.mktemp("unpaced")
    sim = Sim(root)
    be = sim.backend(root, "--unpaced", "--sink", f"wav:{root / 'out'}")
    try:
        yield sim, root / "out"
    finally:
        be.stop()
        sim.stop()


@pytest.fixture
def card_on(request):
    cards = []

    def open_card(sim: Sim, timeout: float = 3.0) -> Card:
        t = open_transport("sim", sim_dir=sim.dir, domid=1)
        c = Card.open(t, timeout=timeout)
        cards.append((c, t))
        return c

    yield open_card
    for c, t in cards:
        c.close()
        t.close()


FORMATS = [PcmFormat.S16_LE, PcmFormat.S24_LE, PcmFormat.S32_LE, PcmFormat.FLOAT_LE, PcmFormat.U8]


@pytest.mark.parametrize("rate", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_playback_bit_exact(unpaced, card_on, fmt, channels, rate):
    sim, out = unpaced
    card = card_on(sim)
    n_before = len(list(out.glob("*.wav"))) if out.exists() else 0
    frames = 3000 + 7  # several buffers, not a whole number of periods
    data = make_signal(fmt, channels, frames, seed=channels * rate)
    st = card.stream(0, 0)
    st.open(fmt, channels, rate, buffer_frames=1024, period_frames=256)
    assert st.write(data) == frames
    st.drain()
    st.close()
    info, got = read_wav(str(latest_wav(out, n_before)))
    assert (info.format, info.channels, info.rate) == (fmt, channels, rate)
    assert got == data


def test_playback_paced_positions_follow_the_clock(sim, card_on, tmp_path):
    be = sim.backend(tmp_path, "--sink", f"wav:{tmp_path / 'out'}")
    try:
        card = card_on(sim)
        rate, period = 48000, 1024
        st = card.stream(0, 0)
        st.open(PcmFormat.S16_LE, 2, rate, buffer_frames=rate // 2, period_frames=period)
        data = make_signal(PcmFormat.S16_LE, 2, rate // 2)
        st.write(data)  # fills the buffer exactly: auto-starts
        t_start = time.monotonic()
        samples = []
        last = -1
        while st.hw < rate // 2 and time.monotonic() < t_start + 3:
            card.process(0.05)
            if st.hw != last:
                last = st.hw
                samples.append((time.monotonic(), st.hw))
        positions = [p for _, p in samples]
        assert positions == sorted(positions), "CUR_POS went backwards"
        assert positions[-1] == rate // 2
        # Every observed position lies within one period (plus scheduling
        # slack) behind the backend's clock, and never ahead of it.
        slack = int(0.015 * rate)
        for t, p in samples[:-1]:
            clock = (t - t_start) * rate
            assert clock - period - slack <= p <= clock + slack, (t - t_start, p, clock)
        st.drain()
        st.close()
        info, got = read_wav(str(latest_wav(tmp_path / "out")))
        assert got == data
    finally:
        be.stop()


def test_capture_wav_source_bit_exact(sim, card_on, tmp_path):
    fmt, channels, rate = PcmFormat.S32_LE, 2, 48000
    data = make_signal(fmt, channels, 12000, seed=7)
    write_wav(str(tmp_path / "in.wav"), fmt, channels, rate, data)
    be = sim.backend(tmp_path, "--source", f"wav:{tmp_path / 'in.wav'}")
    try:
        card = card_on(sim)
        st = card.stream(0, 1)
        st.open(fmt, channels, rate, buffer_frames=2048, period_frames=512)
        got = st.read(12000)
        assert got == data
        st.close()
    finally:
        be.stop()


def test_capture_positions_within_one_period_of_clock(sim, card_on, tmp_path):
    be = sim.backend(tmp_path, "--source", "sine:440")
    try:
        card = card_on(sim)
        rate, period = 48000, 1024
        st = card.stream(0, 1)
        st.open(PcmFormat.S16_LE, 2, rate, buffer_frames=rate, period_frames=period)
        st.start()
        t_start = time.monotonic()
        samples = []
        while time.monotonic() < t_start + 0.6:
            card.process(0.05)
            samples.append((time.monotonic(), st.hw))
        positions = [p for _, p in samples]
        assert positions == sorted(positions)
        assert positions[-1] >= 0.4 * rate
        slack = int(0.015 * rate)
        for t, p in samples:
            clock = (t - t_start) * rate
            assert clock - period - slack <= p <= clock + slack, (t - t_start, p, clock)
        st.close()
    finally:
        be.stop()


def test_backend_killed_then_restarted(sim, card_on, tmp_path):
    out = tmp_path / "out"
    be = sim.backend(tmp_path, "--sink", f"wav:{out}")
    card = card_on(sim, timeout=1.0)
    st = card.stream(0, 0)
    st.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=4800, period_frames=960)
    st.write(make_signal(PcmFormat.S16_LE, 2, 4800))
    be.stop(sig_kill=True)
    t0 = time.monotonic()
    with pytest.raises((BackendTimeout, BackendGone)):
        st.write(make_signal(PcmFormat.S16_LE, 2, 48000))
    assert time.monotonic() - t0 < 1.0 + 0.5 + 0.5, "the failure must come within the timeout"
    be2 = sim.backend(tmp_path, "--sink", f"wav:{out}", name="backend2")
    try:
        n_before = len(list(out.glob("*.wav")))
        deadline = time.monotonic() + 10
        while True:  # the card reconnects once the new backend offers InitWait
            try:
                st.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=4800, period_frames=960)
                break
            except (BackendGone, BackendTimeout):
                assert time.monotonic() < deadline, "card did not reconnect"
                card.process(0.1)
        data = make_signal(PcmFormat.S16_LE, 2, 6000, seed=3)
        st.write(data)
        st.drain()
        st.close()
        assert read_wav(str(latest_wav(out, n_before)))[1] == data
    finally:
        be2.stop()


FRONTEND_SCRIPT = textwrap.dedent("""
    import sys, time
    from alsa_pvplug.frontend import Card
    from alsa_pvplug.protocol.sndif import PcmFormat
    from alsa_pvplug.transport import open_transport
    card = Card.open(open_transport("sim", sim_dir=sys.argv[1], domid=1))
    st = card.stream(0, 0)
    st.open(PcmFormat.S16_LE, 2, 48000, 4800, 960)
    print("playing", flush=True)
    while True:
        st.write(bytes(4 * 960))
""")


def test_frontend_killed_then_new_frontend_connects(sim, card_on, tmp_path):
    out = tmp_path / "out"
    be = sim.backend(tmp_path, "--sink", f"wav:{out}")
    fe = Proc([sys.executable, "-c", FRONTEND_SCRIPT, str(sim.dir)], tmp_path / "fe.log")
    try:
        wait_until(lambda: "playing" in fe.output() or not fe.alive, 15, "frontend playing")
        assert fe.alive, fe.output()
        time.sleep(0.2)  # let it run mid-stream: the point is dying while playing
        fe.stop(sig_kill=True)
        card = card_on(sim)
        n_before = len(list(out.glob("*.wav")))
        st = card.stream(0, 0)
        st.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=4800, period_frames=960)
        data = make_signal(PcmFormat.S16_LE, 2, 7000, seed=5)
        st.write(data)
        st.drain()
        st.close()
        assert read_wav(str(latest_wav(out, n_before)))[1] == data
        assert be.alive
    finally:
        fe.stop(sig_kill=True)
        be.stop()


def test_demo_command(tmp_path):
    import subprocess

    r = subprocess.run([*PY[:-2], "demo", "--dir", str(tmp_path / "demo"), "--seconds", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bit-exact: True" in r.stdout


def test_pause_resume_keeps_position(sim, card_on, tmp_path):
    out = tmp_path / "out"
    be = sim.backend(tmp_path, "--sink", f"wav:{out}")
    try:
        card = card_on(sim)
        rate = 48000
        st = card.stream(0, 0)
        st.open(PcmFormat.S16_LE, 2, rate, buffer_frames=rate // 2, period_frames=960)
        data = make_signal(PcmFormat.S16_LE, 2, rate // 2, seed=11)
        st.write(data)  # a full buffer: auto-starts
        card._wait(lambda: st.hw >= rate // 10, time.monotonic() + 2, "some playback")
        st.pause()
        at_pause = st.hw
        t0 = time.monotonic()
        while time.monotonic() < t0 + 0.2:
            card.process(0.05)
        assert st.hw - at_pause <= 960, "position moved while paused"
        st.resume()
        st.drain()
        st.close()
        assert read_wav(str(latest_wav(out)))[1] == data
    finally:
        be.stop()


def test_backend_plays_into_a_real_alsa_device(sim, card_on, tmp_path):
    """alsa-lib's `null` PCM stands in for a sound card: the pyalsaaudio sink runs."""
    be = sim.backend(tmp_path, "--sink", "alsa:null")
    try:
        card = card_on(sim)
        st = card.stream(0, 0)
        st.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=4800, period_frames=960)
        st.write(make_signal(PcmFormat.S16_LE, 2, 9600))
        st.drain()
        st.close()
        assert be.alive and "Traceback" not in be.output()
    finally:
        be.stop()


def test_sim_creates_vsnd_nodes_like_xl(sim):
    """The toolstack role, read back with xenstore-utils as the guest sees it."""
    import subprocess

    env = {**__import__("os").environ, **sim.xs_env(1)}
    fe = "/local/domain/1/device/vsnd/0"
    ls = subprocess.run(["xenstore-ls", "-p", fe], env=env, capture_output=True, text=True,
                        timeout=10)
    assert ls.returncode == 0, ls.stderr
    lines = {ln.split("=")[0].strip(): ln for ln in ls.stdout.splitlines()}
    for key in ("backend", "backend-id", "state", "sample-formats", "0", "name", "type",
                "unique-id"):
        assert key in lines, (key, ls.stdout)
    assert "f32_le" in lines["sample-formats"]  # xl's own float spelling
    be = subprocess.run(["xenstore-read", f"{fe}/backend"], env=env, capture_output=True,
                        text=True, timeout=10).stdout.strip()
    assert be == "/local/domain/0/backend/vsnd/1/0"
    perms = subprocess.run(["xenstore-ls", "-p", "/local/domain/1/device/vsnd"], env=env,
                           capture_output=True, text=True, timeout=10).stdout
    assert "(n1,r0)" in perms  # owned by the guest, readable by the backend


def test_one_backend_serves_two_guests(tmp_path):
    sim = Sim(tmp_path, ["--guest", "1", "--guest", "2"])
    be = sim.backend(tmp_path, "--sink", f"wav:{tmp_path / 'out'}")
    opened = []
    try:
        streams = {}
        for domid in (1, 2):
            t = open_transport("sim", sim_dir=sim.dir, domid=domid)
            c = Card.open(t)
            opened.append((c, t))
            st = c.stream(0, 0)
            st.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=4800, period_frames=960)
            data = make_signal(PcmFormat.S16_LE, 2, 4800, seed=domid)
            st.write(data)  # one full buffer each: both play at once
            streams[domid] = (st, data)
        for domid, (st, data) in streams.items():
            st.drain()
            st.close()
            wav = sorted((tmp_path / "out").glob(f"dom{domid}-*.wav"))[-1]
            assert read_wav(str(wav))[1] == data
    finally:
        for c, t in opened:
            c.close()
            t.close()
        be.stop()
        sim.stop()
