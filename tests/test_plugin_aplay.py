"""alsa-utils through the real plugin: aplay, arecord, speaker-test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alsa_pvplug.backend.wavfile import read_wav
from alsa_pvplug.protocol.sndif import PcmFormat

from audio import make_signal, write_wav
from conftest import PvEnv

ALSA_NAMES = {PcmFormat.S16_LE: "S16_LE", PcmFormat.S32_LE: "S32_LE",
              PcmFormat.FLOAT_LE: "FLOAT_LE"}


def assert_played(got: bytes, data: bytes, fmt: PcmFormat) -> None:
    """Bit-exact, allowing the silence aplay pads its last period with."""
    first_diff = next((i for i, (a, b) in enumerate(zip(got, data)) if a != b), None)
    assert first_diff is None and len(got) >= len(data), \
        f"{len(got)} vs {len(data)} bytes; first difference at {first_diff}"
    assert not any(got[len(data):]), "the padding after the data is not silence"


def _play_and_check(env: PvEnv, fmt: PcmFormat, channels: int, rate: int, *args: str,
                    frames: int = 4000) -> str:
    data = make_signal(fmt, channels, frames, seed=channels * rate)
    src = env.root / f"in-{fmt.name}-{channels}-{rate}.wav"
    write_wav(str(src), fmt, channels, rate, data)
    before = set(env.played())
    c = env.run(["aplay", "-D", "pvplug", *args, str(src)])
    new = sorted(set(env.played()) - before)
    assert len(new) == 1, (new, c.output)
    info, got = read_wav(str(new[0]))
    assert (info.format, info.channels, info.rate) == (fmt, channels, rate)
    assert_played(got, data, fmt)
    return c.output


def test_aplay_s16_stereo_bit_exact(pvenv: PvEnv) -> None:
    _play_and_check(pvenv, PcmFormat.S16_LE, 2, 48000)
