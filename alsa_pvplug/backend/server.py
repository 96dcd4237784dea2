"""The reference backend (dom0 side): serves vsnd devices to guests.

Rule 1: never trust the guest.  Every request is validated (operation order,
offsets inside the buffer, format/rate/channels inside the card config,
directory chains, geometry) and answered with an error status; a broken ring
stops that stream only.  Guest memory is touched only through mappings of
the grants it gave, at offsets checked against the mapping size.
Rule 2: the shared buffer is the ring, as on hardware.  WRITE(offset, len)
declares [offset, offset+len) valid up to that point; the clock-paced
consumer copies from the ring when it plays, so the guest may rewrite
anything not yet played (a WRITE behind the end truncates to it).  Capture
writes into the ring as it records; READ only confirms that the range holds
recorded data.
Rule 3: the audio loop (one selector loop over the event channels and
every stream's next pacing deadline) never waits on another process.  The
xenbus work, which does (xenstore, mapping the rings, binding the channels),
runs in a thread of its own; the two share one lock, which the xenbus thread
holds only to hand a device's streams to the loop or take them back.  A
guest whose handshake is slow, or a busy xenstored, costs the others nothing.

Positions: CUR_POS carries octets played (captured) since OPEN or the last
STOP, sent at every ``period_sz`` boundary (or every ``pos_frames`` frames),
and once more when playback runs dry, so a drain can see its last frame.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import queue
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, PvSndError, RemoteProtocolError, XenError
from ..protocol import sndif
from ..protocol.config import CardConfig, StreamConfig, is_card_branch, parse_card_config
from ..protocol.ring import BackRing, EventRingBack, wrap_pieces
from ..protocol.sndif import (
    CloseReq,
    CurPosEvt,
    HwParamQuery,
    HwParams,
    Op,
    OpenReq,
    PcmFormat,
    Resp,
    RwReq,
    Trigger,
    TriggerReq,
    UnknownReq,
)
from ..protocol.xenbus import (
    BackendAction,
    XenbusState,
    backend_on_frontend,
    backend_startup,
    parse_state,
)
from ..protocol.xsnum import DOMID_MAX, U32_MAX, is_decimal, parse_uint
from ..transport.base import EventChannel, GrantMapper, SharedPages, Transport
from .io import AlsaDevice
from .limits import StreamLimits, TokenBucket
from .wavfile import WavInfo

logger = logging.getLogger(__name__)

# Refuse buffers beyond this even if the config allows more: bounds the grant
# count and the directory chain a guest can make us walk.
MAX_BUFFER_BYTES = 16 * 1024 * 1024
# How far ahead of playback a guest may write: one buffer, plus one more for a
# guest whose interpolated pointer runs ahead of our period-granular playing.
QUEUE_BUFFERS = 2
# How long the end of run() waits for the xenbus thread to finish a
# handshake step (each xenstore call is bounded by its transport's timeout).
XENBUS_JOIN_SECONDS = 10.0


class RequestFailed(Exception):
    """Answer the current request with ``status`` (a negative errno)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


@dataclass
class BackendOptions:
    paced: bool = True            # False: consume/produce as fast as possible
    pos_frames: int | None = None  # finer CUR_POS cadence than one period
    limits: StreamLimits = field(default_factory=StreamLimits)
    #: "sndbe": behave as xen-troops snd_be does (SNDBE_COMPAT), so the suite
    #: covers a backend that is not ours
    compat: str | None = None
    clock_ppm: float = 0.0  # the paced clock runs this many ppm off CLOCK_MONOTONIC


#: What ``--compat sndbe`` changes (docs/protocol.md section 7.2):
#: READ fills the buffer while it is handled; positions count from OPEN, not
#: from START; CUR_POS comes from a timer of whole milliseconds (late, drifting
#: against period boundaries) and its report at the end of the data runs past
#: it; HW_PARAM_QUERY never narrows the rate maximum; OPEN refuses what a real
#: host device could not do although xenstore allows it.
SNDBE_REFUSED_FORMATS = (PcmFormat.FLOAT_LE,)
SNDBE_REFUSED_RATES = (8000,)
SNDBE_REFUSED_CHANNELS = (1,)
COMPAT_MODES = ("sndbe",)


@dataclass
class _Refused:
    """A request answered with ``status`` without being handled (over a limit)."""

    req: Any
    status: int
    why: str


