"""Test signals in any sndif format, as the bytes a ring would carry, and
what the tests measure in the sound that arrived."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from alsa_pvplug.backend.wavfile import WavInfo, WavWriter, read_wav
from alsa_pvplug.protocol.sndif import PcmFormat
from alsa_pvplug.sim.procs import wait_until


def make_signal(fmt: PcmFormat, channels: int, frames: int, seed: int = 1) -> bytes:
    """A noise-plus-ramp signal that uses the format's whole range: any byte
    slip, channel swap or truncation changes it."""
    rng = np.random.default_rng(seed)
    shape = (frames, channels)
    if fmt == PcmFormat.U8:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
    elif fmt == PcmFormat.S16_LE:
        a = rng.integers(-2**15, 2**15, shape, dtype="<i2")
    elif fmt == PcmFormat.S24_LE:  # 24 valid bits in 32, sign-extended as ALSA stores them
        a = rng.integers(-2**23, 2**23, shape, dtype="<i4")
    elif fmt == PcmFormat.S32_LE:
        a = rng.integers(-2**31, 2**31, shape, dtype="<i4")
    elif fmt == PcmFormat.FLOAT_LE:
        a = rng.uniform(-1, 1, shape).astype("<f4")
    else:
        raise ValueError(fmt)
    a[:, 0] = a[:, 0] if channels == 1 else a[:, 0]
    return a.tobytes()


def write_wav(path: str, fmt: PcmFormat, channels: int, rate: int, data: bytes) -> None:
    w = WavWriter(path, WavInfo(fmt, channels, rate))
    w.write(data)
    w.close()


def align(got: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    """(lag, normalized correlation) of ``ref`` (frames x channels) inside
    ``got``, at the lag where the sum of the channels' cross-correlations
    peaks (so a noise channel makes each burst unique)."""
    n = len(got) + len(ref)
    size = 1 << (n - 1).bit_length()
    xc = sum(np.fft.irfft(np.fft.rfft(got[:, c], size) * np.conj(np.fft.rfft(ref[:, c], size)),
                          size) for c in range(ref.shape[1]))
    lag = int(np.argmax(xc[: len(got) - len(ref) + 1]))
    seg = got[lag: lag + len(ref)]
    den = np.sqrt(np.sum(seg * seg) * np.sum(ref * ref))
    return lag, float(np.sum(seg * ref) / den) if den else 0.0


def read_samples(path: Path) -> tuple[WavInfo, np.ndarray]:
    """A WAV's header and its samples, frames x channels (float64)."""
    info, raw = read_wav(str(path))
    dtype = {PcmFormat.S16_LE: "<i2", PcmFormat.S32_LE: "<i4", PcmFormat.FLOAT_LE: "<f4"}[
        info.format]
    return info, np.frombuffer(raw, dtype).reshape(-1, info.channels).astype(np.float64)


def dominant_frequency(x: np.ndarray, rate: int) -> tuple[float, float]:
    """(peak frequency, share of the spectrum's energy within 20 Hz of it)."""
    spec = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x)))) ** 2
    k = int(np.argmax(spec))
    if 0 < k < len(spec) - 1:  # parabolic interpolation on the log spectrum
        a, b, c = np.log(spec[k - 1: k + 2] + 1e-30)
        k_f = k + 0.5 * (a - c) / (a - 2 * b + c)
    else:
        k_f = float(k)
    bin_hz = rate / len(x)
    near = int(20 / bin_hz)
    share = spec[max(0, k - near): k + near + 1].sum() / spec.sum()
    return k_f * bin_hz, float(share)


def best_played(played: Callable[[], list[Path]], ref: np.ndarray, rate: int,
                timeout: float = 10) -> tuple[int, float, str]:
    """Once one of the WAVs ``played()`` lists holds as many bytes as ``ref``
    (frames x channels), or all of them do between them and have stopped
    growing, (lag, normalized correlation, WAV) of the one of ``ref``'s channel
    count and ``rate`` where ``ref`` aligns best; (-1, 0.0, "") when none holds
    all of ``ref`` (an xrun recovery splits a take across WAVs:
    ``played_pieces`` judges those)."""
    sizes: list[int] = []

    def enough() -> bool:
        now = [len(read_wav(str(p))[1]) for p in played()]
        settled = now == sizes
        sizes[:] = now
        return max(now, default=0) >= ref.nbytes or (settled and sum(now) >= ref.nbytes)
    # a WAV that grew within the last interval is still being played into
    wait_until(enough, timeout, "the backend's WAVs with the played signal", interval=0.3)
    best: tuple[int, float, str] = (-1, 0.0, "")
    for p in played():
        info, got = read_samples(p)
        if (info.channels, info.rate) != (ref.shape[1], rate) or len(got) < len(ref):
            continue
        lag, corr = align(got, ref.astype(np.float64))
        if corr > best[1]:
            best = (lag, corr, f"{p.name} ({info.format.name})")
    return best


def played_pieces(played: Callable[[], list[Path]], ref: np.ndarray, rate: int,
                  pieces: int = 4) -> list[float]:
    """For each of ``pieces`` equal parts of ``ref``, its best normalized
    correlation in any of the backend's WAVs: a client's xrun under load
    drops or splices a part (and a recovery opens a new WAV), but every
    other part must arrive intact."""
    n = len(ref) // pieces
    wavs = [g for p in played() for info, g in [read_samples(p)]
            if (info.channels, info.rate) == (ref.shape[1], rate) and len(g) >= n]
    out = []
    for i in range(pieces):
        part = ref[i * n:(i + 1) * n].astype(np.float64)
        out.append(max((align(g, part)[1] for g in wavs), default=0.0))
    return out


def assert_tone(x: np.ndarray, rate: int, hz: float, min_share: float, label: str,
                context: object = "") -> None:
    """Every channel of ``x`` (frames x channels, int16 scale) is the tone
    ``hz``: its peak within 2 Hz, holding more than ``min_share`` of the
    energy, rms above 1000.  Prints what it found after ``label``."""
    for ch in range(x.shape[1]):
        freq, share = dominant_frequency(x[:, ch], rate)
        rms = float(np.sqrt(np.mean(x[:, ch] ** 2)))
        print(f"{label} ch{ch}: {freq:.1f} Hz, {share:.4f} of the energy, rms {rms:.0f}")
        assert abs(freq - hz) < 2 and share > min_share and rms > 1000, \
            (ch, freq, share, rms, context)
