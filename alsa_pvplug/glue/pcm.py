"""One ALSA PCM over one vsnd stream: the ioplug callbacks as plain methods.

``embed.py`` calls these from the C shim; ``harness.py`` calls them the way
ioplug does, without ALSA.  Every method takes ALSA's ``appl_ptr`` (modulo
the boundary) where it matters, returns ints, and raises ``PvSndError``
subclasses that the caller maps to negative errno.

What the numbers mean (ioplug with BOUNDARY_WA):

* ``pointer``: playback, the frames the backend has played, interpolated on
  the clock between its CUR_POS reports (``protocol.pointer``) and never
  beyond what we gave it; capture, the frames it has reported captured (the
  data is in the ring only then).  Free-running modulo ``boundary``, 0 after
  prepare, monotonic in every state.
* xruns are ours to find (ioplug never does): ``avail >= stop_threshold``
  while running gives -EPIPE, unless ``stop_threshold >= boundary``.
* ``delay``: playback, what we gave minus the interpolated position; capture,
  the interpolated position minus what the application read.
* readiness: a timerfd armed for the moment ``avail >= avail_min`` at the
  next period boundary (an emulated period interrupt), plus the event
  channel, so a real CUR_POS wakes the poller too.
"""

from __future__ import annotations

import enum
import errno
import logging
import math
import select
import time
from dataclasses import dataclass
from typing import Any

from .. import cardpool
from .._native import lib as native
from ..errors import BackendError, BackendTimeout, LocalProtocolError, PvSndError, Xrun
from ..protocol.config import PluginOptions
from ..protocol.pointer import PositionClock
from ..protocol.sndif import HwParams, PcmFormat, format_mask, formats_from_mask, sample_bytes
from ..protocol.stream import StreamState
from . import alsa

logger = logging.getLogger(__name__)

#: how long past a predicted report we wait before looking again (seconds)
REPORT_GRACE = 0.002
#: the shortest timer we arm: a poller never spins
MIN_WAKE = 0.0005
#: an interpolated position may run this far past the last report (seconds),
#: on top of one period: reports are late by our polling, not only theirs
SLACK_SECONDS = 0.005
#: pointer() (called in tight loops) reads the rings directly and does the
#: full processing (event channel, xenstore) at most this often (seconds)
FULL_SYNC_INTERVAL = 0.01
#: PERIODS_MAX keeps speaker-test's "largest buffer" sane together with the
#: card's buffer size
PERIODS_MAX = 1024


class PcmState(enum.Enum):
    OPEN = "open"          # no hw_params yet
    SETUP = "setup"        # hw_params done, or stopped
    PREPARED = "prepared"
    RUNNING = "running"
    PAUSED = "paused"
    DRAINING = "draining"
    XRUN = "xrun"


@dataclass
class HwConstraints:
    """What ``snd_pcm_ioplug_set_param_*`` gets (bytes, like ioplug)."""

    formats: list[int]        # ALSA format values
    rates: list[int]
    channels: tuple[int, int]
    period_bytes: tuple[int, int]
    buffer_bytes: tuple[int, int]
    periods: tuple[int, int]


