"""The backend's per-stream bounds as pure arithmetic (backend/limits.py)."""

from __future__ import annotations

import pytest

from alsa_pvplug.backend.limits import StreamLimits, TokenBucket


def test_bucket_starts_full_and_refills_at_its_rate() -> None:
    b = TokenBucket(rate=100, burst=10, now=0.0)
    assert b.available(0.0) == 10
    assert all(b.take(0.0) for _ in range(10))
    assert not b.take(0.0)
    assert b.when(0.0) == pytest.approx(0.01)
    assert b.available(0.005) == 0
    assert b.available(0.0101) == 1
    assert b.available(100.0) == 10  # never more than the burst


def test_bucket_take_many_and_time_going_backwards() -> None:
    b = TokenBucket(rate=10, burst=5, now=1.0)
    assert b.take(1.0, 5)
    assert not b.take(1.0, 1)
    assert b.available(0.5) == 0  # an earlier time refills nothing
    assert b.when(1.0, 3) == pytest.approx(1.3)


@pytest.mark.parametrize("rate,burst", [(0, 1), (-1, 1), (1, 0)])
def test_bucket_refuses_nonsense(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0.0)


def test_min_period_frames_rounds_up() -> None:
    lim = StreamLimits(min_period_us=500)
    assert lim.min_period_frames(48000) == 24
    assert lim.min_period_frames(44100) == 23   # 22.05 -> 23
    assert lim.min_period_frames(8000) == 4
    assert StreamLimits(min_period_us=1).min_period_frames(8000) == 1


def test_refusals_are_a_fraction_of_the_request_rate() -> None:
    lim = StreamLimits(max_request_rate=1000)
    assert lim.request_bucket(0.0).rate == 1000
    assert lim.refusal_bucket(0.0).rate == 250
