"""Test signals in any sndif format, as the bytes a ring would carry."""

from __future__ import annotations

import numpy as np

from alsa_pvplug.backend.wavfile import WavInfo, WavWriter
from alsa_pvplug.protocol.sndif import PcmFormat


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