class BackendStream:
    """One stream of a connected device."""

    def __init__(self, device: VsndDevice, cfg: StreamConfig) -> None:
        self.dev = device
        self.cfg = cfg
        self.label = f"dom{device.fe_domid}-vsnd{device.devid}-{cfg.pcm_index}-{cfg.stream_index}"
        self.ring: BackRing | None = None
        self.evt: EventRingBack | None = None
        self.ring_page: SharedPages | None = None
        self.evt_page: SharedPages | None = None
        self.req_port = -1
        self.evt_port = -1
        self.broken: str | None = None
        self.pending: deque[Any] = deque()  # requests not yet answered, in order
        self.evt_id = 0  # per stream, never reset by OPEN (as snd_be)
        limits = device.backend.options.limits
        now = time.monotonic()
        self.requests = limits.request_bucket(now)
        self.refusals = limits.refusal_bucket(now)
        #: requests wait in the ring until then (over both buckets), or None
        self.throttled_until: float | None = None
        self._refused_logged = 0.0
        self.sndbe = device.backend.options.compat == "sndbe"
        self._reset_open_state()

    def _reset_open_state(self) -> None:
        self.base = 0
        self.opened = False
        self.running = False
        self.paused = False
        self.buffer: SharedPages | None = None
        self.dir_maps: list[SharedPages] = []
        self.info: WavInfo | None = None
        self.buffer_sz = 0
        self.period_sz = 0
        self.sink: Any = None
        self.source: Any = None
        self.device: Any = None
        self._reset_positions()

    def _reset_positions(self) -> None:
        self.written = 0   # playback: valid data end (octets since origin)
        self.done = 0      # octets played (captured) since origin
        # Playback: a private copy of [done, written), taken at WRITE time, so
        # that a guest writing ahead of an interpolated pointer never
        # overwrites what we have not played; a rewrite truncates it.
        self.queued = bytearray()
        self.read_pos = 0  # capture: octets confirmed by READ
        self.anchor_t = 0.0
        self.anchor_frames = 0
        self.last_evt_pos: int | None = None
        self.fifo = bytearray()  # sndbe capture: recorded, not yet READ (from fifo_pos)
        self.fifo_pos = 0
        self.next_tick = math.inf  # sndbe: the next CUR_POS timer tick
        self.quiet = False  # the guest was told not to notify (_polls_ring)
        self.last_evt_t = -math.inf
        self.evt_owed = False  # a CUR_POS held back by the event rate
        self.dry = False
        self.dry_count = 0  # times playback ran out since the origin (the first is logged)

    # -- connection ----------------------------------------------------------
    def connect(self, mapper: GrantMapper, evtchn: EventChannel, keys: dict[str, int]) -> None:
        fe = self.dev.fe_domid
        self.ring_page = mapper.map_domain_grant_refs(fe, [keys[sndif.FIELD_RING_REF]])
        self.evt_page = mapper.map_domain_grant_refs(fe, [keys[sndif.FIELD_EVT_RING_REF]])
        ops = self.dev.backend.transport.index_ops
        self.ring = BackRing(self.ring_page.buf, ops(self.ring_page.buf))
        self.evt = EventRingBack(self.evt_page.buf, ops(self.evt_page.buf))
        self.req_port = evtchn.bind_interdomain(fe, keys[sndif.FIELD_EVT_CHNL])
        self.evt_port = evtchn.bind_interdomain(fe, keys[sndif.FIELD_EVT_EVT_CHNL])

    def release(self, mapper: GrantMapper, evtchn: EventChannel) -> None:
        self._close_stream()
        for pages in (self.ring_page, self.evt_page):
            if pages is not None:
                _quietly(mapper.unmap, pages)
        for port in (self.req_port, self.evt_port):
            if port >= 0:
                _quietly(evtchn.unbind, port)
        self.ring_page = self.evt_page = None
        self.ring = self.evt = None
        self.req_port = self.evt_port = -1

    # -- requests ------------------------------------------------------------
    def on_request_notify(self, now: float) -> None:
        if self.ring is None or self.broken:
            return
        served = self.requests.available(now)
        refused = self.refusals.available(now)
        polling = self._polls_ring()
        try:
            slots = self.ring.take_requests(limit=served + refused, rearm=not polling)
            self.quiet = polling  # no notifications: the next step looks
        except RemoteProtocolError as exc:
            # The ring itself is garbage: we cannot even answer.  Stop serving
            # this stream; the device and its other streams carry on.
            self.broken = str(exc)
            logger.error("%s: %s; stream no longer served", self.label, exc)
            return
        for i, slot in enumerate(slots):
            req = sndif.decode_request(slot)
            if i < served:
                self.requests.take(now)
                self.pending.append(req)
            else:
                self.refusals.take(now)
                self.pending.append(_Refused(req, -errno.EBUSY, self._over_rate(now)))
        # More waiting than both buckets allow: leave them in the ring.
        self.throttled_until = self.requests.when(now) if self.ring.has_unconsumed() else None
        self.process_pending(now)
        if polling and not self._polls_ring() and self.ring is not None \
                and not self.broken and self.throttled_until is None:
            # Handling them stopped our polling (PAUSE, STOP, CLOSE, dry):
            # notifications wanted again, and one more look for what came.
            self.on_request_notify(now)

    def _polls_ring(self) -> bool:
        """A paced playback stream with two cadences queued wakes for its
        next one anyway (with one still queued): it looks at its ring then
        and asks the guest for no notifications (ring.h req_event left
        behind), which spares both sides a wake-up per WRITE.  Anything else
        (capture, dry, stopped, a guest that keeps less queued) wants them:
        a WRITE left in the ring until the next cadence is data the guest's
        pointer may not pass and the queue lacks (PipeWire, a quantum or
        two queued in a 1024-frame period: 1272 underruns in 20 s, fed at
        0.95 x real time)."""
        return self.running and not self.cfg.is_capture and not self.dry \
            and self.written - self.done >= 2 * self._cadence() \
            and self.dev.backend.options.paced

    def _over_rate(self, now: float) -> str:
        why = (f"more than {self.dev.backend.options.limits.max_request_rate:g} requests "
               "a second (--max-request-rate)")
        if now - self._refused_logged >= 1.0:  # the guest may be flooding: once a second
            self._refused_logged = now
            logger.warning("%s: %s: answering -EBUSY", self.label, why)
        return why

    def process_pending(self, now: float) -> None:
        if self._processing:  # a handler's step() may land here: the loop goes on
            return
        self._processing = True
        try:
            self._process_pending(now)
        finally:
            self._processing = False

    _processing = False

    def _process_pending(self, now: float) -> None:
        while self.pending and not self.broken:
            req = self.pending[0]
            try:
                if isinstance(req, _Refused):
                    req, status, hw = req.req, req.status, None
                else:
                    status, hw = self._handle(req, now)
            except _NotYet:
                return
            except RequestFailed as exc:
                logger.info("%s: request id %d refused: %s", self.label, req.id, exc)
                status, hw = exc.status, None
            self.pending.popleft()
            op = req.operation if isinstance(req, (RwReq, UnknownReq)) else _OP_OF[type(req)]
            self._respond(Resp(req.id, int(op), status, hw))

    def _respond(self, resp: Resp) -> None:
        assert self.ring is not None
        try:
            self.ring.put_response(sndif.encode_response(resp))
        except PvSndError as exc:
            self.broken = str(exc)
            logger.error("%s: %s", self.label, exc)
            return
        if self.ring.push_responses():
            self.dev.backend.notify(self.req_port)

    def _handle(self, req: Any, now: float) -> tuple[int, HwParams | None]:
        if isinstance(req, OpenReq):
            self._open(req)
        elif isinstance(req, CloseReq):
            self.step(now)  # what is due was played: a CLOSE drops only the rest
            self._close_stream()
        elif isinstance(req, RwReq):
            if req.operation == Op.WRITE:
                self._write(req, now)
            elif req.operation == Op.READ:
                self._read(req, now)
            else:
                raise RequestFailed(-errno.ENOTSUP, f"{Op(req.operation).name} not supported")
        elif isinstance(req, TriggerReq):
            self._trigger(req, now)
        elif isinstance(req, HwParamQuery):
            return 0, self._query(req.params)
        else:
            raise RequestFailed(-errno.ENOSYS, f"unknown operation {req.operation}")
        return 0, None

    def _need_open(self) -> None:
        if not self.opened:
            raise RequestFailed(-errno.EBADFD, "stream is not open")

    def _open(self, req: OpenReq) -> None:
        if self.opened:
            raise RequestFailed(-errno.EBUSY, "OPEN while open (CLOSE first)")
        cfg = self.cfg
        try:
            fmt = PcmFormat(req.pcm_format)
        except ValueError:
            raise RequestFailed(-errno.EINVAL, f"unknown format {req.pcm_format}") from None
        if fmt not in cfg.formats:
            raise RequestFailed(-errno.EINVAL, f"format {fmt.name} not in {cfg.formats}")
        if self.sndbe and (fmt in SNDBE_REFUSED_FORMATS or req.pcm_rate in SNDBE_REFUSED_RATES
                           or req.pcm_channels in SNDBE_REFUSED_CHANNELS):
            raise RequestFailed(-errno.EINVAL, f"the host device cannot do {fmt.name}, "
                                f"{req.pcm_channels} channels, {req.pcm_rate} Hz (sndbe)")
        if req.pcm_rate not in cfg.rates:
            raise RequestFailed(-errno.EINVAL, f"rate {req.pcm_rate} not in {cfg.rates}")
        if not cfg.channels_min <= req.pcm_channels <= cfg.channels_max:
            raise RequestFailed(-errno.EINVAL, f"{req.pcm_channels} channels outside "
                                f"{cfg.channels_min}..{cfg.channels_max}")
        fb = sndif.frame_bytes(fmt, req.pcm_channels)
        limit = min(cfg.buffer_bytes_max, MAX_BUFFER_BYTES)
        if not 0 < req.buffer_sz <= limit or req.buffer_sz % fb:
            raise RequestFailed(-errno.EINVAL, f"buffer_sz {req.buffer_sz} not a multiple of "
                                f"{fb} in 1..{limit}")
        if not 0 < req.period_sz <= req.buffer_sz or req.period_sz % fb:
            raise RequestFailed(-errno.EINVAL, f"period_sz {req.period_sz} not a frame multiple "
                                f"in 1..buffer_sz")
        limits = self.dev.backend.options.limits
        if req.period_sz // fb < limits.min_period_frames(req.pcm_rate):
            raise RequestFailed(-errno.EINVAL, f"period of {req.period_sz // fb} frames is "
                                f"shorter than this backend's minimum of "
                                f"{limits.min_period_us} us (--min-period-us)")
        info = WavInfo(fmt, req.pcm_channels, req.pcm_rate)
        buffer, dirs = self._map_buffer(req.gref_directory, req.buffer_sz)
        opener = self.dev.backend.source if cfg.is_capture else self.dev.backend.sink
        extra = {"period_frames": req.period_sz // fb} if isinstance(opener, AlsaDevice) else {}
        try:
            end = opener.open(info, self.label, **extra)
        except (ConfigError, OSError) as exc:
            self.dev.backend.unmap_all([buffer, *dirs])
            raise RequestFailed(-errno.EINVAL, str(exc)) from None
        if cfg.is_capture:
            self.source = end
        else:
            self.sink = end
        #: a device with a clock of its own paces the stream and says where it is
        self.device = end if getattr(end, "device_clocked", False) else None
        if self.device is not None:
            logger.info("%s: device-clocked; the device adds %d frames (%.1f ms) of latency",
                        self.label, self.device.latency_frames(),
                        1000 * self.device.latency_frames() / info.rate)
        self.buffer, self.dir_maps, self.info = buffer, dirs, info
        self.buffer_sz, self.period_sz = req.buffer_sz, req.period_sz
        self.opened = True
        self._reset_positions()
        self.base = 0  # sndbe: octets counted before the last STOP (from OPEN)
        logger.info("%s: OPEN %s %dch %dHz buffer %d period %d", self.label, fmt.name,
                    req.pcm_channels, req.pcm_rate, req.buffer_sz, req.period_sz)

    def _map_buffer(self, first_dir: int, buffer_sz: int) -> tuple[SharedPages, list[SharedPages]]:
        """Walk the page directory (docs/protocol.md section 4.7) and map the buffer."""
        n_pages = sndif.buffer_page_count(buffer_sz)
        n_dirs = sndif.dir_page_count(n_pages)
        mapper, fe = self.dev.backend.mapper, self.dev.fe_domid
        dirs: list[SharedPages] = []
        refs: list[int] = []
        nxt = first_dir
        try:
            for i in range(n_dirs):
                if nxt == 0:
                    raise RequestFailed(-errno.EINVAL, f"directory chain ends after {i} of "
                                        f"{n_dirs} pages")
                page = mapper.map_domain_grant_refs(fe, [nxt], writable=False)
                dirs.append(page)
                nxt, got = sndif.decode_directory_page(bytes(page.buf), n_pages - len(refs))
                refs += got
            if nxt != 0:
                raise RequestFailed(-errno.EINVAL, f"directory chain not terminated after "
                                    f"{n_dirs} pages (next {nxt})")
            if len(refs) != n_pages:
                raise RequestFailed(-errno.EINVAL, f"directory holds {len(refs)} refs, "
                                    f"need {n_pages}")
            buffer = mapper.map_domain_grant_refs(fe, refs, writable=True)
        except XenError as exc:
            self.dev.backend.unmap_all(dirs)
            raise RequestFailed(-errno.EINVAL, f"cannot map the guest buffer: {exc}") from None
        except RequestFailed:
            self.dev.backend.unmap_all(dirs)
            raise
        return buffer, dirs

    def _close_stream(self) -> None:
        if not self.opened:
            return
        xruns = getattr(self.device, "xruns", 0)
        if xruns:  # the card ran dry (or over) under us: a gap the guest cannot see
            logger.info("%s: the device %s %d times", self.label,
                        "overran" if self.cfg.is_capture else "underran", xruns)
        for h in (self.sink, self.source):
            if h is not None:
                _quietly(h.close)
        self.dev.backend.unmap_all([p for p in (self.buffer, *self.dir_maps) if p is not None])
        # Requests still queued behind a CLOSE keep their place; state goes.
        self._reset_open_state()

    def _abs_write_pos(self, offset: int) -> int:
        """The stream position a ring offset refers to: the end of the data
        (append), else the latest earlier position (a rewrite after a rewind)."""
        end = self.written
        pos = end - (end - offset) % self.buffer_sz
        if pos < 0:
            raise RequestFailed(-errno.EINVAL, f"WRITE offset {offset} is neither the end of the "
                                f"data ({end % self.buffer_sz}) nor inside it")
        return pos

    def _write(self, req: RwReq, now: float) -> None:
        self._need_open()
        if self.cfg.is_capture:
            raise RequestFailed(-errno.EINVAL, "WRITE on a capture stream")
        self._check_range(req)
        pos = self._abs_write_pos(req.offset)
        if pos + req.length - self.done > QUEUE_BUFFERS * self.buffer_sz:
            raise RequestFailed(-errno.ENOSPC, f"WRITE beyond {QUEUE_BUFFERS} buffers ahead "
                                "of playback")
        if self.running:
            self.step(now)  # play what is due before the queue changes
        skip = max(0, self.done - pos)  # already played: a rewind that lost the race
        assert self.buffer is not None
        del self.queued[max(0, pos - self.done):]
        if skip < req.length:
            self.queued += self.buffer.buf[req.offset + skip:req.offset + req.length]
        self.written = max(self.done, pos + req.length)
        if self.running:
            self.step(now)

    def _read(self, req: RwReq, now: float) -> None:
        self._need_open()
        if not self.cfg.is_capture:
            raise RequestFailed(-errno.EINVAL, "READ on a playback stream")
        self._check_range(req)
        if req.offset != self.read_pos % self.buffer_sz:
            raise RequestFailed(-errno.EINVAL, f"READ offset {req.offset}, expected "
                                f"{self.read_pos % self.buffer_sz}")
        end = self.read_pos + req.length
        if self.sndbe:
            self._read_fill(req, end)
            return
        if self.done - self.read_pos > self.buffer_sz:
            # Overwritten: refused, and consumed, so the guest's next READ
            # (sequential, as it keeps count) is judged on its own.
            self.read_pos = end
            raise RequestFailed(-errno.EPIPE, "capture overrun: data was overwritten")
        if end > self.done:
            if self.running:
                raise _NotYet  # answered once recorded
            raise RequestFailed(-errno.EIO, "READ of data not captured and stream not running")
        self.read_pos = end

    def _read_fill(self, req: RwReq, end: int) -> None:
        """sndbe: READ waits for the data, then copies it into the buffer
        (snd_be's snd_pcm_readi into the mapping)."""
        assert self.buffer is not None
        if self.read_pos < self.fifo_pos:
            self.read_pos = end
            raise RequestFailed(-errno.EPIPE, "capture overrun: the host buffer overflowed")
        if end > self.fifo_pos + len(self.fifo):
            if self.running:
                raise _NotYet
            raise RequestFailed(-errno.EIO, "READ of data not captured and stream not running")
        a = self.read_pos - self.fifo_pos
        self.buffer.buf[req.offset:req.offset + req.length] = self.fifo[a:a + req.length]
        del self.fifo[:a + req.length]
        self.fifo_pos = end
        self.read_pos = end

    def _check_range(self, req: RwReq) -> None:
        fb = self.info.frame_bytes if self.info else 1
        if req.length <= 0 or req.length % fb or req.offset % fb \
                or req.offset + req.length > self.buffer_sz:
            raise RequestFailed(-errno.EINVAL, f"range {req.offset}+{req.length} is not whole "
                                f"frames inside the {self.buffer_sz}-octet buffer")

    def _trigger(self, req: TriggerReq, now: float) -> None:
        self._need_open()
        kind = req.type
        if kind == Trigger.START and not self.running and not self.paused:
            self.running = True
            self._anchor(now)
            self.step(now)
        elif kind == Trigger.STOP:
            self.step(now)
            self.running = self.paused = False
            if self.sink is not None:
                self.sink.flush()
            base = self.base + self.done if self.sndbe else 0
            self._reset_positions()  # drop what was not played; origin back to 0
            self.base = base  # sndbe: reports go on counting from OPEN
        elif kind == Trigger.PAUSE and self.running:
            self.step(now)
            self.running, self.paused = False, True
        elif kind == Trigger.RESUME and self.paused:
            self.running, self.paused = True, False
            self._anchor(now)
        else:
            state = "running" if self.running else "paused" if self.paused else "stopped"
            raise RequestFailed(-errno.EINVAL, f"TRIGGER {kind} while {state}")

    def _query(self, q: HwParams) -> HwParams:
        cfg = self.cfg
        formats = q.formats & sndif.format_mask(cfg.formats)
        rates = [r for r in cfg.rates if q.rates[0] <= r <= q.rates[1]]
        ch = (max(q.channels[0], cfg.channels_min), min(q.channels[1], cfg.channels_max))
        if not formats or not rates or ch[0] > ch[1]:
            raise RequestFailed(-errno.EINVAL, "no configuration matches the query")
        smallest = min(sndif.sample_bytes(f) for f in sndif.formats_from_mask(formats)) * ch[0]
        max_frames = min(cfg.buffer_bytes_max, MAX_BUFFER_BYTES) // smallest
        buf = (max(q.buffer[0], 1), min(q.buffer[1], max_frames))
        shortest = self.dev.backend.options.limits.min_period_frames(rates[-1])
        per = (max(q.period[0], shortest), min(q.period[1], buf[1]))
        if buf[0] > buf[1] or per[0] > per[1]:
            raise RequestFailed(-errno.EINVAL, "buffer/period outside the configured limits")
        rate_max = cfg.rates[-1] if self.sndbe else rates[-1]  # snd_be's bug: never narrowed
        return HwParams(formats, (rates[0], rate_max), ch, buf, per)

    # -- pacing --------------------------------------------------------------
    def _anchor(self, now: float) -> None:
        assert self.info is not None
        self.anchor_t = now
        self.anchor_frames = self.done // self.info.frame_bytes
        if self.sndbe:
            self.next_tick = now + self._tick()

    def _tick(self) -> float:
        """sndbe: its position timer, whole milliseconds of a period."""
        assert self.info is not None
        frames = self.period_sz // self.info.frame_bytes
        return max(1, frames * 1000 // self.info.rate) / 1000

    def _target(self, now: float) -> int:
        """Octets the clock says should be done by ``now``."""
        assert self.info is not None
        if self.device is not None:  # as far as the device takes (has)
            return self.done + max(0, int(self.device.room()))
        if not self.dev.backend.options.paced:
            # Capture: a period beyond what the guest asked for; more could
            # overwrite frames it confirmed and has not copied out yet.
            return self.written if not self.cfg.is_capture else self.read_pos + self.period_sz
        frames = self.anchor_frames + math.floor((now - self.anchor_t) * self._clock_rate())
        return frames * self.info.frame_bytes

    def _clock_rate(self) -> float:
        """Frames a second by our clock: the nominal rate, or off by
        ``--clock-ppm`` as a sound card's crystal is."""
        assert self.info is not None
        return self.info.rate * (1 + self.dev.backend.options.clock_ppm * 1e-6)

    def _cadence(self) -> int:
        fb = self.info.frame_bytes if self.info else 1
        pos = self.dev.backend.options.pos_frames
        return min(self.period_sz, pos * fb) if pos else self.period_sz

    def step(self, now: float) -> None:
        """Play/record up to ``now``; send CUR_POS on cadence boundaries."""
        if not self.running or self.buffer is None:
            return
        if self.ring is not None and self.quiet and self.ring.has_unconsumed():
            self.on_request_notify(now)
            if not self.running or self.buffer is None:
                return  # what came was a STOP, a PAUSE or a CLOSE
        old = self.done
        target = self._target(now)
        if self.cfg.is_capture:
            if target > old:
                self._record(old, target)
        else:
            new = min(target, self.written)
            if new > old:
                self._play(old, new)
        cad = self._cadence()
        if self.device is not None and not self.cfg.is_capture:
            self._step_device(now, cad)
            return
        if not self.cfg.is_capture and self.done >= self.written:
            # Dry: report where playback stopped (the tail of a drain is
            # rarely a whole period), then restart the clock when data comes.
            if self.last_evt_pos != self.done:
                # snd_be's report that catches the end runs past the data.
                self._event(now, past=self.period_sz // 2 if self.sndbe else 0)
            if not self.dry:
                self._go_dry(now, self.done)
                if not self.running or self.buffer is None:
                    return  # that look found a STOP or a CLOSE
            self._anchor(now)
            return
        self.dry = False
        if self.sndbe:
            if now >= self.next_tick:
                self.next_tick = max(self.next_tick + self._tick(), now)
                self._event(now)
        elif self.done // cad != old // cad or self.evt_owed:
            if now - self.last_evt_t >= self._event_interval():
                self._event(now)
            else:
                self.evt_owed = True  # merged into a later report
        if self.cfg.is_capture:
            self.process_pending(now)

    def _step_device(self, now: float, cad: int) -> None:
        """Playback on a device-clocked sink: CUR_POS is what the device has
        played; dry once it has played everything written."""
        assert self.device is not None
        pos = self.device.position()
        last = self.last_evt_pos if self.last_evt_pos is not None else 0
        if pos >= self.written:
            if self.last_evt_pos != pos:
                self._event(now, pos=pos)
            if not self.dry:
                self._go_dry(now, pos)
            return
        self.dry = False
        if pos // cad != last // cad:
            self._event(now, pos=pos)

    def _go_dry(self, now: float, played: int) -> None:
        """Everything written was played: say so (mid-stream it is an
        underrun the guest may not see), and want notifications again (with
        a last look at the ring)."""
        self.dry = True
        self.dry_count += 1
        # At info once: a guest that keeps underrunning must not flood the log
        # of a backend that serves others.
        logger.log(logging.INFO if self.dry_count == 1 else logging.DEBUG,
                   "%s: ran dry at frame %d, all written was played (%d so far)", self.label,
                   played // self.info.frame_bytes if self.info else played, self.dry_count)
        self.on_request_notify(now)

    def deadline(self) -> float | None:
        """``next_deadline()``; None, and this device closed, if that fails."""
        try:
            return self.next_deadline()
        except Exception as exc:  # noqa: BLE001 - one device, not the loop
            self.dev.backend.loop_failed(self.dev, exc, "pacing")
            return None

    def next_deadline(self) -> float | None:
        due = self.throttled_until
        step = self._step_deadline()
        if self.evt_owed:
            owed = self.last_evt_t + self._event_interval()
            step = owed if step is None else min(step, owed)
        if due is None or (step is not None and step < due):
            return step
        return due

    def _step_deadline(self) -> float | None:
        if not self.running or self.info is None:
            return None
        if self.device is not None:
            # The device's clock: look again at its next period boundary as
            # its position predicts it, at least every half period.
            if not self.cfg.is_capture and self.dry:
                return None
            cad = self._cadence()
            pos = self.device.position() if not self.cfg.is_capture else self.done
            ahead = (cad - pos % cad) / self.info.frame_bytes / self.info.rate
            half = self.period_sz / self.info.frame_bytes / self.info.rate / 2
            return time.monotonic() + max(0.0005, min(ahead, half))
        if not self.cfg.is_capture and self.done >= self.written:
            return None  # dry: the next WRITE wakes us
        if not self.dev.backend.options.paced:
            return 0.0
        if self.sndbe:
            play = math.inf
            if not self.cfg.is_capture:  # play out to the end of the data in time
                play = self.anchor_t + (self.written // self.info.frame_bytes
                                        - self.anchor_frames) / self._clock_rate()
            return min(self.next_tick, play)
        cad = self._cadence()
        next_b = (self.done // cad + 1) * cad
        if not self.cfg.is_capture:
            next_b = min(next_b, self.written)
        frames = -(-next_b // self.info.frame_bytes)
        return self.anchor_t + (frames - self.anchor_frames) / self._clock_rate()

    def _play(self, start: int, end: int) -> None:
        if start == 0:  # wall time: comparable with the guest's (Xen's wallclock)
            logger.info("%s: first frames played (wall %.3f)", self.label, time.time())
        n = end - start
        with memoryview(self.queued) as mv:  # no copy of what may be a megabyte
            self.sink.write(mv[:n])
        del self.queued[:n]
        self.done = end

    def _record(self, start: int, end: int) -> None:
        assert self.buffer is not None
        if self.sndbe:  # into the host's buffer; READ copies it over
            self.fifo += self.source.read(end - start)
            drop = len(self.fifo) - 2 * self.buffer_sz
            if drop > 0:  # the host buffer overflows: the oldest go
                del self.fifo[:drop]
                self.fifo_pos += drop
            self.done = end
            return
        start = max(start, end - self.buffer_sz)  # a late tick overwrites, like hardware
        for off, n in wrap_pieces(start, end - start, self.buffer_sz):
            self.buffer.buf[off:off + n] = self.source.read(n)
        self.done = end

    def _event_interval(self) -> float:
        return 1.0 / self.dev.backend.options.limits.max_event_rate

    def _event(self, now: float, past: int = 0, pos: int | None = None) -> None:
        if self.evt is None:
            return
        pos = self.done if pos is None else pos
        self.last_evt_pos = pos
        self.last_evt_t = now
        self.evt_owed = False
        pos = pos + past + (self.base if self.sndbe else 0)
        slot = sndif.encode_event(CurPosEvt(self.evt_id, pos))
        self.evt_id = (self.evt_id + 1) & 0xFFFF
        if not self.evt.put_event(slot):
            logger.debug("%s: event page full, CUR_POS dropped", self.label)
        self.dev.backend.notify(self.evt_port)


class _NotYet(Exception):
    """The request at the head waits for the clock (a READ ahead of capture)."""


_OP_OF = {OpenReq: Op.OPEN, CloseReq: Op.CLOSE, TriggerReq: Op.TRIGGER,
          HwParamQuery: Op.HW_PARAM_QUERY}


def _wake(fd: int) -> None:
    try:
        os.eventfd_write(fd, 1)
    except OSError:  # closed with the backend, or the count is full: awake anyway
        pass


def _drain(fd: int) -> None:
    try:
        os.eventfd_read(fd)
    except OSError:  # BlockingIOError: nothing to drain
        pass


def _quietly(fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except (PvSndError, OSError) as exc:
        logger.warning("%s: %s", getattr(fn, "__name__", fn), exc)


class VsndDevice:
    """One vsnd device of one guest: the backend half of the xenbus handshake."""

    def __init__(self, backend: Backend, fe_domid: int, devid: int, be_dir: str) -> None:
        self.backend = backend
        self.fe_domid = fe_domid
        self.devid = devid
        self.be_dir = be_dir
        self.fe_dir = backend.xs.read(f"{be_dir}/frontend") or ""
        self.streams: list[BackendStream] = []  # served by the audio loop
        self.withdrawn: list[BackendStream] = []  # no longer served, not yet released
        self.generation = 0  # connections so far: a failure reported late names its own
        self.failing = False  # the audio loop gave up on it; the xenbus thread closes it
        self.state = XenbusState.UNKNOWN
        self._last_fe: XenbusState | None = None  # the frontend state we acted on
        self.config: CardConfig | None = None

    @property
    def name(self) -> str:
        return f"dom{self.fe_domid}/vsnd{self.devid}"

    def write_state(self, state: XenbusState) -> None:
        self.state = state
        self.backend.xs.write(f"{self.be_dir}/state", str(int(state)))
        logger.info("%s: backend state %s", self.name, state.name)

    def start(self) -> None:
        """First reaction of this process (``backend_startup``): whatever state
        a previous backend left is not backed by any mapping of ours."""
        found = self._read_state(self.be_dir)
        fe = self._read_state(self.fe_dir)
        self._last_fe = fe
        self._perform(backend_startup(found, fe))

    def _read_state(self, directory: str) -> XenbusState:
        try:
            return parse_state(self.backend.xs.read(f"{directory}/state"))
        except RemoteProtocolError as exc:
            logger.warning("%s: %s", self.name, exc)
            return XenbusState.UNKNOWN

    def on_frontend_state(self) -> None:
        """A watch fired: act only on a changed frontend state (xenbus.py Rule 2:
        watches fire once when set and may fire spuriously)."""
        fe = self._read_state(self.fe_dir)
        if fe == self._last_fe:
            return
        self._last_fe = fe
        action = backend_on_frontend(self.state, fe)
        if action is BackendAction.RELEASE:
            logger.info("%s: frontend went %s, releasing", self.name, fe.name)
        self._perform(action)

    def _perform(self, action: BackendAction) -> None:
        if action is BackendAction.CONNECT:
            self.connect()
        elif action is BackendAction.RELEASE:
            self.release()
        elif action is BackendAction.INIT_WAIT:
            self.write_state(XenbusState.INIT_WAIT)

    def connect(self) -> None:
        """Map and bind every stream (xenbus thread, no lock held), then
        hand them to the audio loop."""
        xs = self.backend.xs
        try:
            tree = xs.read_tree(self.fe_dir, is_card_branch)
            self.config = parse_card_config(tree)
            for sc in self.config.streams:
                keys = {k: parse_uint(tree.get(f"{sc.path}/{k}"), 0, U32_MAX,
                                      f"{self.fe_dir}/{sc.path}/{k}")
                        for k in (sndif.FIELD_RING_REF, sndif.FIELD_EVT_CHNL,
                                  sndif.FIELD_EVT_RING_REF, sndif.FIELD_EVT_EVT_CHNL)}
                st = BackendStream(self, sc)
                self.withdrawn.append(st)  # released by fail() if the next ones fail
                st.connect(self.backend.mapper, self.backend.evtchn, keys)
        except (PvSndError, OSError) as exc:
            self.fail(exc, "connect failed")
            return
        with self.backend.lock:
            self.streams, self.withdrawn = self.withdrawn, []
            self.generation += 1
            self.failing = False
            now = time.monotonic()
            for st in self.streams:
                self.backend.ports[st.req_port] = st
                self.backend.ports[st.evt_port] = None
                st.throttled_until = now  # requests may already be queued
        self.backend.wake_loop()
        self.write_state(XenbusState.CONNECTED)
        self._clear_error()

    @property
    def error_path(self) -> str:
        """Where xenbus drivers leave the reason they gave up on a device
        (Linux ``xenbus_dev_error``: ``error/<nodename>/error``, in our domain)."""
        rel = self.be_dir.removeprefix(self.backend.dom_path + "/")
        return f"{self.backend.dom_path}/error/{rel}/error"

    def fail(self, exc: BaseException, what: str) -> None:
        """Give up on this device only (Linux ``xenbus_dev_fatal``): record why,
        unmap and unbind everything, go Closing/Closed.  The guest gets InitWait
        again once it goes back to Initialising.  Never raises."""
        code = exc.errno if isinstance(exc, (PvSndError, OSError)) and exc.errno else errno.EIO
        if isinstance(exc, (PvSndError, OSError)):
            logger.error("%s: %s: %s", self.name, what, exc)
        else:
            logger.error("%s: %s (a bug; this device is closed, the others carry on)",
                         self.name, what, exc_info=exc)
        try:
            self.backend.xs.write(self.error_path, f"{code} {what}: {exc}"[:1024])
        except (PvSndError, OSError) as werr:
            logger.warning("%s: writing %s: %s", self.name, self.error_path, werr)
        try:
            self._release_streams()
            if self.state != XenbusState.CLOSED:
                if self.state != XenbusState.CLOSING:
                    self.write_state(XenbusState.CLOSING)
                self.write_state(XenbusState.CLOSED)
        except (PvSndError, OSError) as rerr:
            logger.warning("%s: closing after failure: %s", self.name, rerr)
            self.state = XenbusState.CLOSED

    def _clear_error(self) -> None:
        try:
            if self.backend.xs.read(self.error_path) is not None:
                self.backend.xs.rm(self.error_path)
        except (PvSndError, OSError) as exc:
            logger.debug("%s: removing %s: %s", self.name, self.error_path, exc)

    def withdraw(self) -> None:
        """The audio loop stops serving this device (lock held)."""
        for st in self.streams:
            self.backend.forget_port(st.req_port)
            self.backend.forget_port(st.evt_port)
        self.withdrawn += self.streams
        self.streams = []

    def _release_streams(self) -> None:
        with self.backend.lock:
            self.withdraw()
            withdrawn, self.withdrawn = self.withdrawn, []
        for st in withdrawn:  # unmapping and unbinding wait on the hypervisor
            st.release(self.backend.mapper, self.backend.evtchn)

    def release(self, final: bool = False) -> None:
        """Unmap and unbind everything; then InitWait again, or Closed when
        the backend itself is going away (``final``)."""
        self._release_streams()
        if self.state == XenbusState.CONNECTED:
            self.write_state(XenbusState.CLOSING)
            self.write_state(XenbusState.CLOSED)
            if not final:
                self.write_state(XenbusState.INIT_WAIT)
        elif final and self.state != XenbusState.CLOSED:
            self.write_state(XenbusState.CLOSED)


def pin_malloc_threshold() -> None:
    """Keep glibc from raising its mmap threshold after a guest's large
    WRITE: the default dynamic threshold then serves later megabyte blocks
    from the heap, whose freed memory is never returned (the fuzz campaign's
    backend RSS went up in steps of the largest working set).  With the
    threshold pinned, large blocks are mmapped and unmapped when freed."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to pin
        pass


class Backend:
    """Serves every vsnd device under this domain's ``backend/vsnd``."""

    def __init__(self, transport: Transport, sink: Any, source: Any,
                 options: BackendOptions | None = None) -> None:
        self.transport = transport
        self.xs = transport.xenstore
        self.sink, self.source = sink, source
        self.options = options or BackendOptions()
        self.mapper = transport.open_grant_mapper()
        self.evtchn = transport.open_event_channel()
        self.ports: dict[int, BackendStream | None] = {}
        self._notifies: dict[int, TokenBucket] = {}  # per port: fires we act on
        self._held: dict[int, float] = {}  # port -> when to unmask it (over its rate)
        self.devices: dict[tuple[int, int], VsndDevice] = {}
        self.dom_path = self.xs.get_domain_path(transport.domid)
        self.root = f"{self.dom_path}/backend/vsnd"
        self.xs.watch(self.root, "devices")
        self._stopping = False
        #: the audio loop's state (devices, their served streams, ports); the
        #: loop holds it while it works, the xenbus thread to hand over
        self.lock = threading.Lock()
        self._loop_wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._xenbus_wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        #: (device, its generation, error, what): failures the loop hands on
        self._failures: queue.SimpleQueue[tuple[VsndDevice, int, BaseException, str]] = \
            queue.SimpleQueue()
        self._xenbus_error: BaseException | None = None

    def notify(self, port: int) -> None:
        try:
            self.evtchn.notify(port)
        except XenError as exc:
            logger.warning("notify port %d: %s", port, exc)

    def unmap_all(self, pages: list[SharedPages]) -> None:
        for p in pages:
            _quietly(self.mapper.unmap, p)

    def scan(self) -> None:
        """Pick up new devices, forget removed ones."""
        seen = set()
        for fe in self.xs.directory(self.root) or []:
            if not is_decimal(fe) or int(fe) > DOMID_MAX:
                continue
            for dev in self.xs.directory(f"{self.root}/{fe}") or []:
                if not is_decimal(dev) or int(dev) > U32_MAX:
                    continue
                key = (int(fe), int(dev))
                seen.add(key)
                if key not in self.devices:
                    d = VsndDevice(self, key[0], key[1], f"{self.root}/{fe}/{dev}")
                    if not d.fe_dir:
                        continue
                    with self.lock:
                        self.devices[key] = d
                    self.xs.watch(f"{d.fe_dir}/state", f"fe:{key[0]}:{key[1]}")
                    self.guard(d, "start", d.start)
        for key in list(self.devices):
            if key not in seen:
                with self.lock:
                    d = self.devices.pop(key)
                _quietly(self.xs.unwatch, f"{d.fe_dir}/state", f"fe:{key[0]}:{key[1]}")
                self.guard(d, "remove", d.release)

    def guard(self, device: VsndDevice, what: str, fn: Callable[..., None],
              *args: Any) -> None:
        """Run one device's xenbus handling (xenbus thread); whatever it
        raises closes that device (``VsndDevice.fail``) and no other."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - containment is the point
            device.fail(exc, what)

    def serve(self, device: VsndDevice, what: str, fn: Callable[..., None],
              *args: Any) -> None:
        """Run one device's audio work (audio loop, lock held).  Whatever it
        raises withdraws that device's streams at once and leaves closing it,
        which talks to xenstore, to the xenbus thread."""
        if device.failing:
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - containment is the point
            self.loop_failed(device, exc, what)

    def loop_failed(self, device: VsndDevice, exc: BaseException, what: str) -> None:
        """(audio loop, lock held) Stop serving the device; the xenbus thread
        records why and closes it."""
        if device.failing:
            return
        device.failing = True
        device.withdraw()
        self._failures.put((device, device.generation, exc, what))
        _wake(self._xenbus_wake)

    def wake_loop(self) -> None:
        _wake(self._loop_wake)

    def _take_failures(self) -> None:
        while True:
            try:
                device, generation, exc, what = self._failures.get_nowait()
            except queue.Empty:
                return
            if device.generation == generation and device.failing:
                device.fail(exc, what)  # not if it was released or connected again since

    def _on_watch(self) -> None:
        for _path, token in self.xs.check_watch():
            if token == "devices":
                self.scan()
            elif token.startswith("fe:"):
                _, fe, dev = token.split(":")  # our own tokens
                d = self.devices.get((int(fe), int(dev)))
                if d is not None:
                    self.guard(d, "frontend state change", d.on_frontend_state)

    def forget_port(self, port: int) -> None:
        self.ports.pop(port, None)
        self._notifies.pop(port, None)
        self._held.pop(port, None)

    def _on_evtchn(self) -> None:
        now = time.monotonic()
        while (port := self.evtchn.pending()) is not None:
            bucket = self._notifies.get(port)
            if bucket is None and port in self.ports:
                bucket = self._notifies[port] = self.options.limits.notify_bucket(now)
            if bucket is None or bucket.take(now):
                _quietly(self.evtchn.unmask, port)
            else:
                # A notify flood: the port stays masked (later notifies latch)
                # until the next token, so it costs us a bounded number of wakes.
                self._held[port] = bucket.when(now)
            st = self.ports.get(port)
            if st is not None:
                self.serve(st.dev, "request", st.on_request_notify, now)

    def _release_held(self, now: float) -> None:
        for port, when in list(self._held.items()):
            if when <= now:
                del self._held[port]
                _quietly(self.evtchn.unmask, port)

    def streams(self) -> list[BackendStream]:
        return [st for d in self.devices.values() for st in d.streams]

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        """Serve until ``until()`` is true or :meth:`stop` is called: the
        audio loop here, the xenbus work in a thread that ends with it."""
        sel = selectors.DefaultSelector()
        sel.register(self.evtchn.fileno(), selectors.EVENT_READ, self._on_evtchn)
        sel.register(self._loop_wake, selectors.EVENT_READ, lambda: _drain(self._loop_wake))
        done = threading.Event()
        xenbus = threading.Thread(target=self._xenbus_run, args=(done,), name="pvplug-xenbus",
                                  daemon=True)
        xenbus.start()
        try:
            while not self._stopping and not until():
                if self._xenbus_error is not None:
                    raise self._xenbus_error
                with self.lock:
                    deadlines = [t for st in self.streams()
                                 if (t := st.deadline()) is not None]
                deadlines += self._held.values()
                now = time.monotonic()
                timeout = 0.5 if not deadlines else max(0.0, min(min(deadlines) - now, 0.5))
                events = sel.select(timeout)
                with self.lock:
                    for key, _ in events:
                        key.data()
                    now = time.monotonic()
                    self._release_held(now)
                    for st in self.streams():
                        if st.throttled_until is not None and st.throttled_until <= now:
                            self.serve(st.dev, "request", st.on_request_notify, now)
                        if st.running:
                            self.serve(st.dev, "playing", st.step, now)
        finally:
            done.set()
            _wake(self._xenbus_wake)
            xenbus.join(XENBUS_JOIN_SECONDS)
            sel.close()

    def _xenbus_run(self, done: threading.Event) -> None:
        """The xenbus thread: watches, handshakes, closing failed devices.
        It wakes the loop after each round, so that ``until()`` is looked at
        (``MemoryXenStore.wake`` stops a backend that way)."""
        sel = selectors.DefaultSelector()
        sel.register(self.xs.fileno(), selectors.EVENT_READ)
        sel.register(self._xenbus_wake, selectors.EVENT_READ)
        try:
            self.scan()
            while not done.is_set():
                sel.select(0.5)
                _drain(self._xenbus_wake)
                self._take_failures()
                self._on_watch()
                self.wake_loop()
        except BaseException as exc:  # the loop raises it: xenstore is gone
            self._xenbus_error = exc
            self.wake_loop()
        finally:
            sel.close()

    def stop(self) -> None:
        self._stopping = True

    def close(self) -> None:
        self._take_failures()
        for d in self.devices.values():
            _quietly(d.release, True)
        self.devices.clear()
        for h in (self.mapper, self.evtchn):
            _quietly(h.close)
        for fd in (self._loop_wake, self._xenbus_wake):
            _quietly(os.close, fd)
