"""The frontend (policy): connect a vsnd card, drive its streams, wait with deadlines.

Rule 1: this is the only layer that waits.  Every wait has a deadline (the
request timeout, default 3 s as Linux's ``VSND_WAIT_BACK_MS``) and ends in a
typed error: ``BackendTimeout``, ``BackendGone``, ``BackendError``,
``RemoteProtocolError``.
Rule 2: single-threaded.  Nothing runs in the background; notifications and
xenstore watches are processed inside the calls (``Card.process``), so the
caller (the ALSA glue, a test) decides when work happens.

Public API (see README "Python API")::

    card = Card.open(open_transport("sim", sim_dir=..., domid=1))
    out = card.stream(0, 0)                 # pcm 0, stream 0
    out.open(PcmFormat.S16_LE, channels=2, rate=48000, buffer_frames=4096, period_frames=1024)
    out.write(samples)                      # numpy array or bytes, blocks while full
    out.drain(); out.close(); card.close()
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import math
import select
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .errors import (
    BackendError,
    BackendGone,
    BackendTimeout,
    ConfigError,
    DeviceBusy,
    LocalProtocolError,
    PvSndError,
    RemoteProtocolError,
    Xrun,
)
from .log import get_logger
from .protocol import sndif
from .protocol.config import CardConfig, StreamConfig, is_card_branch, parse_card_config
from .protocol.giveup import GiveUp
from .protocol.pcm import check_report
from .protocol.ring import EventRingFront, FrontRing, wrap_pieces
from .protocol.sndif import HwParams, Op, PcmFormat, Trigger
from .protocol.stream import PositionTracker, StreamProtocol, StreamState
from .protocol.xenbus import (
    FrontendAction,
    XenbusState,
    frontend_on_backend,
    frontend_startup,
    parse_state,
)
from .protocol.xsnum import DOMID_MAX, parse_uint
from .transport.base import EventChannel, GrantSharer, SharedPages, Transport

logger = get_logger(__name__)

DEFAULT_TIMEOUT = 3.0
SHORT_TIMEOUT = 0.5  # per request after one went unanswered
#: what the backend should still hold when the next WRITE reaches it (s)
FLUSH_MARGIN = 0.002
#: a WRITE that falls due while the host sleeps waits this long past its
#: deadline for the host's next write (s): the timer wakes the host for the
#: deadline, and what it writes then goes with the rest in one WRITE
#: (``note_ready``), instead of waiting for the next deadline
WRITE_GRACE = 0.001
_BE_STATE_TOKEN = "pvplug-be-state"


class Card:
    """One vsnd device of this guest, connected to its backend."""

    def __init__(self, transport: Transport, devid: int = 0, *,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.transport = transport
        self.xs = transport.xenstore
        self.devid = devid
        self.timeout = timeout
        dom_path = self.xs.get_domain_path(transport.domid)
        self.fe_dir = f"{dom_path}/device/vsnd/{devid}"
        be_dir = self.xs.read(f"{self.fe_dir}/backend")
        raw_id = self.xs.read(f"{self.fe_dir}/backend-id")
        if be_dir is None or raw_id is None:
            raise ConfigError(
                f"no vsnd device {devid} for domain {transport.domid}: "
                f"{self.fe_dir}/backend or backend-id missing", key=f"{self.fe_dir}/backend")
        self.be_dir: str = be_dir
        self.be_domid: int = parse_uint(raw_id, 0, DOMID_MAX, f"{self.fe_dir}/backend-id")
        self.config: CardConfig = parse_card_config(self.xs.read_tree(self.fe_dir, is_card_branch))
        self.streams: dict[tuple[int, int], Stream] = {
            (sc.pcm_index, sc.stream_index): Stream(self, sc) for sc in self.config.streams}
        self.evtchn: EventChannel | None = None
        self.sharer: GrantSharer | None = None
        self._ports: dict[int, Callable[[], bool]] = {}
        self.be_state = XenbusState.UNKNOWN
        self.connected = False
        self._lost: str | None = None  # why the connection dropped, until reconnected
        self._watching = False
        self._published = False  # our rings are in xenstore (handshake under way or done)
        self.fe_state = XenbusState.UNKNOWN  # the last state we wrote
        self._connecting = False  # inside connect(): the handshake may go on
        self._handshake_failed: str | None = None
        #: formats an OPEN was refused for (snd_be refuses what its query
        #: allowed): not offered again by the plugin in this process
        self.refused_formats: set[PcmFormat] = set()

    @property
    def lost(self) -> str | None:
        """Why the connection dropped (None while connected or never lost)."""
        return self._lost

    # -- lifecycle ---------------------------------------------------------
    @classmethod
    def open(cls, transport: Transport, devid: int = 0, *,
             timeout: float = DEFAULT_TIMEOUT) -> Card:
        card = cls(transport, devid, timeout=timeout)
        try:
            card.connect()
        except BaseException:
            card.close()
            raise
        return card

    def stream(self, pcm: int = 0, index: int = 0) -> Stream:
        try:
            return self.streams[(pcm, index)]
        except KeyError:
            raise ConfigError(f"card has no stream {pcm}/{index}", key=f"{pcm}/{index}") from None

    def connect(self) -> None:
        """Reach Connected: recover stale state, publish every stream's rings.
        What happens on each backend state comes from protocol/xenbus.py's
        frontend table (``_on_backend``)."""
        deadline = time.monotonic() + self.timeout
        owner = self.transport.bound_kernel_driver("vsnd", self.devid)
        if owner is not None:
            # Both would drive one xenbus state and one backend: refuse before
            # touching xenstore.
            raise DeviceBusy(
                f"vsnd {self.devid} is driven by this guest's kernel driver {owner}; "
                f"unbind it (echo vsnd-{self.devid} > /sys/bus/xen/drivers/vsnd/unbind) "
                "and keep it off ('blacklist snd_xen_front' in /etc/modprobe.d)")
        if not self._watching:
            self.xs.watch(f"{self.be_dir}/state", _BE_STATE_TOKEN)
            self._watching = True
        if self.evtchn is None:
            self.evtchn = self.transport.open_event_channel()
        if self.sharer is None:
            self.sharer = self.transport.open_grant_sharer()
        raw = self.xs.read(f"{self.fe_dir}/state")
        try:
            stale = frontend_startup(parse_state(raw)) is FrontendAction.RESET
        except RemoteProtocolError:
            stale = True  # garbage in our own node (dom0 may write anywhere): ours to reset
        if stale:
            # A previous owner died or left the device configured: its grants
            # and ports died with it.  Closed, then Initialising, makes the
            # backend release them and return to InitWait (libxenbe).
            logger.info("vsnd %d: stale frontend state %r, resetting", self.devid, raw)
            self._write_state(XenbusState.CLOSED)
            self._write_state(XenbusState.INITIALISING)
        self.fe_state = XenbusState.INITIALISING
        self._handshake_failed = None
        self._connecting = True
        try:
            self._on_backend(self._read_be_state(self.be_state))  # counts as a change
            self._wait(lambda: self.connected or self._handshake_failed is not None,
                       deadline, "connect")
        except BackendTimeout:
            awaited = "InitWait" if self.fe_state == XenbusState.INITIALISING else "Connected"
            raise BackendTimeout(f"connect (waiting for backend {awaited})",
                                 self.timeout) from None
        finally:
            self._connecting = False
        if self._handshake_failed is not None:
            raise BackendGone("connect", self._handshake_failed)
        logger.info("vsnd %d: connected to backend domain %d", self.devid, self.be_domid)

    def _publish(self) -> None:
        assert self.evtchn is not None and self.sharer is not None
        self._teardown_rings()
        for st in self.streams.values():
            st._alloc_rings(self.sharer, self.evtchn, self.be_domid)
            self._ports[st.req_port] = st._on_notify
            self._ports[st.evt_port] = st._on_event_notify

        versions = self.xs.read(f"{self.be_dir}/{sndif.FIELD_BE_VERSIONS}")
        if versions is not None and str(sndif.PROTOCOL_VERSION) not in versions.split(","):
            raise BackendError("connect", -errno.EPROTONOSUPPORT,
                               f"backend speaks sndif versions {versions!r}, we need 2")

        def body(tx: int) -> None:
            if versions is not None:
                self.xs.write(f"{self.fe_dir}/{sndif.FIELD_FE_VERSION}",
                              str(sndif.PROTOCOL_VERSION), tx)
            for st in self.streams.values():
                d = f"{self.fe_dir}/{st.config.path}"
                assert st.ring_pages is not None and st.evt_pages is not None
                self.xs.write(f"{d}/{sndif.FIELD_RING_REF}", str(st.ring_pages.refs[0]), tx)
                self.xs.write(f"{d}/{sndif.FIELD_EVT_CHNL}", str(st.req_port), tx)
                self.xs.write(f"{d}/{sndif.FIELD_EVT_RING_REF}", str(st.evt_pages.refs[0]), tx)
                self.xs.write(f"{d}/{sndif.FIELD_EVT_EVT_CHNL}", str(st.evt_port), tx)

        self.xs.transact(body)
        self._published = True

    def _teardown_rings(self) -> None:
        for st in self.streams.values():
            st._drop(self.evtchn)
        self._ports.clear()
        self._published = False

    def close(self) -> None:
        """Close every stream, hand the device back to Initialising.  Never raises."""
        for st in self.streams.values():
            try:
                st.close()
            except PvSndError as exc:
                logger.warning("closing %s: %s", st.name, exc)
        was_up = self.connected or self._published
        try:
            if self.connected and self._lost is None:
                # Linux xen_drv_remove: Closing, then give the backend up to
                # a second to release our pages before we unshare them.
                self.connected = False
                self._write_state(XenbusState.CLOSING)
                deadline = time.monotonic() + min(1.0, self.timeout)
                try:
                    self._wait(self._released, deadline, "close")
                except PvSndError:
                    pass
            self._teardown_rings()
            if self._watching:
                self.xs.unwatch(f"{self.be_dir}/state", _BE_STATE_TOKEN)
                self._watching = False
            if was_up:
                self._write_state(XenbusState.INITIALISING)
        except PvSndError as exc:
            logger.warning("vsnd %d close: %s", self.devid, exc)
        finally:
            self.connected = False
            for h in (self.evtchn, self.sharer):
                if h is not None:
                    try:
                        h.close()
                    except PvSndError as exc:
                        logger.warning("vsnd %d close: %s", self.devid, exc)
            self.evtchn = self.sharer = None

    def _released(self) -> bool:
        """While we are Closing: the backend holds none of our pages."""
        return frontend_on_backend(XenbusState.CLOSING, self.be_state) is FrontendAction.NONE

    def ensure_connected(self) -> None:
        """Raise BackendGone if the backend dropped us; reconnect if it is ready again."""
        self.process(0)
        if self._lost is not None:
            if self.be_state == XenbusState.INIT_WAIT:
                logger.info("vsnd %d: backend is back, reconnecting", self.devid)
                self.connect()
            else:
                raise BackendGone("request", self._lost)

    # -- the backend's state: one dispatcher ---------------------------------
    def _write_state(self, state: XenbusState) -> None:
        self.xs.write(f"{self.fe_dir}/state", str(int(state)))
        self.fe_state = state

    def _read_be_state(self, default: XenbusState) -> XenbusState:
        try:
            return parse_state(self.xs.read(f"{self.be_dir}/state"))
        except RemoteProtocolError as exc:
            logger.warning("vsnd %d: %s", self.devid, exc)
            return default  # as if unchanged: garbage is no state to act on

    def _refresh_be_state(self) -> None:
        new = self._read_be_state(self.be_state)
        if new != self.be_state:
            self._on_backend(new)

    def _on_backend(self, new: XenbusState) -> None:
        """The backend's state changed (xenbus rule: act on changes only):
        look our reaction up in the table and perform it."""
        old, self.be_state = self.be_state, new
        logger.debug("vsnd %d: backend state %s -> %s", self.devid, old.name, new.name)
        action = frontend_on_backend(self.fe_state, new)
        if self.connected and action is not FrontendAction.NONE:
            # Backend restarted, closing, closed or vanished: our grants and
            # ports are no longer served.  Streams must be reopened.
            self.connected = False
            self._lost = f"backend state went {old.name} -> {new.name}"
            for st in self.streams.values():
                st._on_connection_lost(self._lost)
        self._perform(action, new)

    def _perform(self, action: FrontendAction, be: XenbusState) -> None:
        if action in (FrontendAction.RESET, FrontendAction.REPUBLISH):
            if self._connecting and action is FrontendAction.RESET:
                self._handshake_failed = f"backend went {be.name} during the handshake"
            # The rings themselves go when we publish again or close: a
            # stream another thread is copying into keeps its buffer until
            # that thread's next callback has seen the loss.
            self._published = False
            self._write_state(XenbusState.INITIALISING)
        if action in (FrontendAction.PUBLISH, FrontendAction.REPUBLISH) and self._connecting:
            # Only when asked (connect, ensure_connected): a backend that
            # fails every handshake would otherwise ping-pong with us for as
            # long as the application polls.
            self._publish()
            self._write_state(XenbusState.INITIALISED)
        elif action is FrontendAction.CONNECT:
            self._write_state(XenbusState.CONNECTED)
            self.connected = True
            self._lost = None
        # NONE, WAIT: nothing to do (close() waits for NONE while Closing)

    def fileno_list(self) -> list[int]:
        fds = [self.xs.fileno()]
        if self.evtchn is not None:
            fds.append(self.evtchn.fileno())
        return fds

    def process(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a notification or watch, handle all."""
        fds = self.fileno_list()
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except InterruptedError:
            ready = []
        if self.xs.fileno() in ready:
            for _path, token in self.xs.check_watch():
                if token == _BE_STATE_TOKEN:
                    self._refresh_be_state()
        if self.evtchn is not None and self.evtchn.fileno() in ready:
            while (port := self.evtchn.pending()) is not None:
                handler = self._ports.get(port)
                # A handler may keep its port masked (its notifications latch).
                if handler is None or handler():
                    self.evtchn.unmask(port)
        # Belt and braces: a lost notification costs latency, never a hang.
        for st in self.streams.values():
            st.poll()

    def wait_until(self, cond: Callable[[], bool], what: str, *, lock: Any = None,
                   extra: float = 0.0, progress: Callable[[], object] | None = None,
                   next_check: Callable[[], float | None] | None = None) -> None:
        """Wait until ``cond()`` (evaluated holding ``lock``), looking again
        when the fds wake or at ``next_check()``; BackendTimeout when nothing
        moves for the timeout (``progress`` changing moves the deadline on)
        beyond ``extra`` seconds.  The lock is not held while waiting."""
        lock = lock if lock is not None else contextlib.nullcontext()
        deadline = time.monotonic() + self.timeout + extra
        last = None
        while True:
            with lock:
                if cond():
                    return
                cur = progress() if progress else None
                due = next_check() if next_check else None
                fds = self.fileno_list()
            now = time.monotonic()
            if progress is not None and cur != last:
                last = cur
                deadline = max(deadline, now + self.timeout)
            if now >= deadline:
                raise BackendTimeout(what, self.timeout)
            wait = 0.05 if due is None else min(0.05, max(0.0005, due - now + 0.002))
            try:
                select.select(fds, [], [], min(wait, deadline - now))
            except InterruptedError:
                pass

    def _wait(self, cond: Callable[[], bool], deadline: float, what: str,
              progress: Callable[[], object] | None = None) -> None:
        """Process until ``cond()``; BackendTimeout at ``deadline``.  With
        ``progress``, the deadline moves on whenever its value changes."""
        last = progress() if progress else None
        while not cond():
            now = time.monotonic()
            if progress is not None:
                cur = progress()
                if cur != last:
                    last = cur
                    deadline = max(deadline, now + self.timeout)
            if now >= deadline:
                raise BackendTimeout(what, self.timeout)
            self.process(min(deadline - now, 0.5))


