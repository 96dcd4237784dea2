"""Minimal RIFF/WAVE reading and writing that keeps samples byte-exact.

The stdlib ``wave`` module knows only integer PCM; the backend also needs
IEEE float, 24-in-32-bit and more than two channels, which need
WAVE_FORMAT_EXTENSIBLE.  Samples are stored exactly as they came off the
ring: a WAV written here and read back gives the same bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import ConfigError
from ..protocol.sndif import PcmFormat, sample_bytes

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT: the format tag, then a fixed GUID tail.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"

# format -> (wave tag, valid bits).  Only layouts WAV can hold losslessly.
_WAV_FORMATS: dict[PcmFormat, tuple[int, int]] = {
    PcmFormat.U8: (WAVE_FORMAT_PCM, 8),
    PcmFormat.S16_LE: (WAVE_FORMAT_PCM, 16),
    PcmFormat.S24_LE: (WAVE_FORMAT_PCM, 24),  # 24 valid bits in a 32-bit container
    PcmFormat.S32_LE: (WAVE_FORMAT_PCM, 32),
    PcmFormat.FLOAT_LE: (WAVE_FORMAT_IEEE_FLOAT, 32),
    PcmFormat.FLOAT64_LE: (WAVE_FORMAT_IEEE_FLOAT, 64),
}


def wav_supports(fmt: PcmFormat) -> bool:
    return fmt in _WAV_FORMATS


@dataclass(frozen=True)
class WavInfo:
    format: PcmFormat
    channels: int
    rate: int

    @property
    def frame_bytes(self) -> int:
        return sample_bytes(self.format) * self.channels


def _fmt_chunk(info: WavInfo) -> bytes:
    tag, valid = _WAV_FORMATS[info.format]
    container = sample_bytes(info.format) * 8
    block = info.frame_bytes
    extensible = info.channels > 2 or valid != container
    head = struct.pack("<HHIIHH", WAVE_FORMAT_EXTENSIBLE if extensible else tag,
                       info.channels, info.rate, info.rate * block, block, container)
    if not extensible:
        return head
    mask = (1 << info.channels) - 1 if info.channels <= 18 else 0
    return head + struct.pack("<HHI", 22, valid, mask) + struct.pack("<H", tag) + _GUID_TAIL


class WavWriter:
    """Append-only WAV file whose header sizes are kept current on ``flush``."""

    def __init__(self, path: str, info: WavInfo) -> None:
        if info.format not in _WAV_FORMATS:
            raise ConfigError(f"WAV cannot hold {info.format.name} losslessly", key="format")
        self.path = path
        self.info = info
        self._f: BinaryIO = open(path, "wb")
        fmt = _fmt_chunk(info)
        self._f.write(b"RIFF" + struct.pack("<I", 0) + b"WAVE")
        self._f.write(b"fmt " + struct.pack("<I", len(fmt)) + fmt)
        self._f.write(b"data" + struct.pack("<I", 0))
        self._data_size_at = self._f.tell() - 4
        self.data_bytes = 0

    def write(self, data: bytes | memoryview) -> None:
        self._f.write(data)
        self.data_bytes += len(data)

    def flush(self) -> None:
        end = self._f.tell()
        self._f.seek(4)
        self._f.write(struct.pack("<I", end - 8))
        self._f.seek(self._data_size_at)
        self._f.write(struct.pack("<I", self.data_bytes))
        self._f.seek(end)
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self.flush()
            self._f.close()


def read_wav(path: str) -> tuple[WavInfo, bytes]:
    """(info, raw sample bytes) of a WAV this module can represent."""
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise ConfigError(f"{path}: not a RIFF/WAVE file", key="path", value=path)
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(blob):
        cid, size = blob[pos:pos + 4], struct.unpack_from("<I", blob, pos + 4)[0]
        body = blob[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data":
            data = body
        pos += 8 + size + (size & 1)
    if fmt is None or data is None or len(fmt) < 16:
        raise ConfigError(f"{path}: no fmt or data chunk", key="path", value=path)
    tag, channels, rate, _brate, _block, bits = struct.unpack_from("<HHIIHH", fmt)
    valid = bits
    if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        valid = struct.unpack_from("<H", fmt, 18)[0]
        tag = struct.unpack_from("<H", fmt, 24)[0]
    for pf, (t, v) in _WAV_FORMATS.items():
        if t == tag and v == valid and sample_bytes(pf) * 8 == bits:
            info = WavInfo(pf, channels, rate)
            return info, data[: len(data) - len(data) % info.frame_bytes]
    raise ConfigError(f"{path}: unsupported WAV encoding (tag {tag:#x}, {bits} bits, "
                      f"{valid} valid)", key="path", value=path)
