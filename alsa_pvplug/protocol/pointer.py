"""Where a stream is now, from positions reported once in a while.

Pure: times are arguments (seconds on one monotonic clock), nothing reads a
clock.  The backend reports its position (CUR_POS) about once per period;
ALSA wants a frame-accurate hardware pointer between reports.

Model: a running stream is at ``rate * (now - t0)`` frames.  Each report of
position ``p`` observed at ``t`` says ``t0 <= t - p / rate``: a report is
never observed early, only late (the backend woke late, we polled late).  So
``t0`` is the minimum of those bounds over a window of recent reports: late
observations cannot pull the line, the earliest ones define it, and the
window lets it follow a backend clock that drifts.  The estimate is clamped
to what is known: never behind the last report, never more than ``slack``
frames beyond it (the backend may have stalled), never beyond ``limit`` (a
playback backend cannot play what it was not given).
"""

from __future__ import annotations

import math
from collections import deque

# Reports; at one per 1024-frame period at 48 kHz about 11 s.  Long, so that the
# best (least late) bound stays in the window: each time one leaves, the line
# steps (bench/run.py: 64 gave p99 5 frames, 512 gives under 2).  The price: a
# backend clock drifting against ours by D ppm puts the line up to D * 11 us
# ahead, which the slack clamp bounds; under Xen both sides read Xen's time.
WINDOW = 512


class PositionClock:
    """Interpolated position of one stream, in frames since its origin."""

    def __init__(self, rate: int, slack: int) -> None:
        if rate <= 0 or slack < 0:
            raise ValueError(f"bad clock rate {rate} / slack {slack}")
        self.rate = rate
        self.slack = slack
        self.reported = 0          # the latest reported position
        self.running = False
        self._frozen = 0           # position while not running
        self._bounds: deque[float] = deque(maxlen=WINDOW)
        self._t0 = 0.0

    def restart(self, position: int, now: float) -> None:
        """(Re)start the clock at ``position``: START, RESUME, or new data
        after the backend ran dry (it restarts its clock when data comes)."""
        self.running = True
        self._bounds.clear()
        self._bounds.append(now - position / self.rate)
        self._t0 = self._bounds[0]
        self.reported = max(self.reported, position)

    def freeze(self, now: float) -> int:
        """Stop moving (PAUSE, STOP, dry); returns the position kept."""
        self._frozen = self.estimate(now)
        self.running = False
        return self._frozen

    def reset(self) -> None:
        """Back to the origin, stopped (prepare)."""
        self.running = False
        self.reported = self._frozen = 0
        self._bounds.clear()

    def observe(self, position: int, now: float) -> None:
        """A report: the backend was at ``position`` at or before ``now``."""
        self.reported = max(self.reported, position)
        if not self.running:
            self._frozen = max(self._frozen, position)
            return
        bound = now - position / self.rate
        self._bounds.append(bound)
        self._t0 = min(self._bounds)

    def estimate(self, now: float, limit: int | None = None) -> int:
        """The position at ``now``, clamped (see the module doc)."""
        if not self.running:
            pos = max(self._frozen, self.reported)
        else:
            line = math.floor((now - self._t0) * self.rate)
            pos = max(self.reported, min(line, self.reported + self.slack))
        return pos if limit is None else min(pos, max(limit, self.reported))

    def time_of(self, position: int) -> float | None:
        """When the running clock reaches ``position`` (None when stopped)."""
        if not self.running:
            return None
        return self._t0 + position / self.rate
