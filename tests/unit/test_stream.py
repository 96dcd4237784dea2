"""The frontend's per-stream protocol state: every (state, operation) pair,
response matching, and position tracking."""

from __future__ import annotations

import pytest

from alsa_pvplug.errors import BackendError, LocalProtocolError, RemoteProtocolError
from alsa_pvplug.protocol.sndif import CurPosEvt, HwParams, Op, Resp, Trigger
from alsa_pvplug.protocol.stream import PositionTracker, StreamProtocol, StreamState

S = StreamState
OPS = [Op.OPEN, Op.CLOSE, Op.READ, Op.WRITE, Op.HW_PARAM_QUERY,
       Trigger.START, Trigger.STOP, Trigger.PAUSE, Trigger.RESUME]

# state -> {operation: state after success}; a missing operation is illegal.
# Keyed by label: Trigger.START == Op.OPEN (and CLOSE == PAUSE ...) as ints.
EXPECTED = {
    S.CLOSED: {"OPEN": S.OPENED, "CLOSE": S.CLOSED, "HW_PARAM_QUERY": S.CLOSED},
    S.OPENED: {"CLOSE": S.CLOSED, "READ": S.OPENED, "WRITE": S.OPENED,
               "HW_PARAM_QUERY": S.OPENED, "TRIGGER START": S.RUNNING,
               "TRIGGER STOP": S.OPENED},
    S.RUNNING: {"CLOSE": S.CLOSED, "READ": S.RUNNING, "WRITE": S.RUNNING,
                "HW_PARAM_QUERY": S.RUNNING, "TRIGGER STOP": S.OPENED,
                "TRIGGER PAUSE": S.PAUSED},
    S.PAUSED: {"CLOSE": S.CLOSED, "READ": S.PAUSED, "WRITE": S.PAUSED,
               "HW_PARAM_QUERY": S.PAUSED, "TRIGGER STOP": S.OPENED,
               "TRIGGER RESUME": S.RUNNING},
}
QUERY = HwParams(4, (8000, 48000), (1, 2), (64, 4096), (32, 1024))


def send(p: StreamProtocol, what):
    if isinstance(what, Trigger):
        return p.trigger(what)
    if what == Op.OPEN:
        return p.open(48000, 2, 2, 4096, 9, 1024)
    if what == Op.CLOSE:
        return p.close()
    if what in (Op.READ, Op.WRITE):
        return p.rw(what, 0, 64)
    if what == Op.HW_PARAM_QUERY:
        return p.query(QUERY)
    return p.trigger(what)


def label(what) -> str:
    return f"TRIGGER {what.name}" if isinstance(what, Trigger) else what.name


def op_of(what) -> int:
    return int(Op.TRIGGER if isinstance(what, Trigger) else what)


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("what", OPS, ids=lambda w: w.name)
def test_every_state_operation_pair(state, what):
    p = StreamProtocol()
    p.state = state
    expected = EXPECTED[state].get(label(what))
    if expected is None:
        with pytest.raises(LocalProtocolError):
            send(p, what)
        assert p.state == state and p.in_flight is None
        return
    req = send(p, what)
    assert p.in_flight == req.id
    p.receive(Resp(req.id, op_of(what), 0))
    assert p.state == expected and p.in_flight is None


def test_failure_status_keeps_state_and_carries_status():
    p = StreamProtocol()
    req = p.open(48000, 2, 2, 4096, 9, 1024)
    with pytest.raises(BackendError) as exc:
        p.receive(Resp(req.id, int(Op.OPEN), -22))
    assert exc.value.status == -22 and exc.value.operation == "OPEN"
    assert "-22" in str(exc.value) and "EINVAL" in str(exc.value)
    assert p.state == S.CLOSED


def test_one_control_request_in_flight():
    p = StreamProtocol()
    p.open(48000, 2, 2, 4096, 9, 1024)
    with pytest.raises(LocalProtocolError, match="in flight"):
        p.close()


