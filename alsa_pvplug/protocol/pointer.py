"""Where a stream is now, from positions reported once in a while.

Pure: times are arguments (seconds on one monotonic clock), nothing reads a
clock.  The backend reports its position (CUR_POS) about once per period;
ALSA wants a frame-accurate hardware pointer between reports, on a backend
whose clock (a sound card's crystal) runs a little off ours.

Model: a running stream is on a line ``p = rate * t + b``, ``rate`` near the
nominal one.  A report of position ``p`` observed at ``t`` is never early,
only late (the backend woke late, we polled late): the backend was at ``p``
at or before ``t``, so the true line passes on or above the point (t, p).
The tightest such line is a linear program -- the line above every point
with the least total distance to them -- whose optimum is the edge of the
points' upper convex hull above their mean time.  Late points cannot pull
it; the earliest ones define it, and its slope is the backend's rate (it
follows a drifting clock; a mere offset filter saw-tooths against one).  The
line itself leans a little slower than the fitted rate (``LEAN_SECONDS``).
Points are kept over a time window (``WINDOW_SECONDS``), thinned to one per
``WINDOW_SECONDS / MAX_POINTS``; until they span ``MIN_SPAN`` the nominal
rate is used with the tightest offset.

The estimate is clamped to what is known: never behind the last report,
never more than ``slack`` frames beyond it (the backend may have stalled),
never beyond ``limit`` (a playback backend cannot play what it was not
given).
"""

from __future__ import annotations

import math
from collections import deque

#: seconds of reports the fit looks at
WINDOW_SECONDS = 10.0
#: points kept at most (one per WINDOW_SECONDS / MAX_POINTS: the least late)
MAX_POINTS = 512
#: the span of points the rate is fitted from; before it, the nominal rate
MIN_SPAN = 1.0
#: fitted rates beyond this far from nominal are not believed (a card's
#: crystal is within a few hundred ppm; this is 0.2 %)
MAX_SKEW = 2e-3
#: seconds over which a new rate estimate is taken in (a low-pass filter)
RATE_SMOOTHING = 5.0
#: the line leans this many seconds' worth of frames slower than the fitted
#: rate over the points' span (at 1 s: 100 ppm; at 10 s: 10 ppm).  A rate
#: fitted over a short span is off by the spread of the least late reports
#: over the span (tens of ppm at 1-3 s on our VM), and a line steeper than
#: the backend is held by its oldest report and runs ahead of the backend
#: (2.8 frames at 2 s, bench/run.py --tap); one slower is held by the newest
#: reports and lags by a fraction of a frame between refits.
LEAN_SECONDS = 100e-6
#: new points between full rebuilds of the hull (amortised O(1) per report)
_REBUILD_EVERY = 64


def _upper_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Andrew's monotone chain, upper half, for points in increasing t."""
    hull: list[tuple[float, float]] = []
    for pt in points:
        _push(hull, pt)
    return hull