class StreamRanges(NamedTuple):
    """What a stream accepts (``Stream.offered``)."""

    formats: list[PcmFormat]
    rates: list[int]
    channels: tuple[int, int]
    period_frames_min: int


class Stream:
    """One sndif stream (playback or capture) of a connected card.

    The data path never waits on the backend: ``write_at`` copies into the
    shared buffer and sends a WRITE for what is new (coalescing what comes
    while WRITEs are in flight), ``poll`` takes answers and CUR_POS events
    off the rings (shared memory only) and, for capture, sends READs for
    what the backend reported captured.  A failed request becomes the error
    of the next ``check``.  Control requests (OPEN, CLOSE, TRIGGER,
    HW_PARAM_QUERY) wait for their answer, bounded by the card's timeout.

    Positions are frames since OPEN:

    * playback: ``appl`` the end of what was written into the buffer,
      ``sent`` the end of what WRITEs announced, ``acked`` the end of the
      latest answered WRITE (the backend holds its own copy up to there, so
      those frames may be overwritten), ``reported`` the backend's CUR_POS;
    * capture: ``reported`` what the backend says it captured, ``read_sent``
      the end of READs sent, ``confirmed`` the end of answered READs (only
      those frames are in the buffer for sure: snd_be fills it while it
      handles READ).
    """

    #: data requests in flight at most (the ring holds 32)
    MAX_DATA_IN_FLIGHT = 4
    #: request ids a sender outside Python (the C fast path) may use between
    #: two looks of ours; it takes the answers itself, and keeps at most 24
    #: in flight (pvplug_fast.h)
    MAX_OUTSIDE_IDS = 64

    def __init__(self, card: Card, config: StreamConfig) -> None:
        self.card = card
        self.config = config
        self.capture = config.is_capture
        self.name = f"vsnd{card.devid}/{config.pcm_index}/{config.stream_index}" \
                    f"({'capture' if config.is_capture else 'playback'})"
        self.proto = StreamProtocol(self.name)
        self.ring: FrontRing | None = None
        self.evt_ring: EventRingFront | None = None
        self.ring_pages: SharedPages | None = None
        self.evt_pages: SharedPages | None = None
        self.req_port = -1
        self.evt_port = -1
        self.buffer: SharedPages | None = None
        self.dir_pages: SharedPages | None = None
        #: time.monotonic() just after the latest CUR_POS was taken off the
        #: event ring (None before any): a position report's observation time
        self.pos_seen_at: float | None = None
        self._error: PvSndError | None = None
        self.format = PcmFormat.S16_LE
        self.channels = 0
        self.rate = 0
        self.frame_bytes = 0
        self.buffer_frames = 0
        self.period_frames = 0
        self.start_threshold = 0
        self.cur_pos_events = 0  # CUR_POS events applied over the stream's life
        self._reports: collections.deque[tuple[int, float]] = collections.deque(maxlen=64)
        self.outside_writes = 0  # WRITEs sent outside Python (the C fast path), adopted
        self.outside_answers = 0  # WRITE answers it took off the ring, adopted
        self.violations = 0      # impossible reports over the stream's life
        self.giveup = GiveUp(self.name)
        #: what the stream was last opened with (open's arguments): a stream
        #: closed by a reconnection opens again with them at prepare
        self._opened_as: tuple[PcmFormat, int, int, int, int, int | None] | None = None
        self._ranges: dict[int, tuple[Op, int, int]] = {}  # data request id -> (op, start, end)
        self._sent_at: dict[int, float] = {}               # data request id -> when
        self._outcomes: dict[int, sndif.Resp | PvSndError] = {}  # control request answers
        self._unanswered = False  # the last request timed out
        #: someone blocks until answers come: ask the backend to notify them
        self.waiting = False
        #: capture: how far READs may run ahead of the application (frames);
        #: a buffer less a period, so a backend one period ahead of them
        #: never overwrites what the application has not read
        self.read_ahead = 1 << 62
        #: capture, a client that rides through overruns: how far READs
        #: follow a backend whose own clock has already run a buffer past
        #: the application (0: never).  Only then: an unpaced backend records
        #: what READs ask for and a period more, so reading further ahead
        #: would itself overwrite what the client has not read.
        self.ride_ahead = 0
        #: CUR_POS notifications unmask their port (set_event_wakes)
        self.event_wakes = True
        #: set by a user that lets C copy and send WRITEs behind our back
        #: (glue/pcm.py): takes that in; called before we touch the ring
        self.outside: Callable[[], None] | None = None
        #: and, given the event page's in_prod, when it first saw it (None:
        #: it did not), which is then the time of the reports taken up to it
        self.seen_outside: Callable[[int], float | None] | None = None
        self._event_held = False
        self._reset_positions()

    def _reset_positions(self) -> None:
        self.appl = 0
        self.sent = 0
        self.acked = 0
        self.reported = 0
        self.read_sent = 0
        self.confirmed = 0
        self.overruns = 0       # capture: READs refused because the data was overwritten
        self._dirty_from: int | None = None
        self._last_submit = -math.inf
        self.ready_at = -math.inf    # when the host was last told it may write
        self.last_write = -math.inf  # when it last wrote
        self._started_at: float | None = None  # when TRIGGER START was answered
        self._ran = False       # started since OPEN: reopen before the next start
        self.pos_seen_at = None
        self._reports.clear()

    # -- rings (called by Card) --------------------------------------------
    def _alloc_rings(self, sharer: GrantSharer, evtchn: EventChannel, be_domid: int) -> None:
        self._take_outside()
        self.ring_pages = sharer.share_pages(be_domid, 1, writable=True)
        self.evt_pages = sharer.share_pages(be_domid, 1, writable=True)
        ops = self.card.transport.index_ops
        self.ring = FrontRing(self.ring_pages.buf, ops(self.ring_pages.buf))
        self.evt_ring = EventRingFront(self.evt_pages.buf, ops(self.evt_pages.buf))
        self.req_port = evtchn.bind_unbound_port(be_domid)
        self.evt_port = evtchn.bind_unbound_port(be_domid)
        self._event_held = False
        self._forget_requests()
        self._error = None

    def _forget_requests(self) -> None:
        self._take_outside()
        self.proto.reset()
        self._ranges.clear()
        self._sent_at.clear()
        self._outcomes.clear()

    def _drop(self, evtchn: EventChannel | None) -> None:
        """Release rings, ports and buffer (connection gone).  Never raises."""
        self._take_outside()
        self._unshare_buffer()
        self._unshare(self.ring_pages, self.evt_pages)
        self.ring_pages = self.evt_pages = None
        for port in (self.req_port, self.evt_port):
            if port >= 0 and evtchn is not None:
                try:
                    evtchn.unbind(port)
                except PvSndError as exc:
                    logger.warning("%s: unbind: %s", self.name, exc)
        self.ring = self.evt_ring = None
        self.req_port = self.evt_port = -1
        self._forget_requests()

    def _on_connection_lost(self, why: str) -> None:
        self._forget_requests()

    def _on_notify(self) -> bool:
        self.poll()
        return True

    def _on_event_notify(self) -> bool:
        """A CUR_POS notification; True to unmask the port again.  While
        ``event_wakes`` is off (the glue's timer already wakes the poller at
        the right time), the port stays masked: later notifications latch
        instead of waking the poller for nothing."""
        self.poll()
        self._event_held = not self.event_wakes
        return not self._event_held

    def set_event_wakes(self, on: bool) -> None:
        """Whether CUR_POS notifications should wake the poller (see above)."""
        self.event_wakes = on
        if on and self._event_held and self.card.evtchn is not None and self.evt_port >= 0:
            self._event_held = False
            self.card.evtchn.unmask(self.evt_port)

    # -- the rings -----------------------------------------------------------
    def poll(self, now: float | None = None) -> None:
        """Take answers and events off the rings and act on them: record
        positions, send what is due (a coalesced WRITE, capture READs).
        Shared memory only, unless a request goes out.  Never raises: errors
        wait for ``check``."""
        self._take_outside()
        if self.ring is None:
            return
        if self.proto.outstanding:
            # Notifications for answers only while someone waits for one
            # (a control request, a blocked caller, capture data, a pointer
            # the backend's answers hold back): the callbacks look at the
            # ring anyway.  A caller that starts waiting after answers were
            # taken unarmed arms the ring now, or the next answer would not
            # wake it (a 0.5 s stall in the fuzz campaign's honest guest).
            rearm = self.waiting or self.capture \
                or len(self._ranges) < self.proto.outstanding \
                or self.reported + self.period_frames >= self.acked
            if self.ring.has_responses() or (rearm and not self.ring.armed()):
                try:
                    slots = self.ring.take_responses(rearm=rearm)
                except RemoteProtocolError as exc:
                    self._fail(exc)
                    slots = []
                for slot in slots:
                    self._on_response(sndif.decode_response(slot))
        if self.evt_ring is not None and self.proto.state != StreamState.CLOSED \
                and self.evt_ring.has_events():
            self._take_events()
        if self.proto.state in (StreamState.RUNNING, StreamState.PAUSED, StreamState.OPENED) \
                and self.frame_bytes:
            now = time.monotonic() if now is None else now
            self._expire(now)
            if self.capture:
                self._read_ahead(now)
            elif self._dirty_from is not None and not self.proto.control_in_flight:
                self._maybe_flush(now, WRITE_GRACE)
        if self.capture:
            self.giveup.progress(moved=self.confirmed, consumed=self.appl)
        else:
            self.giveup.progress(moved=self.reported, consumed=self.reported)

    def _fail(self, exc: PvSndError) -> None:
        if self._error is None:
            self._error = exc

    def _on_response(self, resp: sndif.Resp) -> None:
        rng = self._ranges.pop(resp.id, None)
        self._sent_at.pop(resp.id, None)
        try:
            got = self.proto.receive(resp)
        except BackendError as exc:
            if rng is None:
                self._outcomes[resp.id] = exc
            else:
                self._data_failed(rng, exc)
            return
        except RemoteProtocolError as exc:
            self._fail(exc)
            return
        if got is None:
            return  # the answer to a request we gave up on
        if rng is None:
            self._outcomes[resp.id] = got
            return
        self.giveup.data_answered()
        if rng[0] == Op.WRITE:
            self.acked = rng[2]  # in order: the backend's data now ends there
        else:
            self.confirmed = max(self.confirmed, rng[2])

    def _data_failed(self, rng: tuple[Op, int, int], exc: BackendError) -> None:
        op, start, end = rng
        if op == Op.READ and exc.status == -errno.EPIPE:
            # Overwritten before we asked: lost, as on hardware; the ring holds
            # newer frames there now.  An overrun only where the client's
            # stop_threshold says so (the glue's call).
            self.confirmed = max(self.confirmed, end)
            self.overruns += 1
            return
        self._fail(BackendError(f"{self.name}: {op.name} of frames {start}..{end}",
                                exc.status))

    def _take_events(self) -> None:
        assert self.evt_ring is not None
        try:
            slots = self.evt_ring.take_events()
        except RemoteProtocolError as exc:
            self._fail(exc)
            return
        if not slots or self.proto.state == StreamState.CLOSED or not self.frame_bytes:
            return  # no stream instance; stale events are dropped at OPEN
        taken = time.monotonic()
        first = (self.evt_ring.in_cons - len(slots)) & 0xFFFFFFFF
        tracker = self.proto.position
        for i, slot in enumerate(slots):
            seen = taken
            if self.seen_outside is not None:  # C saw it first (pvplug_fast.h)
                seen = min(taken, self.seen_outside((first + i + 1) & 0xFFFFFFFF) or taken)
            evt = sndif.decode_event(slot)
            if evt is None:
                logger.debug("%s: unknown event type ignored", self.name)
                continue
            saved = tracker.save()
            try:
                tracker.on_event(evt)
                frames = tracker.octets // self.frame_bytes
                check_report(frames, capture=self.capture, data_end=self._data_end(),
                             buffer=self.buffer_frames, period=self.period_frames,
                             rate=self.rate, running_s=self._running_seconds(seen),
                             position=evt.position)
            except RemoteProtocolError as exc:
                tracker.restore(saved)
                self.violations += 1
                logger.warning("%s: %s", self.name, exc)
                self._fail(exc)
                continue
            self.reported = frames
            self.cur_pos_events += 1
            self.pos_seen_at = seen
            self._reports.append((frames, seen))

    def take_reports(self) -> list[tuple[int, float]]:
        """The reports (frames, when seen) taken since the last call, oldest
        first (the newest 64): each is a point of the position clock."""
        out = list(self._reports)
        self._reports.clear()
        return out

    def _data_end(self) -> int:
        return self.confirmed if self.capture else self.sent

    def _running_seconds(self, now: float) -> float:
        return 0.0 if self._started_at is None else max(0.0, now - self._started_at)

    def _expire(self, now: float) -> None:
        """A data request unanswered for the timeout: the backend is stuck."""
        if not self._sent_at:
            return
        rid, t = next(iter(self._sent_at.items()))
        if now - t > self.card.timeout:
            op = self._ranges.get(rid, (Op.WRITE, 0, 0))[0]
            self.giveup.data_unanswered()  # _sent_at holds data requests only
            self._fail(BackendTimeout(f"{self.name}: {op.name}", self.card.timeout))
            self._abandon()

    def _abandon(self) -> None:
        self.proto.abandon()
        self._ranges.clear()
        self._sent_at.clear()
        self._unanswered = True

    # -- requests ----------------------------------------------------------
    def check(self) -> None:
        """Raise what went wrong since the last call (a failed request, the
        backend gone or breaking the protocol).  No system call."""
        if self.card.lost is not None:
            raise BackendGone(self.name, self.card.lost)
        if self._error is not None:
            err, self._error = self._error, None
            if isinstance(err, BackendTimeout):
                self.giveup.timed_out()
            raise err

    def _check_connected(self) -> None:
        """``check``, after reconnecting if the backend is back."""
        self.card.ensure_connected()
        self.check()

    def _take_outside(self) -> None:
        if self.outside is not None:
            self.outside()

    def _submit(self, req: Any) -> None:
        self._take_outside()
        assert self.ring is not None and self.card.evtchn is not None
        self.ring.put_request(sndif.encode_request(req))
        if self.ring.push_requests():
            self.card.evtchn.notify(self.req_port)

    def _submit_data(self, op: Op, start: int, end: int, now: float) -> None:
        off = start % self.buffer_frames * self.frame_bytes
        req = self.proto.rw(op, off, (end - start) * self.frame_bytes)
        self._ranges[req.id] = (op, start, end)
        self._sent_at[req.id] = now
        self._submit(req)

    def _data_slots(self) -> int:
        """How many more data requests may go out now."""
        free = self.ring.free_requests() if self.ring is not None else 0
        return max(0, min(self.MAX_DATA_IN_FLIGHT - len(self._ranges), free - 1))

    def _request(self, req: Any, what: str) -> sndif.Resp:
        """Send a control request and wait for its answer (data answers that
        arrive meanwhile are taken too)."""
        self._submit(req)
        # After a timeout, tearing down (STOP, CLOSE) must not wait a full
        # timeout per request again: be brief until the backend answers.
        timeout = self.card.timeout if not self._unanswered else min(self.card.timeout,
                                                                     SHORT_TIMEOUT)
        deadline = time.monotonic() + timeout
        rid = req.id
        while True:
            self.poll()
            got = self._outcomes.pop(rid, None)
            if got is not None:
                self._unanswered = False
                if isinstance(got, PvSndError):
                    raise got
                return got
            err = self._error
            if isinstance(err, RemoteProtocolError) or self.card.lost is not None:
                self._abandon()
                if err is not None:
                    self._error = None
                    raise err
                raise BackendGone(what, self.card.lost or "")
            now = time.monotonic()
            if now >= deadline:
                self._abandon()
                raise BackendTimeout(what, timeout)
            self.card.process(min(deadline - now, 0.5))

    def wait_idle(self, what: str) -> None:
        """Wait until no data request is in flight (bounded by the timeout)."""
        if not self._ranges:
            return
        deadline = time.monotonic() + self.card.timeout
        with self.waiting_for_answers():
            self._wait_idle(deadline, what)

    @contextlib.contextmanager
    def waiting_for_answers(self) -> Iterator[None]:
        """While blocked, have answers notified (see ``poll``)."""
        was, self.waiting = self.waiting, True
        try:
            yield
        finally:
            self.waiting = was

    def _wait_idle(self, deadline: float, what: str) -> None:
        while self._ranges:
            self.poll()
            if not self._ranges or self.card.lost is not None:
                return
            now = time.monotonic()
            if now >= deadline:
                self._abandon()
                raise BackendTimeout(f"{self.name}: {what}", self.card.timeout)
            self.card.process(min(deadline - now, 0.5))

    @property
    def state(self) -> StreamState:
        return self.proto.state

    def offered(self) -> StreamRanges:
        """What to offer a client: the xenstore config, refined by
        HW_PARAM_QUERY where the backend answers it, less the formats an
        OPEN was refused for in this process (unless none would be left:
        the backend confirms by accepting)."""
        cfg = self.config
        formats = list(cfg.formats)
        rates = list(cfg.rates)
        ch = (cfg.channels_min, cfg.channels_max)
        period_min = 1
        try:
            big = 1 << 31
            q = self.query_hw_params(HwParams(
                sndif.format_mask(formats), (cfg.rate_min, cfg.rate_max), ch, (1, big),
                (1, big)))
            allowed = set(sndif.formats_from_mask(q.formats))
            formats = [f for f in formats if f in allowed] or formats
            rates = [r for r in rates if q.rates[0] <= r <= q.rates[1]] or rates
            ch = (max(ch[0], q.channels[0]), min(ch[1], q.channels[1]))
            if ch[0] > ch[1]:
                ch = (cfg.channels_min, cfg.channels_max)
            period_min = max(1, q.period[0])
        except BackendError as exc:
            # snd_be answers HW_PARAM_QUERY only for some hosts; xenstore rules.
            if isinstance(exc, BackendTimeout) or exc.status == -errno.ENODEV:
                raise
            logger.info("%s: HW_PARAM_QUERY refused (%s); using the xenstore config",
                        self.name, exc)
        refused = self.card.refused_formats
        formats = [f for f in formats if f not in refused] or formats
        return StreamRanges(formats, rates, ch, period_min)

    def query_hw_params(self, params: HwParams) -> HwParams:
        """HW_PARAM_QUERY: the backend's refinement of ``params``."""
        self._check_connected()
        resp = self._request(self.proto.query(params), "HW_PARAM_QUERY")
        if resp.hw_param is None:
            raise RemoteProtocolError(f"{self.name}: HW_PARAM_QUERY response without parameters")
        return resp.hw_param

    def open(self, fmt: PcmFormat | int, channels: int, rate: int, buffer_frames: int,
             period_frames: int, start_threshold: int | None = None) -> None:
        """Share a buffer and OPEN the stream (ALSA hw_params + prepare)."""
        self._check_connected()
        if self.state != StreamState.CLOSED:
            self.close()
        fmt = PcmFormat(fmt)
        fb = sndif.frame_bytes(fmt, channels)
        if buffer_frames <= 0 or period_frames <= 0 or period_frames > buffer_frames:
            raise ConfigError(f"{self.name}: bad geometry buffer={buffer_frames} "
                              f"period={period_frames} frames")
        sharer = self.card.sharer
        assert sharer is not None
        n_pages = sndif.buffer_page_count(buffer_frames * fb)
        self.buffer = sharer.share_pages(self.card.be_domid, n_pages, writable=True)
        self.dir_pages = sharer.share_pages(
            self.card.be_domid, sndif.dir_page_count(n_pages), writable=True)
        for i, page in enumerate(sndif.encode_page_directory(self.dir_pages.refs,
                                                             self.buffer.refs)):
            self.dir_pages.buf[i * 4096:(i + 1) * 4096] = page
        self.format, self.channels, self.rate, self.frame_bytes = fmt, channels, rate, fb
        self.buffer_frames, self.period_frames = buffer_frames, period_frames
        self.read_ahead = max(period_frames, buffer_frames - period_frames)
        self.start_threshold = buffer_frames if start_threshold is None else start_threshold
        try:
            self._open_request()
        except PvSndError as exc:
            self._unshare_buffer()
            self.frame_bytes = 0
            if isinstance(exc, BackendError) and exc.status == -errno.EINVAL:
                self.card.refused_formats.add(fmt)
                raise ConfigError(
                    f"{self.name}: the backend refused {fmt.name}, {channels} channels, "
                    f"{rate} Hz, period {period_frames}, buffer {buffer_frames} frames "
                    f"(status {exc.status}); choose another configuration "
                    "(plug: converts)") from None
            raise
        self._opened_as = (fmt, channels, rate, buffer_frames, period_frames, start_threshold)

    def _open_request(self) -> None:
        assert self.dir_pages is not None and self.evt_ring is not None
        fb = self.frame_bytes
        self._request(self.proto.open(self.rate, int(self.format), self.channels,
                                      self.buffer_frames * fb, self.dir_pages.refs[0],
                                      self.period_frames * fb), "OPEN")
        # Events of the previous instance may have been taken while we
        # waited: drop them and whatever they did to the count.
        self.evt_ring.reset()
        self.proto.position = PositionTracker()
        self._reset_positions()

    def prepare(self, after_xrun: bool = False) -> None:
        """Back to position 0, ready to start (ALSA prepare).  A stream that
        ran since OPEN is closed and opened again on the same buffer: the one
        origin every backend agrees on (snd_be's counters survive STOP).  A
        stream a reconnection closed opens again as it was.  Fails for good
        once the backend has failed it too often in a row (``GiveUp``;
        ``after_xrun``: the run that ended was an xrun)."""
        self.card.ensure_connected()
        self.giveup.before_prepare(violations=self.violations, after_xrun=after_xrun,
                                   period=self.period_frames, timeout=self.card.timeout)
        if self.state == StreamState.CLOSED and self._opened_as is not None \
                and self.buffer is None:
            self.open(*self._opened_as)  # the backend restarted and we reconnected
            return
        self._check_connected()
        if self.state == StreamState.CLOSED:
            raise LocalProtocolError(f"{self.name}: prepare before open")
        if self.state == StreamState.OPENED and not self._ran and not self.sent \
                and not self.read_sent:
            return
        self.wait_idle("prepare")
        self._request(self.proto.close(), "CLOSE")
        self._open_request()

    def _unshare(self, *pages: SharedPages | None) -> None:
        for p in pages:
            if p is not None and self.card.sharer is not None:
                try:
                    self.card.sharer.unshare(p)
                except PvSndError as exc:
                    logger.warning("%s: unshare: %s", self.name, exc)

    def _unshare_buffer(self) -> None:
        self._unshare(self.buffer, self.dir_pages)
        self.buffer = self.dir_pages = None

    def close(self) -> None:
        """CLOSE and release the buffer.  Idempotent; errors are logged."""
        self._opened_as = None
        try:
            if self.state != StreamState.CLOSED and self.card.lost is None \
                    and self.ring is not None:
                self.wait_idle("close")
                self._request(self.proto.close(), "CLOSE")
        except PvSndError as exc:
            logger.warning("%s: CLOSE: %s", self.name, exc)
            self._forget_requests()
        finally:
            self._unshare_buffer()
            self.frame_bytes = 0

    def _trigger(self, kind: Trigger) -> None:
        self.check()
        self._request(self.proto.trigger(kind), f"TRIGGER {kind.name}")

    def start(self) -> None:
        """TRIGGER START, after everything written is announced."""
        if self._ran:
            self.prepare()
        self.flush()
        sent = time.monotonic()  # the backend cannot have started earlier
        self._trigger(Trigger.START)
        self._ran = True
        self._started_at = sent

    def stop(self) -> None:
        """TRIGGER STOP: the backend drops what it has not played (and we
        what we had not announced)."""
        self._dirty_from = None
        self._trigger(Trigger.STOP)

    def pause(self) -> None:
        self._trigger(Trigger.PAUSE)

    def resume(self) -> None:
        self._trigger(Trigger.RESUME)

    # -- position ----------------------------------------------------------
    @property
    def hw(self) -> int:
        """Frames the backend has consumed (playback, never past what it
        holds: a report beyond the data means it played all of it) or that
        are in the buffer for sure (capture)."""
        return self.confirmed if self.capture else min(self.reported, self.acked)

    @property
    def avail(self) -> int:
        """Frames the application may write (playback) or read (capture) now."""
        if self.capture:
            return self.hw - self.appl
        return self.buffer_frames - (self.appl - self.hw)

    @property
    def delay(self) -> int:
        """Frames between the application and the backend's position."""
        return self.reported - self.appl if self.capture else self.appl - self.hw

    @property
    def drained(self) -> bool:
        """Playback: the backend holds and has played everything written."""
        return self.acked >= self.appl and self.reported >= self.acked

    @property
    def dirty_from(self) -> int | None:
        """Where data written but not yet announced by a WRITE starts."""
        return self._dirty_from

    def adopt_written(self, end: int, dirty_from: int | None, last_write: float) -> None:
        """Frames up to ``end`` were copied into the buffer behind our back
        (the C fast path), unannounced from ``dirty_from``, the last at
        ``last_write``: take them in."""
        self.appl = end
        self._dirty_from = dirty_from
        self.last_write = max(self.last_write, last_write)

    def forgive_overruns(self) -> None:
        """Capture: the client rides through overruns (the kernel's
        stop_threshold >= boundary), so they are not an xrun."""
        self.overruns = 0

    def stalled(self) -> None:
        """The caller's own clock saw the stream stuck for the timeout (it
        counts towards giving up, as a request timeout does)."""
        self.giveup.timed_out()

    def claim(self) -> None:
        """A new user (an ALSA PCM) takes the stream: a clean record."""
        self.giveup = GiveUp(self.name)

    # -- data --------------------------------------------------------------
    def write_at(self, pos: int, data: Any, now: float | None = None) -> None:
        """Put whole frames at stream position ``pos`` (the end of the data,
        or behind it after a rewind: the backend then replaces what it has
        not played) and send a WRITE when one is due.  Never waits."""
        if self.buffer is None or self.capture:
            raise LocalProtocolError(f"{self.name}: write_at needs an open playback stream")
        raw = memoryview(data).cast("B")
        fb = self.frame_bytes
        n = len(raw) // fb
        done = 0
        buf = self.buffer.buf
        for off, cnt in wrap_pieces(pos, n, self.buffer_frames):
            b0, nb = off * fb, cnt * fb
            buf[b0:b0 + nb] = raw[done:done + nb]
            done += nb
        self.appl = pos + n
        if self._dirty_from is None or pos < self._dirty_from:
            self._dirty_from = pos
        now = time.monotonic() if now is None else now
        woken, self.last_write = self.ready_at > self.last_write, now
        if woken:
            self._send_writes(now)
        else:
            self._maybe_flush(now)

    def note_ready(self, now: float) -> None:
        """The host was told it may write (POLLOUT): its first write after
        this is what a wake brings (PulseAudio refills the buffer on each),
        and goes with everything unannounced in one WRITE at once; without
        it, what a host wrote on a wake waited up to half a period (its
        reported latency was the backend's queue + 20 ms)."""
        self.ready_at = now

    def flush_due(self, now: float) -> float | None:
        """When data written but not yet announced will be, if the host
        writes nothing more (None: nothing is): WRITE_GRACE past its
        deadline once that has come."""
        if self._dirty_from is None:
            return None
        due = self.write_due()
        return due if now < due else due + WRITE_GRACE

    def write_due(self) -> float:
        """The next WRITE is due half a period after the last, or sooner once
        the backend is about to run dry: a host that keeps about a quantum
        queued (PipeWire) writes less than a period at a time, and what it
        wrote must reach the backend before the backend's queue is empty."""
        return min(self._last_submit + self.period_frames / self.rate / 2, self._runs_low_at())

    def _runs_low_at(self) -> float:
        """When what the backend was sent falls below half a period (and
        FLUSH_MARGIN) of play, at the rate, from its last report."""
        return self.runs_low_base() + self.sent / self.rate if self.rate else math.inf

    def runs_low_base(self) -> float:
        """``_runs_low_at`` less ``sent / rate``: the part that sending more
        does not move (inf: never)."""
        if self.proto.state != StreamState.RUNNING or not self.rate:
            return math.inf
        seen = self.pos_seen_at if self.pos_seen_at is not None else self._started_at
        if seen is None:
            return math.inf
        cushion = self.period_frames / 2 + self.rate * FLUSH_MARGIN
        return seen - (cushion + self.reported) / self.rate

    def outside_ids(self) -> list[int]:
        """Request ids a sender outside Python (the C fast path) may use for
        WRITEs now, in order; none while only we may send (not running, a
        control request or an error pending, no free slot)."""
        if self.capture or self.ring is None or self.proto.state != StreamState.RUNNING \
                or self.proto.control_in_flight or self._error is not None \
                or self._unanswered or self.card.lost is not None:
            return []
        return self.proto.next_ids(self.MAX_OUTSIDE_IDS)

    def writes_in_flight(self) -> list[tuple[int, int]]:
        """(id, end) of the WRITEs not answered yet, oldest first."""
        return [(rid, rng[2]) for rid, rng in self._ranges.items() if rng[0] == Op.WRITE]

    def adopt_outside(self, writes: list[tuple[int, int, int]], req_prod: int, at: float,
                      renotify: bool, answered: list[int], rsp_cons: int) -> None:
        """What a sender outside Python (the C fast path) did since we
        looked: WRITEs (id, start, end) it put on the ring and pushed (ids
        from ``outside_ids``, in order), leaving ``req_prod`` published, at
        ``at``; and the successful answers to WRITEs ``answered`` it took
        off the ring, in ring order, leaving its consumer index at
        ``rsp_cons``.  Track the first as ours and complete the others as
        if we had taken them.  ``renotify``: the sender's notify found the
        channel changed, so notify again."""
        assert self.ring is not None
        try:
            self.ring.adopt(len(writes), req_prod, len(answered), rsp_cons)
        except LocalProtocolError as exc:
            self._fail(exc)
            return
        for rid, start, end in writes:
            off = start % self.buffer_frames * self.frame_bytes
            req = self.proto.rw(Op.WRITE, off, (end - start) * self.frame_bytes)
            if req.id != rid:
                self._fail(LocalProtocolError(
                    f"{self.name}: a WRITE sent with id {rid}, {req.id} expected"))
            self._ranges[req.id] = (Op.WRITE, start, end)
            self._sent_at[req.id] = at
        self.outside_writes += len(writes)
        self.sent = max(self.sent, writes[-1][2]) if writes else self.sent
        if writes:
            self._last_submit = max(self._last_submit, at)
        self.outside_answers += len(answered)
        for rid in answered:
            self._on_response(sndif.Resp(rid, Op.WRITE, 0))
        if renotify and self.card.evtchn is not None:
            try:
                self.card.evtchn.notify(self.req_port)
            except PvSndError as exc:
                self._fail(exc)

    def _maybe_flush(self, now: float, grace: float = 0.0) -> None:
        """One WRITE a period, or sooner for what has waited half a period or
        is needed before the backend runs dry; ``grace`` past that deadline
        when no write brought us here (WRITE_GRACE)."""
        first = self._dirty_from
        if first is None:
            return
        if self.appl - first >= self.period_frames or now >= self.write_due() + grace:
            self._send_writes(now)

    def flush(self) -> None:
        """Announce everything written (start, drain)."""
        if self._dirty_from is not None:
            self._send_writes(time.monotonic())

    def _send_writes(self, now: float) -> None:
        first = self._dirty_from
        if first is None or self.proto.projected == StreamState.CLOSED:
            return
        end = self.appl
        if end <= first:
            self._dirty_from = None
            return
        pieces = wrap_pieces(first, end - first, self.buffer_frames)
        if len(pieces) > self._data_slots():
            return  # coalesced into a later WRITE once answers come
        start = first
        for _off, cnt in pieces:
            self._submit_data(Op.WRITE, start, start + cnt, now)
            start += cnt
        self.sent = end
        self._dirty_from = None
        self._last_submit = now

    def _read_ahead(self, now: float) -> None:
        """READ what the backend reported captured, a few requests at most
        (not behind a control request: a STOP resets the backend's count)."""
        if self.proto.state != StreamState.RUNNING or self.proto.control_in_flight:
            return
        ahead = self.read_ahead
        if self.ride_ahead and self.reported > self.appl + self.buffer_frames:
            ahead = self.ride_ahead
        end = min(self.reported, self.appl + ahead)
        while self.read_sent < end:
            slots = self._data_slots()
            if not slots:
                return
            start = self.read_sent
            off = start % self.buffer_frames
            cnt = min(end - start, self.buffer_frames - off)
            self._submit_data(Op.READ, start, start + cnt, now)
            self.read_sent = start + cnt

    def read_at(self, pos: int, out: Any) -> None:
        """Copy the captured frames from stream position ``pos`` into ``out``
        (whatever the buffer holds there: the caller reads confirmed frames,
        or overwritten ones after an overrun it chose to ride through)."""
        if self.buffer is None or not self.capture:
            raise LocalProtocolError(f"{self.name}: read_at needs an open capture stream")
        dst = memoryview(out).cast("B")
        fb = self.frame_bytes
        done = 0
        buf = self.buffer.buf
        for off, cnt in wrap_pieces(pos, len(dst) // fb, self.buffer_frames):
            b0, nb = off * fb, cnt * fb
            dst[done:done + nb] = buf[b0:b0 + nb]
            done += nb
        self.appl = max(self.appl, pos + done // fb)

    # -- the blocking Python API -------------------------------------------
    def _hw_moved(self, hw: int) -> bool:
        return self.hw != hw

    def _captured_past(self, appl: int) -> bool:
        return self.confirmed > appl

    def _wait_for(self, cond: Callable[[], bool], what: str) -> None:
        """Block until ``cond()``, the position moving on the way; a backend
        making no progress for the timeout is BackendTimeout."""
        self.set_event_wakes(True)

        def done() -> bool:
            self.poll()
            return cond() or self._error is not None or self.card.lost is not None

        with self.waiting_for_answers():
            try:
                self.card._wait(done,
                                time.monotonic() + self.card.timeout, f"{self.name}: {what}",
                                progress=lambda: (self.reported, self.acked, self.confirmed))
            except BackendTimeout:
                self.giveup.timed_out()  # as the glue's stall rule counts its own
                raise
        self.check()

    def write(self, data: Any) -> int:
        """Queue ``data`` (bytes-like or numpy array of whole frames); blocks while
        the buffer is full, auto-starts at the start threshold.  Returns frames."""
        self._check_connected()
        if self.capture:
            raise LocalProtocolError(f"{self.name}: write on a capture stream")
        if self.buffer is None:
            raise LocalProtocolError(f"{self.name}: write before open")
        raw = memoryview(data).cast("B") if not hasattr(data, "tobytes") \
            else memoryview(data.tobytes())
        if len(raw) % self.frame_bytes:
            raise ConfigError(f"{self.name}: {len(raw)} bytes is not a whole number of "
                              f"{self.frame_bytes}-byte frames")
        if self._ran and self.state == StreamState.OPENED:
            self.prepare()  # stopped (drained): start over from 0
        total = len(raw) // self.frame_bytes
        fb = self.frame_bytes
        done = 0
        while done < total:
            avail = self.avail
            if avail <= 0:
                if self.state == StreamState.OPENED:
                    self.start()
                    continue
                if self.state == StreamState.PAUSED:
                    raise LocalProtocolError(f"{self.name}: buffer full while paused")
                hw = self.hw
                self._wait_for(functools.partial(self._hw_moved, hw),
                               "waiting for the backend to consume")
                continue
            n = min(avail, total - done)
            self.write_at(self.appl, raw[done * fb:(done + n) * fb])
            done += n
            if self.state == StreamState.OPENED and self.appl >= self.start_threshold:
                self.start()
            self.check()
        self.flush()
        return total

    def drain(self) -> None:
        """Play out everything written, then STOP."""
        self._check_connected()
        self.flush()
        if self.state == StreamState.OPENED and self.appl > 0 and not self._ran:
            self.start()
        if self.state == StreamState.RUNNING:
            self._wait_for(lambda: self.acked >= self.appl and self.reported >= self.acked,
                           "drain")
        if self.state in (StreamState.RUNNING, StreamState.PAUSED):
            self.stop()

    def read(self, frames: int) -> bytes:
        """Capture ``frames`` frames (starts the stream if needed); blocks until read."""
        self._check_connected()
        if not self.capture:
            raise LocalProtocolError(f"{self.name}: read on a playback stream")
        if self.buffer is None:
            raise LocalProtocolError(f"{self.name}: read before open")
        if self.state == StreamState.OPENED:
            self.start()
        out = bytearray()
        fb = self.frame_bytes
        while len(out) < frames * fb:
            if self.reported - self.appl > self.buffer_frames or self.overruns:
                raise Xrun(f"{self.name}: capture overrun, {self.reported - self.appl} "
                           f"frames captured in a {self.buffer_frames}-frame buffer")
            avail = self.avail
            if avail <= 0:
                appl = self.appl
                self._wait_for(functools.partial(self._captured_past, appl),
                               "waiting for captured data")
                continue
            n = min(avail, frames - len(out) // fb)
            chunk = bytearray(n * fb)
            self.read_at(self.appl, chunk)
            out += chunk
        return bytes(out)
