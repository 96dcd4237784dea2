"""alsa-utils through the real plugin: aplay, arecord, speaker-test, and the
hw_params space it offers."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from alsa_pvplug.backend.wavfile import read_wav
from alsa_pvplug.protocol.sndif import PcmFormat, frame_bytes
from tests.support.audio import make_signal, write_wav
from tests.support.env import Proc, PvEnv

FORMATS = [PcmFormat.S16_LE, PcmFormat.S32_LE, PcmFormat.FLOAT_LE]
MATRIX = list(itertools.product(FORMATS, (1, 2, 6), (44100, 48000)))
FRAMES = 6000  # a little over a period of aplay's default geometry at 44.1 kHz


def _ids(p: tuple[PcmFormat, int, int]) -> str:
    return f"{p[0].name}-{p[1]}ch-{p[2]}"


def _seed(fmt: PcmFormat, channels: int, rate: int) -> int:
    return int(fmt) * 1000 + channels * 100 + rate // 1000


def assert_played(got: bytes, data: bytes) -> None:
    """Bit-exact, allowing the silence aplay pads its last period with."""
    first_diff = next((i for i, (a, b) in enumerate(zip(got, data)) if a != b), None)
    assert first_diff is None and len(got) >= len(data), \
        f"{len(got)} vs {len(data)} bytes; first difference at byte {first_diff}"
    assert not any(got[len(data):]), "the padding after the data is not silence"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, plugin_lib: Path) -> Iterator[PvEnv]:
    """One sim + backend for the whole matrix; its capture source holds one
    WAV per (format, channels, rate), picked by the stream's OPEN."""
    root = tmp_path_factory.mktemp("aplay")
    sources = root / "sources"
    sources.mkdir()
    for fmt, ch, rate in MATRIX:
        write_wav(str(sources / f"{fmt.name}-{ch}-{rate}.wav"), fmt, ch, rate,
                  make_signal(fmt, ch, FRAMES, seed=_seed(fmt, ch, rate) + 1))
    env = PvEnv(root, plugin_lib, backend_args=["--source", f"wav:{sources}"])
    try:
        yield env
    finally:
        env.stop()


def _play(env: PvEnv, fmt: PcmFormat, channels: int, rate: int, *args: str) -> str:
    data = make_signal(fmt, channels, FRAMES, seed=_seed(fmt, channels, rate))
    src = env.root / f"in-{fmt.name}-{channels}-{rate}.wav"
    write_wav(str(src), fmt, channels, rate, data)
    before = set(env.played())
    c = env.run(["aplay", "-D", "pvplug", *args, str(src)])
    new = sorted(set(env.played()) - before)
    assert len(new) == 1, (new, c.output)
    info, got = read_wav(str(new[0]))
    assert (info.format, info.channels, info.rate) == (fmt, channels, rate)
    assert_played(got, data)
    return c.output


@pytest.mark.parametrize("fmt,channels,rate", MATRIX, ids=[_ids(p) for p in MATRIX])
def test_aplay_bit_exact(shared: PvEnv, fmt: PcmFormat, channels: int, rate: int) -> None:
    _play(shared, fmt, channels, rate)


@pytest.mark.parametrize("fmt,channels,rate", MATRIX, ids=[_ids(p) for p in MATRIX])
def test_arecord_bit_exact(shared: PvEnv, fmt: PcmFormat, channels: int, rate: int) -> None:
    out = shared.root / f"rec-{_ids((fmt, channels, rate))}.wav"
    frames = FRAMES - 1000
    shared.run(["arecord", "-q", "-D", "pvplug", "-f", fmt.name, "-c", str(channels),
                "-r", str(rate), "-s", str(frames), str(out)])
    info, got = read_wav(str(out))
    want = make_signal(fmt, channels, FRAMES, seed=_seed(fmt, channels, rate) + 1)
    assert (info.format, info.channels, info.rate) == (fmt, channels, rate)
    assert len(got) == frames * frame_bytes(fmt, channels)
    assert got == want[:len(got)]


def test_aplay_mmap_bit_exact(shared: PvEnv) -> None:
    out = _play(shared, PcmFormat.S16_LE, 2, 48000, "-M", "-v")
    assert re.search(r"access\s*:\s*MMAP_INTERLEAVED", out), out


def test_aplay_small_periods_mmap_bit_exact(shared: PvEnv) -> None:
    _play(shared, PcmFormat.S32_LE, 2, 48000, "-M", "--period-size=512", "--buffer-size=2048")


@pytest.mark.parametrize("extra", [[], ["-M"], ["-N"],
                                   ["--period-size=512", "--buffer-size=2048"]],
                         ids=["rw", "mmap", "nonblock", "small"])
