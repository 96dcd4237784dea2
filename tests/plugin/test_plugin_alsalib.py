"""alsa-lib used directly against the real plugin: rewind, drain, pause, xrun,
MMAP access and status, each checked bit-exactly against the backend's WAV.

The client is ``tests/plugin/c/pcm_behaviour.c``, compiled here with gcc; it plays
S16_LE stereo 48 kHz from a raw file and prints what it measured."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from alsa_pvplug.backend.wavfile import read_wav
from alsa_pvplug.protocol.sndif import PcmFormat
from tests.support.audio import make_signal
from tests.support.env import PvEnv

RATE = 48000
FRAME = 4  # S16_LE stereo
SOURCE = Path(__file__).resolve().parent / "c" / "pcm_behaviour.c"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture(scope="module")
def behaviour_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cbin") / "pcm_behaviour"
    r = subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-o", str(out), str(SOURCE),
                        "-lasound"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"gcc failed:\n{r.stdout}{r.stderr}"
    return out


def run_cmd(env: PvEnv, binary: Path, cmd: str, frames: int, seed: int,
            timeout: float = 20) -> tuple[dict[str, str], bytes, bytes]:
    """Run one subcommand on ``frames`` frames of test signal; returns its
    printed values, the signal, and what the backend played (the WAVs of
    its OPENs, in order: a prepare after the stream ran opens it again)."""
    data = make_signal(PcmFormat.S16_LE, 2, frames, seed=seed)
    src = env.root / f"{cmd}.raw"
    src.write_bytes(data)
    before = set(env.played())
    c = env.run([str(binary), cmd, "pvplug", str(src), str(env.out)], timeout=timeout)
    values = dict(m.groups() for m in re.finditer(r"^([a-z_]+)=(\S*)$", c.output, re.M))
    new = sorted(set(env.played()) - before)
    assert new, c.output
    got = b""
    for wav in new:
        info, part = read_wav(str(wav))
        assert (info.format, info.channels, info.rate) == (PcmFormat.S16_LE, 2, RATE)
        got += part
    return values, data, got


def first_diff(a: bytes, b: bytes) -> int | None:
    """Frame index of the first difference (or of the length mismatch)."""
    n = min(len(a), len(b))
    x = np.frombuffer(a[:n], np.uint8) != np.frombuffer(b[:n], np.uint8)
    if x.any():
        return int(np.argmax(x)) // FRAME
    return None if len(a) == len(b) else n // FRAME


def assert_exact(got: bytes, want: bytes, values: dict[str, str]) -> None:
    d = first_diff(got, want)
    assert d is None, (f"played {len(got) // FRAME} frames, expected {len(want) // FRAME}; "
                       f"first difference at frame {d}; client said {values}")


def test_rewind_replaces_unplayed_frames(pvenv: PvEnv, behaviour_bin: Path) -> None:
    n, m = RATE // 2, RATE // 4
    v, data, got = run_cmd(pvenv, behaviour_bin, "rewind", n + m, seed=11)
    assert (int(v["n"]), int(v["m"])) == (n, m)
    # Just after start nearly all of the 0.5 s is still ahead of the pointer.
    assert m < int(v["rewindable"]) <= n, v
    assert int(v["rewound"]) == m, v
    assert 0 <= int(v["rewindable_after"]) <= int(v["rewindable"]) - m, v
    want = data[:(n - m) * FRAME] + data[n * FRAME:(n + m) * FRAME]
    assert_exact(got, want, v)


def test_drain_returns_after_everything_played(pvenv: PvEnv, behaviour_bin: Path) -> None:
    frames = int(RATE * 0.75)  # more than the 0.5 s buffer: writes block first
    v, data, got = run_cmd(pvenv, behaviour_bin, "drain", frames, seed=12)
    assert_exact(got, data, v)
    queued = int(v["delay_before_drain"])
    assert 0 < queued <= int(v["buffer"]), v
    # Drain waits for the queued frames to be played, not much longer.
    assert queued / RATE - 0.03 <= float(v["drain_seconds"]) <= queued / RATE + 0.5, v
    # Afterwards hw == appl: the whole buffer is free, nothing is delayed.
    assert v["state_after"] == "SETUP", v
    assert int(v["avail_after"]) == int(v["buffer"]), v
    assert int(v["delay_after"]) == 0, v
    # The backend had played (and flushed) all of it when drain returned.
    wav_path = pvenv.played()[-1]
    assert int(v["wav_bytes_after_drain"]) == wav_path.stat().st_size, v


def test_pause_holds_position_and_loses_nothing(pvenv: PvEnv, behaviour_bin: Path) -> None:
    frames = RATE  # 1 s: half before the pause, half after
    v, data, got = run_cmd(pvenv, behaviour_bin, "pause", frames, seed=13)
    assert_exact(got, data, v)
    assert v["can_pause"] == "1", v
    assert v["state_paused"] == "PAUSED" and int(v["not_paused"]) == 0, v
    assert int(v["paused_samples"]) >= 5, v
    # The position does not move while paused.
    assert v["paused_avail_min"] == v["paused_avail_max"], v
    assert v["paused_delay_min"] == v["paused_delay_max"], v
    # Resuming does not jump over what the pause held back.
    assert v["state_resumed"] == "RUNNING", v
    assert abs(int(v["avail_resumed"]) - int(v["paused_avail_max"])) <= int(v["period"]), v
    # The pause really stopped playback: the run took the audio plus the pause.
    assert float(v["total_seconds"]) >= frames / RATE + float(v["pause_seconds"]) - 0.1, v


def test_underrun_is_an_xrun_and_prepare_recovers(pvenv: PvEnv, behaviour_bin: Path) -> None:
    frames = int(RATE * 0.4)  # A = 0.2 s (one buffer), then B = 0.2 s after recovery
    v, data, got = run_cmd(pvenv, behaviour_bin, "xrun", frames, seed=14)
    assert int(v["xrun_avail_update"]) == -32, v  # -EPIPE
    assert v["xrun_state"] == "XRUN", v
    # Not before A could have been played, and not long after.
    a = int(v["a"])
    assert a / RATE - 0.05 <= float(v["xrun_after_seconds"]) <= a / RATE + 0.5, v
    assert int(v["writei_in_xrun"]) == -32, v
    assert v["state_after_prepare"] == "PREPARED", v
    assert_exact(got, data, v)  # A, then B: nothing lost, nothing doubled


def test_mmap_access_bit_exact(pvenv: PvEnv, behaviour_bin: Path) -> None:
    frames = int(RATE * 0.5)
    v, data, got = run_cmd(pvenv, behaviour_bin, "mmap", frames, seed=15)
    assert int(v["frames"]) == frames, v
    assert int(v["waits"]) > 0, v  # it did wait for room: the buffer is 0.2 s
    assert_exact(got, data, v)


def test_status_delay_and_avail_in_steady_play(pvenv: PvEnv, behaviour_bin: Path) -> None:
    frames = RATE  # 1 s through a 0.2 s buffer
    v, data, got = run_cmd(pvenv, behaviour_bin, "status", frames, seed=16)
    assert_exact(got, data, v)
    buffer, period = int(v["buffer"]), int(v["period"])
    assert int(v["samples"]) >= 10 and int(v["not_running"]) == 0, v
    assert int(v["delay_min"]) >= 0 and int(v["pcm_delay_min"]) >= 0, v
    assert int(v["delay_max"]) <= buffer, v
    # avail + delay = buffer, up to the interpolation between pointer and delay.
    assert buffer - period <= int(v["sum_min"]) <= int(v["sum_max"]) <= buffer + period, v
