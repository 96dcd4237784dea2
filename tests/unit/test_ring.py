"""Tests for alsa_pvplug.protocol.ring: FrontRing/BackRing on one page, and the event page."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alsa_pvplug.errors import LocalProtocolError, RemoteProtocolError
from alsa_pvplug.protocol import ring
from alsa_pvplug.protocol.ring import (
    EVT_RING_LEN,
    EVT_RING_OFFS,
    IN_CONS_OFF,
    IN_PROD_OFF,
    REQ_EVENT_OFF,
    REQ_PROD_OFF,
    RING_HEADER,
    RING_SIZE,
    RSP_EVENT_OFF,
    RSP_PROD_OFF,
    SLOT_SIZE,
    BackRing,
    BufferIndexOps,
    EventRingBack,
    EventRingFront,
    FrontRing,
    IndexOps,
)

M = 2**32
STARTS = [0, 2**32 - 3, 2**32 - 1]


def payload(n: int, tag: int = 0) -> bytes:
    """A recognisable 64-octet slot."""
    return n.to_bytes(8, "little") + bytes([tag]) * 56


class HookOps(BufferIndexOps):
    """BufferIndexOps that runs a hook on the next ``mb()`` (simulates the peer racing us)."""

    def __init__(self, buf: bytearray) -> None:
        super().__init__(buf)
        self.on_mb: Callable[[], None] | None = None

    def mb(self) -> None:
        hook, self.on_mb = self.on_mb, None
        if hook is not None:
            hook()


class FrontBackPair:
    """Our FrontRing and a BackRing on one bytearray (after h11's ConnectionPair)."""

    def __init__(self, start: int = 0) -> None:
        self.buf = bytearray(b"\xaa" * 4096)   # dirty: init must zero what it owns
        self.ops = HookOps(self.buf)
        self.front = FrontRing(self.buf, self.ops, start=start)
        self.back = BackRing(self.buf, self.ops)

    def send(self, *slots: bytes) -> bool:
        for s in slots:
            self.front.put_request(s)
        return self.front.push_requests()

    def echo(self) -> tuple[list[bytes], bool]:
        """Backend: take all requests, answer each with the same bytes (tag flipped)."""
        reqs = self.back.take_requests()
        for r in reqs:
            self.back.put_response(r[:8] + b"\x55" * 56)
        return reqs, self.back.push_responses()

    def load(self, off: int) -> int:
        return self.ops.load(off)


def test_constants() -> None:
    assert SLOT_SIZE == 64 and RING_HEADER == 64 and RING_SIZE == 32
    assert EVT_RING_LEN == 63 and EVT_RING_OFFS == 64
    assert (REQ_PROD_OFF, REQ_EVENT_OFF, RSP_PROD_OFF, RSP_EVENT_OFF) == (0, 4, 8, 12)
    assert (IN_CONS_OFF, IN_PROD_OFF) == (0, 4)
    assert RING_HEADER + RING_SIZE * SLOT_SIZE == 2112


def test_buffer_index_ops_is_an_index_ops() -> None:
    ops: IndexOps = BufferIndexOps(bytearray(8))
    ops.store(4, 2**32 + 5)   # stored mod 2**32
    assert ops.load(4) == 5
    ops.mb()
    ops.rmb()
    ops.wmb()


class TestFrontInit:
    @pytest.mark.parametrize("start", STARTS)
    def test_shared_header(self, start: int) -> None:
        p = FrontBackPair(start)
        assert p.load(REQ_PROD_OFF) == p.load(RSP_PROD_OFF) == start
        assert p.load(REQ_EVENT_OFF) == p.load(RSP_EVENT_OFF) == (start + 1) % M
        assert p.buf[16:64] == bytes(48)
        assert p.front.req_prod_pvt == p.front.rsp_cons == start
        assert p.back.req_cons == p.back.rsp_prod_pvt == start
        assert p.front.free_requests() == RING_SIZE and not p.front.full()

    def test_small_buffer_rejected(self) -> None:
        buf = bytearray(100)
        with pytest.raises(LocalProtocolError):
            FrontRing(buf, BufferIndexOps(buf))
        with pytest.raises(LocalProtocolError):
            EventRingFront(buf, BufferIndexOps(buf))


class TestExchange:
    @pytest.mark.parametrize("start", STARTS)
    def test_many_across_wrap(self, start: int) -> None:
        p = FrontBackPair(start)
        n = 0
        for batch in [1, 2, 3, 32, 5, 31, 7, 1, 30]:
            sent = [payload(n + i) for i in range(batch)]
            n += batch
            p.send(*sent)
            reqs, _ = p.echo()
            assert reqs == sent
            got = p.front.take_responses()
            assert [g[:8] for g in got] == [s[:8] for s in sent]
            assert all(g[8:] == b"\x55" * 56 for g in got)
            assert p.front.free_requests() == RING_SIZE
        assert p.front.req_prod_pvt == p.front.rsp_cons == (start + n) % M
        assert p.load(REQ_PROD_OFF) == p.load(RSP_PROD_OFF) == (start + n) % M
        assert p.back.req_cons == p.back.rsp_prod_pvt == (start + n) % M

    @pytest.mark.parametrize("start", STARTS)
    def test_slot_position_is_masked_index(self, start: int) -> None:
        p = FrontBackPair(start)
        idx = p.front.put_request(payload(7))
        assert idx == start
        off = RING_HEADER + (start & (RING_SIZE - 1)) * SLOT_SIZE
        assert bytes(p.buf[off:off + SLOT_SIZE]) == payload(7)

    def test_requests_invisible_until_pushed(self) -> None:
        p = FrontBackPair()
        p.front.put_request(payload(1))
        assert p.back.take_requests() == []
        p.front.push_requests()
        assert p.back.take_requests() == [payload(1)]

    def test_partial_responses(self) -> None:
        p = FrontBackPair(2**32 - 2)
        p.send(payload(1), payload(2), payload(3))
        p.back.take_requests()
        p.back.put_response(payload(11))
        p.back.push_responses()
        assert p.front.take_responses() == [payload(11)]
        assert p.front.free_requests() == RING_SIZE - 2
        assert p.front.take_responses() == []
        p.back.put_response(payload(12))
        p.back.put_response(payload(13))
        p.back.push_responses()
        assert p.front.take_responses() == [payload(12), payload(13)]

    def test_copies_are_independent(self) -> None:
        p = FrontBackPair()
        p.send(payload(1))
        reqs = p.back.take_requests()
        p.back.put_response(payload(2))
        p.back.push_responses()
        got = p.front.take_responses()
        assert type(got[0]) is bytes and type(reqs[0]) is bytes
        p.buf[RING_HEADER:RING_HEADER + SLOT_SIZE] = b"\xee" * SLOT_SIZE
        assert got == [payload(2)] and reqs == [payload(1)]

    def test_put_checks_slot_size(self) -> None:
        p = FrontBackPair()
        with pytest.raises(LocalProtocolError):
            p.front.put_request(b"x" * 63)
        p.send(payload(1))
        p.back.take_requests()
        with pytest.raises(LocalProtocolError):
            p.back.put_response(b"x" * 65)


class TestFull:
    @pytest.mark.parametrize("start", STARTS)
    def test_full_at_32(self, start: int) -> None:
        p = FrontBackPair(start)
        for i in range(RING_SIZE):
            assert p.front.free_requests() == RING_SIZE - i
            p.front.put_request(payload(i))
        assert p.front.full() and p.front.free_requests() == 0
        with pytest.raises(LocalProtocolError):
            p.front.put_request(payload(99))
        assert p.front.req_prod_pvt == (start + RING_SIZE) % M   # unchanged by the failure
        p.front.push_requests()
        assert len(p.back.take_requests()) == RING_SIZE
        # Responses, not taken requests, free slots.
        assert p.front.full()
        p.back.put_response(payload(0))
        p.back.push_responses()
        p.front.take_responses()
        assert p.front.free_requests() == 1


class TestNotify:
    @pytest.mark.parametrize("start", STARTS)
    def test_request_notify(self, start: int) -> None:
        p = FrontBackPair(start)
        assert p.send(payload(1)) is True            # req_event = start + 1
        assert p.send(payload(2)) is False           # backend has not re-armed
        assert p.back.take_requests() == [payload(1), payload(2)]
        assert p.load(REQ_EVENT_OFF) == (start + 3) % M   # final check re-armed
        assert p.send(payload(3)) is True
        assert p.send(payload(4), payload(5)) is False

    @pytest.mark.parametrize("start", STARTS)
    def test_response_notify(self, start: int) -> None:
        p = FrontBackPair(start)
        p.send(payload(1), payload(2), payload(3))
        p.back.take_requests()
        p.back.put_response(payload(1))
        assert p.back.push_responses() is True       # rsp_event = start + 1
        p.back.put_response(payload(2))
        assert p.back.push_responses() is False      # frontend has not re-armed
        assert len(p.front.take_responses()) == 2
        assert p.load(RSP_EVENT_OFF) == (start + 3) % M
        p.back.put_response(payload(3))
        assert p.back.push_responses() is True

    def test_without_rearm_only_first_response_notifies(self) -> None:
        p = FrontBackPair()
        p.send(*[payload(i) for i in range(4)])
        p.back.take_requests()
        notes = []
        for i in range(4):
            p.back.put_response(payload(i))
            notes.append(p.back.push_responses())
        assert notes == [True, False, False, False]

    def test_response_landing_during_rearm_is_taken(self) -> None:
        """RING_FINAL_CHECK_FOR_RESPONSES: a response pushed between the drain
        and the re-arm must be picked up in the same call."""
        p = FrontBackPair()
        p.send(payload(1), payload(2))
        p.back.take_requests()
        p.back.put_response(payload(1))
        p.back.push_responses()

        def backend_races() -> None:
            p.ops.on_mb = None
            p.back.put_response(payload(2))
            p.back.push_responses()   # its own mb() runs with the hook already cleared

        p.ops.on_mb = backend_races    # fires on the mb() after rsp_event is stored
        assert p.front.take_responses() == [payload(1), payload(2)]
        assert p.front.rsp_cons == 2

    def test_request_landing_during_rearm_is_taken(self) -> None:
        p = FrontBackPair()
        p.send(payload(1))

        def frontend_races() -> None:
            p.front.put_request(payload(2))
            p.front.push_requests()

        p.ops.on_mb = frontend_races
        assert p.back.take_requests() == [payload(1), payload(2)]
        assert p.back.req_cons == 2


class TestHostileBackend:
    @pytest.mark.parametrize("start", STARTS)
    def test_rsp_prod_past_ring(self, start: int) -> None:
        p = FrontBackPair(start)
        p.send(payload(1))
        p.ops.store(RSP_PROD_OFF, start + RING_SIZE + 1)
        with pytest.raises(RemoteProtocolError):
            p.front.take_responses()
        assert p.front.rsp_cons == start
        assert p.front.free_requests() == RING_SIZE - 1

    @pytest.mark.parametrize("start", STARTS)
    def test_more_responses_than_requests(self, start: int) -> None:
        p = FrontBackPair(start)
        p.send(payload(1), payload(2))
        p.back.take_requests()
        p.back.put_response(payload(11))
        p.back.put_response(payload(12))
        p.ops.store(RSP_PROD_OFF, start + 3)         # one response too many
        with pytest.raises(RemoteProtocolError):
            p.front.take_responses()
        assert p.front.rsp_cons == start              # nothing consumed
        p.ops.store(RSP_PROD_OFF, start + 2)          # honest again: still usable
        assert p.front.take_responses() == [payload(11), payload(12)]

    def test_responses_with_nothing_outstanding(self) -> None:
        p = FrontBackPair()
        p.ops.store(RSP_PROD_OFF, 1)
        with pytest.raises(RemoteProtocolError):
            p.front.take_responses()

    def test_rsp_prod_backwards(self) -> None:
        p = FrontBackPair(5)
        p.send(payload(1))
        p.ops.store(RSP_PROD_OFF, 4)
        with pytest.raises(RemoteProtocolError):
            p.front.take_responses()
        assert p.front.rsp_cons == 5

    def test_overflow_on_second_pass_consumes_nothing(self) -> None:
        p = FrontBackPair()
        p.send(payload(1), payload(2))
        p.back.take_requests()
        p.back.put_response(payload(1))
        p.back.push_responses()

        def go_rogue() -> None:
            p.ops.store(RSP_PROD_OFF, 40)

        p.ops.on_mb = go_rogue
        with pytest.raises(RemoteProtocolError):
            p.front.take_responses()
        assert p.front.rsp_cons == 0


class TestHostileGuest:
    @pytest.mark.parametrize("start", STARTS)
    def test_req_prod_beyond_ring(self, start: int) -> None:
        p = FrontBackPair(start)
        p.ops.store(REQ_PROD_OFF, start + RING_SIZE + 1)
        with pytest.raises(RemoteProtocolError):
            p.back.take_requests()
        assert p.back.req_cons == start
        p.ops.store(REQ_PROD_OFF, start + RING_SIZE)   # exactly full is legal
        assert len(p.back.take_requests()) == RING_SIZE

    def test_req_prod_beyond_unanswered(self) -> None:
        p = FrontBackPair()
        p.send(*[payload(i) for i in range(10)])
        p.back.take_requests()
        p.back.put_response(payload(0))
        p.back.push_responses()
        # 9 unanswered; 24 more would exceed the 32 slots.
        p.ops.store(REQ_PROD_OFF, 10 + 24)
        with pytest.raises(RemoteProtocolError):
            p.back.take_requests()
        assert p.back.req_cons == 10

    def test_req_prod_backwards(self) -> None:
        p = FrontBackPair()
        p.send(*[payload(i) for i in range(4)])
        p.back.take_requests()
        p.back.put_response(payload(0))
        p.ops.store(REQ_PROD_OFF, 2)    # behind req_cons (4), ahead of rsp_prod_pvt (1)
        with pytest.raises(RemoteProtocolError):
            p.back.take_requests()
        assert p.back.req_cons == 4

    def test_more_responses_than_taken(self) -> None:
        p = FrontBackPair()
        with pytest.raises(LocalProtocolError):
            p.back.put_response(payload(0))
        p.send(payload(1))
        p.back.take_requests()
        p.back.put_response(payload(1))
        with pytest.raises(LocalProtocolError):
            p.back.put_response(payload(2))

    def test_back_attach_mid_stream(self) -> None:
        p = FrontBackPair(2**32 - 1)
        p.send(payload(1))
        p.echo()
        p.front.take_responses()
        back2 = BackRing(p.buf, p.ops)   # a restarted backend re-attaches at rsp_prod
        assert back2.req_cons == back2.rsp_prod_pvt == 0
        p.send(payload(2))
        assert back2.take_requests() == [payload(2)]


# --- event page ------------------------------------------------------------------

class EventPair:
    def __init__(self, cons: int = 0) -> None:
        self.buf = bytearray(4096)
        self.ops = BufferIndexOps(self.buf)
        self.ops.store(IN_CONS_OFF, cons)
        self.ops.store(IN_PROD_OFF, 12345)             # stale value from an earlier backend
        self.back = EventRingBack(self.buf, self.ops)  # attach: in_prod = in_cons
        self.front = EventRingFront(self.buf, self.ops)


class TestAdopt:
    """What the plugin's C fast path did to our end: requests it pushed and
    responses it took, adopted in one step (Stream.adopt_outside)."""

    @staticmethod
    def push_outside(p: FrontBackPair, n: int) -> int:
        """Put ``n`` requests and publish them behind the FrontRing's back."""
        prod = p.front.req_prod_pvt
        for i in range(n):
            off = RING_HEADER + ((prod + i) % RING_SIZE) * SLOT_SIZE
            p.buf[off:off + SLOT_SIZE] = bytes([i]) * SLOT_SIZE
        p.ops.store(REQ_PROD_OFF, prod + n)
        return (prod + n) % M

    @pytest.mark.parametrize("start", STARTS)
    def test_pushed_and_consumed_together(self, start: int) -> None:
        p = FrontBackPair(start)
        # More went through than the ring holds at once: only the two
        # indexes together say how many are outstanding.
        for _ in range(3):
            published = self.push_outside(p, 20)
            reqs, _ = p.echo()
            assert len(reqs) == 20
            p.front.adopt(20, published, 20, (p.front.rsp_cons + 20) % M)
        assert p.front.req_prod_pvt == p.front.rsp_cons == (start + 60) % M
        assert not p.front.has_responses() and p.front.free_requests() == RING_SIZE

    def test_some_left_for_us(self) -> None:
        p = FrontBackPair(2**32 - 1)
        published = self.push_outside(p, 3)
        p.echo()
        p.front.adopt(3, published, 1, p.front.rsp_cons + 1)
        assert len(p.front.take_responses()) == 2

    @pytest.mark.parametrize("pushed, published, consumed, consumer", [
        (2, 3, 0, 0),    # the published index is not two past ours
        (2, 2, 1, 0),    # nor the consumer index one past
        (2, 2, 3, 3),    # more answers taken than requests made
        (-1, M - 1, 0, 0),
        (33, 33, 0, 0),  # more outstanding than the ring holds
    ])
    def test_inconsistent_indexes_refused(self, pushed: int, published: int, consumed: int,
                                          consumer: int) -> None:
        p = FrontBackPair(0)
        with pytest.raises(LocalProtocolError):
            p.front.adopt(pushed, published, consumed, consumer)
        assert p.front.req_prod_pvt == p.front.rsp_cons == 0  # nothing taken in


class TestEventRing:
    def test_attach(self) -> None:
        e = EventPair(77)
        assert e.ops.load(IN_PROD_OFF) == 77 and e.back.in_prod == 77
        assert e.front.in_cons == 77
        assert e.front.take_events() == []

    @pytest.mark.parametrize("cons", [0, 5, 2**32 - 3000])
    def test_mod_63_over_many_wraps(self, cons: int) -> None:
        e = EventPair(cons)
        n = 0
        for batch in [1, 62, 63, 10, 40, 63, 7, 55, 63, 2] * 3:
            evs = [payload(n + i, 1) for i in range(batch)]
            n += batch
            assert all(e.back.put_event(ev) for ev in evs)
            assert e.front.take_events() == evs
        assert n > 10 * EVT_RING_LEN
        assert e.ops.load(IN_CONS_OFF) == e.ops.load(IN_PROD_OFF) == (cons + n) % M

    def test_slot_is_index_mod_63(self) -> None:
        e = EventPair(100)
        e.back.put_event(payload(1))
        off = EVT_RING_OFFS + (100 % 63) * SLOT_SIZE
        assert bytes(e.buf[off:off + SLOT_SIZE]) == payload(1)

    def test_slot_uses_u32_index_at_the_wrap(self) -> None:
        # C computes (uint32_t)idx % 63; 2**32 is not a multiple of 63, so the
        # slot sequence jumps at the wrap.  Both ends must jump together.
        e = EventPair(2**32 - 2)
        for i, idx in enumerate([2**32 - 2, 2**32 - 1, 0, 1]):
            assert e.back.put_event(payload(i))
            off = EVT_RING_OFFS + (idx % 63) * SLOT_SIZE
            assert bytes(e.buf[off:off + SLOT_SIZE]) == payload(i)
            assert e.front.take_events() == [payload(i)]

    @pytest.mark.parametrize("cons", [2**32 - 62, 2**32 - 30, 2**32 - 4, 2**32 - 1])
    def test_batch_across_u32_wrap_never_overwrites(self, cons: int) -> None:
        # Index 0 shares slot 0 with index 2**32 - 4: the producer must stop
        # there while that event is unread, and never hand out garbage.
        e = EventPair(cons)
        accepted = []
        for i in range(63):
            if not e.back.put_event(payload(i)):
                break
            accepted.append(payload(i))
        assert e.front.take_events() == accepted
        lost = (cons + len(accepted)) % M
        assert len(accepted) == 63 or lost < 4
        # After the consumer caught up everything flows again.
        more = [payload(100 + i) for i in range(63)]
        assert all(e.back.put_event(ev) for ev in more)
        assert e.front.take_events() == more

    def test_full_page_drops(self) -> None:
        e = EventPair()
        for i in range(EVT_RING_LEN):
            assert e.back.put_event(payload(i)) is True
        assert e.back.put_event(payload(99)) is False
        assert e.ops.load(IN_PROD_OFF) == EVT_RING_LEN
        got = e.front.take_events()
        assert got == [payload(i) for i in range(EVT_RING_LEN)]
        assert e.back.put_event(payload(100)) is True
        assert e.front.take_events() == [payload(100)]

    def test_overflow_detected_and_resynced(self) -> None:
        e = EventPair(2**32 - 10)
        e.back.put_event(payload(1))
        e.ops.store(IN_PROD_OFF, (2**32 - 10 + 64) % M)   # hostile: 64 > 63 queued
        with pytest.raises(RemoteProtocolError):
            e.front.take_events()
        assert e.front.in_cons == e.ops.load(IN_CONS_OFF) == (2**32 - 10 + 64) % M
        assert e.front.take_events() == []
        # The page stays usable with a backend that re-attaches.
        back2 = EventRingBack(e.buf, e.ops)
        assert back2.put_event(payload(2))
        assert e.front.take_events() == [payload(2)]

    def test_backwards_in_prod(self) -> None:
        e = EventPair(10)
        e.ops.store(IN_PROD_OFF, 9)
        with pytest.raises(RemoteProtocolError):
            e.front.take_events()
        assert e.ops.load(IN_CONS_OFF) == 9

    def test_reset_discards_queued(self) -> None:
        e = EventPair()
        e.back.put_event(payload(1))
        e.back.put_event(payload(2))
        e.front.reset()
        assert e.ops.load(IN_CONS_OFF) == 2 and e.front.in_cons == 2
        assert e.front.take_events() == []
        e.back.put_event(payload(3))
        assert e.front.take_events() == [payload(3)]

    def test_bogus_in_cons_from_frontend_drops(self) -> None:
        e = EventPair()
        e.ops.store(IN_CONS_OFF, 1000)   # consumer claims more than was produced
        assert e.back.put_event(payload(1)) is False

    def test_copies_are_independent(self) -> None:
        e = EventPair()
        e.back.put_event(payload(1))
        got = e.front.take_events()
        e.buf[EVT_RING_OFFS:EVT_RING_OFFS + SLOT_SIZE] = bytes(SLOT_SIZE)
        assert got == [payload(1)] and type(got[0]) is bytes

    def test_put_checks_slot_size(self) -> None:
        e = EventPair()
        with pytest.raises(LocalProtocolError):
            e.back.put_event(b"short")


def test_module_exports() -> None:
    for name in ring.__all__:
        assert hasattr(ring, name), name


# --- randomised schedule against a FIFO model --------------------------------------

@settings(max_examples=150, deadline=None)
@given(start=st.sampled_from(STARTS + [2**31]),
       steps=st.lists(st.tuples(st.sampled_from(["put", "push", "serve", "answer", "take"]),
                                st.integers(1, 40)), max_size=60))
def test_random_schedule_is_fifo(start: int, steps: list[tuple[str, int]]) -> None:
    p = FrontBackPair(start)
    sent: list[bytes] = []      # put by the frontend, in order
    taken: list[bytes] = []     # taken by the backend, not yet answered
    answered: list[bytes] = []  # responses pushed or pending push
    received: list[bytes] = []
    n = 0
    for op, k in steps:
        if op == "put":
            for _ in range(k):
                if p.front.full():
                    with pytest.raises(LocalProtocolError):
                        p.front.put_request(payload(n))
                    break
                p.front.put_request(payload(n))
                sent.append(payload(n))
                n += 1
        elif op == "push":
            p.front.push_requests()
        elif op == "serve":
            taken += p.back.take_requests()
        elif op == "answer":
            for _ in range(min(k, len(taken))):
                answered.append(taken.pop(0))
                p.back.put_response(answered[-1])
            p.back.push_responses()
        else:
            received += p.front.take_responses()
        outstanding = (p.front.req_prod_pvt - p.front.rsp_cons) % M
        assert 0 <= outstanding <= RING_SIZE
        assert p.front.free_requests() == RING_SIZE - outstanding
    # Drain everything and check order end to end.
    p.front.push_requests()
    taken += p.back.take_requests()
    for t in taken:
        p.back.put_response(t)
        answered.append(t)
    p.back.push_responses()
    received += p.front.take_responses()
    assert received == answered == sent
    assert p.front.free_requests() == RING_SIZE


@pytest.mark.parametrize("start,count,size,expected", [
    (0, 10, 16, [(0, 10)]),
    (12, 10, 16, [(12, 4), (0, 6)]),
    (16 * 5 + 3, 16, 16, [(3, 13), (0, 3)]),
    (2**40 + 15, 1, 16, [(15, 1)]),
    (7, 0, 16, []),
])
def test_wrap_pieces(start, count, size, expected):
    from alsa_pvplug.protocol.ring import wrap_pieces

    assert wrap_pieces(start, count, size) == expected


class TestTakeRequestsLimit:
    """BackRing.take_requests(limit): a rate-limited backend takes part of the ring."""

    def _pair(self):
        buf = bytearray(4096)
        front = FrontRing(buf, BufferIndexOps(buf))
        back = BackRing(buf, BufferIndexOps(buf))
        return buf, front, back

    def test_limit_leaves_the_rest_and_does_not_rearm(self):
        buf, front, back = self._pair()
        for i in range(5):
            front.put_request(bytes([i]) * 64)
        front.push_requests()
        event_before = BufferIndexOps(buf).load(REQ_EVENT_OFF)
        got = back.take_requests(limit=2)
        assert [g[0] for g in got] == [0, 1]
        assert back.has_unconsumed()
        assert BufferIndexOps(buf).load(REQ_EVENT_OFF) == event_before
        got = back.take_requests(limit=10)
        assert [g[0] for g in got] == [2, 3, 4]
        assert not back.has_unconsumed()
        # Caught up: req_event is armed for the next request, as without a limit.
        assert BufferIndexOps(buf).load(REQ_EVENT_OFF) == back.req_cons + 1

    def test_limit_exactly_what_is_there_rearms(self):
        buf, front, back = self._pair()
        for i in range(3):
            front.put_request(bytes([i]) * 64)
        front.push_requests()
        assert len(back.take_requests(limit=3)) == 3
        assert not back.has_unconsumed()
        assert BufferIndexOps(buf).load(REQ_EVENT_OFF) == back.req_cons + 1

    def test_limit_zero_takes_nothing(self):
        buf, front, back = self._pair()
        front.put_request(bytes(64))
        front.push_requests()
        assert back.take_requests(limit=0) == []
        assert back.has_unconsumed()
