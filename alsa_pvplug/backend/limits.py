"""Per-stream bounds a dom0 admin sets, so one guest cannot starve the others.

Rule: pure arithmetic on times the caller passes in; nothing here reads a
clock or touches a ring.  ``TokenBucket`` is the classic one: ``rate``
tokens a second, at most ``burst`` saved up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    __slots__ = ("rate", "burst", "tokens", "_t")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"bad token bucket: rate {rate}, burst {burst}")
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._t = now

    def _refill(self, now: float) -> None:
        if now > self._t:
            self.tokens = min(self.burst, self.tokens + (now - self._t) * self.rate)
            self._t = now

    def available(self, now: float) -> int:
        """Whole tokens that could be taken at ``now``."""
        self._refill(now)
        return int(self.tokens)

    def take(self, now: float, n: int = 1) -> bool:
        """Take ``n`` tokens if there are that many."""
        self._refill(now)
        if self.tokens < n:
            return False
        self.tokens -= n
        return True

    def when(self, now: float, n: int = 1) -> float:
        """The earliest time ``n`` tokens are available (``now`` if they are)."""
        self._refill(now)
        missing = n - self.tokens
        return now if missing <= 0 else now + missing / self.rate


#: a rate no guest reaches: "no bound" (finite, so the arithmetic stays plain)
UNBOUNDED_RATE = 1e9


@dataclass(frozen=True)
class StreamLimits:
    """What one stream of one guest may cost this backend.

    ``min_period_us``: OPEN with a shorter period is refused (-EINVAL), and
    HW_PARAM_QUERY says so; it also bounds the CUR_POS rate.
    ``max_request_rate``: requests a second; beyond it requests are answered
    -EBUSY (at most a quarter of that rate again), and beyond that the ring
    waits (the guest sees slow answers).  Notifications on a port beyond it
    are latched until the next token (the port stays masked).
    ``max_event_rate``: CUR_POS events a second; reports due sooner are
    merged into the next one (positions are cumulative, nothing is lost).
    """

    min_period_us: int = 1000
    max_request_rate: float = 1000.0
    max_event_rate: float = 1000.0

    def min_period_frames(self, rate: int) -> int:
        return max(1, math.ceil(self.min_period_us * rate / 1_000_000))

    def request_bucket(self, now: float) -> TokenBucket:
        return TokenBucket(self.max_request_rate, max(64.0, self.max_request_rate / 16), now)

    def refusal_bucket(self, now: float) -> TokenBucket:
        rate = max(1.0, self.max_request_rate / 4)
        return TokenBucket(rate, max(32.0, rate / 16), now)

    def notify_bucket(self, now: float) -> TokenBucket:
        return self.request_bucket(now)
