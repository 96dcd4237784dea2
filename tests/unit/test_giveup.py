"""The give-up rules (protocol/giveup.py): when prepare stops starting a
stream a backend keeps failing."""

from __future__ import annotations

import pytest

from alsa_pvplug.errors import BackendTimeout, RemoteProtocolError
from alsa_pvplug.protocol import giveup as G

PERIOD = 1024


def _prepare(g: G.GiveUp, *, after_xrun: bool = True, violations: int = 0) -> None:
    g.before_prepare(violations=violations, after_xrun=after_xrun, period=PERIOD, timeout=1.0)


def test_barren_xruns_end_in_an_error_after_the_limit() -> None:
    g = G.GiveUp("s")
    for _ in range(G.MAX_BARREN_XRUNS):
        g.progress(moved=PERIOD - 1, consumed=PERIOD - 1)
        _prepare(g)
    with pytest.raises(RemoteProtocolError, match="xruns in a row"):
        _prepare(g)


def test_a_run_that_delivered_a_period_breaks_the_row() -> None:
    g = G.GiveUp("s")
    for _ in range(G.MAX_BARREN_XRUNS):
        _prepare(g)
    g.progress(moved=PERIOD, consumed=PERIOD)
    _prepare(g)
    assert g.barren == 0
    for _ in range(G.MAX_BARREN_XRUNS):
        _prepare(g)  # a fresh row of barren runs is allowed again


def test_what_the_backend_moved_but_the_application_never_got_is_barren() -> None:
    # Capture: the backend confirms a period each run, the application reads
    # none of it before the overrun (fuzz defect 9).
    g = G.GiveUp("s")
    for _ in range(G.MAX_BARREN_XRUNS):
        g.progress(moved=PERIOD, consumed=0)
        _prepare(g)
    g.progress(moved=PERIOD, consumed=0)
    with pytest.raises(RemoteProtocolError):
        _prepare(g)


def test_a_stop_by_the_client_is_not_an_xrun() -> None:
    g = G.GiveUp("s")
    for _ in range(3 * G.MAX_BARREN_XRUNS):
        _prepare(g, after_xrun=False)
    assert g.barren == 0


def test_timeouts_without_movement_end_in_etimedout() -> None:
    g = G.GiveUp("s")
    for _ in range(G.MAX_TIMEOUTS):
        g.timed_out()
    with pytest.raises(BackendTimeout, match="stalled"):
        _prepare(g, after_xrun=False)


def test_movement_forgives_timeouts() -> None:
    g = G.GiveUp("s")
    g.timed_out()
    g.progress(moved=10, consumed=10)
    g.timed_out()
    _prepare(g, after_xrun=False)  # one timeout since it last moved
    assert g.timeouts == 1


def test_unanswered_data_requests_end_in_etimedout_though_the_stream_moves() -> None:
    # fuzz case 3002:662: a backend that plays and reports but drops every
    # WRITE answer; each timeout was an xrun, and aplay retried for ever.
    g = G.GiveUp("s")
    for _ in range(G.MAX_UNANSWERED_DATA):
        g.progress(moved=g.moved + 1024, consumed=g.consumed + 1024)
        g.data_unanswered()
        if g.unanswered_data < G.MAX_UNANSWERED_DATA:
            _prepare(g, after_xrun=True)
    with pytest.raises(BackendTimeout, match="unanswered"):
        _prepare(g, after_xrun=True)


def test_an_answered_data_request_breaks_the_row() -> None:
    g = G.GiveUp("s")
    g.data_unanswered()
    _prepare(g, after_xrun=True)
    g.data_answered()
    g.data_unanswered()
    _prepare(g, after_xrun=True)  # one in a row since the last answer


def test_violations_end_in_eio() -> None:
    g = G.GiveUp("s")
    _prepare(g, violations=G.MAX_VIOLATIONS - 1)
    with pytest.raises(RemoteProtocolError, match="breaking the protocol"):
        _prepare(g, violations=G.MAX_VIOLATIONS)