def test_data_requests_pipeline_and_answer_in_any_order():
    p = StreamProtocol()
    p.receive(Resp(p.open(48000, 2, 2, 4096, 9, 1024).id, int(Op.OPEN), 0))
    writes = [p.rw(Op.WRITE, i * 64, 64) for i in range(4)]
    start = p.trigger(Trigger.START)   # may follow the WRITEs
    more = p.rw(Op.WRITE, 256, 64)     # legal in the state START leads to
    assert p.outstanding == 6 and p.in_flight == writes[0].id
    assert len({r.id for r in [*writes, start, more]}) == 6
    p.receive(Resp(writes[2].id, int(Op.WRITE), 0))
    for r in (writes[0], writes[1], writes[3]):
        p.receive(Resp(r.id, int(Op.WRITE), 0))
    assert p.state == S.OPENED
    p.receive(Resp(start.id, int(Op.TRIGGER), 0))
    assert p.state == S.RUNNING
    p.receive(Resp(more.id, int(Op.WRITE), 0))
    assert p.outstanding == 0


def test_legality_is_judged_on_the_state_in_flight_requests_lead_to():
    p = StreamProtocol()
    p.receive(Resp(p.open(48000, 2, 2, 4096, 9, 1024).id, int(Op.OPEN), 0))
    close = p.close()
    with pytest.raises(LocalProtocolError, match="not allowed in state CLOSED"):
        p.rw(Op.WRITE, 0, 64)  # the stream is closed by the time it would arrive
    p.receive(Resp(close.id, int(Op.CLOSE), 0))


def test_ids_in_flight_are_never_reused():
    p = StreamProtocol()
    p.receive(Resp(p.open(48000, 2, 2, 4096, 9, 1024).id, int(Op.OPEN), 0))
    p._next_id = 0xFFFE
    a, b, c = (p.rw(Op.WRITE, 0, 64) for _ in range(3))
    p._next_id = a.id  # the counter comes round while they are in flight
    d = p.rw(Op.WRITE, 0, 64)
    assert len({a.id, b.id, c.id, d.id}) == 4


def test_wrong_id_and_wrong_operation_are_remote_errors():
    p = StreamProtocol()
    req = p.open(48000, 2, 2, 4096, 9, 1024)
    with pytest.raises(RemoteProtocolError, match="does not match"):
        p.receive(Resp((req.id + 1) & 0xFFFF, int(Op.OPEN), 0))
    with pytest.raises(RemoteProtocolError, match="echoes operation"):
        p.receive(Resp(req.id, int(Op.WRITE), 0))
    assert p.state == S.CLOSED


def test_late_answer_to_abandoned_request_is_dropped():
    p = StreamProtocol()
    old = p.open(48000, 2, 2, 4096, 9, 1024)
    p.abandon()
    new = p.open(48000, 2, 2, 4096, 9, 1024)
    assert p.receive(Resp(old.id, int(Op.OPEN), 0)) is None
    assert p.receive(Resp(new.id, int(Op.OPEN), 0)) is not None
    assert p.state == S.OPENED


def test_ids_wrap_at_16_bits():
    p = StreamProtocol()
    p._next_id = 0xFFFF
    a = p.query(QUERY)
    p.receive(Resp(a.id, int(Op.HW_PARAM_QUERY), 0, QUERY))
    b = p.query(QUERY)
    assert (a.id, b.id) == (0xFFFF, 0)


class TestPositionTracker:
    def test_accumulates_and_refuses_to_go_back(self):
        t = PositionTracker()
        assert t.on_event(CurPosEvt(0, 4096)) == 4096
        assert t.on_event(CurPosEvt(1, 8192)) == 4096
        # Within one OPEN a position never goes back (the frontend opens
        # again after a stop): the backend's error, nothing applied.
        with pytest.raises(RemoteProtocolError, match="goes back from 8192"):
            t.on_event(CurPosEvt(2, 1024))
        assert t.octets == 8192 and t.events == 2

    def test_ids_are_not_filtered(self):
        t = PositionTracker()
        t.on_event(CurPosEvt(7, 100))
        t.on_event(CurPosEvt(3, 200))  # out-of-order id: position still used
        assert t.octets == 200

    def test_save_and_restore_undo_a_refused_report(self):
        t = PositionTracker()
        t.on_event(CurPosEvt(0, 100))
        saved = t.save()
        t.on_event(CurPosEvt(1, 2**60))
        t.restore(saved)
        assert t.octets == 100 and t.events == 1
        assert t.on_event(CurPosEvt(2, 150)) == 50
