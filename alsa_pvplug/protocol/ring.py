"""ring.h request/response rings and the sndif event page, sans I/O.

Rule 1: this module never performs I/O, never reads a clock and never
imports cffi.  Every shared *index* goes through an injected
:class:`IndexOps` (the real one, in the transport layer, does the u32
loads/stores and the barriers in C); slot *contents* are copied with plain
buffer slicing.  Slots are always copied out as ``bytes`` before anyone
parses them, so a peer rewriting the page cannot change what we decoded.

Rule 2: indices are free-running uint32; every difference is taken mod
2**32.  Peer-written indices are validated before anything is consumed
(``RemoteProtocolError``); misuse by our own side raises
``LocalProtocolError``.

Layouts: ``xen/io/ring.h`` ``DEFINE_RING_TYPES(xen_sndif, ...)`` on one
4096-byte page, and ``struct xensnd_event_page`` from ``xen/io/sndif.h``
(docs/protocol.md section 5).
"""

from __future__ import annotations

import struct
from typing import Protocol

from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "IndexOps", "BufferIndexOps", "FrontRing", "BackRing", "EventRingFront", "EventRingBack",
    "PAGE_SIZE", "SLOT_SIZE", "RING_HEADER", "RING_SIZE", "EVT_RING_LEN", "EVT_RING_OFFS",
    "REQ_PROD_OFF", "REQ_EVENT_OFF", "RSP_PROD_OFF", "RSP_EVENT_OFF", "IN_CONS_OFF", "IN_PROD_OFF",
]

_M = 0xFFFFFFFF  # RING_IDX is uint32

PAGE_SIZE = 4096
SLOT_SIZE = 64          # sizeof(union xen_sndif_sring_entry) == sizeof(struct xensnd_evt)
RING_HEADER = 64        # offsetof(struct xen_sndif_sring, ring)

# struct xen_sndif_sring header (ring.h DEFINE_RING_TYPES)
REQ_PROD_OFF = 0        # written by the frontend
REQ_EVENT_OFF = 4       # written by the backend
RSP_PROD_OFF = 8        # written by the backend
RSP_EVENT_OFF = 12      # written by the frontend
_PVT_OFF = 16           # pvt union + __pad[44], zero

# struct xensnd_event_page header (sndif.h)
IN_CONS_OFF = 0         # written by the frontend
IN_PROD_OFF = 4         # written by the backend
EVT_RING_OFFS = 64      # XENSND_IN_RING_OFFS = sizeof(struct xensnd_event_page)
EVT_RING_LEN = (PAGE_SIZE - EVT_RING_OFFS) // SLOT_SIZE   # XENSND_IN_RING_LEN


def _round_down_pow2(x: int) -> int:
    """ring.h __RD32: the largest power of two <= x (0 for 0)."""
    return 1 << (x.bit_length() - 1) if x > 0 else 0


