"""A PCM's position as its application sees it: pointer, avail, delay, xruns,
readiness and when to wake, from the backend's reports.

Rule 1: pure.  Inputs are the application pointer, the stream's counters
(what the backend reported, what it holds or what is confirmed in the
buffer) and ``now``; outputs are numbers and typed errors.  Nothing here
waits or reads a clock.

Rule 2: the hardware pointer is the ownership boundary.  Playback: the
backend's position, interpolated between reports (``PositionClock``) and
never past the end of the latest answered WRITE (the backend holds its own
copy up to there, so the frames behind the pointer may be overwritten).
Capture: the end of the answered READs (only then is the data in the
buffer for every backend).  Free-running (modulo the boundary for ALSA), 0
after prepare, monotonic.

Rule 3: xruns follow the kernel's rule: ``avail >= stop_threshold`` while
running; with ``stop_threshold >= boundary`` (PulseAudio, PipeWire) the
stream keeps running and the pointer passes the application, for capture
as for playback.

Rule 4: every number handed out is bounded where it is computed: reports
are judged (``check_report``), and delay is clamped to the boundary.
"""

from __future__ import annotations

import enum
import math

from ..errors import BackendTimeout, LocalProtocolError, RemoteProtocolError, Xrun
from .pointer import PositionClock

#: a report may claim this much more than real time allows: clock skew, and
#: a start the backend saw before we learnt of it (seconds)
TIME_SLACK = 0.02
TIME_SLACK_SECONDS = 0.5
#: how late, past a predicted report, a waiter looks again (seconds)
REPORT_GRACE = 0.002
#: the shortest timer we arm: a poller never spins
MIN_WAKE = 0.0005
#: an interpolated position may run this far past the last report (seconds),
#: on top of one period: reports are late by our polling, not only theirs
SLACK_SECONDS = 0.005


def check_report(frames: int, *, capture: bool, data_end: int, buffer: int, period: int,
                 rate: int, running_s: float, position: int) -> None:
    """Judge a reported position (frames since OPEN).

    A playback report past the data written means "played all of it" (snd_be
    reports past the end at a drain or a host underrun): the caller clamps
    it.  Capture may run ahead of the READs by buffers (an overrun).  What
    no backend can have done is an error: more than real time allows since
    START *and* more than two buffers past the data.

    Raises
    ------
    RemoteProtocolError
        An impossible position (EIO).
    """
    by_time = rate * (running_s * (1 + TIME_SLACK) + TIME_SLACK_SECONDS) + 2 * period
    by_data = data_end + 2 * buffer
    if frames > max(by_time, by_data):
        raise RemoteProtocolError(
            f"CUR_POS {position} claims {frames} frames "
            f"{'captured' if capture else 'played'}: more than real time allows "
            f"({by_time:.0f} in {running_s:.3f} s at {rate} Hz) and more than two buffers "
            f"past the {'READs' if capture else 'data written'} ({data_end})")


class PcmState(enum.Enum):
    OPEN = "open"          # no hw_params yet
    SETUP = "setup"        # hw_params done, or stopped
    PREPARED = "prepared"
    RUNNING = "running"
    PAUSED = "paused"
    DRAINING = "draining"
    XRUN = "xrun"


