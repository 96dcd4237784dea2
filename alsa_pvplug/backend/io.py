"""Where the backend's audio goes and comes from: sinks and sources.

A spec string picks one (``pvplug backend --sink wav:DIR --source sine:440``):

- sinks: ``null``, ``wav:DIR`` (one file per OPEN), ``alsa:DEVICE``, ``loop``,
  ``hash:DIR`` (per OPEN a ``<label>-<n>.hash``: frames and the CRC-32 of the
  bytes, for runs too long to keep);
- sources: ``null`` (silence), ``wav:FILE``, ``sine:FREQ``, ``alsa:DEVICE``, ``loop``,
  ``pattern`` (frame i carries ``pattern_sample(i, channel)``: a capture can be
  checked frame by frame however long it runs).

``loop`` (as sink and source together) is a loopback cable per card: what a
guest plays on a card's playback stream is what the card's capture stream
records, as late as it waited in between.

Each OPEN gets its own instance through ``open(info, label)``; an instance
that cannot take the stream's format raises ConfigError, which the backend
answers with -EINVAL.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ConfigError
from ..protocol.sndif import PcmFormat, silence
from .wavfile import WavInfo, WavWriter, read_wav, wav_supports

logger = logging.getLogger(__name__)


class SinkInstance(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class SourceInstance(Protocol):
    def read(self, nbytes: int) -> bytes: ...
    def close(self) -> None: ...


def silence_byte(fmt: PcmFormat) -> int:
    return 0x80 if fmt == PcmFormat.U8 else 0


class NullSink:
    def open(self, info: WavInfo, label: str) -> NullSink:
        return self

    def write(self, data: bytes | memoryview) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class WavDirSink:
    """One WAV file per OPEN: ``DIR/<label>-<n>.wav``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._seq = 0

    def open(self, info: WavInfo, label: str) -> WavWriter:
        if not wav_supports(info.format):
            raise ConfigError(f"wav sink cannot store {info.format.name}", key="format")
        while True:  # never overwrite: a restarted backend keeps the old files
            self._seq += 1
            path = os.path.join(self.directory, f"{label}-{self._seq:04d}.wav")
            if not os.path.exists(path):
                return WavWriter(path, info)


def pattern_sample(frame: int, channel: int) -> int:
    """The ``pattern`` source's 16-bit sample (also in bench/pcm_client.c)."""
    return (frame * 2654435761 + channel * 40503) >> 8 & 0xFFFF