# __CONST_RING_SIZE(xen_sndif, 4096)
RING_SIZE = _round_down_pow2((PAGE_SIZE - RING_HEADER) // SLOT_SIZE)
assert RING_SIZE == 32 and EVT_RING_LEN == 63

# How far the event slot sequence jumps back when the u32 index wraps.
_U32_WRAP_SKEW = 2**32 % EVT_RING_LEN    # 4


class IndexOps(Protocol):
    """Access to the shared u32 indices of one page, plus the barriers.

    ``load``/``store`` must be single, untorn u32 accesses (the peer writes
    concurrently); ``mb``/``rmb``/``wmb`` are ring.h's ``xen_mb`` family.
    """

    def load(self, off: int) -> int: ...

    def store(self, off: int, value: int) -> None: ...

    def mb(self) -> None: ...

    def rmb(self) -> None: ...

    def wmb(self) -> None: ...


class BufferIndexOps:
    """Pure-Python :class:`IndexOps` over a writable buffer.

    For tests and in-memory peers of one process, threads included (under
    the GIL each load, store and slot copy is one step that no other Python
    thread interleaves with): the barriers are no-ops, which is only correct
    when no other process, and no code outside the GIL, touches the buffer.
    """

    __slots__ = ("_buf",)

    def __init__(self, buf: bytearray | memoryview) -> None:
        self._buf = buf

    def load(self, off: int) -> int:
        return int(struct.unpack_from("<I", self._buf, off)[0])

    def store(self, off: int, value: int) -> None:
        struct.pack_into("<I", self._buf, off, value & _M)

    def mb(self) -> None:
        pass

    def rmb(self) -> None:
        pass

    def wmb(self) -> None:
        pass


def _as_bytes_view(buf: object, need: int, what: str) -> memoryview:
    mv = memoryview(buf)  # type: ignore[arg-type]
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    if len(mv) < need:
        raise LocalProtocolError(f"{what} buffer is {len(mv)} octets, needs {need}")
    return mv


def _check_slot(slot: bytes) -> None:
    if len(slot) != SLOT_SIZE:
        raise LocalProtocolError(f"slot is {len(slot)} octets, expected {SLOT_SIZE}")


def _ring_slot(idx: int) -> int:
    """Byte offset of ring entry ``idx`` (ring.h RING_GET_REQUEST: idx & (size - 1))."""
    return RING_HEADER + (idx & (RING_SIZE - 1)) * SLOT_SIZE


def _evt_slot(idx: int) -> int:
    """Byte offset of event ``idx`` (sndif.h XENSND_IN_RING_REF: idx % 63, not a mask)."""
    return EVT_RING_OFFS + ((idx & _M) % EVT_RING_LEN) * SLOT_SIZE  # u32 first, as in C


class FrontRing:
    """The frontend's end of the sndif request/response ring.

    Construction is ``SHARED_RING_INIT`` + ``FRONT_RING_ATTACH(start)``:
    it (re)writes the shared header, so only the page's owner may build one.

    Parameters
    ----------
    buf : writable buffer of at least ``RING_HEADER + RING_SIZE * 64`` octets
    ops : IndexOps over the same buffer
    start : initial index (tests use values near 2**32 to cross the wrap)
    """

    def __init__(self, buf: object, ops: IndexOps, *, start: int = 0) -> None:
        self._mv = _as_bytes_view(buf, RING_HEADER + RING_SIZE * SLOT_SIZE, "ring")
        self._ops = ops
        start &= _M
        self.nr_ents = RING_SIZE
        self.req_prod_pvt = start
        self.rsp_cons = start
        self._mv[_PVT_OFF:RING_HEADER] = bytes(RING_HEADER - _PVT_OFF)
        ops.store(REQ_PROD_OFF, start)
        ops.store(RSP_PROD_OFF, start)
        # The peer is notified for the first request/response (ring.h SHARED_RING_INIT).
        ops.store(REQ_EVENT_OFF, start + 1)
        ops.store(RSP_EVENT_OFF, start + 1)
        ops.wmb()  # /* header initialised /before/ the ring is published */

    def free_requests(self) -> int:
        """ring.h RING_FREE_REQUESTS."""
        return RING_SIZE - ((self.req_prod_pvt - self.rsp_cons) & _M)

    def full(self) -> bool:
        """ring.h RING_FULL."""
        return self.free_requests() == 0

    def put_request(self, slot: bytes) -> int:
        """Copy a 64-octet request into slot ``req_prod_pvt`` (not yet visible).

        Returns
        -------
        int
            The ring index used.

        Raises
        ------
        LocalProtocolError
            The ring is full or ``slot`` is not 64 octets (EBADFD).
        """
        _check_slot(slot)
        if self.full():
            raise LocalProtocolError(f"request ring full ({RING_SIZE} outstanding)")
        idx = self.req_prod_pvt
        off = _ring_slot(idx)
        self._mv[off:off + SLOT_SIZE] = slot
        self.req_prod_pvt = (idx + 1) & _M
        return idx

    def push_requests(self) -> bool:
        """ring.h RING_PUSH_REQUESTS_AND_CHECK_NOTIFY.

        Returns
        -------
        bool
            True if the backend must be notified on the event channel.
        """
        ops = self._ops
        old = ops.load(REQ_PROD_OFF)
        new = self.req_prod_pvt
        ops.wmb()  # /* back sees requests /before/ updated producer index */
        ops.store(REQ_PROD_OFF, new)
        ops.mb()   # /* back sees new requests /before/ we check req_event */
        event = ops.load(REQ_EVENT_OFF)
        return ((new - event) & _M) < ((new - old) & _M)

    def adopt(self, pushed: int, published: int, consumed: int, consumer: int) -> None:
        """Someone sharing our end (the plugin's C fast path) put and pushed
        ``pushed`` requests, leaving the published ``req_prod`` at
        ``published``, and took ``consumed`` responses, leaving the consumer
        index at ``consumer``: take both in as our own.

        Raises
        ------
        LocalProtocolError
            An index is not that many past our own, more responses were taken
            than requests were made, or more requests would be outstanding
            than the ring holds (EBADFD).
        """
        prod = (self.req_prod_pvt + pushed) & _M
        cons = (self.rsp_cons + consumed) & _M
        if pushed < 0 or consumed < 0 or published & _M != prod or consumer & _M != cons \
                or consumed > (prod - self.rsp_cons) & _M or (prod - cons) & _M > RING_SIZE:
            raise LocalProtocolError(
                f"{pushed} requests and {consumed} responses adopted at req_prod_pvt="
                f"{self.req_prod_pvt}, rsp_cons={self.rsp_cons}, but the indexes are "
                f"{published} and {consumer}")
        self.req_prod_pvt, self.rsp_cons = prod, cons

    def has_responses(self) -> bool:
        """ring.h RING_HAS_UNCONSUMED_RESPONSES: one load, nothing consumed."""
        return self._ops.load(RSP_PROD_OFF) != self.rsp_cons

    def armed(self) -> bool:
        """Whether the backend notifies for the next response (``rsp_event``
        is just past what we consumed)."""
        return self._ops.load(RSP_EVENT_OFF) == (self.rsp_cons + 1) & _M

    def take_responses(self, rearm: bool = True) -> list[bytes]:
        """Copy out every available response, then re-arm ``rsp_event``.

        Loops as ring.h RING_FINAL_CHECK_FOR_RESPONSES does, so a response
        that lands while re-arming is not missed.  With ``rearm`` False,
        ``rsp_event`` is left behind: the backend does not notify for the
        next responses (a consumer that looks at the ring anyway asks for
        no wake-ups it does not need).

        Returns
        -------
        list of bytes
            Independent 64-octet copies, oldest first (possibly empty).

        Raises
        ------
        RemoteProtocolError
            ``rsp_prod`` claims more responses than requests outstanding
            (ring.h RING_RESPONSE_PROD_OVERFLOW, tightened); nothing is
            consumed (EIO).
        """
        ops = self._ops
        mv = self._mv
        cons = self.rsp_cons  # committed only on success: "consumes nothing" on error
        out: list[bytes] = []
        while True:
            rp = ops.load(RSP_PROD_OFF)
            ops.rmb()  # /* read responses /after/ reading rsp_prod */
            avail = (rp - cons) & _M
            if avail > ((self.req_prod_pvt - cons) & _M):
                raise RemoteProtocolError(
                    f"backend rsp_prod={rp} but only {(self.req_prod_pvt - self.rsp_cons) & _M} "
                    f"requests outstanding (rsp_cons={self.rsp_cons})")
            for i in range(avail):
                off = _ring_slot(cons + i)
                out.append(bytes(mv[off:off + SLOT_SIZE]))  # copy, never a view
            cons = rp
            if not rearm:
                break
            # RING_FINAL_CHECK_FOR_RESPONSES
            if ops.load(RSP_PROD_OFF) != cons:
                continue
            ops.store(RSP_EVENT_OFF, (cons + 1) & _M)
            ops.mb()  # /* rsp_event visible /before/ we re-check rsp_prod */
            if ops.load(RSP_PROD_OFF) == cons:
                break
        self.rsp_cons = cons
        return out


class BackRing:
    """The backend's end of the ring: ring.h BACK_RING_ATTACH at the current ``rsp_prod``.

    Parameters
    ----------
    buf : writable buffer (the mapped ring page)
    ops : IndexOps over the same buffer
    """

    def __init__(self, buf: object, ops: IndexOps) -> None:
        self._mv = _as_bytes_view(buf, RING_HEADER + RING_SIZE * SLOT_SIZE, "ring")
        self._ops = ops
        self.nr_ents = RING_SIZE
        prod = ops.load(RSP_PROD_OFF) & _M
        self.rsp_prod_pvt = prod
        self.req_cons = prod

    def take_requests(self, limit: int | None = None, rearm: bool = True) -> list[bytes]:
        """Copy out every pending request (at most ``limit``), then re-arm
        ``req_event`` if none is left (and ``rearm``: a backend that looks at
        the ring on its own schedule asks for no notifications).

        Loops as ring.h RING_FINAL_CHECK_FOR_REQUESTS does.  When ``limit``
        stops it early, ``req_event`` is left alone (no notification is due
        for requests we know of): call again, or check ``has_unconsumed``.

        Raises
        ------
        RemoteProtocolError
            ``req_prod`` runs more than RING_SIZE ahead of our responses
            (ring.h RING_REQUEST_PROD_OVERFLOW) or moved backwards; nothing
            is consumed (EIO).
        """
        ops = self._ops
        mv = self._mv
        cons = self.req_cons
        out: list[bytes] = []
        while True:
            rp = ops.load(REQ_PROD_OFF)
            ops.rmb()  # /* read requests /after/ reading req_prod */
            ahead = (rp - self.rsp_prod_pvt) & _M
            if ahead > RING_SIZE or ((rp - cons) & _M) > ahead:
                raise RemoteProtocolError(
                    f"frontend req_prod={rp} overflows the ring "
                    f"(req_cons={self.req_cons}, rsp_prod_pvt={self.rsp_prod_pvt})")
            n = (rp - cons) & _M
            if limit is not None and n > limit - len(out):
                n = limit - len(out)
                for i in range(n):
                    off = _ring_slot(cons + i)
                    out.append(bytes(mv[off:off + SLOT_SIZE]))
                self.req_cons = (cons + n) & _M
                return out
            for i in range(n):
                off = _ring_slot(cons + i)
                out.append(bytes(mv[off:off + SLOT_SIZE]))  # copy before parsing
            cons = rp
            if not rearm:
                break
            # RING_FINAL_CHECK_FOR_REQUESTS
            if ops.load(REQ_PROD_OFF) != cons:
                continue
            ops.store(REQ_EVENT_OFF, (cons + 1) & _M)
            ops.mb()  # /* req_event visible /before/ we re-check req_prod */
            if ops.load(REQ_PROD_OFF) == cons:
                break
        self.req_cons = cons
        return out

    def has_unconsumed(self) -> bool:
        """ring.h RING_HAS_UNCONSUMED_REQUESTS (without the overflow check,
        which ``take_requests`` does)."""
        return self._ops.load(REQ_PROD_OFF) != self.req_cons

    def put_response(self, slot: bytes) -> None:
        """Copy a 64-octet response into slot ``rsp_prod_pvt`` (not yet visible).

        Raises
        ------
        LocalProtocolError
            No taken request is left to answer, or ``slot`` is not 64 octets (EBADFD).
        """
        _check_slot(slot)
        if self.rsp_prod_pvt == self.req_cons:
            raise LocalProtocolError("more responses than requests taken")
        off = _ring_slot(self.rsp_prod_pvt)
        self._mv[off:off + SLOT_SIZE] = slot
        self.rsp_prod_pvt = (self.rsp_prod_pvt + 1) & _M

    def push_responses(self) -> bool:
        """ring.h RING_PUSH_RESPONSES_AND_CHECK_NOTIFY; True = notify the frontend."""
        ops = self._ops
        old = ops.load(RSP_PROD_OFF)
        new = self.rsp_prod_pvt
        ops.wmb()  # /* front sees resps /before/ updated producer index */
        ops.store(RSP_PROD_OFF, new)
        ops.mb()   # /* front sees new resps /before/ we check rsp_event */
        event = ops.load(RSP_EVENT_OFF)
        return ((new - event) & _M) < ((new - old) & _M)


class EventRingFront:
    """Consumer of the sndif event page (frontend).

    The frontend never notifies on the event channel (Linux
    ``evtchnl_interrupt_evt``).
    """

    def __init__(self, buf: object, ops: IndexOps) -> None:
        self._mv = _as_bytes_view(buf, PAGE_SIZE, "event page")
        self._ops = ops
        self.in_cons = ops.load(IN_CONS_OFF) & _M

    def reset(self) -> None:
        """Discard everything queued: ``in_cons = in_prod`` (on connect / stream open)."""
        ops = self._ops
        prod = ops.load(IN_PROD_OFF)
        self.in_cons = prod
        ops.mb()  # /* nothing read from the page /after/ in_cons moves */
        ops.store(IN_CONS_OFF, prod)

    def has_events(self) -> bool:
        """One load: whether ``take_events`` would return anything."""
        return (self._ops.load(IN_PROD_OFF) & _M) != self.in_cons

    def take_events(self) -> list[bytes]:
        """Copy out every queued event slot, oldest first, and release them.

        Raises
        ------
        RemoteProtocolError
            ``in_prod`` is more than 63 ahead of ``in_cons`` (or went
            backwards).  ``in_cons`` is first resynchronised to ``in_prod`` so
            the page stays usable; the events are lost (EIO).
        """
        ops = self._ops
        mv = self._mv
        cons = self.in_cons
        prod = ops.load(IN_PROD_OFF)
        ops.rmb()  # /* read events /after/ reading in_prod */
        n = (prod - cons) & _M
        if n > EVT_RING_LEN:
            self.in_cons = prod
            ops.store(IN_CONS_OFF, prod)
            ops.wmb()
            raise RemoteProtocolError(
                f"event page overflow: in_prod={prod} in_cons={cons} ({n} > {EVT_RING_LEN})")
        out = []
        for i in range(n):
            off = _evt_slot(cons + i)
            out.append(bytes(mv[off:off + SLOT_SIZE]))  # copy, never a view
        if n:
            self.in_cons = prod
            ops.mb()  # /* slots read /before/ in_cons frees them for the backend */
            ops.store(IN_CONS_OFF, prod)
            ops.wmb()  # /* in_cons published (Linux evtchnl_interrupt_evt) */
        return out


class EventRingBack:
    """Producer of the sndif event page (backend); attach sets ``in_prod = in_cons``."""

    def __init__(self, buf: object, ops: IndexOps) -> None:
        self._mv = _as_bytes_view(buf, PAGE_SIZE, "event page")
        self._ops = ops
        cons = ops.load(IN_CONS_OFF) & _M
        self.in_prod = cons
        ops.store(IN_PROD_OFF, cons)
        ops.wmb()  # /* in_prod reset /before/ any event is signalled */

    def put_event(self, slot: bytes) -> bool:
        """Queue one 64-octet event; the caller always notifies afterwards.

        Returns
        -------
        bool
            False if the page is full (63 unconsumed) and the event was
            dropped, as libxenbe does.

        Raises
        ------
        LocalProtocolError
            ``slot`` is not 64 octets (EBADFD).
        """
        _check_slot(slot)
        ops = self._ops
        cons = ops.load(IN_CONS_OFF)
        ops.mb()  # /* read in_cons /before/ overwriting the slot it freed */
        queued = (self.in_prod - cons) & _M
        if queued >= EVT_RING_LEN:
            # Full, or a bogus in_cons from the frontend: drop rather than overwrite.
            return False
        if self.in_prod < _U32_WRAP_SKEW and queued >= _U32_WRAP_SKEW:
            # Slots are (uint32)idx % 63 and 2**32 % 63 == 4, so right after the
            # u32 wrap index i lands on the slot of the still-queued index i - 4.
            # Both peers compute slots this way (sndif.h XENSND_IN_RING_REF); we
            # treat it as "full" instead of overwriting an unread event.
            return False
        off = _evt_slot(self.in_prod)
        self._mv[off:off + SLOT_SIZE] = slot
        self.in_prod = (self.in_prod + 1) & _M
        ops.wmb()  # /* event visible /before/ in_prod */
        ops.store(IN_PROD_OFF, self.in_prod)
        return True


def wrap_pieces(start: int, count: int, size: int) -> list[tuple[int, int]]:
    """Split ``count`` units from stream position ``start`` of a ring of
    ``size`` units into (ring offset, units) pieces that do not cross the end.

    Used for the audio buffer (frames at the frontend, octets at the
    backend): sndif requires every READ/WRITE to lie inside the buffer.
    """
    pieces = []
    while count > 0:
        off = start % size
        n = min(count, size - off)
        pieces.append((off, n))
        start += n
        count -= n
    return pieces