class PcmModel:
    """Position bookkeeping of one PCM between hw_params and hw_free.

    Parameters
    ----------
    capture : direction
    rate, period, buffer : the geometry (frames)
    timeout : seconds without a report while data is pending before the
        backend counts as stalled
    """

    def __init__(self, capture: bool, rate: int, period: int, buffer: int,
                 timeout: float) -> None:
        self.capture = capture
        self.rate, self.period, self.buffer = rate, period, buffer
        self.timeout = timeout
        slack = min(buffer, period + math.ceil(rate * SLACK_SECONDS))
        self.clock = PositionClock(rate, slack)
        self.state = PcmState.SETUP
        self.avail_min = 1
        self.start_threshold = 1
        self.stop_threshold = buffer
        self.boundary = 1 << 62
        self.prepare()
        self.state = PcmState.SETUP

    def sw_params(self, avail_min: int, start_threshold: int, stop_threshold: int,
                  boundary: int) -> None:
        self.avail_min = max(1, avail_min)
        self.start_threshold = start_threshold
        self.stop_threshold = stop_threshold
        self.boundary = boundary or self.boundary

    # -- counters --------------------------------------------------------------
    def prepare(self) -> None:
        self.appl = 0       # absolute frames (ALSA's appl_ptr, unwrapped)
        self.hw = 0         # absolute frames, the last pointer handed out
        self.reported = 0   # the backend's latest report, frames
        self.data_end = 0   # playback: acked (the backend holds up to there); capture: confirmed
        self.dry = False    # playback: the backend ran out (stop_threshold >= boundary)
        self._last_progress: float | None = None
        self.clock.reset()
        self.state = PcmState.PREPARED

    def set_appl(self, appl_mod: int) -> None:
        """Follow ALSA's appl_ptr (modulo boundary), forwards or back (rewind)."""
        delta = (appl_mod - self.appl) % self.boundary
        if delta > self.boundary // 2:
            delta -= self.boundary
        self.appl += delta

    # -- state -----------------------------------------------------------------
    def start(self, now: float) -> None:
        self.clock.restart(self.hw, now)
        self._last_progress = now
        self.state = PcmState.RUNNING

    def stop(self, now: float) -> None:
        self.clock.freeze(now)
        if self.state != PcmState.OPEN:
            self.state = PcmState.SETUP

    def pause(self, now: float) -> None:
        self.clock.freeze(now)
        self.state = PcmState.PAUSED

    def resume(self, now: float) -> None:
        self.clock.restart(self.hw, now)
        self._last_progress = now
        self.state = PcmState.RUNNING

    def drain(self) -> None:
        self.state = PcmState.DRAINING

    def xrun(self) -> None:
        self.state = PcmState.XRUN

    @property
    def running(self) -> bool:
        return self.state in (PcmState.RUNNING, PcmState.DRAINING)

    @property
    def riding(self) -> bool:
        """stop_threshold >= boundary: no xrun stops the stream (the kernel's
        rule); capture overwrites the oldest frames, playback goes dry."""
        return self.stop_threshold >= self.boundary

    # -- what the stream says ----------------------------------------------------
    def observe(self, reported: int, seen_at: float | None, data_end: int, now: float) -> None:
        """The stream's counters: its latest report (taken off the event ring
        at ``seen_at``) and the end of what the backend holds (playback) or
        of what is confirmed in the buffer (capture)."""
        if not self.capture and data_end > self.data_end and self.dry and self.running:
            # Data after a dry spell: the backend restarts its clock when it comes.
            self.clock.restart(self.hw, now)
            self._last_progress = now
            self.dry = False
        self.data_end = data_end
        if reported != self.reported:
            self.reported = reported
            self._last_progress = now
            # Observed when it was taken off the event ring, not now: one
            # taken while a request waited would count as late.
            self.clock.observe(reported, now if seen_at is None else seen_at)

    # -- what ALSA asks ------------------------------------------------------------
    def position(self, now: float) -> int:
        """The pointer, absolute, monotonic (updates ``hw``)."""
        if self.running:
            if self.capture:
                pos = self.data_end
            else:
                pos = self.clock.estimate(now, limit=self.data_end)
                pos = min(pos, self.data_end) if pos > self.hw else pos
            if pos > self.hw:
                self.hw = pos
        return self.hw

    def avail(self) -> int:
        return self.hw - self.appl if self.capture else self.buffer - (self.appl - self.hw)

    def recorded(self, now: float) -> int:
        """Capture: how far the backend has recorded at ``now`` (its reports,
        carried on by the clock).  The pointer stops at what READs confirmed,
        but the backend records on: frames a buffer or more behind this are
        already overwritten in the shared buffer, confirmed or not."""
        pos = max(self.reported, self.data_end)
        if self.running and self.clock.running:
            pos = max(pos, self.clock.estimate(now))
        return pos

    def lapped(self, now: float, start: int) -> bool:
        """Capture: the frame at ``start`` has been overwritten by the next
        lap (a client that fell a buffer behind), unless the client rides
        through overruns (stop_threshold >= boundary), as on hardware."""
        return self.capture and not self.riding and self.recorded(now) - start >= self.buffer

    def check_running(self, now: float, overrun: bool = False) -> None:
        """Xrun and stall rules for a running stream (after ``position``).

        Raises
        ------
        Xrun
            avail >= stop_threshold (or an overrun the stream saw), unless
            stop_threshold >= boundary (EPIPE).
        BackendTimeout
            No report for the timeout while the backend should be moving.
        """
        if self.state != PcmState.RUNNING:
            return
        if self.lapped(now, self.appl):
            self.state = PcmState.XRUN
            raise Xrun(f"overrun (the backend recorded {self.recorded(now) - self.appl} frames "
                       f"past the application in a {self.buffer}-frame buffer)")
        if not self.riding and (self.avail() >= self.stop_threshold or overrun):
            self.state = PcmState.XRUN
            what = "overrun" if self.capture else "underrun"
            raise Xrun(f"{what} (avail {self.avail()} >= stop_threshold {self.stop_threshold}"
                       f"{', capture data overwritten' if overrun else ''})")
        if not self.capture and not self.dry and self.hw >= self.data_end:
            self.dry = True
            self.clock.freeze(now)
        waiting = self.capture or self.reported < self.data_end
        last = self._last_progress
        if waiting and last is not None and now - last > self.timeout + self.period / self.rate:
            self.state = PcmState.XRUN
            raise BackendTimeout("no position report", self.timeout)

    def delay(self, now: float) -> int:
        """Frames between the application and the sound: interpolated, and
        bounded by the boundary whatever the reports were."""
        pos = self.hw
        if self.running and self.clock.running:
            pos = max(pos, self.clock.estimate(now, limit=None if self.capture
                                               else self.data_end))
        d = pos - self.appl if self.capture else self.appl - pos
        return max(-self.boundary, min(self.boundary, d))

    def ready(self, drained: bool) -> bool:
        """Poll readiness: avail >= avail_min (never with avail 0), or the
        drain done (``drained``: the backend played everything)."""
        if self.state == PcmState.DRAINING:
            return drained
        if self.state not in (PcmState.PREPARED, PcmState.RUNNING):
            return False
        return self.avail() >= self.avail_min

    def next_wake(self, now: float) -> float | None:
        """When to look again (an emulated period interrupt), or None."""
        if not self.running or not self.clock.running:
            return None
        if self.state == PcmState.DRAINING:
            target = self.data_end
        elif self.capture:
            target = self.appl + self.avail_min
        else:
            target = self.appl - self.buffer + self.avail_min
        # Like a period interrupt: not before the next period boundary.
        target = max(target, (self.hw // self.period + 1) * self.period)
        if self.state == PcmState.DRAINING:
            target = min(target, self.data_end)
        due = self.clock.time_of(target)
        if due is None:
            return now + self.timeout
        if self.capture or self.state == PcmState.DRAINING:
            due += REPORT_GRACE  # these wait for a real report (and its READ)
        # Look again at least every timeout, so a stalled backend is noticed.
        return min(max(due, now + MIN_WAKE), now + self.timeout)

    def require_setup(self) -> None:
        if self.state == PcmState.OPEN:
            raise LocalProtocolError("not set up (hw_params first)")
