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

import errno
import logging
import select
import time
from collections import deque
from typing import Any, Callable

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
from .protocol import sndif
from .protocol.config import CardConfig, StreamConfig, parse_card_config
from .protocol.ring import EventRingFront, FrontRing, wrap_pieces
from .protocol.sndif import HwParams, Op, PcmFormat, Trigger
from .protocol.stream import StreamProtocol, StreamState
from .protocol.xenbus import XenbusState, parse_state
from .protocol.xsnum import DOMID_MAX, parse_uint
from .transport.base import EventChannel, GrantSharer, SharedPages, Transport
from .transport.memory import NativeIndexOps

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3.0
SHORT_TIMEOUT = 0.5  # per request after one went unanswered
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
        self.config: CardConfig = parse_card_config(self.xs.read_tree(self.fe_dir))
        self.streams: dict[tuple[int, int], Stream] = {
            (sc.pcm_index, sc.stream_index): Stream(self, sc) for sc in self.config.streams}
        self.evtchn: EventChannel | None = None
        self.sharer: GrantSharer | None = None
        self._ports: dict[int, Callable[[], None]] = {}
        self.be_state = XenbusState.UNKNOWN
        self.connected = False
        self._lost: str | None = None  # why the connection dropped, until reconnected
        self._watching = False
        self._published = False  # our rings are in xenstore (handshake under way or done)

    # -- lifecycle ---------------------------------------------------------
    @classmethod
    def open(cls, transport: Transport, devid: int = 0, *,
             timeout: float = DEFAULT_TIMEOUT) -> "Card":
        card = cls(transport, devid, timeout=timeout)
        try:
            card.connect()
        except BaseException:
            card.close()
            raise
        return card

    def stream(self, pcm: int = 0, index: int = 0) -> "Stream":
        try:
            return self.streams[(pcm, index)]
        except KeyError:
            raise ConfigError(f"card has no stream {pcm}/{index}", key=f"{pcm}/{index}") from None

    def connect(self) -> None:
        """Reach Connected: recover stale state, publish every stream's rings."""
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
            fe = parse_state(raw)
        except RemoteProtocolError:
            fe = None  # garbage in our own node (dom0 may write anywhere): ours to reset
        if fe not in (XenbusState.INITIALISING, XenbusState.UNKNOWN):
            # A previous owner died or left the device configured: its grants
            # and ports died with it.  Going back to Initialising makes the
            # backend release them and return to InitWait (libxenbe).
            logger.info("vsnd %d: stale frontend state %r, resetting", self.devid,
                        fe.name if fe is not None else raw)
            self._write_state(XenbusState.INITIALISING)
        self._refresh_be_state()
        self._wait(lambda: self.be_state == XenbusState.INIT_WAIT, deadline,
                   "connect (waiting for backend InitWait)")
        self._publish()
        self._write_state(XenbusState.INITIALISED)
        self._wait(self._backend_connected, deadline, "connect (waiting for backend Connected)")
        self._write_state(XenbusState.CONNECTED)
        self.connected = True
        self._lost = None
        logger.info("vsnd %d: connected to backend domain %d", self.devid, self.be_domid)

    def _backend_connected(self) -> bool:
        if self.be_state in (XenbusState.CLOSED, XenbusState.CLOSING) and self._published:
            raise BackendGone("connect", f"backend went {self.be_state.name} during the handshake")
        return self.be_state == XenbusState.CONNECTED

    def _publish(self) -> None:
        assert self.evtchn is not None and self.sharer is not None
        self._teardown_rings()
        for st in self.streams.values():
            st._alloc_rings(self.sharer, self.evtchn, self.be_domid)
            self._ports[st.req_port] = st._on_req_notify
            self._ports[st.evt_port] = st._on_evt_notify

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
                self._write_state(XenbusState.CLOSING)
                deadline = time.monotonic() + min(1.0, self.timeout)
                try:
                    self._wait(lambda: self.be_state in (XenbusState.INIT_WAIT, XenbusState.CLOSED,
                                                         XenbusState.INITIALISING), deadline, "close")
                except PvSndError:
                    pass
            self._teardown_rings()
            if self._watching:
                self.xs.unwatch(f"{self.be_dir}/state", _BE_STATE_TOKEN)
                self._watching = False
            if was_up:  # (seeing the backend leave Connected cleared self.connected)
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

    def ensure_connected(self) -> None:
        """Raise BackendGone if the backend dropped us; reconnect if it is ready again."""
        self.process(0)
        if self._lost is not None:
            if self.be_state == XenbusState.INIT_WAIT:
                logger.info("vsnd %d: backend is back, reconnecting", self.devid)
                self.connect()
            else:
                raise BackendGone("request", self._lost)

    # -- event processing --------------------------------------------------
    def _write_state(self, state: XenbusState) -> None:
        self.xs.write(f"{self.fe_dir}/state", str(int(state)))

    def _refresh_be_state(self) -> None:
        try:
            new = parse_state(self.xs.read(f"{self.be_dir}/state"))
        except RemoteProtocolError as exc:
            logger.warning("vsnd %d: %s", self.devid, exc)
            return
        if new == self.be_state:
            return
        old, self.be_state = self.be_state, new
        logger.debug("vsnd %d: backend state %s -> %s", self.devid, old.name, new.name)
        if self.connected and new != XenbusState.CONNECTED:
            # Backend restarted (InitWait), closed, or vanished: our grants and
            # ports are no longer served.  Streams must be reopened.
            self.connected = False
            self._lost = f"backend state went {old.name} -> {new.name}"
            for st in self.streams.values():
                st._on_connection_lost(self._lost)

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
                self.evtchn.unmask(port)
                if handler is not None:
                    handler()
        # Belt and braces: a lost notification costs latency, never a hang.
        for st in self.streams.values():
            st._poll_rings()

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


