"""Per-stream protocol state of the frontend: which request may go out now,
which responses we are waiting for, and where the backend's position is.

Rule 1: pure.  Requests come out as dataclasses; responses and events go in
as dataclasses; nothing here waits, sends or reads a clock.
Rule 2: requests may be pipelined (ring.h allows a full ring; ids match
answers to requests).  Data requests (READ, WRITE) may follow anything; a
control request (OPEN, CLOSE, TRIGGER, HW_PARAM_QUERY) waits until no other
control request is in flight.  Legality is judged against the state the
stream reaches once everything in flight succeeds.  A response must echo
the id and operation of a request in flight, anything else is the
backend's protocol error; a response to a request we gave up on (timeout)
is recognised and dropped.
Rule 3: an illegal operation raises ``LocalProtocolError`` and leaves the
state unchanged.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from ..errors import BackendError, LocalProtocolError, RemoteProtocolError
from .sndif import (
    CloseReq,
    CurPosEvt,
    HwParamQuery,
    HwParams,
    Op,
    OpenReq,
    Resp,
    RwReq,
    Trigger,
    TriggerReq,
)


class StreamState(enum.Enum):
    CLOSED = "closed"  # no OPEN (after connect, CLOSE, or a backend reset)
    OPENED = "opened"  # OPEN accepted, not running (ALSA: prepared)
    RUNNING = "running"
    PAUSED = "paused"


_S = StreamState

# (state, operation label) -> state after a successful response.  Absent =
# illegal.  Labels, not enum members: Trigger.START == Op.OPEN == 0 as ints.
_TRANSITIONS: dict[tuple[StreamState, str], StreamState] = {
    (_S.CLOSED, "OPEN"): _S.OPENED,
    (_S.OPENED, "CLOSE"): _S.CLOSED,
    (_S.RUNNING, "CLOSE"): _S.CLOSED,
    (_S.PAUSED, "CLOSE"): _S.CLOSED,
    (_S.CLOSED, "CLOSE"): _S.CLOSED,
    (_S.OPENED, "TRIGGER START"): _S.RUNNING,
    (_S.RUNNING, "TRIGGER STOP"): _S.OPENED,
    (_S.PAUSED, "TRIGGER STOP"): _S.OPENED,
    (_S.OPENED, "TRIGGER STOP"): _S.OPENED,
    (_S.RUNNING, "TRIGGER PAUSE"): _S.PAUSED,
    (_S.PAUSED, "TRIGGER RESUME"): _S.RUNNING,
}
for _st in (_S.OPENED, _S.RUNNING, _S.PAUSED):
    _TRANSITIONS[(_st, "READ")] = _st
    _TRANSITIONS[(_st, "WRITE")] = _st
for _st in StreamState:
    _TRANSITIONS[(_st, "HW_PARAM_QUERY")] = _st


def allowed(state: StreamState, what: object) -> bool:
    """Whether ``what`` (an ``Op`` or a ``Trigger``) may be sent in ``state``."""
    return (state, _label(what)) in _TRANSITIONS


class _InFlight(NamedTuple):
    id: int
    operation: Op
    what: object  # Op, or the Trigger for TRIGGER
    label: str    # _label(what), the key of _TRANSITIONS


_DATA_OPS = (Op.READ, Op.WRITE)


class StreamProtocol:
    """Request/response bookkeeping and position of one sndif stream."""

    def __init__(self, name: str = "stream") -> None:
        self.name = name
        self.state = StreamState.CLOSED
        self._next_id = 0
        self._in_flight: dict[int, _InFlight] = {}  # oldest first
        # At most one control request is in flight (_new_request), and data
        # requests leave the state as it is: the projection is that one.
        self._control: _InFlight | None = None
        self._abandoned: set[int] = set()
        self.position = PositionTracker()

    # -- requests ----------------------------------------------------------
    @property
    def projected(self) -> StreamState:
        return self._projected()

    @property
    def control_in_flight(self) -> bool:
        return self._control is not None

    def _projected(self) -> StreamState:
        """The state once every request in flight has succeeded."""
        c = self._control
        return self.state if c is None else _TRANSITIONS.get((self.state, c.label), self.state)

    def _new_request(self, operation: Op, what: object) -> int:
        label = _label(what)
        busy = self._control
        if operation not in _DATA_OPS and busy is not None:
            raise LocalProtocolError(
                f"{self.name}: {label} while request {busy.id} "
                f"({busy.label}) is still in flight")
        state = self._projected()
        if not allowed(state, what):
            raise LocalProtocolError(f"{self.name}: {label} not allowed in state {state.name}")
        rid = self.next_ids(1)[0]
        self._next_id = (rid + 1) & 0xFFFF
        f = self._in_flight[rid] = _InFlight(rid, operation, what, label)
        if operation not in _DATA_OPS:
            self._control = f
        return rid

    def next_ids(self, count: int) -> list[int]:
        """The ids the next ``count`` requests will get, in order (for a
        sender outside this object that ``rw`` then takes in)."""
        out: list[int] = []
        rid = self._next_id
        for _ in range(0x10000):
            if len(out) == count:
                return out
            if rid not in self._in_flight and rid not in self._abandoned:
                out.append(rid)
            rid = (rid + 1) & 0xFFFF
        if len(out) == count:
            return out
        raise LocalProtocolError(f"{self.name}: no free request id")

    def open(self, rate: int, fmt: int, channels: int, buffer_sz: int,
             gref_directory: int, period_sz: int) -> OpenReq:
        rid = self._new_request(Op.OPEN, Op.OPEN)
        return OpenReq(rid, rate, fmt, channels, buffer_sz, gref_directory, period_sz)

    def close(self) -> CloseReq:
        return CloseReq(self._new_request(Op.CLOSE, Op.CLOSE))

    def rw(self, operation: Op, offset: int, length: int) -> RwReq:
        if operation not in _DATA_OPS:
            raise LocalProtocolError(f"{self.name}: {operation!r} is not READ or WRITE")
        return RwReq(self._new_request(operation, operation), operation, offset, length)

    def trigger(self, kind: Trigger) -> TriggerReq:
        return TriggerReq(self._new_request(Op.TRIGGER, kind), int(kind))

    def query(self, params: HwParams) -> HwParamQuery:
        return HwParamQuery(self._new_request(Op.HW_PARAM_QUERY, Op.HW_PARAM_QUERY), params)

    @property
    def in_flight(self) -> int | None:
        """The id of the oldest request in flight, or None."""
        return next(iter(self._in_flight), None)

    @property
    def outstanding(self) -> int:
        return len(self._in_flight)

    def is_pending(self, rid: int) -> bool:
        return rid in self._in_flight

    def abandon(self) -> None:
        """Give up on every request in flight (timeout); late answers are dropped."""
        self._abandoned.update(self._in_flight)
        self._in_flight.clear()
        self._control = None

    def reset(self) -> None:
        """The connection was torn down: nothing is open, nothing in flight."""
        self.state = StreamState.CLOSED
        self._in_flight.clear()
        self._control = None
        self._abandoned.clear()
        self.position = PositionTracker()

    # -- responses ---------------------------------------------------------
    def receive(self, resp: Resp) -> Resp | None:
        """Match a response.  Returns it when it completes a request, None when
        it answers an abandoned one.  Raises BackendError for a failure status
        (state unchanged; the request is complete) and RemoteProtocolError for
        a response we never asked for.
        """
        cur = self._in_flight.get(resp.id)
        if cur is None:
            if resp.id in self._abandoned:
                self._abandoned.discard(resp.id)
                return None
            expected = ", ".join(map(str, self._in_flight)) or "none"
            raise RemoteProtocolError(
                f"{self.name}: response id {resp.id} (op {resp.operation}) "
                f"does not match a request in flight (ids {expected})")
        if resp.operation != cur.operation:
            raise RemoteProtocolError(
                f"{self.name}: response to {cur.operation.name} id {cur.id} "
                f"echoes operation {resp.operation}")
        del self._in_flight[resp.id]
        if cur is self._control:
            self._control = None
        if resp.status != 0:
            raise BackendError(cur.label, resp.status)
        label = cur.label
        self.state = _TRANSITIONS.get((self.state, label), self.state)
        if label in ("OPEN", "CLOSE"):
            self.position = PositionTracker()
        return resp


def _label(what: object) -> str:
    if isinstance(what, Trigger):
        return f"TRIGGER {what.name}"
    return what.name if isinstance(what, enum.Enum) else str(what)


class PositionTracker:
    """The backend's stream position in octets, from CUR_POS events.

    Counted from OPEN: the frontend opens afresh (CLOSE + OPEN) to recover
    from a stop, because backends disagree on what STOP does to their
    counter (ours restarts it, snd_be's ALSA host keeps counting from OPEN).
    Within one OPEN a position never goes back, so one that does is the
    backend's protocol error, not a new origin.  Ids are not filtered:
    snd_be never resets them and skips ids when the event page is full.
    Judging a position further (beyond the data, impossible) is the
    caller's job (``protocol.pcm``).
    """

    def __init__(self) -> None:
        self.octets = 0           # accumulated advance since the last reset
        self._last: int | None = None
        self.events = 0
        self.last_id: int | None = None

    def save(self) -> tuple[int, int | None, int, int | None]:
        return self.octets, self._last, self.events, self.last_id

    def restore(self, saved: tuple[int, int | None, int, int | None]) -> None:
        """Undo the events since ``save()`` (a report the caller refused)."""
        self.octets, self._last, self.events, self.last_id = saved

    def on_event(self, evt: CurPosEvt) -> int:
        """Feed one event; returns the advance in octets.

        Raises
        ------
        RemoteProtocolError
            The position went backwards (nothing is applied) (EIO).
        """
        if self._last is not None and evt.position < self._last:
            raise RemoteProtocolError(
                f"CUR_POS {evt.position} (id {evt.id}) goes back from {self._last}")
        delta = evt.position if self._last is None else evt.position - self._last
        self._last = evt.position
        self.octets += delta
        self.events += 1
        self.last_id = evt.id
        return delta