def test_aplay_test_position_reports_nothing(shared: PvEnv, extra: list[str]) -> None:
    out = _play(shared, PcmFormat.S16_LE, 2, 48000, "--test-position", *extra)
    assert "Suspicious" not in out, out


def test_arecord_test_position_reports_nothing(shared: PvEnv) -> None:
    out = shared.root / "rec-position.wav"
    c = shared.run(["arecord", "-D", "pvplug", "-f", "S16_LE", "-c", "2", "-r", "48000",
                    "-s", str(FRAMES - 1000), "--test-position", str(out)])
    assert "Suspicious" not in c.output, c.output


def test_dump_hw_params_shows_the_xenstore_config(shared: PvEnv) -> None:
    """The default simulated card (sim/toolstack.DEFAULT_VSND): formats
    u8;s16_le;s24_le;s32_le;f32_le, channels 1..8, rates 8000..96000, a
    1 MiB buffer."""
    src = shared.root / "dump.wav"
    write_wav(str(src), PcmFormat.S16_LE, 2, 48000, bytes(4 * 4800))
    c = shared.run(["aplay", "-D", "pvplug", "--dump-hw-params", str(src)])
    params = dict(re.findall(r"^([A-Z_]+):\s*(.*?)\s*$", c.output, re.M))
    assert set(params["ACCESS"].split()) == {"MMAP_INTERLEAVED", "RW_INTERLEAVED"}
    assert set(params["FORMAT"].split()) == {"U8", "S16_LE", "S24_LE", "S32_LE", "FLOAT_LE"}
    assert params["CHANNELS"] == "[1 8]"
    assert params["RATE"] == "[8000 96000]"
    # 1 ms (--min-period-us) at 96 kHz of the narrowest frame (U8 mono): 96 bytes
    assert params["BUFFER_BYTES"] == "[192 1048576]"
    assert params["PERIODS"] == "[2 1024]"
    assert params["PERIOD_BYTES"] == "[96 524288]"


def test_speaker_test_completes(shared: PvEnv) -> None:
    c = shared.run(["speaker-test", "-D", "pvplug", "-c", "2", "-l", "2"], timeout=60)
    assert c.output.count("Front Right") == 2, c.output


def test_aplay_lists_the_hint(shared: PvEnv) -> None:
    c = shared.run(["aplay", "-L"])
    assert re.search(r"^pvplug\n\s+Xen para-virtual sound", c.output, re.M), c.output


def test_second_process_gets_ebusy_until_the_first_exits(shared: PvEnv) -> None:
    from tests.support.env import Proc, wait_until

    src = shared.root / "long.wav"
    write_wav(str(src), PcmFormat.S16_LE, 2, 48000, bytes(4 * 48000 * 3))
    first = Proc(["aplay", "-D", "pvplug", str(src)], shared.root / "first.log", env=shared.env)
    try:
        wait_until(lambda: "Playing" in first.output() or not first.alive, 10, "first aplay")
        c = shared.run(["aplay", "-D", "pvplug", str(src)], check=False)
        assert c.rc != 0
        assert "in use by process" in c.output and "Device or resource busy" in c.output, \
            c.output
        first.stop(sig_kill=True)
        assert first.proc.returncode == -9
    finally:
        first.stop(sig_kill=True)
    _play(shared, PcmFormat.S16_LE, 2, 48000)


def test_asoundrc_example_plays(shared: PvEnv, plugin_lib: Path) -> None:
    """Every option the example shows is one the plugin accepts: the example,
    pointed at this simulator, plays bit-exact."""
    from tests.support.env import REPO, SYSTEM_ALSA_CONF

    text = (REPO / "asoundrc.example").read_text()
    text = re.sub(r'lib "[^"]*"', f'lib "{plugin_lib}"', text)
    text = text.replace('transport "xen"', 'transport "sim"')
    text = text.replace('# sim_dir "/tmp/pvplug-sim"', f'sim_dir "{shared.sim.dir}"')
    text = text.replace("# domid 1", "domid 1").replace("# backend_domid 0", "backend_domid 0")
    conf = shared.root / "asoundrc"
    conf.write_text(text)
    data = make_signal(PcmFormat.S16_LE, 2, FRAMES, seed=99)
    src = shared.root / "example.wav"
    write_wav(str(src), PcmFormat.S16_LE, 2, 48000, data)
    for device in ("pvplug", "pvplug:0,0", "pvplug_any"):
        before = set(shared.played())
        shared.run(["aplay", "-D", device, str(src)],
                   env={"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}"})
        (new,) = sorted(set(shared.played()) - before)
        assert_played(read_wav(str(new))[1], data)