@dataclass
class Geometry:
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
        self.state = PcmState.OPEN
        self.geometry: Geometry | None = None
        self.access = alsa.ACCESS_RW_INTERLEAVED
        self.avail_min = 1
        self.start_threshold = 1
        self.stop_threshold = 0
        self.boundary = 1 << 62
        self.clock: PositionClock | None = None
        self._reset_counters()
        self._closed = False
        self._last_full = 0.0

    def _reset_counters(self) -> None:
        self.appl = 0      # absolute frames (ALSA's appl_ptr, unwrapped)
        self.hw = 0        # absolute frames, the last pointer we returned
        self.written = 0   # playback: end of what the backend holds
        self.dry = False   # playback: the backend ran out (stop_threshold >= boundary)
        self._reported = 0
        self._last_progress = time.monotonic()
        if self.clock is not None:
            self.clock.reset()

    # -- what ALSA may ask for ---------------------------------------------
    def _constraints(self) -> HwConstraints:
        cfg = self.stream.config
        formats = list(cfg.formats)
        rates = list(cfg.rates)
        ch = (cfg.channels_min, cfg.channels_max)
        period_frames_min = 1
        try:
            big = 1 << 31
            q = self.stream.query_hw_params(HwParams(
                format_mask(formats), (cfg.rate_min, cfg.rate_max), ch, (1, big), (1, big)))
            allowed = set(formats_from_mask(q.formats))
            formats = [f for f in formats if f in allowed] or formats
            rates = [r for r in rates if q.rates[0] <= r <= q.rates[1]] or rates
            ch = (max(ch[0], q.channels[0]), min(ch[1], q.channels[1]))
            if ch[0] > ch[1]:
                ch = (cfg.channels_min, cfg.channels_max)
            period_frames_min = max(1, q.period[0])
        except BackendError as exc:
            # snd_be answers HW_PARAM_QUERY only for some hosts; xenstore rules.
            if isinstance(exc, BackendTimeout) or exc.status == -errno.ENODEV:
                raise
            logger.info("%s: HW_PARAM_QUERY refused (%s); using the xenstore config",
                        self.stream.name, exc)
        buffer_max = cfg.buffer_bytes_max
        # ioplug constrains periods in bytes, before the format is known: the
        # narrowest frame gives a bound no choice goes below; hw_params says
        # so clearly when a wider frame makes the period too short.
        self.period_frames_min = period_frames_min
        narrowest = min(sample_bytes(f) for f in formats) * ch[0]
        period_min = min(max(cfg.period_bytes_min, period_frames_min * narrowest),
                         buffer_max // 2)
        return HwConstraints(
            formats=[alsa.alsa_format(f) for f in formats],
            rates=rates,
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
        with self.lock:
            self.stream.open(pf, channels, rate, buffer, period)
            self.geometry = Geometry(pf, channels, rate, period, buffer,
                                     self.stream.frame_bytes)
            slack = min(buffer, period + math.ceil(rate * SLACK_SECONDS))
            self.clock = PositionClock(rate, slack)
            self.state = PcmState.SETUP
            self.stop_threshold = buffer
            self._reset_counters()

    def sw_params(self, avail_min: int, start_threshold: int, stop_threshold: int,
                  boundary: int) -> None:
        self.avail_min = max(1, avail_min)
        self.start_threshold = start_threshold
        self.stop_threshold = stop_threshold
        self.boundary = boundary or self.boundary

    def hw_free(self) -> None:
        with self.lock:
            self.stream.close()
            self.geometry = None
            self.state = PcmState.OPEN
            native.pvplug_timer_arm(self.timer_fd, 0.0)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with self.lock:
                self.stream.close()
        finally:
            if self.timer_fd >= 0:
                native.pvplug_close_fd(self.timer_fd)
                self.timer_fd = -1
            self.lease.release()

    # -- state callbacks -------------------------------------------------------
    def _geometry(self) -> Geometry:
        if self.geometry is None or self.clock is None:
            raise LocalProtocolError(f"{self.stream.name}: not set up (hw_params first)")
        return self.geometry

    def prepare(self) -> None:
        with self.lock:
            g = self._geometry()
            self.card.ensure_connected()
            if self.stream.state == StreamState.CLOSED:
                # The backend restarted and we reconnected: open again.
                self.stream.open(g.fmt, g.channels, g.rate, g.buffer, g.period)
            elif self.stream.state != StreamState.OPENED or self.written or self.hw:
                self.stream.stop()  # drops what is queued; positions back to 0
            self._reset_counters()
            self.state = PcmState.PREPARED
            self._rearm(time.monotonic())

    def start(self, appl: int) -> None:
        with self.lock:
            self._geometry()
            self._set_appl(appl)
            if self.state == PcmState.RUNNING:
                return  # tolerated, as pcm_a52 does
            self.stream.start()
            assert self.clock is not None
            now = time.monotonic()
            self.clock.restart(self.hw, now)
            self._last_progress = now
            self.state = PcmState.RUNNING
            self._rearm(now)

    def stop(self) -> None:
        with self.lock:
            if self.stream.state in (StreamState.RUNNING, StreamState.PAUSED):
                try:
                    self.stream.stop()
                finally:
                    self.written = 0
            if self.clock is not None:
                self.clock.freeze(time.monotonic())
            if self.state != PcmState.OPEN:
                self.state = PcmState.SETUP
            native.pvplug_timer_arm(self.timer_fd, 0.0)

    def pause(self, enable: bool) -> None:
        with self.lock:
            assert self.clock is not None
            now = time.monotonic()
            if enable:
                self.stream.pause()
                now = self._sync(now)
                self.clock.freeze(now)
                self.state = PcmState.PAUSED
                native.pvplug_timer_arm(self.timer_fd, 0.0)
            else:
                self.stream.resume()
                self.clock.restart(self.hw, now)
                self._last_progress = now
                self.state = PcmState.RUNNING
                self._rearm(now)

    def drain(self, appl: int, nonblock: bool | None = None) -> None:
        """Blocking: returns once the backend has played all we gave it.
        Nonblocking: -EAGAIN (LocalProtocolError EAGAIN) until then."""
        if self.capture:
            return
        nonblock = self.nonblock if nonblock is None else nonblock
        with self.lock:
            g = self._geometry()
            self._set_appl(appl)
            if self.state == PcmState.PREPARED and self.appl > 0:
                self.start(appl)
            if self.state not in (PcmState.RUNNING, PcmState.DRAINING):
                return
            self.state = PcmState.DRAINING
            deadline = time.monotonic() + self.card.timeout + \
                (self.written - self.hw) / g.rate
        while True:
            with self.lock:
                now = time.monotonic()
                now = self._sync(now)
                if self._reported >= self.written:
                    self.hw = self.written
                    return
                if nonblock:
                    self._rearm(now)
                    raise PvSndError("drain in progress", code=errno.EAGAIN)
                if now >= deadline:
                    raise BackendTimeout(f"{self.stream.name}: drain", self.card.timeout)
                fds = self.card.fileno_list()
                due = self.clock.time_of(self.written) if self.clock else None
            wait = 0.05 if due is None else min(0.05, max(MIN_WAKE, due - now + REPORT_GRACE))
            select.select(fds, [], [], wait)

    # -- the data path ---------------------------------------------------------
    def transfer(self, appl: int, data: Any, frames: int) -> int:
        """Playback: ``data`` holds ``frames`` frames for position ``appl``.
        Capture: fill ``data`` with the frames at ``appl``."""
        with self.lock:
            g = self._geometry()
            self._set_appl(appl)
            nbytes = frames * g.frame_bytes
            view = memoryview(data).cast("B")[:nbytes]
            now = time.monotonic()
            if self.capture:
                try:
                    self.stream.read_at(self.appl, view)
                except BackendError as exc:
                    if exc.errno != errno.EPIPE or self.access != alsa.ACCESS_MMAP_INTERLEAVED:
                        raise  # RW: readi returns -EPIPE, the client prepares
                    # MMAP: the backend overwrote these frames (overrun).  An
                    # error here fails snd_pcm_mmap_begin, which JACK treats
                    # as fatal; do what a kernel driver does: silence now,
                    # -EPIPE from the next pointer/poll.
                    view[:] = alsa.silence(g.fmt, nbytes)
                    self.state = PcmState.XRUN
                    logger.warning("%s: capture overrun: %s", self.stream.name, exc)
                self.appl += frames  # ioplug moves appl_ptr by what we return
                self._rearm(now)
                return frames
            if self.appl > self.written:
                # snd_pcm_forward skipped frames: the backend plays silence there.
                gap = (self.appl - self.written) * g.frame_bytes
                self.stream.write_at(self.written, alsa.silence(g.fmt, gap))
            self.stream.write_at(self.appl, view)
            self.written = self.appl = self.appl + frames
            if self.dry and self.state in (PcmState.RUNNING, PcmState.DRAINING):
                # The backend restarts its clock when data comes after a dry spell.
                assert self.clock is not None
                self.clock.restart(self.hw, now)
                self.dry = False
            self._last_progress = now
            self._rearm(now)
            return frames

    # -- position ------------------------------------------------------------
    def _set_appl(self, appl_mod: int) -> None:
        """Follow ALSA's appl_ptr (modulo boundary), forwards or back (rewind)."""
        delta = (appl_mod - self.appl) % self.boundary
        if delta > self.boundary // 2:
            delta -= self.boundary
        self.appl += delta

    def _sync(self, now: float, full: bool = True) -> float:
        """Take events and responses; feed new reports to the clock.
        Returns the time just after the events were taken: a report read
        here may have been sent after ``now``, so it is observed at that
        later time (an early time would put the clock ahead of the
        backend for a whole window), and the caller's position is for it."""
        if full or now - self._last_full >= FULL_SYNC_INTERVAL:
            self.card.process(0)  # notifications, xenstore watches, every ring
            self._last_full = now
        else:
            self.stream._poll_rings()  # shared memory only: no system call
        now = time.monotonic()
        if self.stream._error is not None:
            err, self.stream._error = self.stream._error, None
            raise err
        if self.card._lost is not None:
            raise PvSndError(f"{self.stream.name}: {self.card._lost}", code=errno.ENODEV)
        if self.clock is None:
            return now
        rep = self.stream.hw
        if rep != self._reported:
            self._reported = rep
            self._last_progress = now
            # Observed when it was taken off the event ring, not now: one
            # taken while a request waited (a WRITE) would count as late.
            seen = self.stream.pos_seen_at
            self.clock.observe(rep, now if seen is None else seen)
        return now

    def _position(self, now: float) -> int:
        """The pointer, absolute, without side effects beyond ``self.hw``."""
        assert self.clock is not None
        if self.state not in (PcmState.RUNNING, PcmState.DRAINING):
            return self.hw
        if self.capture:
            pos = self._reported
        else:
            pos = self.clock.estimate(now, limit=self.written)
        self.hw = max(self.hw, pos)
        return self.hw

    def _avail(self) -> int:
        g = self._geometry()
        return self.hw - self.appl if self.capture else g.buffer - (self.appl - self.hw)

    def _check_running(self, now: float) -> None:
        """Xrun and stall rules for a running stream (after ``_position``)."""
        if self.state != PcmState.RUNNING:
            return
        g = self._geometry()
        if self.stop_threshold < self.boundary and self._avail() >= self.stop_threshold:
            self.state = PcmState.XRUN
            raise Xrun(f"{self.stream.name}: {'overrun' if self.capture else 'underrun'} "
                       f"(avail {self._avail()} >= stop_threshold {self.stop_threshold})")
        if not self.capture and self.hw >= self.written and not self.dry:
            assert self.clock is not None
            self.dry = True
            self.clock.freeze(now)
        waiting = self.capture or self._reported < self.written
        if waiting and now - self._last_progress > self.card.timeout + g.period / g.rate:
            self.state = PcmState.XRUN
            raise BackendTimeout(f"{self.stream.name}: no position report", self.card.timeout)

    def pointer(self, appl: int) -> int:
        with self.lock:
            now = time.monotonic()
            self._set_appl(appl)
            if self.state == PcmState.XRUN:
                raise Xrun(f"{self.stream.name}: xrun")
            if self.geometry is None:
                return 0
            now = self._sync(now, full=False)
            self._position(now)
            self._check_running(now)
            return self.hw % self.boundary

    def delay(self, appl: int) -> int:
        with self.lock:
            now = time.monotonic()
            self._set_appl(appl)
            if self.geometry is None or self.clock is None:
                return 0
            now = self._sync(now)
            if self.state in (PcmState.RUNNING, PcmState.DRAINING) and self.clock.running:
                limit = None if self.capture else self.written
                pos = max(self.hw, self.clock.estimate(now, limit=limit))
            else:
                pos = self.hw
            return pos - self.appl if self.capture else self.appl - pos

    # -- poll ------------------------------------------------------------------
    def poll_revents(self, appl: int) -> int:
        with self.lock:
            now = time.monotonic()
            self._set_appl(appl)
            if self.geometry is None:
                return alsa.POLLERR
            try:
                now = self._sync(now)
                self._position(now)
                self._check_running(now)
            except PvSndError as exc:
                logger.warning("%s", exc)
                native.pvplug_timer_arm(self.timer_fd, 1.0)  # stay readable
                return alsa.POLLERR
            if self.state == PcmState.XRUN:
                return alsa.POLLERR
            if self._ready():
                native.pvplug_timer_arm(self.timer_fd, 1.0)  # a past time: level-ready
                return alsa.POLLIN if self.capture else alsa.POLLOUT
            self._rearm(now)
            return 0

    def _ready(self) -> bool:
        if self.state == PcmState.DRAINING:
            return self._reported >= self.written
        if self.state not in (PcmState.PREPARED, PcmState.RUNNING):
            return False
        return self._avail() >= self.avail_min

    def _rearm(self, now: float) -> None:
        """Arm the timer for when the stream will be ready (or now)."""
        if self._ready():
            native.pvplug_timer_arm(self.timer_fd, 1.0)
            return
        when = self._next_wake(now)
        native.pvplug_timer_arm(self.timer_fd, 0.0 if when is None else when)

    def _next_wake(self, now: float) -> float | None:
        g = self._geometry()
        assert self.clock is not None
        if self.state not in (PcmState.RUNNING, PcmState.DRAINING) or not self.clock.running:
            return None
        if self.state == PcmState.DRAINING:
            target = self.written
        elif self.capture:
            target = self.appl + self.avail_min
        else:
            target = self.appl - g.buffer + self.avail_min
        # Like a period interrupt: not before the next period boundary.
        target = max(target, (self.hw // g.period + 1) * g.period)
        if self.state == PcmState.DRAINING:
            target = min(target, self.written)
        due = self.clock.time_of(target)
        if due is None:
            return now + self.card.timeout
        if self.capture or self.state == PcmState.DRAINING:
            due += REPORT_GRACE  # these wait for a real report
        # Look again at least every timeout, so a stalled backend is noticed.
        return min(max(due, now + MIN_WAKE), now + self.card.timeout)

