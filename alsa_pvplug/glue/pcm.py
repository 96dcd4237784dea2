"""One ALSA PCM over one vsnd stream: the ioplug callbacks as plain methods.

``embed.py`` calls these from the C shim; ``harness.py`` calls them the way
ioplug does, without ALSA.  Every method takes ALSA's ``appl_ptr`` (modulo
the boundary) where it matters, returns ints, and raises ``PvSndError``
subclasses that the caller maps to negative errno.

This module adapts ioplug to two objects and decides nothing itself: the
stream (``frontend.Stream``: requests, the data path, waiting) and the
position model (``protocol.pcm.PcmModel``: pointer, avail, delay, xruns,
readiness, wake times; the rules are in its docstring).  The poll
descriptors are a timerfd armed for the model's next wake (an emulated
period interrupt) and the card's event channel.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from .. import cardpool
from .._native import ffi as native_ffi
from .._native import lib as native
from ..errors import (
    BackendTimeout,
    LocalProtocolError,
    PvSndError,
    Xrun,
)
from ..frontend import WRITE_GRACE
from ..log import get_logger
from ..protocol.pcm import MIN_WAKE, PcmModel, PcmState
from ..protocol.sndif import (
    PcmFormat,
    sample_bytes,
    silence,
)
from ..protocol.stream import StreamState
from . import alsa
from .options import PluginOptions

logger = get_logger(__name__)

#: PERIODS_MAX keeps speaker-test's "largest buffer" sane together with the
#: card's buffer size
PERIODS_MAX = 1024
#: the timer is re-armed only when the wake time moves by more than this (s)
REARM_TOLERANCE = 0.0001
#: without an event-channel wake, notifications and xenstore watches are
#: still looked at this often (seconds): a backend that left is noticed
FULL_SYNC_INTERVAL = 0.1
#: C answers from one publish this long at most (sooner at a bound, an xrun,
#: or with its request ids used up); Python then takes in the reports, the
#: answers and xenstore: it is the delay to notice a backend that left while
#: C answers every call
FAST_PATH_SECONDS = 0.25


def by_timer_now(armed: float, now: float) -> bool:
    """Whether a timer armed for ``armed`` has expired by ``now`` (it then
    stays readable until re-armed: no need to arm it again)."""
    return 0.0 < armed <= now + REARM_TOLERANCE


class HwConstraints(NamedTuple):
    """What ``snd_pcm_ioplug_set_param_*`` gets (bytes, like ioplug)."""

    formats: list[int]        # ALSA format values
    rates: list[int]
    channels: tuple[int, int]
    period_bytes: tuple[int, int]
    buffer_bytes: tuple[int, int]
    periods: tuple[int, int]


class Geometry(NamedTuple):
    fmt: PcmFormat
    channels: int
    rate: int
    period: int   # frames
    buffer: int   # frames
    frame_bytes: int


class PvPcm:
    """The plugin state of one open PCM."""

    def __init__(self, opts: PluginOptions, capture: bool, nonblock: bool = False) -> None:
        self.opts = opts
        self.capture = capture
        self.nonblock = nonblock
        self.lease = cardpool.acquire(opts, capture=capture)
        self.timer_fd = -1
        try:
            self.card = self.lease.card
            self.lock = self.lease.lock
            with self.lock:
                self.stream = self.card.stream(*self.lease.stream_key)
                self.constraints = self._constraints()
            self.timer_fd = native.pvplug_timer_create()
            if self.timer_fd < 0:
                raise PvSndError("timerfd_create failed", code=errno.EMFILE)
        except BaseException:
            self.lease.release()
            raise
        self.geometry: Geometry | None = None
        self.model: PcmModel | None = None
        self.access = alsa.ACCESS_RW_INTERLEAVED
        self._sw: tuple[int, int, int, int] | None = None
        self._reports_lead = False
        self._next_full = 0.0
        #: what the C shim answers pointer/delay/readiness from (pvplug_fast.h)
        self.fast = native_ffi.new("struct pvplug_fast *")
        self.fast_address = int(native_ffi.cast("uintptr_t", self.fast))
        self.fast.timer_fd = self.timer_fd  # C re-arms it after its transfers
        self._buf_ref: tuple[Any, Any] | None = None  # the buffer C copies into
        self._ring_ref: tuple[Any, Any] | None = None  # the ring C sends WRITEs on
        self._evt_ref: tuple[Any, Any] | None = None  # the event page C looks at
        self._notify_ref: Any = None  # keeps the channel C notifies valid
        self._pub_wr_end: int | None = None  # wr_end as published (None: C copies nothing)
        self._outside_on = False  # C may have copied or sent since we published
        self.stream.outside = self._adopt_outside
        self.stream.seen_outside = self._seen_outside
        self._closed = False

    # -- what ALSA may ask for ---------------------------------------------
    def _constraints(self) -> HwConstraints:
        cfg = self.stream.config
        offer = self.stream.offered()
        formats, ch = offer.formats, offer.channels
        buffer_max = cfg.buffer_bytes_max
        # ioplug constrains periods in bytes, before the format is known: the
        # narrowest frame gives a bound no choice goes below; hw_params says
        # so clearly when a wider frame makes the period too short.
        narrowest = min(sample_bytes(f) for f in formats) * ch[0]
        period_min = min(max(cfg.period_bytes_min, offer.period_frames_min * narrowest),
                         buffer_max // 2)
        return HwConstraints(
            formats=[alsa.alsa_format(f) for f in formats],
            rates=offer.rates,
            channels=ch,
            period_bytes=(period_min, max(period_min, min(cfg.period_bytes_max, buffer_max // 2))),
            buffer_bytes=(2 * period_min, buffer_max),
            periods=(max(2, cfg.periods_min), max(2, min(cfg.periods_max, PERIODS_MAX))),
        )

    def poll_fds(self) -> list[int]:
        fds = [self.timer_fd]
        if self.card.evtchn is not None:
            fds.append(self.card.evtchn.fileno())
        return fds

    # -- setup callbacks -------------------------------------------------------
    def hw_params(self, access: int, fmt: int, channels: int, rate: int,
                  period: int, buffer: int) -> None:
        if access not in (alsa.ACCESS_RW_INTERLEAVED, alsa.ACCESS_MMAP_INTERLEAVED):
            raise LocalProtocolError(f"access {access} is not offered")
        pf = alsa.sndif_format(fmt)
        self.access = access
        with self._locked():
            self.geometry = self.model = None
            self.stream.open(pf, channels, rate, buffer, period)
            self.geometry = Geometry(pf, channels, rate, period, buffer,
                                     self.stream.frame_bytes)
            self.model = PcmModel(self.capture, rate, period, buffer, self.card.timeout)
            if self._sw is not None:
                self.model.sw_params(*self._sw)
                self._set_read_ahead()

    def _set_read_ahead(self) -> None:
        """A client that rides through overruns (stop_threshold >= boundary)
        waits for avail to reach the buffer and may be handed overwritten
        frames, as the kernel would; any other never gets that far."""
        m = self.model
        if m is not None and self.capture:
            self.stream.ride_ahead = 2 * m.buffer if m.riding else 0

    def sw_params(self, avail_min: int, start_threshold: int, stop_threshold: int,
                  boundary: int) -> None:
        with self._locked():
            self._sw = (avail_min, start_threshold, stop_threshold, boundary)
            if self.model is not None:
                self.model.sw_params(*self._sw)
                self._set_read_ahead()

    def hw_free(self) -> None:
        with self._locked():
            self.stream.close()
            self.geometry = self.model = None
            self._arm(0.0)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with self.lock:
                try:
                    self.stream.close()
                finally:
                    self._adopt_outside()
                    self.stream.outside = self.stream.seen_outside = None
        finally:
            if self.timer_fd >= 0:
                self.fast.timer_fd = -1
                native.pvplug_close_fd(self.timer_fd)
                self.timer_fd = -1
            self.lease.release()

    # -- state callbacks -------------------------------------------------------
    def _model(self) -> PcmModel:
        if self.model is None or self.geometry is None:
            raise LocalProtocolError(f"{self.stream.name}: not set up (hw_params first)")
        return self.model

    def _geometry(self) -> Geometry:
        self._model()
        assert self.geometry is not None
        return self.geometry

    def prepare(self) -> None:
        with self._locked():
            m = self._model()
            # CLOSE + OPEN if it ran (positions from 0); open again after a
            # reconnection; fails for good after too many failures in a row.
            self.stream.prepare(after_xrun=m.state == PcmState.XRUN)
            m.prepare()
            self._rearm(time.monotonic())

    def start(self, appl: int) -> None:
        with self._locked():
            m = self._model()
            m.set_appl(appl)
            if m.state == PcmState.RUNNING:
                return  # tolerated, as pcm_a52 does
            self.stream.start()
            now = time.monotonic()
            m.start(now)
            self._rearm(now)

    def stop(self) -> None:
        with self._locked():
            if self.stream.state in (StreamState.RUNNING, StreamState.PAUSED):
                self.stream.stop()
            if self.model is not None:
                self.model.stop(time.monotonic())
            self._arm(0.0)

    def pause(self, enable: bool) -> None:
        with self._locked():
            m = self._model()
            if enable:
                self.stream.pause()
                now = self._sync(time.monotonic())
                m.position(now)
                m.pause(now)
                self._arm(0.0)
            else:
                self.stream.resume()
                now = time.monotonic()
                m.resume(now)
                self._rearm(now)

    def drain(self, appl: int, nonblock: bool | None = None) -> None:
        """Blocking: returns once the backend has played all we gave it.
        Nonblocking: -EAGAIN (LocalProtocolError EAGAIN) until then."""
        if self.capture:
            return
        nonblock = self.nonblock if nonblock is None else nonblock
        with self._locked():
            m = self._model()
            m.set_appl(appl)
            self.stream.flush()
            if m.state == PcmState.PREPARED and m.appl > 0:
                self.start(appl)
            if m.state not in (PcmState.RUNNING, PcmState.DRAINING):
                return
            m.drain()
            if nonblock:
                now = self._sync(time.monotonic(), full=True)
                if not self.stream.drained:
                    self._rearm(now)
                    raise PvSndError("drain in progress", code=errno.EAGAIN)
                m.hw = self.stream.appl
                return
            expect = (self.stream.appl - m.hw) / m.rate

        def drained() -> bool:
            self._sync(time.monotonic(), full=True)
            return self.stream.drained

        with self.stream.waiting_for_answers():
            self.card.wait_until(drained, f"{self.stream.name}: drain", lock=self.lock,
                                 extra=expect, progress=lambda: self.stream.reported,
                                 next_check=self._drain_due)
        with self._locked():
            m.hw = max(m.hw, self.stream.appl)

    def _drain_due(self) -> float | None:
        m = self.model
        return None if m is None or m.clock is None else m.clock.time_of(self.stream.appl)

    # -- the data path ---------------------------------------------------------
    def transfer(self, appl: int, data: Any, frames: int, fast_tried: bool = False) -> int:
        """Playback: ``data`` holds ``frames`` frames for position ``appl``.
        Capture: fill ``data`` with the frames at ``appl``.  ``fast_tried``:
        the C shim tried its copy-only path (pvplug_fast.h) already."""
        if not fast_tried and not self.capture:
            src = native_ffi.from_buffer(data)
            if native.pvplug_fast_transfer(self.fast, appl, src, frames, time.monotonic()) >= 0:
                return frames
        with self._locked():
            m, g = self._model(), self._geometry()
            m.set_appl(appl)
            view = memoryview(data).cast("B")[:frames * g.frame_bytes]
            now = time.monotonic()
            if self.capture:
                start = m.appl
                self.stream.read_at(start, view)
                # The backend may have lapped what was just copied (the client
                # fell a buffer behind since its last pointer).  An error here
                # would be fatal to mmap clients (JACK: avail_update fails with
                # the state still RUNNING); the next pointer says xrun instead,
                # as the kernel finds an xrun at its next hw_ptr update.
                if m.running and m.lapped(self._sync(time.monotonic()), start):
                    m.xrun()
                m.appl += frames  # ioplug moves appl_ptr by what we return
                self._rearm(now)
                return frames
            st = self.stream
            if self.fast.ready_at > st.ready_at:  # C said POLLOUT
                st.note_ready(self.fast.ready_at)
            if m.appl > st.appl:
                # snd_pcm_forward skipped frames: the backend plays silence there.
                st.write_at(st.appl, silence(g.fmt, (m.appl - st.appl) * g.frame_bytes),
                            now)
            st.write_at(m.appl, view, now)
            m.appl += frames
            self._sync(now)
            self._rearm(now)
            return frames

    # -- position ------------------------------------------------------------
    def _sync(self, now: float, full: bool = False) -> float:
        """Take answers and events (``full``: also notifications and xenstore
        watches, a system call) and feed the model.  Raises what the stream
        found wrong.  Returns the time just after the events were taken: a
        report read here may have been sent after ``now``."""
        st = self.stream
        if full:
            self.card.process(0)
        else:
            st.poll(now)
        now = time.monotonic()
        st.check()
        if self.model is not None:
            data_end = st.confirmed if self.capture else st.acked
            for reported, seen in st.take_reports():
                self.model.observe(reported, seen, data_end, now)
            self.model.observe(st.reported, st.pos_seen_at, data_end, now)
        return now

    def _check(self, now: float) -> None:
        m = self._model()
        m.position(now)
        overrun = self.capture and self.stream.overruns > 0
        try:
            self._check_model(m, now, overrun)
        except BackendTimeout:
            self.stream.stalled()
            raise

    def _check_model(self, m: PcmModel, now: float, overrun: bool) -> None:
        if overrun and m.riding:
            self.stream.forgive_overruns()  # riding through: the kernel would too
            overrun = False
        m.check_running(now, overrun=overrun)

    def pointer(self, appl: int) -> int:
        r = native.pvplug_fast_pointer(self.fast, appl, time.monotonic())
        if r >= 0:
            return int(r)  # the C shim answers this itself; here for the harness
        with self.lock:
            if self.model is None:
                return 0
            m = self.model
            self._pull()
            m.set_appl(appl)
            if m.state == PcmState.XRUN:
                raise Xrun(f"{self.stream.name}: xrun")
            now = time.monotonic()
            try:
                now = self._sync(now)
                self._check(now)
            except PvSndError:
                if m.running:
                    m.xrun()  # ioplug puts the PCM in XRUN on a pointer error
                raise
            finally:
                self._publish(now)
            return m.hw % m.boundary

    def delay(self, appl: int) -> int:
        out = native_ffi.new("long *")
        if native.pvplug_fast_delay(self.fast, appl, time.monotonic(), out) == 0:
            return int(out[0])
        with self.lock:
            if self.model is None:
                return 0
            m = self.model
            self._pull()
            m.set_appl(appl)
            now = self._sync(time.monotonic())
            m.position(now)
            self._publish(now)
            return m.delay(now)

    def positions(self) -> tuple[int, int]:
        """(appl, hw) as the plugin knows them, absolute (for tests and tools:
        the C fast path may have moved them since Python last ran)."""
        with self._locked():
            m = self._model()
            return m.appl, m.hw

    # -- the C fast path -------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """A callback's critical section: what the C fast path handed out is
        taken in first, and the model published to it last."""
        with self.lock:
            self._pull()
            try:
                yield
            finally:
                self._publish(time.monotonic())

    def _pull(self) -> None:
        """What the C fast path did since we last looked: the pointer it
        handed out, the frames it copied, the WRITEs it sent."""
        f, m = self.fast, self.model
        if m is not None:
            if f.hw > m.hw:
                m.hw = f.hw
            if self._pub_wr_end is not None and f.wr_end != self._pub_wr_end:
                m.appl = f.wr_end
        self._adopt_outside()

    def _seen_outside(self, in_prod: int) -> float | None:
        """When C first saw the event page's in_prod at ``in_prod``."""
        f, i = self.fast, in_prod % len(self.fast.evt_seen_idx)
        native.pvplug_fast_claim(f)
        try:
            seen = f.evt_seen_idx[i] == in_prod and f.evt_seen_at[i] > 0
            at = float(f.evt_seen_at[i])
            f.evt_seen_at[i] = 0.0  # taken: never the time of a later report
            return at if seen else None
        finally:
            native.pvplug_fast_unclaim(f)

    def _adopt_outside(self) -> None:
        """Give the stream what C copied and sent since we published, and
        take C's request ids and buffer back until we publish again.  The
        stream calls this before it touches the ring, from whichever
        thread holds the card's lock; `claim` keeps C out meanwhile."""
        if not self._outside_on:
            return
        f, st = self.fast, self.stream
        native.pvplug_fast_claim(f)
        try:
            self._outside_on = False
            if f.buf != native_ffi.NULL:
                st.adopt_written(f.wr_end, f.dirty_from if f.dirty_from >= 0 else None,
                                 f.wrote_at)
            if (f.n_sent or f.n_ans) and st.ring is not None:
                st.adopt_outside([(f.ids[i], f.sent_start[i], f.sent_end[i])
                                  for i in range(f.n_sent)], f.req_prod, f.sent_at,
                                 bool(f.notify_lost), [f.ans_ids[i] for i in range(f.n_ans)],
                                 f.rsp_cons)
            f.buf = f.ring = f.evt = native_ffi.NULL
            f.n_ids = f.n_sent = f.n_ans = f.notify_lost = 0
        finally:
            native.pvplug_fast_unclaim(f)

    def _publish(self, now: float) -> None:
        """Give the C fast path the model's line and bounds (pvplug_fast.h):
        it answers from them until a bound, an xrun or ``valid_until``."""
        f, m, st = self.fast, self.model, self.stream
        native.pvplug_fast_begin(f)
        try:
            f.hw = 0 if m is None else m.hw
            self._pub_wr_end = None
            f.buf = f.ring = f.evt = native_ffi.NULL
            f.peer = native_ffi.NULL
            f.n_ids = f.n_sent = f.n_wr = f.n_ans = 0  # (adopted first: _pull)
            if m is None or m.state != PcmState.RUNNING or not m.clock.running or m.dry:
                f.enabled = 0
                return
            f.capture = int(self.capture)
            f.buffer, f.boundary, f.avail_min = m.buffer, m.boundary, m.avail_min
            f.stop_threshold = min(m.stop_threshold, m.boundary)
            f.appl = m.appl
            if self.capture:
                f.lo = f.hi = max(m.hw, m.data_end)
            else:
                clock = m.clock
                f.lo = max(m.hw, min(clock.reported, m.data_end))
                f.hi = min(m.data_end, clock.reported + clock.slack)
                f.slope, f.intercept = clock.slope, clock.intercept
                f.reported, f.slack, f.data_end = clock.reported, clock.slack, m.data_end
                writes = st.writes_in_flight()[:len(f.wr_ids)]
                for i, (rid, end) in enumerate(writes):
                    f.wr_ids[i], f.wr_ends[i] = rid, end
                f.n_wr = len(writes)
                f.rsp_cons = st.ring.rsp_cons if st.ring is not None else 0
            until = now + FAST_PATH_SECONDS
            write_due = st.write_due()
            # Valid until the next look, or until unannounced frames are due
            # (unless C may send them itself).
            flush_due = st.flush_due(now)
            f.valid_until = until if flush_due is None else min(until, flush_due)
            if not self.capture and st.buffer is not None and st.appl == m.appl:
                if self._buf_ref is None or self._buf_ref[0] is not st.buffer:
                    self._buf_ref = (st.buffer, native_ffi.from_buffer(st.buffer.buf))
                f.buf = native_ffi.cast("char *", self._buf_ref[1])
                f.frame_bytes = st.frame_bytes
                f.wr_end = self._pub_wr_end = st.appl
                f.dirty_from = -1 if st.dirty_from is None else st.dirty_from
                f.flush_frames = st.period_frames
                # C may dirty the buffer itself: it needs the deadline now.
                f.flush_at, f.write_grace = write_due, WRITE_GRACE
                f.ready_at, f.wrote_at = st.ready_at, st.last_write
                f.period, f.wake_min, f.wake_max = m.period, MIN_WAKE, m.timeout
                if self._publish_sender():
                    f.valid_until = until
                self._outside_on = True
            if st.evt_pages is not None:
                if self._evt_ref is None or self._evt_ref[0] is not st.evt_pages:
                    self._evt_ref = (st.evt_pages, native_ffi.from_buffer(st.evt_pages.buf))
                f.evt = native_ffi.cast("char *", self._evt_ref[1])
                self._outside_on = True  # an adoption takes the page back
            f.enabled = 1
        finally:
            native.pvplug_fast_end(f)

    def _publish_sender(self) -> bool:
        """Let C send the WRITEs it copies for (pvplug_fast.h), where the
        stream gives it request ids and the channel lets C notify."""
        f, st, evtchn = self.fast, self.stream, self.card.evtchn
        if st.ring is None or st.ring_pages is None:
            return False
        # The ring, for its answers (pvplug_fast_seen_bounds), even where C may not send.
        if self._ring_ref is None or self._ring_ref[0] is not st.ring_pages:
            self._ring_ref = (st.ring_pages, native_ffi.from_buffer(st.ring_pages.buf))
        f.ring = native_ffi.cast("char *", self._ring_ref[1])
        f.req_prod = st.ring.req_prod_pvt  # (C takes answers only to what was asked)
        ids = st.outside_ids()[:len(f.ids)]
        notify = evtchn.native_notify(st.req_port) if ids and evtchn is not None else None
        if notify is None:
            return False
        for i, rid in enumerate(ids):
            f.ids[i] = rid
        f.n_ids, f.n_sent, f.notify_lost = len(ids), 0, 0
        f.half_period = st.period_frames / st.rate / 2
        f.low_base, f.rate = st.runs_low_base(), st.rate
        f.epoch_word, f.epoch, f.peer, f.peer_fd, self._notify_ref = notify
        return True

    # -- poll ------------------------------------------------------------------
    def poll_revents(self, appl: int, fired: bool = True) -> int:
        """``fired``: the event channel (not only our timer) woke the poller:
        its notifications are taken (a system call).  The timer alone reads
        the rings, and looks at xenstore (the backend gone?) now and then."""
        with self._locked():
            if self.model is None:
                return alsa.POLLERR
            m = self.model
            m.set_appl(appl)
            try:
                now = time.monotonic()
                full = fired or now >= self._next_full
                if full:
                    self._next_full = now + FULL_SYNC_INTERVAL
                now = self._sync(now, full=full)
                self._check(now)
            except PvSndError:
                if m.state == PcmState.RUNNING:
                    m.xrun()  # the shim's POLLERR puts a running PCM in XRUN
                self._arm(1.0)  # stay readable: the poller is to look at us
                raise  # the caller's POLLERR, with the reason
            if m.state == PcmState.XRUN:
                return alsa.POLLERR
            ready = m.ready(self.stream.drained)
            if ready:
                # Woken sooner than our timer said: reports lead the clock
                # (an unpaced backend); woken by it: the clock leads.
                self._reports_lead = not by_timer_now(self._armed, now)
            self.stream.set_event_wakes(self._event_wakes_needed(now))
            if ready:
                if not by_timer_now(self._armed, now):
                    self._arm(1.0)  # a past time: level-ready (an expired timer is)
                if self.capture:
                    return alsa.POLLIN
                self.stream.note_ready(now)
                return alsa.POLLOUT
            self._rearm(now)
            return 0

    def _event_wakes_needed(self, now: float) -> bool:
        """Whether CUR_POS notifications should wake the poller.  Not while
        the clock predicts readiness (the timer wakes it then, and the
        reports, late by nature, would wake it again for nothing); yes for
        capture (data comes with reports), drains, a stopped clock, reports
        leading the clock, and a pointer held back by the backend."""
        m = self.model
        if m is None or self.capture or self._reports_lead or not m.running \
                or m.state == PcmState.DRAINING or not m.clock.running:
            return True
        clock = m.clock
        if clock.reported > clock.slope * now + clock.intercept + m.period / 2:
            return True  # the reports run ahead of the line (an unpaced backend)
        return m.hw >= min(m.data_end, m.reported + clock.slack)

    @property
    def _armed(self) -> float:
        """When the timer was last armed for (by us, or by C's transfer)."""
        return float(self.fast.armed)

    def _arm(self, when: float) -> None:
        self.fast.armed = when
        native.pvplug_timer_arm(self.timer_fd, when)

    def _rearm(self, now: float) -> None:
        """Arm the timer for when the stream will be ready (or now)."""
        m = self.model
        if m is None:
            return
        if m.ready(self.stream.drained):
            if not by_timer_now(self._armed, now):
                self._arm(1.0)
            return
        when = m.next_wake(now)
        if when is None and m.running:
            # Nothing to predict (the backend ran dry, or has not reported):
            # still look now and then, or a backend that died goes unnoticed.
            when = now + FULL_SYNC_INTERVAL
        due = self.stream.flush_due(now)
        if due is not None and m.running:
            when = due if when is None else min(when, max(due, now + 0.0005))
        when = 0.0 if when is None else when
        if abs(when - self._armed) > REARM_TOLERANCE or (when == 0.0) != (self._armed == 0.0):
            self._arm(when)
