"""Where the backend's audio goes and comes from: sinks and sources.

A spec string picks one (``pvplug backend --sink wav:DIR --source sine:440``):

- sinks: ``null``, ``wav:DIR`` (one file per OPEN), ``alsa:DEVICE``, ``loop``;
- sources: ``null`` (silence), ``wav:FILE``, ``sine:FREQ``, ``alsa:DEVICE``, ``loop``.

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
    def open(self, info: WavInfo, label: str) -> "NullSink":
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


class SilenceSource:
    def open(self, info: WavInfo, label: str) -> "_ConstSource":
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

    def open(self, info: WavInfo, label: str) -> "_BytesSource":
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

    def open(self, info: WavInfo, label: str) -> "_SineInstance":
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
    """A real ALSA device through pyalsaaudio (>= 0.10), non-blocking (the
    loop paces): a sink for playback streams, a source for capture streams."""

    #: the device buffer: we hand over a whole period at a time, so it must
    #: hold more than the longest period a guest may choose
    PERIOD_SECONDS = 0.05
    PERIODS = 32

    def __init__(self, device: str, capture: bool) -> None:
        self.device = device
        self.capture = capture

    def open(self, info: WavInfo, label: str) -> "_AlsaInstance":
        import alsaaudio

        try:
            pcm = alsaaudio.PCM(alsaaudio.PCM_CAPTURE if self.capture else alsaaudio.PCM_PLAYBACK,
                                alsaaudio.PCM_NONBLOCK, device=self.device,
                                channels=info.channels, rate=info.rate,
                                format=_alsa_format(info.format),
                                periodsize=max(64, int(info.rate * self.PERIOD_SECONDS)),
                                periods=self.PERIODS)
        except TypeError as exc:  # Debian bookworm's python3-alsaaudio is 0.8.4
            raise ConfigError(f"alsa:{self.device} needs pyalsaaudio >= 0.10 ({exc})",
                              key="device", value=self.device) from None
        except alsaaudio.ALSAAudioError as exc:
            raise ConfigError(f"ALSA device {self.device!r}: {exc}", key="device",
                              value=self.device) from None
        return _AlsaInstance(pcm, info, self.capture)


class _AlsaInstance:
    MAX_QUEUED_SECONDS = 2.0  # beyond this the device is slower than our clock: drop
    # We hand over a period at a time, when the clock says it was played; the
    # device would drain each one just as the next arrives.  A cushion of
    # silence in front keeps it fed through that and through our jitter.
    CUSHION_SECONDS = 0.3

    def __init__(self, pcm: object, info: WavInfo, capture: bool) -> None:
        self.pcm, self.info, self.capture = pcm, info, capture
        self.dropped = 0
        self._queued = bytearray()  # what the device did not take yet
        self._started = False

    def _push(self) -> None:
        fb = self.info.frame_bytes
        while len(self._queued) >= fb:
            n = len(self._queued) // fb * fb
            written = self.pcm.write(bytes(self._queued[:n]))  # type: ignore[attr-defined]
            if written <= 0:
                break  # full (or an xrun, which the next write recovers)
            del self._queued[:written * fb]

    def write(self, data: bytes | memoryview) -> None:
        if not self._started:
            self._started = True
            frames = int(self.CUSHION_SECONDS * self.info.rate)
            self._queued += silence(self.info.format, frames * self.info.frame_bytes)
        self._queued += data
        self._push()
        limit = int(self.MAX_QUEUED_SECONDS * self.info.rate) * self.info.frame_bytes
        if len(self._queued) > limit:
            self.dropped += (len(self._queued) - limit) // self.info.frame_bytes
            del self._queued[:len(self._queued) - limit]

    def read(self, nbytes: int) -> bytes:
        got = bytearray()
        while len(got) < nbytes:
            n, data = self.pcm.read()  # type: ignore[attr-defined]
            if n <= 0:
                break
            got += data
        fill = silence_byte(self.info.format)
        return bytes(got[:nbytes]) + bytes([fill]) * max(0, nbytes - len(got))

    def flush(self) -> None:
        self._queued.clear()  # STOP: what was not played is dropped
        self._started = False

    def close(self) -> None:
        # Hand over what is queued (bounded by its duration), then let the
        # device play out its buffer.
        import time

        rate_bytes = self.info.rate * self.info.frame_bytes
        deadline = time.monotonic() + len(self._queued) / rate_bytes + 1.0
        while self._queued and time.monotonic() < deadline:
            self._push()
            if self._queued:
                time.sleep(AlsaDevice.PERIOD_SECONDS / 2)
        if not self.capture:
            # Nonblocking, drain() would not wait: let the device buffer play out.
            buffer_bytes = AlsaDevice.PERIODS * int(self.info.rate * AlsaDevice.PERIOD_SECONDS) \
                * self.info.frame_bytes
            deadline = time.monotonic() + buffer_bytes / rate_bytes + 0.5
            while time.monotonic() < deadline:
                try:
                    free = self.pcm.avail() * self.info.frame_bytes  # type: ignore[attr-defined]
                except Exception:  # noqa: BLE001 - xrun: nothing left to play
                    break
                if free >= buffer_bytes or free < 0:
                    break
                time.sleep(AlsaDevice.PERIOD_SECONDS)
        self.pcm.close()  # type: ignore[attr-defined]


class Loopback:
    """One FIFO per card (``dom<F>-vsnd<D>`` of the stream label): the sink's
    writes go in, the source's reads come out (silence while it is empty, or
    when the formats differ).  Bounded: a card nobody records from keeps the
    last ``MAX_SECONDS``."""

    MAX_SECONDS = 2.0

    def __init__(self, capture: bool, cards: dict[str, "_LoopFifo"]) -> None:
        self.capture = capture
        self.cards = cards

    def open(self, info: WavInfo, label: str) -> "_LoopEnd":
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


def parse_sink(spec: str) -> NullSink | WavDirSink | AlsaDevice | Loopback:
    kind, _, arg = spec.partition(":")
    if kind == "null":
        return NullSink()
    if kind == "wav" and arg:
        return WavDirSink(arg)
    if kind == "alsa" and arg:
        return AlsaDevice(arg, capture=False)
    if spec == "loop":
        return Loopback(capture=False, cards=_LOOP_CARDS)
    raise ConfigError(f"bad sink {spec!r}: use null, wav:DIR, alsa:DEVICE or loop", key="sink",
                      value=spec)


def parse_source(spec: str) -> SilenceSource | WavFileSource | SineSource | AlsaDevice | Loopback:
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
    raise ConfigError(f"bad source {spec!r}: use null, wav:FILE, sine:FREQ, alsa:DEVICE or loop",
                      key="source", value=spec)
