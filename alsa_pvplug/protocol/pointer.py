"""Where a stream is now, from positions reported once in a while.

Pure: times are arguments (seconds on one monotonic clock), nothing reads a
clock.  The backend reports its position (CUR_POS) about once per period;
ALSA wants a frame-accurate hardware pointer between reports, on a backend
whose clock (a sound card's crystal) runs a little off ours.

Model: a running stream is on a line ``p = rate * t + b``, ``rate`` near the
nominal one.  A report of position ``p`` observed at ``t`` is never early,
only late (the backend woke late, we polled late): the backend was at ``p``
at or before ``t``, so the true line passes on or above the point (t, p).

The line has two parts.  Its slope is the backend's rate, fitted by least
squares through the least late point of each ``BUCKET`` over a window
(``WINDOW_SECONDS``, a stall's points clipped: ``LATE_CLIP``), and leaned
slower by ``LEAN_SE`` standard errors of that fit: a line steeper than the
backend is held by its oldest point and runs ahead of it, one slower is
held by the newest and lags by a fraction of a frame.  Its intercept is the
tightest one for that slope: through the vertex of the points' upper convex
hull where the edges' slopes cross it.  Until the points span ``MIN_SPAN``
the slope is the last fitted one, or at first the nominal rate leaned by
``YOUNG_SKEW``, slower than any card's crystal: a young line at the nominal
rate ran 14 frames ahead of a 300 ppm slow backend by its first second.

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
#: one point per bucket (the least late of its reports): a least-squares fit
#: through them sees the edge of the lateness, not its spread
BUCKET = 0.05
#: the span of points (and their number) the rate is fitted from
MIN_SPAN = 0.5
MIN_POINTS = 5
#: fitted rates beyond this far from nominal are not believed (a card's
#: crystal is within a few hundred ppm; this is 0.2 %)
MAX_SKEW = 2e-3
#: before a fit the line runs this much slower than nominal: behind any
#: card within 500 ppm rather than ahead of the slow ones
YOUNG_SKEW = 500e-6
#: the line's slope is the fitted rate less this many standard errors of the
#: fit (on our VM about 100 ppm at 1 s, 10 at 5 s, 4 at 10 s)
LEAN_SE = 3.0
#: a point later than this behind the fitted line enters the fit this far
#: behind it (still a true bound): one stall of the client must not tilt it
LATE_CLIP = 300e-6
#: new points between full rebuilds of the hull and of the fit's sums
#: (amortised O(1) per report; a rebuild also moves the sums' origin)
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
        #: (t, p, p as the fit takes it): one per bucket, and the start
        self._pts: deque[tuple[float, float, float]] = deque()
        self._start_in = False     # _pts[0] is the start point (on the hull, not in the fit)
        self._t_start = 0.0
        self._last_bucket = -1
        self._hull: list[tuple[float, float]] = []
        self._since_rebuild = 0
        # The fit's sums, over the points but the start, in frames off the
        # nominal line from an origin near them (small numbers: exact sums).
        self._origin = (0.0, 0.0)
        self._n = 0
        self._sx = self._sq = self._sxx = self._sxq = self._sqq = 0.0
        #: the line p = slope * t + intercept (slope: the rate leaned, LEAN_SE)
        self.slope = rate * (1 - YOUNG_SKEW)
        self.rate_estimate = float(rate)  # the backend's rate, fitted
        self.intercept = 0.0
        #: a point (t, p) of the fit's line (at rate_estimate), or None: no fit since the start
        self._fitted: tuple[float, float] | None = None

    # -- state ---------------------------------------------------------------
    def restart(self, position: int, now: float) -> None:
        """(Re)start the clock at ``position``: START, RESUME, or new data
        after the backend ran dry (it restarts its clock when data comes).
        The start point bounds the line, but stays out of the rate fit: it
        is as late as the START answer, not as a report."""
        self.running = True
        self.reported = max(self.reported, position)
        self._pts.clear()
        self._pts.append((now, float(position), float(position)))
        self._start_in = True
        self._t_start, self._last_bucket = now, -1
        self._fitted = None
        self._rebuild()
        self._fit()

    def freeze(self, now: float) -> int:
        """Stop moving (PAUSE, STOP, dry); returns the position kept."""
        self._frozen = self.estimate(now)
        self.running = False
        return self._frozen

    def reset(self) -> None:
        """Back to the origin, stopped (prepare).  The fitted slope stays: a
        card keeps its rate."""
        self.running = False
        self.reported = self._frozen = 0
        self._pts.clear()
        self._hull = []
        self._start_in = False

    def observe(self, position: int, now: float) -> None:
        """A report: the backend was at ``position`` at or before ``now``."""
        self.reported = max(self.reported, position)
        if not self.running:
            self._frozen = max(self._frozen, position)
            return
        self._add(now, float(position))

    # -- the fit ---------------------------------------------------------------
    def _sum(self, t: float, p: float, sign: int) -> None:
        x = t - self._origin[0]
        q = p - self._origin[1] - self.rate * x
        self._n += sign
        self._sx += sign * x
        self._sq += sign * q
        self._sxx += sign * x * x
        self._sxq += sign * x * q
        self._sqq += sign * q * q

    def _rebuild(self) -> None:
        pts = self._pts
        self._hull = _upper_hull([(t, p) for t, p, _ in pts])
        self._origin = pts[0][:2]
        self._n = 0
        self._sx = self._sq = self._sxx = self._sxq = self._sqq = 0.0
        for i, (t, _, fp) in enumerate(pts):
            if i or not self._start_in:
                self._sum(t, fp, 1)
        self._since_rebuild = 0

    def _add(self, t: float, p: float) -> None:
        pts = self._pts
        t = max(t, pts[-1][0])  # (seen later is still a true bound; the hull wants order)
        bucket = math.floor((t - self._t_start) / BUCKET)
        if bucket == self._last_bucket and len(pts) > 1:
            # Same bucket as the last point: keep the least late of the two.
            lt, lp, lfp = pts[-1]
            if p - self.slope * t <= lp - self.slope * lt:
                return
            pts.pop()  # (the hull keeps it until the next rebuild: still a true bound)
            self._sum(lt, lfp, -1)
        self._last_bucket = bucket
        fp = p
        if self._fitted is not None:
            # (Not against the young line: a backend slower than it would be
            # clipped towards it and fitted at its rate.)
            ft, fpos = self._fitted
            fp = max(p, fpos + self.rate_estimate * (t - ft) - LATE_CLIP * self.rate)
        pts.append((t, p, fp))
        self._sum(t, fp, 1)
        while t - pts[0][0] > WINDOW_SECONDS:
            ot, _, ofp = pts.popleft()
            if self._start_in:
                self._start_in = False
            else:
                self._sum(ot, ofp, -1)
        self._since_rebuild += 1
        if self._since_rebuild >= _REBUILD_EVERY:
            self._rebuild()
        else:
            _push(self._hull, (t, p))
        self._fit()

    def _fit(self) -> None:
        r, n, pts = float(self.rate), self._n, self._pts
        if n >= MIN_POINTS and pts[-1][0] - pts[0][0] >= MIN_SPAN:
            sxx = self._sxx - self._sx * self._sx / n
            if sxx > 0:
                sxq = self._sxq - self._sx * self._sq / n
                d = sxq / sxx  # frames/s off the nominal rate
                if abs(d) <= MAX_SKEW * r:
                    var = max(0.0, self._sqq - self._sq * self._sq / n - sxq * d) / (n - 2)
                    self.rate_estimate = r + d
                    mx = self._sx / n
                    self._fitted = (self._origin[0] + mx, self._origin[1] + self._sq / n + r * mx)
                    self.slope = max(r * (1 - MAX_SKEW),
                                     self.rate_estimate - LEAN_SE * math.sqrt(var / sxx))
        # (Too little to fit: the last slope found, the young one at first:
        # a card keeps its rate across a restart.)
        # The tightest line of that slope above every point: through the hull
        # vertex where the edges' slopes cross it (the max of p - slope * t).
        hull = self._hull
        lo, hi = 0, len(hull) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            (ta, pa), (tb, pb) = hull[mid], hull[mid + 1]
            if pb - pa >= self.slope * (tb - ta):
                lo = mid + 1
            else:
                hi = mid
        t, p = hull[lo]
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