def _push(hull: list[tuple[float, float]], c: tuple[float, float]) -> None:
    while len(hull) >= 2:
        (ox, oy), (ax, ay) = hull[-2], hull[-1]
        if (ax - ox) * (c[1] - oy) - (ay - oy) * (c[0] - ox) >= 0:
            hull.pop()  # a left turn or straight: (a) is under the chain
        else:
            break
    hull.append(c)


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
        self._pts: deque[tuple[float, float]] = deque()
        self._hull: list[tuple[float, float]] = []
        self._hull_sum_t = 0.0     # sum of t over the points the hull covers
        self._hull_n = 0
        self._since_rebuild = 0
        self._bucket = WINDOW_SECONDS / MAX_POINTS
        #: the line p = slope * t + intercept (slope: the rate leaned, LEAN_SECONDS)
        self.slope = float(rate)
        self.rate_estimate = float(rate)  # the backend's rate, fitted
        self.intercept = 0.0
        self._rate_t: float | None = None  # when the rate estimate was last taken in

    # -- state ---------------------------------------------------------------
    def restart(self, position: int, now: float) -> None:
        """(Re)start the clock at ``position``: START, RESUME, or new data
        after the backend ran dry (it restarts its clock when data comes)."""
        self.running = True
        self._pts.clear()
        self._hull = []
        self._hull_sum_t, self._hull_n, self._since_rebuild = 0.0, 0, 0
        self.reported = max(self.reported, position)
        self._add(now, float(position))

    def freeze(self, now: float) -> int:
        """Stop moving (PAUSE, STOP, dry); returns the position kept."""
        self._frozen = self.estimate(now)
        self.running = False
        return self._frozen

    def reset(self) -> None:
        """Back to the origin, stopped (prepare)."""
        self.running = False
        self.reported = self._frozen = 0
        self._pts.clear()
        self._hull = []

    def observe(self, position: int, now: float) -> None:
        """A report: the backend was at ``position`` at or before ``now``."""
        self.reported = max(self.reported, position)
        if not self.running:
            self._frozen = max(self._frozen, position)
            return
        self._add(now, float(position))

    # -- the fit ---------------------------------------------------------------
    def _add(self, t: float, p: float) -> None:
        pts = self._pts
        if pts and t - pts[-1][0] < self._bucket and len(pts) > 1:
            # Same bucket as the last point: keep the least late of the two.
            lt, lp = pts[-1]
            if p - self.rate * t <= lp - self.rate * lt:
                return
            pts.pop()  # (the hull keeps it until the next rebuild: still a true bound)
        pts.append((t, p))
        while pts and t - pts[0][0] > WINDOW_SECONDS:
            pts.popleft()
        self._since_rebuild += 1
        if self._since_rebuild >= _REBUILD_EVERY or not self._hull:
            self._hull = _upper_hull(list(pts))
            self._hull_sum_t = sum(x for x, _ in pts)
            self._hull_n = len(pts)
            self._since_rebuild = 0
        else:
            _push(self._hull, (t, p))
            self._hull_sum_t += t
            self._hull_n += 1
        self._fit()

    def _fit(self) -> None:
        hull = self._hull
        r = float(self.rate)
        now = hull[-1][0] if hull else 0.0
        if len(hull) >= 2 and hull[-1][0] - hull[0][0] >= MIN_SPAN:
            mean_t = self._hull_sum_t / self._hull_n
            lo, hi = 0, len(hull) - 1
            while hi - lo > 1:  # the edge above the mean time
                mid = (lo + hi) // 2
                if hull[mid][0] <= mean_t:
                    lo = mid
                else:
                    hi = mid
            (t0, p0), (t1, p1) = hull[lo], hull[hi]
            if t1 > t0 and abs((p1 - p0) / (t1 - t0) / r - 1) <= MAX_SKEW:
                # The LP's rate, low-passed: one edge of the hull gives way to
                # the next as points come and go, and a line that changed slope
                # with each would step.
                lp_rate = (p1 - p0) / (t1 - t0)
                span = hull[-1][0] - hull[0][0]
                if self._rate_t is None:
                    self.rate_estimate = lp_rate
                else:
                    # Faster while the points span little (a young estimate
                    # is worth less than the next one), RATE_SMOOTHING later.
                    tau = min(RATE_SMOOTHING, span / 2)
                    k = min(1.0, max(0.0, now - self._rate_t) / tau)
                    self.rate_estimate += (lp_rate - self.rate_estimate) * k
                self._rate_t = now
                self.slope = self.rate_estimate * (1 - LEAN_SECONDS / span)
        # (Too little to fit: the last rate found, the nominal one at first:
        # a card keeps its rate across a restart.)
        # The tightest line of that slope above every point: through the hull
        # vertex where the edges' slopes cross it (the max of p - slope * t).
        pts = hull or list(self._pts)
        lo, hi = 0, len(pts) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            (ta, pa), (tb, pb) = pts[mid], pts[mid + 1]
            if pb - pa >= self.slope * (tb - ta):
                lo = mid + 1
            else:
                hi = mid
        t, p = pts[lo]
        self.intercept = p - self.slope * t

    # -- reading -----------------------------------------------------------------
    def estimate(self, now: float, limit: int | None = None) -> int:
        """The position at ``now``, clamped (see the module doc)."""
        if not self.running:
            pos = max(self._frozen, self.reported)
        else:
            line = math.floor(self.slope * now + self.intercept)
            pos = max(self.reported, min(line, self.reported + self.slack))
        return pos if limit is None else min(pos, max(limit, self.reported))

    def time_of(self, position: int) -> float | None:
        """When the running clock reaches ``position`` (None when stopped)."""
        if not self.running:
            return None
        return (position - self.intercept) / self.slope

    @property
    def fitted_rate(self) -> float:
        return self.rate_estimate
