"""The plugin against a backend that behaves like xen-troops snd_be
(``pvplug backend --compat sndbe``): READ fills the buffer while it is
handled, positions count from OPEN, CUR_POS comes from a millisecond timer
and runs past the data at the end, HW_PARAM_QUERY is wide and OPEN refuses
what xenstore allows (FLOAT_LE, one channel, 8000 Hz).  Every check is
bit-exact."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alsa_pvplug.backend.wavfile import read_wav
from alsa_pvplug.protocol.sndif import PcmFormat
from tests.plugin.test_plugin_alsalib import assert_exact, behaviour_bin, run_cmd  # noqa: F401
from tests.support.audio import make_signal, write_wav
from tests.support.env import PvEnv, wait_until

RATE = 48000


@pytest.fixture
def sndbe(tmp_path: Path, plugin_lib: Path) -> Iterator[PvEnv]:
    src = tmp_path / "source.wav"
    write_wav(str(src), PcmFormat.S16_LE, 2, RATE, make_signal(PcmFormat.S16_LE, 2, RATE, seed=3))
    env = PvEnv(tmp_path, plugin_lib, backend_args=["--compat", "sndbe", "--source", f"wav:{src}"])
    try:
        yield env
    finally:
        env.stop()


def played_since(env: PvEnv, before: set[Path]) -> bytes:
    """What the backend played since ``before`` (its WAVs), OPEN after OPEN."""
    return b"".join(read_wav(str(f))[1] for f in sorted(set(env.played()) - before))


def exact_with_padding(got: bytes, want: bytes) -> None:
    """``want`` exactly, then only silence (aplay pads its last period)."""
    assert got[:len(want)] == want, f"{len(got)} bytes played, {len(want)} written"
    assert not any(got[len(want):]), "more than silence after the data"


@pytest.mark.parametrize("mode", [[], ["-M"]], ids=["rw", "mmap"])
def test_aplay_bit_exact(sndbe: PvEnv, mode: list[str]) -> None:
    data = make_signal(PcmFormat.S16_LE, 2, RATE // 2, seed=4)
    wav = sndbe.root / "in.wav"
    write_wav(str(wav), PcmFormat.S16_LE, 2, RATE, data)
    before = set(sndbe.played())
    sndbe.run(["aplay", "-q", "-D", "pvplug", *mode, str(wav)])
    exact_with_padding(played_since(sndbe, before), data)


def test_aplay_mmap_forced_underrun_recovers_bit_exact(sndbe: PvEnv) -> None:
    """aplay -M stopped for 0.3 s mid-stream: an underrun, recovered (prepare
    opens the stream again, so snd_be's count from OPEN restarts), and what
    was written before and after is all played, in order."""
    data = make_signal(PcmFormat.S16_LE, 2, RATE * 2, seed=5)
    wav = sndbe.root / "in.wav"
    write_wav(str(wav), PcmFormat.S16_LE, 2, RATE, data)
    before = set(sndbe.played())
    log = sndbe.root / "aplay.log"
    with open(log, "wb") as out:
        p = subprocess.Popen(["aplay", "-D", "pvplug", "-M", "--buffer-time=100000", str(wav)],
                             stdout=out, stderr=subprocess.STDOUT,
                             env={**os.environ, **sndbe.env})
        try:
            # Stop it once it plays (start-up takes long on a busy machine).
            def playing() -> bool:
                assert p.poll() is None, log.read_text()
                return any(f.stat().st_size > RATE * 4 // 5 for f in
                           set(sndbe.played()) - before)
            wait_until(playing, 15, "aplay -M playing", interval=0.02)
            p.send_signal(signal.SIGSTOP)
            time.sleep(0.3)
            p.send_signal(signal.SIGCONT)
            assert p.wait(30) == 0, log.read_text()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert "underrun" in log.read_text(), log.read_text()
    exact_with_padding(played_since(sndbe, before), data)


def test_underrun_and_prepare_bit_exact(sndbe: PvEnv, behaviour_bin: Path) -> None:  # noqa: F811
    v, data, got = run_cmd(sndbe, behaviour_bin, "xrun", int(RATE * 0.4), seed=14)
    assert int(v["xrun_avail_update"]) == -32 and v["state_after_prepare"] == "PREPARED", v
    assert_exact(got, data, v)


def test_mmap_bit_exact(sndbe: PvEnv, behaviour_bin: Path) -> None:  # noqa: F811
    v, data, got = run_cmd(sndbe, behaviour_bin, "mmap", RATE // 2, seed=15)
    assert_exact(got, data, v)


def test_arecord_bit_exact_from_frame_0(sndbe: PvEnv) -> None:
    """snd_be fills the buffer while it handles READ: a frontend that copied
    before the answer would hand out a first buffer of zeros."""
    rec = sndbe.root / "rec.wav"
    sndbe.run(["arecord", "-q", "-D", "pvplug", "-f", "S16_LE", "-c", "2", "-r", str(RATE),
               "-s", str(RATE // 2), str(rec)])
    got = read_wav(str(rec))[1]
    want = make_signal(PcmFormat.S16_LE, 2, RATE, seed=3)
    assert len(got) == RATE // 2 * 4 and got == want[:len(got)]


def test_refused_open_fails_hw_params_cleanly(sndbe: PvEnv) -> None:
    """OPEN refuses FLOAT_LE although the query allowed it: aplay fails with a
    message that says so, and the card is fine for the next client."""
    wav = sndbe.root / "float.wav"
    write_wav(str(wav), PcmFormat.FLOAT_LE, 2, RATE, make_signal(PcmFormat.FLOAT_LE, 2, 4800))
    c = sndbe.run(["aplay", "-D", "pvplug", str(wav)], check=False)
    assert c.rc != 0 and "the backend refused FLOAT_LE" in c.output, c.output
    data = make_signal(PcmFormat.S16_LE, 2, 4800, seed=6)
    write_wav(str(wav), PcmFormat.S16_LE, 2, RATE, data)
    before = set(sndbe.played())
    sndbe.run(["aplay", "-q", "-D", "pvplug", str(wav)])
    exact_with_padding(played_since(sndbe, before), data)