class HashDirSink:
    """Per OPEN ``DIR/<label>-<n>.hash``: "frames crc32" of all it played."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._seq = 0

    def open(self, info: WavInfo, label: str) -> _HashInstance:
        self._seq += 1
        return _HashInstance(os.path.join(self.directory, f"{label}-{self._seq:06d}.hash"), info)


class _HashInstance:
    def __init__(self, path: str, info: WavInfo) -> None:
        self.path, self.info = path, info
        self.crc = 0
        self.nbytes = 0

    def write(self, data: bytes | memoryview) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.nbytes += len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        with open(self.path, "w") as f:
            f.write(f"{self.nbytes // self.info.frame_bytes} {self.crc:08x}\n")


class PatternSource:
    def open(self, info: WavInfo, label: str) -> _PatternInstance:
        if info.format != PcmFormat.S16_LE:
            raise ConfigError("the pattern source makes S16_LE only", key="format")
        return _PatternInstance(info)


class _PatternInstance:
    def __init__(self, info: WavInfo) -> None:
        self.info = info
        self.frame = 0

    def read(self, nbytes: int) -> bytes:
        n = nbytes // self.info.frame_bytes
        i = np.arange(self.frame, self.frame + n, dtype=np.uint64)[:, None]
        ch = np.arange(self.info.channels, dtype=np.uint64)[None, :]
        s = ((i * np.uint64(2654435761) + ch * np.uint64(40503)) >> np.uint64(8)) \
            & np.uint64(0xFFFF)
        self.frame += n
        return s.astype("<u2").tobytes()

    def close(self) -> None:
        pass


class SilenceSource:
    def open(self, info: WavInfo, label: str) -> _ConstSource:
        return _ConstSource(silence_byte(info.format))


class _ConstSource:
    def __init__(self, byte: int) -> None:
        self._byte = byte

    def read(self, nbytes: int) -> bytes:
        return bytes([self._byte]) * nbytes

    def close(self) -> None:
        pass


class WavFileSource:
    """Plays a WAV file once, then silence.  Its format must match the OPEN.
    ``path`` may be a directory: the first ``*.wav`` in it (by name) whose
    format matches the OPEN is played (one backend, many test formats)."""

    def __init__(self, path: str) -> None:
        self.path = path
        files = sorted(Path(path).glob("*.wav")) if Path(path).is_dir() else [Path(path)]
        self.files = [(f, *read_wav(str(f))) for f in files]
        if not self.files:
            raise ConfigError(f"wav source {path}: no .wav file", key="source")

    def open(self, info: WavInfo, label: str) -> _BytesSource:
        for _f, finfo, data in self.files:
            if finfo == info:
                return _BytesSource(data, silence_byte(info.format))
        have = ", ".join(f"{i.format.name}/{i.channels}ch/{i.rate}Hz" for _f, i, _d in self.files)
        raise ConfigError(
            f"wav source {self.path} has {have}; the stream opened "
            f"{info.format.name}/{info.channels}ch/{info.rate}Hz", key="source")


class _BytesSource:
    def __init__(self, data: bytes, fill: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._fill = fill

    def read(self, nbytes: int) -> bytes:
        chunk = bytes(self._data[self._pos:self._pos + nbytes])
        self._pos += len(chunk)
        return chunk + bytes([self._fill]) * (nbytes - len(chunk))

    def close(self) -> None:
        pass


# format -> (numpy dtype, full-scale amplitude, offset)
_SINE_FORMATS: dict[PcmFormat, tuple[str, float, float]] = {
    PcmFormat.U8: ("u1", 127.0, 128.0),
    PcmFormat.S8: ("i1", 127.0, 0.0),
    PcmFormat.S16_LE: ("<i2", 32767.0, 0.0),
    PcmFormat.S24_LE: ("<i4", 8388607.0, 0.0),
    PcmFormat.S32_LE: ("<i4", 2147483647.0, 0.0),
    PcmFormat.FLOAT_LE: ("<f4", 1.0, 0.0),
    PcmFormat.FLOAT64_LE: ("<f8", 1.0, 0.0),
}


class SineSource:
    def __init__(self, freq: float, amplitude: float = 0.5) -> None:
        self.freq = freq
        self.amplitude = amplitude

    def open(self, info: WavInfo, label: str) -> _SineInstance:
        if info.format not in _SINE_FORMATS:
            raise ConfigError(f"sine source cannot produce {info.format.name}", key="format")
        return _SineInstance(self, info)


class _SineInstance:
    def __init__(self, spec: SineSource, info: WavInfo) -> None:
        self.spec, self.info = spec, info
        self._frame = 0

    def read(self, nbytes: int) -> bytes:
        frames = nbytes // self.info.frame_bytes
        dtype, scale, offset = _SINE_FORMATS[self.info.format]
        t = (np.arange(frames) + self._frame) / self.info.rate
        wave = self.spec.amplitude * np.sin(2 * math.pi * self.spec.freq * t)
        samples = np.round(wave * scale + offset) if dtype[-2] != "f" else wave
        block = np.repeat(samples.astype(dtype)[:, None], self.info.channels, axis=1)
        self._frame += frames
        return block.tobytes()

    def close(self) -> None:
        pass


def _alsa_format(fmt: PcmFormat) -> int:
    import alsaaudio

    name = {PcmFormat.FLOAT_LE: "FLOAT_LE", PcmFormat.FLOAT_BE: "FLOAT_BE",
            PcmFormat.FLOAT64_LE: "FLOAT64_LE", PcmFormat.FLOAT64_BE: "FLOAT64_BE"}.get(
        fmt, fmt.name)
    value = getattr(alsaaudio, f"PCM_FORMAT_{name}", None)
    if value is None:
        raise ConfigError(f"pyalsaaudio has no format {fmt.name}", key="format")
    return int(value)


class AlsaDevice:
    """A real ALSA device through pyalsaaudio (>= 0.10), non-blocking: a sink
    for playback streams, a source for capture streams.

    Device-clocked: the stream is paced by the device, not by our clock.  Its
    buffer is sized from the guest's period (``DEVICE_PERIODS`` of them, no
    cushion), the backend hands it data as it makes room, and the position
    it reports (CUR_POS) is the device's: frames handed over minus those
    still in its buffer (playback), frames read from it (capture).  Any ALSA
    device name works: ``alsa:plughw:0,0``, ``alsa:pulse``, ``alsa:pipewire``.
    """

    #: the device's buffer, in guest periods: what it adds to the latency
    DEVICE_PERIODS = 3
    #: the device period is the guest's, but not shorter than this (frames)
    MIN_PERIOD_FRAMES = 64

    def __init__(self, device: str, capture: bool) -> None:
        self.device = device
        self.capture = capture

    def open(self, info: WavInfo, label: str, period_frames: int = 1024) -> _AlsaInstance:
        import alsaaudio

        period = max(self.MIN_PERIOD_FRAMES, period_frames)
        try:
            pcm = alsaaudio.PCM(alsaaudio.PCM_CAPTURE if self.capture else alsaaudio.PCM_PLAYBACK,
                                alsaaudio.PCM_NONBLOCK, device=self.device,
                                channels=info.channels, rate=info.rate,
                                format=_alsa_format(info.format),
                                periodsize=period, periods=self.DEVICE_PERIODS)
        except TypeError as exc:  # Debian bookworm's python3-alsaaudio is 0.8.4
            raise ConfigError(f"alsa:{self.device} needs pyalsaaudio >= 0.10 ({exc})",
                              key="device", value=self.device) from None
        except alsaaudio.ALSAAudioError as exc:
            raise ConfigError(f"ALSA device {self.device!r}: {exc}", key="device",
                              value=self.device) from None
        return _AlsaInstance(pcm, info, self.capture)


class _AlsaInstance:
    device_clocked = True

    def __init__(self, pcm: object, info: WavInfo, capture: bool) -> None:
        self.pcm, self.info, self.capture = pcm, info, capture
        got = pcm.info()  # type: ignore[attr-defined]
        self.buffer_frames = int(got.get("buffer_size", 0)) or 4096
        self.period_frames = int(got.get("period_size", 0)) or 1024
        self.handed = 0     # frames given to (playback) or taken from (capture) the device
        self.xruns = 0
        self._pending = b""  # what a short write left

    def latency_frames(self) -> int:
        """What the device adds between our position and its output."""
        return self.buffer_frames

    def room(self) -> int:
        """Octets the device takes (playback) or has (capture) now."""
        try:
            avail = int(self.pcm.avail())  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - an xrun: the next write/read recovers
            avail = self.buffer_frames
        if avail < 0:  # -EPIPE: the device ran dry (or over)
            self.xruns += 1
            avail = self.buffer_frames
        return min(avail, self.buffer_frames) * self.info.frame_bytes - len(self._pending)

    def position(self) -> int:
        """Octets the device has played (playback: handed minus still queued
        in it) or captured and we read (capture)."""
        if self.capture:
            return self.handed * self.info.frame_bytes
        queued = self.buffer_frames - min(self.buffer_frames, self.room() // self.info.frame_bytes)
        return max(0, self.handed - queued) * self.info.frame_bytes

    def write(self, data: bytes | memoryview) -> None:
        fb = self.info.frame_bytes
        buf = self._pending + bytes(data)
        written = self.pcm.write(buf) if buf else 0  # type: ignore[attr-defined]
        if written < 0:  # an xrun: pyalsaaudio prepared it; try once more
            self.xruns += 1
            written = self.pcm.write(buf)  # type: ignore[attr-defined]
        written = max(0, written)
        self._pending = buf[written * fb:]
        self.handed += written

    def read(self, nbytes: int) -> bytes:
        got = bytearray()
        while len(got) < nbytes:
            n, data = self.pcm.read()  # type: ignore[attr-defined]
            if n < 0:
                self.xruns += 1
                continue
            if n == 0:
                break
            got += data
        self.handed += len(got) // self.info.frame_bytes
        fill = silence_byte(self.info.format)
        return bytes(got[:nbytes]) + bytes([fill]) * max(0, nbytes - len(got))

    def flush(self) -> None:
        """STOP: what the device still holds is dropped."""
        try:
            self.pcm.drop()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - already stopped
            pass
        self._pending = b""

    def close(self) -> None:
        # The guest drained to the device's own position before CLOSE, so
        # there is nothing to play out here (and no waiting in the loop).
        self.pcm.close()  # type: ignore[attr-defined]


class Loopback:
    """One FIFO per card (``dom<F>-vsnd<D>`` of the stream label): the sink's
    writes go in, the source's reads come out (silence while it is empty, or
    when the formats differ).  Bounded: a card nobody records from keeps the
    last ``MAX_SECONDS``."""

    MAX_SECONDS = 2.0

    def __init__(self, capture: bool, cards: dict[str, _LoopFifo]) -> None:
        self.capture = capture
        self.cards = cards

    def open(self, info: WavInfo, label: str) -> _LoopEnd:
        card = "-".join(label.split("-")[:2])
        fifo = self.cards.get(card)
        if fifo is None or (not self.capture and fifo.info != info):
            fifo = self.cards[card] = _LoopFifo(info)
        return _LoopEnd(fifo, info, self.capture)


class _LoopFifo:
    def __init__(self, info: WavInfo) -> None:
        self.info = info
        self.data = bytearray()


class _LoopEnd:
    def __init__(self, fifo: _LoopFifo, info: WavInfo, capture: bool) -> None:
        self.fifo, self.info, self.capture = fifo, info, capture

    def write(self, data: bytes | memoryview) -> None:
        d = self.fifo.data
        d += data
        limit = int(Loopback.MAX_SECONDS * self.info.rate) * self.info.frame_bytes
        if len(d) > limit:
            del d[:len(d) - limit]

    def read(self, nbytes: int) -> bytes:
        if self.fifo.info != self.info:
            return silence(self.info.format, nbytes)
        d = self.fifo.data
        chunk = bytes(d[:nbytes])
        del d[:nbytes]
        return chunk + silence(self.info.format, nbytes - len(chunk))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


_LOOP_CARDS: dict[str, _LoopFifo] = {}


def parse_sink(spec: str) -> NullSink | WavDirSink | AlsaDevice | Loopback | HashDirSink:
    kind, _, arg = spec.partition(":")
    if kind == "null":
        return NullSink()
    if kind == "wav" and arg:
        return WavDirSink(arg)
    if kind == "alsa" and arg:
        return AlsaDevice(arg, capture=False)
    if spec == "loop":
        return Loopback(capture=False, cards=_LOOP_CARDS)
    if kind == "hash" and arg:
        return HashDirSink(arg)
    raise ConfigError(f"bad sink {spec!r}: use null, wav:DIR, alsa:DEVICE or loop", key="sink",
                      value=spec)


def parse_source(spec: str) -> (SilenceSource | WavFileSource | SineSource | AlsaDevice
                                 | Loopback | PatternSource):
    kind, _, arg = spec.partition(":")
    if kind == "null":
        return SilenceSource()
    if kind == "wav" and arg:
        return WavFileSource(arg)
    if kind == "sine":
        try:
            return SineSource(float(arg or 440))
        except ValueError:
            pass
    if kind == "alsa" and arg:
        return AlsaDevice(arg, capture=True)
    if spec == "loop":
        return Loopback(capture=True, cards=_LOOP_CARDS)
    if spec == "pattern":
        return PatternSource()
    raise ConfigError(f"bad source {spec!r}: use null, wav:FILE, sine:FREQ, alsa:DEVICE or loop",
                      key="source", value=spec)
