"""Per-stream protocol state of the frontend: which request may go out now,
which response we are waiting for, and where the backend's position is.

Rule 1: pure.  Requests come out as dataclasses; responses and events go in
as dataclasses; nothing here waits, sends or reads a clock.
Rule 2: one request in flight per stream (as Linux ``be_stream_do_io``);
a response must echo that request's id and operation, anything else is the
backend's protocol error.  A response to a request we gave up on (timeout)
is recognised and dropped.
Rule 3: an illegal operation raises ``LocalProtocolError`` and leaves the
state unchanged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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


@dataclass
class _InFlight:
    id: int
    operation: Op
    what: object  # Op, or the Trigger for TRIGGER


class StreamProtocol:
    """Request/response bookkeeping and position of one sndif stream."""

    def __init__(self, name: str = "stream") -> None:
        self.name = name
        self.state = StreamState.CLOSED
        self._next_id = 0
        self._in_flight: _InFlight | None = None
        self._abandoned: set[int] = set()
        self.position = PositionTracker()

    # -- requests ----------------------------------------------------------
    def _new_request(self, operation: Op, what: object) -> int:
        if self._in_flight is not None:
            raise LocalProtocolError(
                f"{self.name}: {operation.name} while request {self._in_flight.id} "
                f"({self._in_flight.operation.name}) is still in flight")
        if not allowed(self.state, what):
            raise LocalProtocolError(
                f"{self.name}: {_label(what)} not allowed in state {self.state.name}")
        rid = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFF
        self._in_flight = _InFlight(rid, operation, what)
        return rid

    def open(self, rate: int, fmt: int, channels: int, buffer_sz: int,
             gref_directory: int, period_sz: int) -> OpenReq:
        rid = self._new_request(Op.OPEN, Op.OPEN)
        return OpenReq(rid, rate, fmt, channels, buffer_sz, gref_directory, period_sz)

    def close(self) -> CloseReq:
        return CloseReq(self._new_request(Op.CLOSE, Op.CLOSE))

    def rw(self, operation: Op, offset: int, length: int) -> RwReq:
        if operation not in (Op.READ, Op.WRITE):
            raise LocalProtocolError(f"{self.name}: {operation!r} is not READ or WRITE")
        return RwReq(self._new_request(operation, operation), operation, offset, length)

    def trigger(self, kind: Trigger) -> TriggerReq:
        return TriggerReq(self._new_request(Op.TRIGGER, kind), int(kind))

    def query(self, params: HwParams) -> HwParamQuery:
        return HwParamQuery(self._new_request(Op.HW_PARAM_QUERY, Op.HW_PARAM_QUERY), params)

    @property
    def in_flight(self) -> int | None:
        return None if self._in_flight is None else self._in_flight.id

    def abandon(self) -> None:
        """Give up on the request in flight (timeout); its late answer is dropped."""
        if self._in_flight is not None:
            self._abandoned.add(self._in_flight.id)
            self._in_flight = None

    def reset(self) -> None:
        """The connection was torn down: nothing is open, nothing in flight."""
        self.state = StreamState.CLOSED
        self._in_flight = None
        self._abandoned.clear()
        self.position = PositionTracker()

    # -- responses ---------------------------------------------------------
    def receive(self, resp: Resp) -> Resp | None:
        """Match a response.  Returns it when it completes our request, None when
        it answers an abandoned one.  Raises BackendError for a failure status
        (state unchanged) and RemoteProtocolError for a response we never asked for.
        """
        cur = self._in_flight
        if cur is None or resp.id != cur.id:
            if resp.id in self._abandoned:
                self._abandoned.discard(resp.id)
                return None
            expected = "none" if cur is None else str(cur.id)
            raise RemoteProtocolError(
                f"{self.name}: response id {resp.id} (op {resp.operation}) "
                f"does not match the request in flight (id {expected})")
        if resp.operation != cur.operation:
            raise RemoteProtocolError(
                f"{self.name}: response to {cur.operation.name} id {cur.id} "
                f"echoes operation {resp.operation}")
        self._in_flight = None
        if resp.status != 0:
            raise BackendError(_label(cur.what), resp.status)
        label = _label(cur.what)
        self.state = _TRANSITIONS[(self.state, label)]
        if label in ("OPEN", "CLOSE", "TRIGGER STOP"):
            self.position = PositionTracker()
        return resp


def _label(what: object) -> str:
    if isinstance(what, Trigger):
        return f"TRIGGER {what.name}"
    return what.name if isinstance(what, enum.Enum) else str(what)


class PositionTracker:
    """The backend's stream position in octets, from CUR_POS events.

    Backends disagree on the origin (ours and snd_be's ALSA host restart near
    0 after STOP+START, snd_be's Pulse host counts from OPEN), so a position
    that goes backwards starts a new origin instead of being trusted as a
    huge delta (sndif-protocol.md section 8).  Ids are not filtered: snd_be
    never resets them and skips ids when the event page is full.
    """

    def __init__(self) -> None:
        self.octets = 0           # accumulated advance since the last reset
        self._last: int | None = None
        self.events = 0
        self.last_id: int | None = None

    def on_event(self, evt: CurPosEvt, limit: int | None = None) -> int:
        """Feed one event; returns the advance in octets.

        ``limit``: the most the position may legitimately reach (playback:
        the octets written so far).  An event beyond it is the backend's
        protocol error and is not applied.
        """
        delta = evt.position if self._last is None or evt.position < self._last \
            else evt.position - self._last
        if limit is not None and self.octets + delta > limit:
            raise RemoteProtocolError(
                f"CUR_POS position {evt.position} (id {evt.id}) claims "
                f"{self.octets + delta} octets consumed, only {limit} were written")
        self._last = evt.position
        self.octets += delta
        self.events += 1
        self.last_id = evt.id
        return delta