class Stream:
    """One sndif stream (playback or capture) of a connected card."""

    def __init__(self, card: Card, config: StreamConfig) -> None:
        self.card = card
        self.config = config
        self.name = f"vsnd{card.devid}/{config.pcm_index}/{config.stream_index}" \
                    f"({'capture' if config.is_capture else 'playback'})"
        self.proto = StreamProtocol(self.name)
        self.ring: FrontRing | None = None
        self.evt_ring: EventRingFront | None = None
        self.ring_pages: SharedPages
        self.evt_pages: SharedPages
        self.req_port = -1
        self.evt_port = -1
        self.buffer: SharedPages | None = None
        self.dir_pages: SharedPages | None = None
        self._responses: deque[sndif.Resp] = deque()
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
        self.appl = 0  # frames written (playback) / read (capture) since OPEN/STOP
        self.cur_pos_events = 0  # CUR_POS events applied over the stream's life
        self._in_flight_frames = 0  # frames of the WRITE awaiting its answer
        self._high = 0  # playback: the furthest end written (a rewind moves appl back)
        self._unanswered = False  # the last request timed out

    # -- rings (called by Card) --------------------------------------------
    def _alloc_rings(self, sharer: GrantSharer, evtchn: EventChannel, be_domid: int) -> None:
        self.ring_pages = sharer.share_pages(be_domid, 1, writable=True)
        self.evt_pages = sharer.share_pages(be_domid, 1, writable=True)
        self.ring = FrontRing(self.ring_pages.buf, NativeIndexOps(self.ring_pages.buf))
        self.evt_ring = EventRingFront(self.evt_pages.buf, NativeIndexOps(self.evt_pages.buf))
        self.req_port = evtchn.bind_unbound_port(be_domid)
        self.evt_port = evtchn.bind_unbound_port(be_domid)
        self.proto.reset()
        self._responses.clear()
        self._error = None

    def _drop(self, evtchn: EventChannel | None) -> None:
        """Release rings, ports and buffer (connection gone).  Never raises."""
        self._unshare_buffer()
        self._unshare(getattr(self, "ring_pages", None), getattr(self, "evt_pages", None))
        for port in (self.req_port, self.evt_port):
            if port >= 0 and evtchn is not None:
                try:
                    evtchn.unbind(port)
                except PvSndError as exc:
                    logger.warning("%s: unbind: %s", self.name, exc)
        self.ring = self.evt_ring = None
        self.req_port = self.evt_port = -1
        self.proto.reset()

    def _on_connection_lost(self, why: str) -> None:
        self.proto.reset()
        self._responses.clear()

    def _on_req_notify(self) -> None:
        self._take_responses()

    def _on_evt_notify(self) -> None:
        self._take_events()

    def _poll_rings(self) -> None:
        if self.ring is not None and self.proto.in_flight is not None:
            self._take_responses()
        if self.evt_ring is not None and self.proto.state != StreamState.CLOSED:
            self._take_events()

    def _take_responses(self) -> None:
        if self.ring is None:
            return
        try:
            for slot in self.ring.take_responses():
                self._responses.append(sndif.decode_response(slot))
        except RemoteProtocolError as exc:
            self._error = exc

    def _take_events(self) -> None:
        if self.evt_ring is None:
            return
        try:
            slots = self.evt_ring.take_events()
        except RemoteProtocolError as exc:
            self._error = exc
            return
        if self.proto.state == StreamState.CLOSED or not self.frame_bytes:
            return  # no stream instance; stale ones are dropped by reset() at OPEN/STOP
        limit = None if self.config.is_capture \
            else (max(self.appl, self._high) + self._in_flight_frames) * self.frame_bytes
        seen = time.monotonic() if slots else 0.0
        for slot in slots:
            evt = sndif.decode_event(slot)
            if evt is None:
                logger.debug("%s: unknown event type ignored", self.name)
                continue
            try:
                self.proto.position.on_event(evt, limit)
                self.cur_pos_events += 1
                self.pos_seen_at = seen
            except RemoteProtocolError as exc:
                logger.warning("%s: %s", self.name, exc)
                self._error = exc

    # -- requests ----------------------------------------------------------
    def _check(self) -> None:
        self.card.ensure_connected()
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _request(self, req: Any, what: str) -> sndif.Resp:
        assert self.ring is not None and self.card.evtchn is not None
        self.ring.put_request(sndif.encode_request(req))
        if self.ring.push_requests():
            self.card.evtchn.notify(self.req_port)
        # After a timeout, tearing down (STOP, CLOSE) must not wait a full
        # timeout per request again: be brief until the backend answers.
        timeout = self.card.timeout if not self._unanswered else min(self.card.timeout,
                                                                     SHORT_TIMEOUT)
        deadline = time.monotonic() + timeout
        try:
            while True:
                while self._responses:
                    got = self.proto.receive(self._responses.popleft())
                    if got is not None:
                        self._unanswered = False
                        return got
                if self._error is not None:
                    raise self._error
                if self.card._lost is not None:
                    raise BackendGone(what, self.card._lost)
                now = time.monotonic()
                if now >= deadline:
                    self._unanswered = True
                    raise BackendTimeout(what, timeout)
                self.card.process(min(deadline - now, 0.5))
        except (BackendTimeout, BackendGone, RemoteProtocolError):
            self.proto.abandon()
            self._error = None
            raise

    @property
    def state(self) -> StreamState:
        return self.proto.state

    def query_hw_params(self, params: HwParams) -> HwParams:
        """HW_PARAM_QUERY: the backend's refinement of ``params``."""
        self._check()
        resp = self._request(self.proto.query(params), "HW_PARAM_QUERY")
        if resp.hw_param is None:
            raise RemoteProtocolError(f"{self.name}: HW_PARAM_QUERY response without parameters")
        return resp.hw_param

    def open(self, fmt: PcmFormat | int, channels: int, rate: int, buffer_frames: int,
             period_frames: int, start_threshold: int | None = None) -> None:
        """Share a buffer and OPEN the stream (ALSA hw_params + prepare)."""
        self._check()
        if self.state != StreamState.CLOSED:
            self.close()
        fmt = PcmFormat(fmt)
        fb = sndif.frame_bytes(fmt, channels)
        if buffer_frames <= 0 or period_frames <= 0 or period_frames > buffer_frames:
            raise ConfigError(f"{self.name}: bad geometry buffer={buffer_frames} "
                              f"period={period_frames} frames")
        buffer_sz = buffer_frames * fb
        sharer = self.card.sharer
        assert sharer is not None
        n_pages = sndif.buffer_page_count(buffer_sz)
        self.buffer = sharer.share_pages(self.card.be_domid, n_pages, writable=True)
        self.dir_pages = sharer.share_pages(
            self.card.be_domid, sndif.dir_page_count(n_pages), writable=True)
        for i, page in enumerate(sndif.encode_page_directory(self.dir_pages.refs,
                                                             self.buffer.refs)):
            self.dir_pages.buf[i * 4096:(i + 1) * 4096] = page
        req = self.proto.open(rate, int(fmt), channels, buffer_sz, self.dir_pages.refs[0],
                              period_frames * fb)
        try:
            self._request(req, "OPEN")
        except PvSndError:
            self._unshare_buffer()
            raise
        self.format, self.channels, self.rate, self.frame_bytes = fmt, channels, rate, fb
        self.buffer_frames, self.period_frames = buffer_frames, period_frames
        self.start_threshold = buffer_frames if start_threshold is None else start_threshold
        self.appl = self._high = 0
        assert self.evt_ring is not None
        self.evt_ring.reset()

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
        try:
            if self.state != StreamState.CLOSED and self.card._lost is None:
                self._request(self.proto.close(), "CLOSE")
        except PvSndError as exc:
            logger.warning("%s: CLOSE: %s", self.name, exc)
            self.proto.reset()
        finally:
            self._unshare_buffer()

    def _trigger(self, kind: Trigger) -> None:
        self._check()
        self._request(self.proto.trigger(kind), f"TRIGGER {kind.name}")

    def start(self) -> None:
        self._trigger(Trigger.START)

    def stop(self) -> None:
        """TRIGGER STOP: the backend drops what it has not played; counters restart."""
        self._trigger(Trigger.STOP)
        self.appl = self._high = 0
        assert self.evt_ring is not None
        self.evt_ring.reset()

    def pause(self) -> None:
        self._trigger(Trigger.PAUSE)

    def resume(self) -> None:
        self._trigger(Trigger.RESUME)

    # -- position ----------------------------------------------------------
    @property
    def hw(self) -> int:
        """Frames the backend has consumed (playback) or produced (capture)."""
        return self.proto.position.octets // self.frame_bytes if self.frame_bytes else 0

    @property
    def avail(self) -> int:
        """Frames the application may write (playback) or read (capture) now."""
        if self.config.is_capture:
            return self.hw - self.appl
        return self.buffer_frames - (self.appl - self.hw)

    @property
    def delay(self) -> int:
        """Frames queued ahead of the backend's position (playback)."""
        return self.appl - self.hw if not self.config.is_capture else self.hw - self.appl

    def _wait_for_position(self, what: str) -> None:
        """Block until the backend's position moves (bounded by the timeout)."""
        hw = self.hw
        self.card._wait(lambda: self.hw != hw or self._error is not None
                        or self.card._lost is not None,
                        time.monotonic() + self.card.timeout, f"{self.name}: {what}")
        self._check()

    # -- data --------------------------------------------------------------
    def write(self, data: Any) -> int:
        """Queue ``data`` (bytes-like or numpy array of whole frames); blocks while
        the buffer is full, auto-starts at the start threshold.  Returns frames."""
        self._check()
        if self.config.is_capture:
            raise LocalProtocolError(f"{self.name}: write on a capture stream")
        if self.buffer is None:
            raise LocalProtocolError(f"{self.name}: write before open")
        raw = memoryview(data).cast("B") if not hasattr(data, "tobytes") \
            else memoryview(data.tobytes())
        if len(raw) % self.frame_bytes:
            raise ConfigError(f"{self.name}: {len(raw)} bytes is not a whole number of "
                              f"{self.frame_bytes}-byte frames")
        total = len(raw) // self.frame_bytes
        done = 0
        while done < total:
            avail = self.avail
            if avail <= 0:
                if self.state == StreamState.OPENED:
                    self.start()
                    continue
                if self.state == StreamState.PAUSED:
                    raise LocalProtocolError(f"{self.name}: buffer full while paused")
                self._wait_for_position("waiting for the backend to consume")
                continue
            n = min(avail, total - done)
            fb = self.frame_bytes
            self.write_at(self.appl, raw[done * fb:(done + n) * fb])
            done += n
            if self.state == StreamState.OPENED and self.appl >= self.start_threshold:
                self.start()
        return total

    def write_at(self, pos: int, data: Any) -> None:
        """Put whole frames at stream position ``pos`` and WRITE them.  ``pos``
        is the end of the data, or behind it after a rewind: the backend then
        replaces what it has not played (the ALSA plugin's transfer)."""
        self._check()
        if self.buffer is None or self.config.is_capture:
            raise LocalProtocolError(f"{self.name}: write_at needs an open playback stream")
        raw = memoryview(data).cast("B")
        n = len(raw) // self.frame_bytes
        done = 0
        for off, cnt in wrap_pieces(pos, n, self.buffer_frames):
            b0, nb = off * self.frame_bytes, cnt * self.frame_bytes
            self.buffer.buf[b0:b0 + nb] = raw[done:done + nb]
            # The backend may play it (and say so) before it answers.
            self._in_flight_frames = cnt
            try:
                self._request(self.proto.rw(Op.WRITE, b0, nb), "WRITE")
            finally:
                self._in_flight_frames = 0
            done += nb
            self.appl = pos + done // self.frame_bytes
            self._high = max(self._high, self.appl)

    def read_at(self, pos: int, out: Any) -> None:
        """Fill ``out`` with the captured frames from stream position ``pos``.
        READs only what was not read before, so asking twice for the same
        frames (ALSA's mmap_begin) is harmless."""
        self._check()
        if self.buffer is None or not self.config.is_capture:
            raise LocalProtocolError(f"{self.name}: read_at needs an open capture stream")
        dst = memoryview(out).cast("B")
        n = len(dst) // self.frame_bytes

        def copy() -> None:
            assert self.buffer is not None
            done = 0
            for off, cnt in wrap_pieces(pos, n, self.buffer_frames):
                b0, nb = off * self.frame_bytes, cnt * self.frame_bytes
                dst[done:done + nb] = self.buffer.buf[b0:b0 + nb]
                done += nb

        # Frames already reported captured are copied first and the READ
        # then confirms they were not overwritten meanwhile (-EPIPE if they
        # were); copying after the READ could return overwritten frames.
        captured = pos + n <= self.hw
        if captured:
            copy()
        if pos + n > self.appl:
            start = self.appl  # the backend confirms in order, skipped frames too
            for off, cnt in wrap_pieces(start, pos + n - start, self.buffer_frames):
                self._request(self.proto.rw(Op.READ, off * self.frame_bytes,
                                            cnt * self.frame_bytes), "READ")
                self.appl += cnt
        if not captured:
            copy()

    def drain(self) -> None:
        """Play out everything written, then STOP."""
        self._check()
        if self.state == StreamState.OPENED and self.appl > 0:
            self.start()
        if self.state == StreamState.RUNNING:
            self.card._wait(lambda: self.hw >= self.appl or self._error is not None
                            or self.card._lost is not None,
                            time.monotonic() + self.card.timeout +
                            (self.appl - self.hw) / max(self.rate, 1),
                            f"{self.name}: drain", progress=lambda: self.hw)
            self._check()
        if self.state in (StreamState.RUNNING, StreamState.PAUSED):
            self.stop()

    def read(self, frames: int) -> bytes:
        """Capture ``frames`` frames (starts the stream if needed); blocks until read."""
        self._check()
        if not self.config.is_capture:
            raise LocalProtocolError(f"{self.name}: read on a playback stream")
        if self.buffer is None:
            raise LocalProtocolError(f"{self.name}: read before open")
        if self.state == StreamState.OPENED:
            self.start()
        out = bytearray()
        while len(out) < frames * self.frame_bytes:
            avail = self.avail
            if avail > self.buffer_frames:
                raise Xrun(f"{self.name}: capture overrun, {avail} frames pending in a "
                           f"{self.buffer_frames}-frame buffer")
            if avail <= 0:
                self._wait_for_position("waiting for captured data")
                continue
            n = min(avail, frames - len(out) // self.frame_bytes)
            for off, cnt in wrap_pieces(self.appl, n, self.buffer_frames):
                b0, nb = off * self.frame_bytes, cnt * self.frame_bytes
                self._request(self.proto.rw(Op.READ, b0, nb), "READ")
                assert self.buffer is not None
                out += self.buffer.buf[b0:b0 + nb]
                self.appl += cnt
        return bytes(out)

