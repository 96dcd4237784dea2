"""Tests for alsa_pvplug.protocol.xenbus (pure: no Xen).

The expected tables are written out cell by cell so that any change to the
state machine has to be made here too, deliberately.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from alsa_pvplug.errors import LocalProtocolError, RemoteProtocolError
from alsa_pvplug.protocol.xenbus import (
    BackendAction,
    FrontendAction,
    XenbusState,
    backend_on_frontend,
    backend_startup,
    frontend_on_backend,
    frontend_startup,
    parse_state,
)

S = XenbusState
ALL = list(XenbusState)


def _grid(text: str, codes: dict[str, object]) -> dict[tuple[XenbusState, XenbusState], object]:
    """Parse 'own-state: c0 c1 ... c8' rows into {(own, peer): expected}."""
    out = {}
    for line in text.strip().splitlines():
        own, cells = line.split(":")
        cells_l = cells.split()
        assert len(cells_l) == 9, line
        for peer, cell in zip(ALL, cells_l):
            out[(S[own.strip()], peer)] = codes[cell]
    assert len(out) == 81
    return out


ILLEGAL = object()

# ---------------------------------------------------------------------------
# parse_state
# ---------------------------------------------------------------------------


class TestParseState:
    def test_values(self) -> None:
        assert [int(s) for s in XenbusState] == list(range(9))
        assert S.INIT_WAIT.name == "INIT_WAIT" and S.RECONFIGURED == 8

    @pytest.mark.parametrize("n", range(9))
    def test_decimal(self, n: int) -> None:
        assert parse_state(str(n)) is XenbusState(n)
        assert parse_state(str(n).encode()) is XenbusState(n)

    def test_missing_is_unknown(self) -> None:
        assert parse_state(None) is S.UNKNOWN

    def test_tolerates_whitespace_and_leading_zero(self) -> None:
        assert parse_state(" 4\n") is S.CONNECTED
        assert parse_state("04") is S.CONNECTED

    @pytest.mark.parametrize("raw", ["", " ", "9", "42", "-1", "+4", "connected",
                                     "4x", "\u0664", "0x4", "4.0", b"\xff"])
    def test_garbage(self, raw: str | bytes) -> None:
        with pytest.raises(RemoteProtocolError) as info:
            parse_state(raw)
        assert repr(raw) in str(info.value)


# ---------------------------------------------------------------------------
# Frontend table
# ---------------------------------------------------------------------------

_FCODES = {"N": FrontendAction.NONE, "P": FrontendAction.PUBLISH,
           "C": FrontendAction.CONNECT, "R": FrontendAction.RESET,
           "RP": FrontendAction.REPUBLISH, "W": FrontendAction.WAIT, "X": ILLEGAL}

# Rows: own (frontend) state; columns: backend state
#                 UNK  INI  IWT  IND  CON  CLG  CLD  RCG  RCD
FRONTEND_TABLE = _grid("""
UNKNOWN:          X    X    X    X    X    X    X    X    X
INITIALISING:     W    W    P    W    W    W    W    W    W
INIT_WAIT:        X    X    X    X    X    X    X    X    X
INITIALISED:      R    R    RP   W    C    W    R    W    W
CONNECTED:        R    R    RP   N    N    W    R    N    N
CLOSING:          N    N    N    W    W    W    N    W    W
CLOSED:           R    R    P    W    W    W    R    W    W
RECONFIGURING:    X    X    X    X    X    X    X    X    X
RECONFIGURED:     X    X    X    X    X    X    X    X    X
""", _FCODES)


@pytest.mark.parametrize("fe,be", sorted(FRONTEND_TABLE), ids=lambda s: s.name)
def test_frontend_on_backend(fe: XenbusState, be: XenbusState) -> None:
    expected = FRONTEND_TABLE[(fe, be)]
    if expected is ILLEGAL:
        with pytest.raises(LocalProtocolError) as info:
            frontend_on_backend(fe, be)
        assert fe.name in str(info.value)
    else:
        assert frontend_on_backend(fe, be) is expected
        # plain ints (as read from xenstore) work the same
        assert frontend_on_backend(int(fe), int(be)) is expected  # type: ignore[arg-type]


FRONTEND_STARTUP = {
    S.UNKNOWN: FrontendAction.NONE, S.INITIALISING: FrontendAction.NONE,
    S.INIT_WAIT: FrontendAction.RESET, S.INITIALISED: FrontendAction.RESET,
    S.CONNECTED: FrontendAction.RESET, S.CLOSING: FrontendAction.RESET,
    S.CLOSED: FrontendAction.RESET, S.RECONFIGURING: FrontendAction.RESET,
    S.RECONFIGURED: FrontendAction.RESET,
}


@pytest.mark.parametrize("fe", ALL, ids=lambda s: s.name)
def test_frontend_startup(fe: XenbusState) -> None:
    assert frontend_startup(fe) is FRONTEND_STARTUP[fe]


def test_frontend_early_backend_close_is_not_fatal() -> None:
    # docs/protocol.md section 3.8: snd_be may write 5 and 6 before 2.
    for be in (S.CLOSING, S.CLOSED, S.UNKNOWN, S.INITIALISING):
        assert frontend_on_backend(S.INITIALISING, be) is FrontendAction.WAIT


# ---------------------------------------------------------------------------
# Backend table
# ---------------------------------------------------------------------------

_BCODES = {"N": BackendAction.NONE, "I": BackendAction.INIT_WAIT,
           "C": BackendAction.CONNECT, "R": BackendAction.RELEASE, "X": ILLEGAL}

# Rows: own (backend) state; columns: frontend state
#                 UNK  INI  IWT  IND  CON  CLG  CLD  RCG  RCD
BACKEND_TABLE = _grid("""
UNKNOWN:          X    X    X    X    X    X    X    X    X
INITIALISING:     N    I    N    C    N    N    N    N    N
INIT_WAIT:        N    N    N    C    N    N    N    N    N
INITIALISED:      X    X    X    X    X    X    X    X    X
CONNECTED:        R    R    N    N    N    R    R    N    N
CLOSING:          N    N    N    N    N    N    N    N    N
CLOSED:           N    I    N    N    N    N    N    N    N
RECONFIGURING:    X    X    X    X    X    X    X    X    X
RECONFIGURED:     X    X    X    X    X    X    X    X    X
""", _BCODES)


@pytest.mark.parametrize("be,fe", sorted(BACKEND_TABLE), ids=lambda s: s.name)
def test_backend_on_frontend(be: XenbusState, fe: XenbusState) -> None:
    expected = BACKEND_TABLE[(be, fe)]
    if expected is ILLEGAL:
        with pytest.raises(LocalProtocolError) as info:
            backend_on_frontend(be, fe)
        assert be.name in str(info.value)
    else:
        assert backend_on_frontend(be, fe) is expected
        assert backend_on_frontend(int(be), int(fe)) is expected  # type: ignore[arg-type]


#                 UNK  INI  IWT  IND  CON  CLG  CLD  RCG  RCD
BACKEND_STARTUP = _grid("""
UNKNOWN:          I    I    I    C    I    I    I    I    I
INITIALISING:     I    I    I    C    I    I    I    I    I
INIT_WAIT:        I    I    I    C    I    I    I    I    I
INITIALISED:      I    I    I    C    I    I    I    I    I
CONNECTED:        I    I    I    C    I    I    I    I    I
CLOSING:          I    I    I    C    I    I    I    I    I
CLOSED:           I    I    I    C    I    I    I    I    I
RECONFIGURING:    I    I    I    C    I    I    I    I    I
RECONFIGURED:     I    I    I    C    I    I    I    I    I
""", _BCODES)


@pytest.mark.parametrize("be,fe", sorted(BACKEND_STARTUP), ids=lambda s: s.name)
def test_backend_startup(be: XenbusState, fe: XenbusState) -> None:
    assert backend_startup(be, fe) is BACKEND_STARTUP[(be, fe)]


def test_stale_connected_backend_never_stays_connected() -> None:
    for fe in ALL:
        assert backend_startup(S.CONNECTED, fe) in (BackendAction.INIT_WAIT,
                                                    BackendAction.CONNECT)
        assert backend_startup(S.CONNECTED, fe) is not BackendAction.NONE


@pytest.mark.parametrize("bad", [9, -1, 100])
def test_out_of_range_own_state_is_local_error(bad: int) -> None:
    with pytest.raises(LocalProtocolError):
        frontend_on_backend(bad, S.CONNECTED)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        backend_on_frontend(bad, S.CONNECTED)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# The two tables against each other
# ---------------------------------------------------------------------------
#
# A tiny model of xenstore + two peers.  Each write to a state node queues a
# watch event for the other peer; handling an event re-reads the node and
# acts only if the value differs from the last one acted on (Rule 2 of the
# module), so several writes may coalesce into one observation.  A peer's
# action is a list of steps; the other peer may run between steps.  The
# scheduler picks randomly among peers with work.  Grants are modelled as a
# "generation": the frontend publishes a new one each time, drops it on
# reset, and the backend can only map the generation currently published.


@dataclass
class _Peer:
    state: XenbusState
    last_seen: XenbusState | None = None
    events: int = 0
    steps: deque[Callable[[], None]] = field(default_factory=deque)


class _World:
    def __init__(self, fe: XenbusState, be: XenbusState, rng: random.Random) -> None:
        self.rng = rng
        self.fe = _Peer(fe)
        self.be = _Peer(be)
        self.published: int | None = None  # generation in xenstore / shared
        self.next_gen = 1
        self.mapped: int | None = None     # generation the backend maps
        self.log: list[str] = []

    # -- writes -------------------------------------------------------------
    def write_fe(self, st: XenbusState) -> None:
        self.fe.state = st
        self.be.events += 1
        self.log.append(f"fe={st.name}")

    def write_be(self, st: XenbusState) -> None:
        self.be.state = st
        self.fe.events += 1
        self.log.append(f"be={st.name}")

    # -- frontend actions ---------------------------------------------------
    def _fe_drop(self) -> None:
        self.published = None

    def _fe_publish(self) -> None:
        self.published = self.next_gen
        self.next_gen += 1
        self.write_fe(S.INITIALISED)

    def fe_perform(self, act: FrontendAction) -> None:
        q = self.fe.steps
        if act is FrontendAction.PUBLISH:
            q.append(self._fe_publish)
        elif act is FrontendAction.CONNECT:
            q.append(lambda: self.write_fe(S.CONNECTED))
        elif act is FrontendAction.RESET:
            q.append(lambda: (self._fe_drop(), self.write_fe(S.INITIALISING)))
        elif act is FrontendAction.REPUBLISH:
            q.append(lambda: (self._fe_drop(), self.write_fe(S.INITIALISING)))
            q.append(self._fe_publish)

    def fe_event(self) -> None:
        be = self.be.state
        if be == self.fe.last_seen:
            return
        self.fe.last_seen = be
        self.fe_perform(frontend_on_backend(self.fe.state, be))

    def fe_start(self, linger_closed: bool = False) -> None:
        """A new frontend process: nothing shared by it exists.

        ``linger_closed``: after a RESET, stay CLOSED and let the CLOSED row
        of the table decide when to come back (instead of writing
        INITIALISING right away, as frontend_startup documents).
        """
        self.published = None  # died with the previous owner
        self.fe.steps.clear()
        self.fe.events = 0
        if frontend_startup(self.fe.state) is FrontendAction.RESET:
            self.write_fe(S.CLOSED)
            if not linger_closed:
                self.write_fe(S.INITIALISING)
        else:
            self.fe.state = S.INITIALISING
        self.fe.last_seen = None
        self.fe.events += 1  # xs_watch fires once when set

    # -- backend actions ----------------------------------------------------
    def _be_connect(self) -> None:
        if self.published is None:  # keys missing / grants revoked
            self.write_be(S.CLOSING)
            self.write_be(S.CLOSED)
            return
        self.mapped = self.published
        self.write_be(S.CONNECTED)

    def _be_release(self) -> None:
        self.mapped = None
        self.write_be(S.CLOSING)
        self.write_be(S.CLOSED)

    def be_perform(self, act: BackendAction) -> None:
        q = self.be.steps
        if act is BackendAction.INIT_WAIT:
            q.append(lambda: self.write_be(S.INIT_WAIT))
        elif act is BackendAction.CONNECT:
            q.append(self._be_connect)
        elif act is BackendAction.RELEASE:
            q.append(self._be_release)
            q.append(lambda: self.write_be(S.INIT_WAIT))

    def be_event(self) -> None:
        fe = self.fe.state
        if fe == self.be.last_seen:
            return
        self.be.last_seen = fe
        self.be_perform(backend_on_frontend(self.be.state, fe))

    def be_start(self, early_close: bool = False) -> None:
        """A new backend process (optionally snd_be's early 5, 6)."""
        self.mapped = None
        self.be.steps.clear()
        self.be.events = 0
        if early_close:
            self.write_be(S.CLOSING)
            self.write_be(S.CLOSED)
        self.be.last_seen = self.fe.state
        self.be_perform(backend_startup(self.be.state, self.fe.state))
        self.be.events += 1

    # -- scheduler ------------------------------------------------------------
    def run(self, limit: int = 500) -> None:
        for _ in range(limit):
            ready = []
            for name, peer in (("fe", self.fe), ("be", self.be)):
                if peer.steps or peer.events:
                    ready.append((name, peer))
            if not ready:
                return
            name, peer = self.rng.choice(ready)
            if peer.steps:
                peer.steps.popleft()()
            else:
                peer.events -= 1
                (self.fe_event if name == "fe" else self.be_event)()
        raise AssertionError("no quiescence:\n" + " ".join(self.log[-60:]))

    def assert_connected(self) -> None:
        assert (self.fe.state, self.be.state) == (S.CONNECTED, S.CONNECTED), self.log
        assert self.published is not None and self.mapped == self.published, self.log


SEEDS = range(150)


@pytest.mark.parametrize("seed", SEEDS)
def test_pair_fresh_bring_up(seed: int) -> None:
    w = _World(S.INITIALISING, S.INITIALISING, random.Random(seed))
    w.fe_start()
    w.be_start(early_close=seed % 2 == 1)
    w.run()
    w.assert_connected()


@pytest.mark.parametrize("seed", SEEDS)
def test_pair_backend_restarts_while_connected(seed: int) -> None:
    w = _World(S.INITIALISING, S.INITIALISING, random.Random(seed))
    w.fe_start()
    w.be_start()
    w.run()
    w.assert_connected()
    w.be_start(early_close=seed % 3 == 0)  # new process finds be=CONNECTED
    w.run()
    w.assert_connected()


@pytest.mark.parametrize("seed", SEEDS)
def test_pair_frontend_restarts_while_connected(seed: int) -> None:
    w = _World(S.INITIALISING, S.INITIALISING, random.Random(seed))
    w.fe_start()
    w.be_start()
    w.run()
    w.assert_connected()
    old = w.published
    # dead owner left fe=CONNECTED; backend still maps its pages
    w.fe_start(linger_closed=seed % 2 == 1)
    w.run()
    w.assert_connected()
    assert w.mapped != old


@pytest.mark.parametrize("seed", SEEDS)
def test_pair_both_restart_from_stale_states(seed: int) -> None:
    rng = random.Random(seed)
    fe0 = rng.choice([S.INITIALISING, S.INITIALISED, S.CONNECTED, S.CLOSING, S.CLOSED])
    be0 = rng.choice([S.INITIALISING, S.INIT_WAIT, S.INITIALISED, S.CONNECTED,
                      S.CLOSING, S.CLOSED])
    w = _World(fe0, be0, rng)
    linger = rng.random() < 0.5
    starts = [lambda: w.fe_start(linger_closed=linger), w.be_start]
    rng.shuffle(starts)
    for start in starts:
        start()
    w.run()
    w.assert_connected()


@pytest.mark.parametrize("seed", SEEDS)
def test_pair_frontend_shutdown(seed: int) -> None:
    w = _World(S.INITIALISING, S.INITIALISING, random.Random(seed))
    w.fe_start()
    w.be_start()
    w.run()
    w.assert_connected()
    # Linux xen_drv_remove: write CLOSING, wait until the backend let go.
    w.write_fe(S.CLOSING)
    w.run()
    assert w.mapped is None
    assert frontend_on_backend(S.CLOSING, w.be.state) is FrontendAction.NONE