def _long_wav(env: PvEnv, seconds: float = 5) -> Path:
    src = env.root / "long.wav"
    write_wav(str(src), PcmFormat.S16_LE, 2, 48000,
              make_signal(PcmFormat.S16_LE, 2, int(48000 * seconds), seed=5))
    return src


def _playing(env: PvEnv, src: Path) -> Proc:
    from tests.support.env import Proc, wait_until

    p = Proc(["aplay", "-D", "pvplug", str(src)], env.root / "victim.log", env=env.env)
    wait_until(lambda: len(env.played()) > 0 and env.played()[-1].stat().st_size > 48000 * 4 // 4
               or not p.alive, 10, "aplay playing")
    assert p.alive, p.output()
    return p


def test_backend_killed_mid_stream_aplay_fails_fast_then_restart_plays(pvenv: PvEnv) -> None:
    import time

    src = _long_wav(pvenv)
    victim = _playing(pvenv, src)
    try:
        assert pvenv.backend is not None
        pvenv.backend.stop(sig_kill=True)
        t0 = time.monotonic()
        rc = victim.proc.wait(10)
        elapsed = time.monotonic() - t0
        # Killed, it never says Closed: as on Xen, the request timeout (3 s)
        # ends the write, teardown waits briefly per request.
        assert rc != 0 and elapsed < 7, (rc, elapsed, victim.output())
        assert "pvplug" in victim.output()
    finally:
        victim.stop(sig_kill=True)
    pvenv.start_backend()
    data = make_signal(PcmFormat.S16_LE, 2, FRAMES, seed=6)
    write_wav(str(src), PcmFormat.S16_LE, 2, 48000, data)
    before = set(pvenv.played())
    pvenv.run(["aplay", "-D", "pvplug", str(src)])
    (new,) = sorted(set(pvenv.played()) - before)
    assert_played(read_wav(str(new))[1], data)


def test_backend_frozen_mid_stream_aplay_gives_up_within_bounds(pvenv: PvEnv) -> None:
    """A backend that stops answering (SIGSTOP): the request timeout (3 s)
    ends the write, teardown waits briefly per request; aplay exits."""
    import os
    import signal
    import time

    src = _long_wav(pvenv, 8)
    victim = _playing(pvenv, src)
    assert pvenv.backend is not None
    pid = pvenv.backend.proc.pid
    try:
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        rc = victim.proc.wait(15)
        elapsed = time.monotonic() - t0
        assert rc != 0, victim.output()
        assert elapsed < 7, (elapsed, victim.output())
        assert "ETIMEDOUT" in victim.output() or "timed out" in victim.output(), victim.output()
    finally:
        os.kill(pid, signal.SIGCONT)
        victim.stop(sig_kill=True)


def test_pvplug_install_then_aplay(shared: PvEnv, tmp_path: Path) -> None:
    """`pvplug install` into given dirs: the snippet it writes is all aplay needs;
    `--user` builds under $HOME and prints a snippet with the pcm_type line."""
    import os
    import subprocess
    import sys

    from tests.support.env import SYSTEM_ALSA_CONF

    pvplug = [sys.executable, "-m", "alsa_pvplug.cli"]
    r = subprocess.run([*pvplug, "install", "--plugin-dir", str(tmp_path / "lib"),
                        "--conf-dir", str(tmp_path / "conf.d"), "--transport", "sim",
                        "--sim-dir", str(shared.sim.dir), "--domid", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    conf = tmp_path / "conf.d" / "50-pvplug.conf"
    assert (tmp_path / "lib" / "libasound_module_pcm_pvplug.so").is_file()
    data = make_signal(PcmFormat.S16_LE, 2, FRAMES, seed=7)
    src = tmp_path / "x.wav"
    write_wav(str(src), PcmFormat.S16_LE, 2, 48000, data)
    before = set(shared.played())
    shared.run(["aplay", "-D", "pvplug", str(src)],
               env={"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}"})
    (new,) = sorted(set(shared.played()) - before)
    assert_played(read_wav(str(new))[1], data)

    home = tmp_path / "home"
    home.mkdir()
    r = subprocess.run([*pvplug, "install", "--user"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "HOME": str(home)})
    assert r.returncode == 0, r.stderr
    lib = home / ".local" / "lib" / "alsa-pvplug" / "libasound_module_pcm_pvplug.so"
    assert lib.is_file()
    assert f'pcm_type.pvplug {{ lib "{lib}" }}' in r.stdout and "pcm.pvplug {" in r.stdout
