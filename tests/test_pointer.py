"""protocol.pointer.PositionClock: the interpolated position between reports.
Pure: every time is an argument."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alsa_pvplug.protocol.pointer import WINDOW, PositionClock

RATE = 48000
MS = RATE // 1000  # frames per millisecond


def near(frames: int) -> object:
    """An interpolated position: exact up to float rounding of the times."""
    return pytest.approx(frames, abs=1)


def running(slack: int = 10 * MS, at: float = 100.0) -> PositionClock:
    c = PositionClock(RATE, slack)
    c.restart(0, at)
    return c


def test_bad_arguments() -> None:
    for rate, slack in ((0, 0), (-1, 0), (RATE, -1)):
        with pytest.raises(ValueError):
            PositionClock(rate, slack)


def test_runs_from_restart_on_the_rate() -> None:
    c = running()
    assert c.estimate(100.0) == 0
    c.observe(5 * MS, 100.005)  # on time: keeps the line
    assert c.estimate(100.010) == near(10 * MS)
    assert c.time_of(24 * MS) == pytest.approx(100.024)


def test_floor_never_rounds_up() -> None:
    c = running()
    assert c.estimate(100.0 + 0.9999 / RATE) == 0
    assert c.estimate(100.0 + 1.0001 / RATE) == 1


def test_late_observations_never_pull_the_line() -> None:
    c = running(slack=100 * MS)
    # Reports observed 3, 8 and 20 ms late: the line stays on the start.
    for pos, late in ((10 * MS, 0.003), (20 * MS, 0.008), (30 * MS, 0.020)):
        c.observe(pos, 100.0 + pos / RATE + late)
    assert c.estimate(100.050) == near(50 * MS)
    assert c.time_of(60 * MS) == pytest.approx(100.060)


def test_min_filter_takes_the_earliest_bound() -> None:
    # Started late (the START answer came 4 ms after the backend began):
    # an on-time report moves the line earlier, a later late one does not.
    c = running(slack=100 * MS, at=100.004)
    assert c.estimate(100.014) == near(10 * MS)
    c.observe(10 * MS, 100.010)  # says t0 <= 100.000
    assert c.estimate(100.014) == near(14 * MS)
    c.observe(20 * MS, 100.025)  # says t0 <= 100.005: looser, ignored
    assert c.estimate(100.030) == near(30 * MS)


def test_window_forgets_old_bounds_so_it_follows_drift() -> None:
    c = running(slack=100 * MS, at=100.0)
    # The backend runs 1 ms per report slower than we think: each bound is
    # later; the start bound leaves the window after WINDOW reports.
    t = 100.0
    for i in range(1, WINDOW + 2):
        t += 0.011
        c.observe(i * 10 * MS, t)
    # t0 is now the oldest bound in the window, no longer the start (100.0).
    assert c.time_of(0) > 100.0
    oldest = 100.0 + 2 * 0.011 - 2 * 10 * MS / RATE
    assert c.time_of(0) == pytest.approx(oldest)


def test_never_behind_the_last_report() -> None:
    c = running(slack=5 * MS)
    c.observe(50 * MS, 100.010)  # the backend is further than our line says
    assert c.estimate(100.010) >= 50 * MS
    assert c.reported == 50 * MS
    c.observe(40 * MS, 100.011)  # an older report cannot move it back
    assert c.reported == 50 * MS and c.estimate(100.011) >= 50 * MS


def test_slack_clamps_a_stalled_backend() -> None:
    c = running(slack=7 * MS)
    c.observe(10 * MS, 100.010)
    # No report for a second: at most slack beyond the last one.
    assert c.estimate(101.0) == 17 * MS
    assert running(slack=0).estimate(101.0) == 0


def test_limit_clamps_to_what_was_given() -> None:
    c = running(slack=100 * MS)
    assert c.estimate(100.050, limit=30 * MS) == 30 * MS
    assert c.estimate(100.020, limit=30 * MS) == near(20 * MS)
    c.observe(40 * MS, 100.040)
    # A report beyond the limit wins: the backend said so.
    assert c.estimate(100.050, limit=30 * MS) == 40 * MS


def test_freeze_holds_and_restart_continues() -> None:
    c = running(slack=100 * MS)
    kept = c.freeze(100.020)
    assert kept == near(20 * MS) and not c.running
    assert c.estimate(105.0) == kept and c.time_of(kept) is None
    c.observe(22 * MS, 100.021)  # the backend's last word before it stopped
    assert c.estimate(106.0) == 22 * MS
    c.restart(22 * MS, 200.0)
    assert c.running and c.estimate(200.010) == near(32 * MS)
    assert c.time_of(42 * MS) == pytest.approx(200.020)


def test_reset_goes_back_to_the_origin() -> None:
    c = running()
    c.observe(10 * MS, 100.010)
    c.freeze(100.020)
    c.reset()
    assert not c.running and c.reported == 0 and c.estimate(500.0) == 0
    assert c.time_of(0) is None


@given(st.lists(st.tuples(st.integers(0, 20), st.floats(0, 0.02)), min_size=1,
                max_size=WINDOW - 1), st.integers(0, 2000))
def test_estimate_is_monotonic_and_bounded(steps: list[tuple[int, float]], slack: int) -> None:
    """Reports arriving late by any amount (while the exact start bound is in
    the window): the estimate never goes back, never runs ahead of the true
    clock, never passes the last report by more than slack nor falls behind it."""
    c = running(slack=slack, at=0.0)
    t, pos, last, now = 0.0, 0, 0, 0.0
    for periods, late in steps:
        t += periods * 0.005
        pos = max(pos, int(t * RATE))  # where the backend truly is
        now = max(now, t + late)  # our clock does not go back either
        c.observe(pos, now)
        est = c.estimate(now)
        assert est >= last and c.reported <= est <= c.reported + slack
        assert est <= int(now * RATE) + 1  # never ahead of the true clock
        last = est
