"""The hostile guest (dom2) against the real ``pvplug backend`` process.

:func:`run_hostile_guest` executes one case spec (see ``gen.guest_case``) in a
forked child: a handshake of its own making (every key, every state write),
then raw requests on the rings, bypassing every frontend check.  It checks
each answer (id and operation echoed, status plausible and, where the
protocol leaves no choice, right), each CUR_POS of a playback stream (never
past what was written), and the canary bytes around and beside every buffer
it shares (the backend must never write there, nor into a playback buffer or
a directory page).  A missing answer is a hang unless the case itself broke
the ring, dropped the connection or the backend left Connected.
"""

from __future__ import annotations

import errno
import os
import random
import select
import signal
import struct
import time
from typing import Any

from alsa_pvplug.backend.limits import StreamLimits
from alsa_pvplug.errors import PvSndError, RemoteProtocolError
from alsa_pvplug.protocol import ring as R
from alsa_pvplug.protocol import sndif
from alsa_pvplug.protocol.config import parse_card_config
from alsa_pvplug.protocol.sndif import (
    CloseReq,
    HwParamQuery,
    HwParams,
    Op,
    OpenReq,
    PcmFormat,
    RwReq,
    TriggerReq,
    UnknownReq,
)
from alsa_pvplug.protocol.xenbus import parse_state
from alsa_pvplug.transport import open_transport
from alsa_pvplug.transport.native_index import NativeIndexOps

from .world import cpu_seconds

PAGE = 4096
CANARY = 0xA5
#: the backend may take this long for an answer that does not wait for data
ANSWER_TIMEOUT = 3.0
#: "no answer within the request timeout + 2 s" is a hang
HANG_GRACE = 2.0
_ERRNOS = set(errno.errorcode)


def _canary(n: int) -> bytes:
    return bytes([CANARY]) * n


class HStream:
    """One stream of the hostile guest: its rings, ports and what it believes."""

    def __init__(self, sc: Any) -> None:
        self.sc = sc
        self.capture = sc.is_capture
        self.ring_pages: Any = None
        self.evt_pages: Any = None
        self.ring: R.FrontRing | None = None
        self.evt: R.EventRingFront | None = None
        self.req_port = self.evt_port = -1
        self.broken = ""        # why no answer can be expected any more
        self.force_notify = False
        self.outstanding: list[dict[str, Any]] = []
        self.shares: list[dict[str, Any]] = []   # buffers with canaries to check
        self._reset_model()

    def _reset_model(self) -> None:
        self.opened = False
        self.running = False
        self.paused = False
        self.buffer_sz = 0
        self.fb = 1
        self.rate = 48000
        self.cum = 0  # playback: octets of accepted WRITEs since OPEN
        self.share: dict[str, Any] | None = None


class HostileGuest:
    def __init__(self, sim_dir: str, domid: int, rng: random.Random,
                 backend_pid: int | None) -> None:
        self.rng = rng
        self.domid = domid
        self.backend_pid = backend_pid
        self.t = open_transport("sim", sim_dir=sim_dir, domid=domid)
        self.xs = self.t.xenstore
        self.fe = f"{self.xs.get_domain_path(domid)}/device/vsnd/0"
        self.be = self.xs.read(f"{self.fe}/backend") or f"/local/domain/0/backend/vsnd/{domid}/0"
        self.sharer = self.t.open_grant_sharer()
        self.evtchn = self.t.open_event_channel()
        self.config = parse_card_config(self.xs.read_tree(self.fe))
        self.streams = [HStream(sc) for sc in self.config.streams]
        self.violations: list[str] = []
        self.outside: list[str] = []
        self.hangs: list[str] = []
        self.notes: list[str] = []
        self.answers = 0
        self.no_notify = False
        self.detached = ""
        self.cpu_windows: list[tuple[float, float, float, float]] = []
        self.lax = False
        self.trace: list[str] = []

    # -- xenstore --------------------------------------------------------------
    def be_state(self) -> str | None:
        try:
            return self.xs.read(f"{self.be}/state")
        except PvSndError:
            return None

    def wait_be(self, want: set[str], timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while True:
            s = self.be_state()
            if s in want or time.monotonic() >= deadline:
                return s
            time.sleep(0.01)

    def write_state(self, value: str | None) -> None:
        if value is None:
            self.xs.rm(f"{self.fe}/state")
        else:
            self.xs.write(f"{self.fe}/state", value)

    def reset(self) -> None:
        """Start from fe Initialising, be InitWait (whatever the last case left)."""
        if self.xs.read(f"{self.fe}/state") != "1" or self.be_state() != "2":
            self.write_state("1")
            if self.wait_be({"2"}, 6.0) != "2":
                self.notes.append(f"backend did not offer InitWait (state {self.be_state()!r})")

    # -- rings -----------------------------------------------------------------
    def alloc(self, st: HStream, ring_garbage: bool = False) -> None:
        st.ring_pages = self.sharer.share_pages(0, 1, writable=True)
        st.evt_pages = self.sharer.share_pages(0, 1, writable=True)
        st.ring = R.FrontRing(st.ring_pages.buf, NativeIndexOps(st.ring_pages.buf))
        st.evt = R.EventRingFront(st.evt_pages.buf, NativeIndexOps(st.evt_pages.buf))
        if ring_garbage:
            # Garbage indices at attach time: the backend must survive whatever
            # it makes of them; no answers are expected on this ring.
            for off in (R.REQ_PROD_OFF, R.RSP_PROD_OFF, R.REQ_EVENT_OFF, R.RSP_EVENT_OFF):
                struct.pack_into("<I", st.ring_pages.buf, off, self.rng.getrandbits(32))
            struct.pack_into("<I", st.evt_pages.buf, R.IN_CONS_OFF, self.rng.getrandbits(32))
            st.evt = R.EventRingFront(st.evt_pages.buf, NativeIndexOps(st.evt_pages.buf))
            st.broken = "ring published with garbage indices"
        st.req_port = self.evtchn.bind_unbound_port(0)
        st.evt_port = self.evtchn.bind_unbound_port(0)

    def resolve(self, st: HStream, key: str, value: Any) -> str | None:
        """A handshake key's value: the right one, a literal, or a symbolic one."""
        right = {"ring-ref": str(st.ring_pages.refs[0]), "event-channel": str(st.req_port),
                 "evt-ring-ref": str(st.evt_pages.refs[0]),
                 "evt-event-channel": str(st.evt_port)}
        if value == "$ok":
            return right[key]
        if value is None:
            return None
        if not isinstance(value, str) or not value.startswith("$"):
            return str(value)
        if value == "$foreign_ref":  # a page granted to dom1, not to the backend
            return str(self.sharer.share_pages(1, 1).refs[0])
        if value == "$ro_ref":
            return str(self.sharer.share_pages(0, 1, writable=False).refs[0])
        if value == "$revoked_ref":
            p = self.sharer.share_pages(0, 1)
            self.sharer.unshare(p)
            return str(p.refs[0])
        if value == "$other_port":  # unbound for dom1
            return str(self.evtchn.bind_unbound_port(1))
        if value == "$swap":
            other = {"ring-ref": "evt-ring-ref", "evt-ring-ref": "ring-ref",
                     "event-channel": "evt-event-channel",
                     "evt-event-channel": "event-channel"}[key]
            return right[other]
        if value == "$other_stream":
            o = self.streams[(self.streams.index(st) + 1) % len(self.streams)]
            if o.ring_pages is None:
                return right[key]
            return {"ring-ref": str(o.ring_pages.refs[0]), "event-channel": str(o.req_port),
                    "evt-ring-ref": str(o.evt_pages.refs[0]),
                    "evt-event-channel": str(o.evt_port)}[key]
        if value == "$plus_one":
            return str(int(right[key]) + 1)
        return value

    def handshake(self, hs: dict[str, Any]) -> str | None:
        """Publish (with the spec's mutations), go Initialised (or whatever the
        spec writes); returns the backend state it settles in."""
        self.reset()
        self.lax = bool(hs.get("config"))  # our view of the config may be stale
        for rel, value in hs.get("config", {}).items():
            if value is None:
                self.xs.rm(f"{self.fe}/{rel}")
            else:
                self.xs.write(f"{self.fe}/{rel}", value)
        for st in self.streams:
            self.alloc(st, hs.get("ring_garbage", False) and self.rng.random() < 0.7)
        keys = hs.get("keys", {})
        if "version" in hs:
            v = hs["version"]
            if v is None:
                self.xs.rm(f"{self.fe}/version")
            else:
                self.xs.write(f"{self.fe}/version", v)
        for st in self.streams:
            for k in (sndif.FIELD_RING_REF, sndif.FIELD_EVT_CHNL, sndif.FIELD_EVT_RING_REF,
                      sndif.FIELD_EVT_EVT_CHNL):
                given = keys.get(f"{st.sc.path}/{k}", "$ok")
                if given != "$ok":
                    st.broken = st.broken or f"we published {k}={given!r}"
                v = self.resolve(st, k, given)
                if v is None:
                    self.xs.rm(f"{self.fe}/{st.sc.path}/{k}")
                else:
                    self.xs.write(f"{self.fe}/{st.sc.path}/{k}", v)
        for value, delay in hs.get("states", [["3", 0.0]]):
            self.write_state(value)
            if delay:
                time.sleep(delay)
        final = hs.get("states", [["3", 0.0]])[-1][0]
        if final == "3" and not keys and not hs.get("config") and "version" not in hs:
            got = self.wait_be({"4"}, ANSWER_TIMEOUT + HANG_GRACE)
            if got != "4":
                self.hangs.append(f"a clean handshake was not connected within "
                                  f"{ANSWER_TIMEOUT + HANG_GRACE:.0f} s (backend {got!r})")
        else:
            got = self.wait_be({"4", "6"}, 1.0)
        if got == "4":
            self.write_state("4")
        else:
            self.detached = f"backend state {got!r} after the handshake"
        return got

    # -- requests --------------------------------------------------------------
    def _drain_events(self, st: HStream) -> None:
        if st.evt is None:
            return
        try:
            slots = st.evt.take_events()
        except RemoteProtocolError as exc:
            self.violations.append(f"{st.sc.path}: event page: {exc}")
            return
        bound = st.cum + sum(o["len"] for o in st.outstanding if o["opcode"] == Op.WRITE)
        for slot in slots:
            eid, etype, pos = struct.unpack_from("<HB5xQ", slot, 0)
            if etype != 0:
                self.violations.append(f"{st.sc.path}: event of unknown type {etype}")
            elif not st.capture and st.opened and pos > bound:
                self.violations.append(f"{st.sc.path}: CUR_POS {pos} beyond the {bound} "
                                       "octets written")

    def _pump(self, timeout: float) -> None:
        try:
            r, _, _ = select.select([self.evtchn.fileno()], [], [], timeout)
        except (OSError, ValueError, PvSndError):
            time.sleep(timeout)
            return
        if r:
            try:
                while (port := self.evtchn.pending()) is not None:
                    self.evtchn.unmask(port)
            except PvSndError:
                time.sleep(timeout)

    def push(self, st: HStream, items: list[tuple[bytes, dict[str, Any]]]) -> None:
        assert st.ring is not None
        for slot, meta in items:
            st.ring.put_request(slot)
            st.outstanding.append(meta)
        if st.ring.push_requests() or st.force_notify or self.rng.random() < 0.05:
            self._notify(st.req_port)

    def _notify(self, port: int) -> None:
        if self.no_notify:
            return
        try:
            self.evtchn.notify(port)
        except PvSndError as exc:
            self.notes.append(f"notify: {exc}")

    def collect(self, st: HStream, extra_wait: float = 0.0) -> None:
        """Wait for every outstanding answer of ``st`` and check each."""
        assert st.ring is not None
        deadline = time.monotonic() + ANSWER_TIMEOUT + extra_wait
        while st.outstanding:
            try:
                slots = st.ring.take_responses()
            except RemoteProtocolError as exc:
                self.violations.append(f"{st.sc.path}: {exc}")
                st.broken = "backend overflowed the response ring"
                st.outstanding.clear()
                return
            for slot in slots:
                resp = sndif.decode_response(slot)
                self._drain_events(st)
                self._check(st, st.outstanding.pop(0), resp)
                self.answers += 1
            if not st.outstanding:
                break
            if time.monotonic() >= deadline + HANG_GRACE:
                why = self._excuse(st)
                meta = st.outstanding[0]
                if why:
                    self.notes.append(f"{st.sc.path}: no answer to {meta['desc']} ({why})")
                else:
                    self.hangs.append(f"{st.sc.path}: no answer to {meta['desc']} within "
                                      f"{ANSWER_TIMEOUT + extra_wait + HANG_GRACE:.1f} s")
                st.broken = st.broken or "unanswered"
                st.outstanding.clear()
                return
            self._pump(0.005)
        self._drain_events(st)

    def _excuse(self, st: HStream) -> str:
        if st.broken:
            return st.broken
        if self.no_notify:
            return "our event channel is closed"
        if self.detached:
            return self.detached
        s = self.be_state()
        if s != "4":
            return f"backend state {s!r}"
        return ""

    def _check(self, st: HStream, meta: dict[str, Any], resp: sndif.Resp) -> None:
        desc = meta["desc"]
        if resp.id != meta["id"]:
            self.violations.append(f"{st.sc.path}: answer id {resp.id} to {desc}")
        if int(resp.operation) != meta["opcode"]:
            self.violations.append(f"{st.sc.path}: answer op {int(resp.operation)} to {desc}")
        status = resp.status
        if status > 0 or (status < 0 and -status not in _ERRNOS):
            self.violations.append(f"{st.sc.path}: status {status} to {desc}")
        must, why = self._verdict(st, meta)
        if self.lax and meta["kind"] == "open":
            must = None
        if must == "fail" and status == 0:
            self.violations.append(f"{st.sc.path}: {desc} succeeded ({why})")
        elif must == "ok" and status != 0 and not self.detached:
            self.violations.append(f"{st.sc.path}: {desc} refused with {status} ({why})")
        if status == 0 and meta["opcode"] == Op.HW_PARAM_QUERY:
            self._check_query(st, meta, resp)
        meta["status"] = status
        self.trace.append(f"{st.sc.path} {desc} -> {status}")
        self._apply(st, meta, status)

    def _verdict(self, st: HStream, meta: dict[str, Any]) -> tuple[str | None, str]:
        """What the protocol leaves the backend no choice about, given what
        the earlier answers did (judged now, not when the request was built:
        a batch's requests are built before any of them is answered)."""
        kind = meta["kind"]
        if kind == "unknown":
            return meta.get("must"), meta.get("why", "")
        if kind == "open" and "static" in meta:
            if st.opened:
                return "fail", "stream already open"
            valid, why = meta["static"]
            return ("ok", "a valid OPEN") if valid else ("fail", why)
        if kind in ("write", "read") and "code" in meta:
            off, ln = meta["off"], meta["ln"]
            if not st.opened:
                return "fail", "no stream open"
            if (kind == "write") == st.capture:
                return "fail", "wrong direction"
            if ln == 0 or off + ln > st.buffer_sz or ln % st.fb or off % st.fb:
                return "fail", "range is not whole frames in the buffer"
            return None, ""
        if kind == "trigger" and "static" not in meta and meta.get("opcode") == Op.TRIGGER \
                and not meta.get("raw"):
            t = meta["type"]
            if not st.opened:
                return "fail", "no stream open"
            if t > 3:
                return "fail", "bad type"
            if t == 0:
                return ("fail", "START while running/paused") if st.running or st.paused \
                    else ("ok", "START while stopped")
            if t == 1:
                return ("ok" if st.running else "fail"), "PAUSE " + \
                    ("while running" if st.running else "while not running")
            if t == 2:
                return "ok", "STOP of an open stream"
            return ("ok" if st.paused else "fail"), "RESUME " + \
                ("while paused" if st.paused else "while not paused")
        return None, ""

    def _check_query(self, st: HStream, meta: dict[str, Any], resp: sndif.Resp) -> None:
        q: HwParams = meta["params"]
        a = resp.hw_param
        if a is None:
            self.violations.append(f"{st.sc.path}: HW_PARAM_QUERY answer without ranges")
            return
        if a.formats & ~q.formats:
            self.violations.append(f"{st.sc.path}: HW_PARAM_QUERY formats {a.formats:#x} not "
                                   f"in the query's {q.formats:#x}")
        for name in ("rates", "channels", "buffer", "period"):
            lo, hi = getattr(a, name)
            qlo, qhi = getattr(q, name)
            if lo > hi or lo < qlo or hi > qhi:
                self.violations.append(f"{st.sc.path}: HW_PARAM_QUERY {name} {lo}..{hi} is "
                                       f"not a refinement of {qlo}..{qhi}")

    def _apply(self, st: HStream, meta: dict[str, Any], status: int) -> None:
        """What the answer means for our model of the stream."""
        kind = meta["kind"]
        ok = status == 0
        if kind == "open" and ok:
            st._reset_model()
            st.opened = True
            st.buffer_sz, st.fb, st.rate = meta["buffer_sz"], meta["fb"], meta["rate"]
            st.share = meta.get("share")
        elif kind == "close" and ok:
            st._reset_model()
        elif kind == "write" and ok:
            st.cum += meta["len"]
        elif kind == "trigger" and ok:
            t = meta["type"]
            if t == 0:
                st.running, st.paused = True, False
                self._cpu_mark(st, True)
            elif t == 1:
                st.running, st.paused = False, True
                self._cpu_mark(st, False)
            elif t == 2:
                st.running = st.paused = False
                self._cpu_mark(st, False)
            elif t == 3:
                st.running, st.paused = True, False
                self._cpu_mark(st, True)

    # backend CPU while a stream of ours runs
    _cpu_open: tuple[float, float] | None = None

    def _cpu_mark(self, st: HStream, running: bool) -> None:
        if self.backend_pid is None:
            return
        c = cpu_seconds(self.backend_pid)
        now = time.monotonic()
        if c is None:
            return
        if running and self._cpu_open is None:
            self._cpu_open = (now, c)
        elif not running and self._cpu_open is not None and not any(
                s.running for s in self.streams):
            t0, c0 = self._cpu_open
            self.cpu_windows.append((t0, now, c0, c))
            self._cpu_open = None

    def close_cpu(self) -> None:
        if self._cpu_open is not None and self.backend_pid is not None:
            c = cpu_seconds(self.backend_pid)
            if c is not None:
                t0, c0 = self._cpu_open
                self.cpu_windows.append((t0, time.monotonic(), c0, c))
            self._cpu_open = None

    # -- building requests ---------------------------------------------------
    def _meta(self, req: Any, kind: str, desc: str, **kw: Any) -> dict[str, Any]:
        op = req.operation
        return {"id": req.id, "opcode": int(op), "kind": kind, "desc": desc, "len": 0, **kw}

    def build_open(self, st: HStream, o: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        fmt, ch, rate = o["format"], o["channels"], o["rate"]
        buffer_sz, period_sz = o["buffer_sz"], o["period_sz"]
        try:
            fb = sndif.frame_bytes(fmt, ch)
        except PvSndError:
            fb = 0
        valid, why = self._open_valid(st, o, fb)
        n_pages = max(1, sndif.buffer_page_count(min(buffer_sz, 2**26)))
        n_pages = min(n_pages, 300)
        dirmode = o.get("dir", "ok")
        share = None
        gref = 0
        guard = 1
        try:
            pages = self.sharer.share_pages(
                0, n_pages + 2 * guard, writable=dirmode != "ro_buffer")
        except PvSndError as exc:
            self.notes.append(f"share: {exc}")
            pages = None
        if pages is not None:
            pages.buf[:] = _canary(len(pages.buf))
            refs = pages.refs[guard:guard + n_pages]
            if not st.capture:
                fill = self.rng.randbytes(min(buffer_sz, n_pages * PAGE))
                pages.buf[guard * PAGE:guard * PAGE + len(fill)] = fill
            n_dir = sndif.dir_page_count(len(refs))
            dirp = self.sharer.share_pages(0 if dirmode != "foreign_dir" else 1, n_dir,
                                           writable=self.rng.random() < 0.5)
            try:
                dir_bytes = sndif.encode_page_directory(dirp.refs, refs)
            except PvSndError:
                dir_bytes = [bytes(PAGE)] * n_dir
            body = b"".join(dir_bytes)
            if dirmode == "garbage":
                body = self.rng.randbytes(len(body))
            elif dirmode == "loop":
                body = struct.pack("<I", dirp.refs[0]) + body[4:]
            elif dirmode == "short":
                cut = self.rng.randrange(1, max(2, len(refs))) if len(refs) > 1 else 0
                body = body[:4 + 4 * cut] + bytes(len(body) - 4 - 4 * cut)
            elif dirmode == "dup":
                body = body[:4] + struct.pack("<I", refs[0]) * ((len(body) - 4) // 4)
            elif dirmode == "foreign_buf":
                other = self.sharer.share_pages(1, 1).refs[0]
                body = body[:4] + struct.pack("<I", other) + body[8:]
            elif dirmode == "revoked":
                self.sharer.unshare(pages)
            dirp.buf[:len(body)] = body
            gref = dirp.refs[0]
            if dirmode in ("ok", "dup", "short"):
                share = {"pages": pages, "n": n_pages, "guard": guard, "dir": dirp,
                         "dir_bytes": bytes(dirp.buf), "sz": buffer_sz,
                         "play": None if st.capture else bytes(
                             pages.buf[guard * PAGE:(guard + n_pages) * PAGE])}
                st.shares.append(share)
        if dirmode == "zero":
            gref = 0
        elif dirmode == "unknown":
            gref = self.rng.choice([7, 10**6, 0xFFFFFFFF, 0x7FFFFFFF])
        elif dirmode == "bufref" and pages is not None:
            gref = pages.refs[guard]
        if dirmode not in ("ok", "dup"):
            valid, why = False, why or f"directory {dirmode}"
        req = OpenReq(self.rid(o), rate, fmt & 0xFF, ch & 0xFF, buffer_sz & 0xFFFFFFFF,
                      gref & 0xFFFFFFFF, period_sz & 0xFFFFFFFF)
        meta = self._meta(req, "open", f"OPEN {fmt}/{ch}ch/{rate}Hz buf {buffer_sz} "
                          f"period {period_sz} dir {dirmode}",
                          buffer_sz=buffer_sz, fb=fb, rate=rate, share=share)
        meta["static"] = (valid, why)
        return sndif.encode_request(req), meta

    def _open_valid(self, st: HStream, o: dict[str, Any], fb: int) -> tuple[bool, str]:
        cfg = st.sc
        try:
            fmt = PcmFormat(o["format"])
        except ValueError:
            return False, "unknown format"
        if fmt not in cfg.formats:
            return False, "format not in the config"
        if o["rate"] not in cfg.rates:
            return False, "rate not in the config"
        if not cfg.channels_min <= o["channels"] <= cfg.channels_max:
            return False, "channels outside the config"
        b, p = o["buffer_sz"], o["period_sz"]
        if not fb or not 0 < b <= cfg.buffer_bytes_max or b % fb:
            return False, "bad buffer_sz"
        if not 0 < p <= b or p % fb:
            return False, "bad period_sz"
        if p // fb < StreamLimits().min_period_frames(o["rate"]):
            return False, "period below the backend's minimum (--min-period-us)"
        return True, ""

    _next_id = 100

    def rid(self, o: dict[str, Any]) -> int:
        if "id" in o:
            return o["id"] & 0xFFFF
        self._next_id = (self._next_id + 1) & 0xFFFF
        return self._next_id

    def build(self, st: HStream, o: dict[str, Any]) -> tuple[bytes, dict[str, Any]] | None:
        op = o["op"]
        if op == "open":
            return self.build_open(st, o)
        if op == "close":
            req = CloseReq(self.rid(o))
            return sndif.encode_request(req), self._meta(req, "close", "CLOSE")
        if op == "rw":
            code = o["code"]
            off, ln = o["offset"] & 0xFFFFFFFF, o["length"] & 0xFFFFFFFF
            req = RwReq(self.rid(o), Op(code), off, ln)
            meta = self._meta(req, {Op.WRITE: "write", Op.READ: "read"}.get(Op(code), "vol"),
                              f"{Op(code).name} {off}+{ln}", len=ln if code == Op.WRITE else 0)
            if code == Op.WRITE and not st.capture and st.share is not None and o.get("fill"):
                sh = st.share
                base = sh["guard"] * PAGE
                if off + ln <= sh["sz"]:
                    data = self.rng.randbytes(ln)
                    sh["pages"].buf[base + off:base + off + ln] = data
                    play = bytearray(sh["play"])
                    play[off:off + ln] = data
                    sh["play"] = bytes(play)
            meta.update(code=int(code), off=off, ln=ln)
            if code == Op.READ and st.running:
                meta["wait"] = ln / max(1, st.fb * st.rate)
            return sndif.encode_request(req), meta
        if op == "trigger":
            t = o["type"]
            req = TriggerReq(self.rid(o), t & 0xFF)
            meta = self._meta(req, "trigger", f"TRIGGER {t}", type=t)
            return sndif.encode_request(req), meta
        if op == "query":
            f, r0, r1, c0, c1, b0, b1, p0, p1 = [v & (2**64 - 1 if i == 0 else 0xFFFFFFFF)
                                                 for i, v in enumerate(o["params"])]
            params = HwParams(f, (r0, r1), (c0, c1), (b0, b1), (p0, p1))
            req = HwParamQuery(self.rid(o), params)
            return sndif.encode_request(req), self._meta(req, "query", "HW_PARAM_QUERY",
                                                         params=params)
        if op == "unknown":
            code = o["code"] & 0xFF
            req = UnknownReq(self.rid(o), code)
            meta = self._meta(req, "unknown", f"op {code}")
            if code > Op.HW_PARAM_QUERY:
                meta.update(must="fail", why="unknown operation")
            return sndif.encode_request(req), meta
        if op == "raw":
            slot = bytes.fromhex(o["hex"]) if "hex" in o else self.rng.randbytes(64)
            slot = (slot + bytes(64))[:64]
            return slot, self._raw_meta(st, slot, "raw")
        return None

    def _raw_meta(self, st: HStream, slot: bytes, what: str) -> dict[str, Any]:
        """An arbitrary slot as the backend decodes it: no verdict on its
        status, but its effect (OPEN, CLOSE, TRIGGER) goes into our model."""
        req = sndif.decode_request(slot)
        code = int(req.operation)
        meta: dict[str, Any] = {"id": req.id, "opcode": code, "kind": "raw",
                                "desc": f"{what} {req!r}"[:200], "len": 0}
        if isinstance(req, OpenReq):
            try:
                fb = sndif.frame_bytes(req.pcm_format, req.pcm_channels)
            except PvSndError:
                fb = 1
            meta.update(kind="open", buffer_sz=req.buffer_sz, fb=fb, rate=req.pcm_rate,
                        share=None)
        elif isinstance(req, CloseReq):
            meta["kind"] = "close"
        elif isinstance(req, TriggerReq):
            meta.update(kind="trigger", type=int(req.type), raw=True)
        elif isinstance(req, RwReq) and req.operation == Op.WRITE:
            meta.update(kind="write", len=req.length)
        elif isinstance(req, HwParamQuery):
            meta["params"] = req.params  # the answer must refine what the backend decoded
        return meta

    # -- the case --------------------------------------------------------------
    def run_ops(self, ops: list[dict[str, Any]]) -> None:
        for o in ops:
            op = o["op"]
            st = self.streams[o.get("s", 0) % len(self.streams)]
            if op == "sleep":
                end = time.monotonic() + o["t"]
                while time.monotonic() < end:
                    for s in self.streams:
                        self._drain_events(s)
                    self._pump(0.01)
                continue
            if op == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if op == "state":
                self.write_state(o["value"])
                try:
                    fe = parse_state(o["value"])
                except PvSndError:
                    fe = None
                if fe is None or int(fe) in (0, 1, 5, 6):
                    self.detached = f"we wrote state {o['value']!r}"
                if o.get("wait"):
                    time.sleep(o["wait"])
                continue
            if op == "close_evtchn":
                self.evtchn.close()
                self.no_notify = True
                continue
            if st.ring is None or st.broken:
                continue
            if op == "flood":
                port = st.req_port if o.get("port", "req") == "req" else st.evt_port
                for _ in range(o["count"]):
                    self._notify(port)
                continue
            if op == "jump":
                self._jump(st, o)
                continue
            if op == "evt_cons":
                assert st.evt_pages is not None
                struct.pack_into("<I", st.evt_pages.buf, R.IN_CONS_OFF, o["value"] & 0xFFFFFFFF)
                continue
            if op == "ring_event":
                off = R.REQ_EVENT_OFF if o.get("field") == "req_event" else R.RSP_EVENT_OFF
                assert st.ring_pages is not None
                # req_event is the backend's to write: garbage there only
                # mutes our own notifications, so notify regardless
                st.force_notify = True
                struct.pack_into("<I", st.ring_pages.buf, off, o["value"] & 0xFFFFFFFF)
                continue
            if op == "unshare":
                self._unshare(st, o["what"])
                continue
            if op == "unbind":
                port = st.req_port if o["port"] == "req" else st.evt_port
                try:
                    self.evtchn.unbind(port)
                except PvSndError as exc:
                    self.notes.append(f"unbind: {exc}")
                if o["port"] == "req":
                    st.broken = "we unbound the request port"
                continue
            if op == "batch":
                items = []
                for sub in o["reqs"][:R.RING_SIZE - len(st.outstanding)]:
                    b = self.build(st, sub)
                    if b is not None:
                        items.append(b)
                if items:
                    self.push(st, items)
                    self.collect(st, sum(m.get("wait", 0.0) for _, m in items))
                continue
            b = self.build(st, o)
            if b is None:
                continue
            self.push(st, [b])
            if o.get("nowait"):
                continue
            self.collect(st, b[1].get("wait", 0.0))

    def _jump(self, st: HStream, o: dict[str, Any]) -> None:
        assert st.ring is not None and st.ring_pages is not None
        ops = NativeIndexOps(st.ring_pages.buf)
        mode = o["mode"]
        if mode == "stale":
            k = min(o["k"], R.RING_SIZE - len(st.outstanding))
            if k <= 0:
                return
            # The backend decodes whatever is in those slots: know what it is.
            for i in range(k):
                idx = st.ring.req_prod_pvt + i
                off = R.RING_HEADER + (idx & (R.RING_SIZE - 1)) * R.SLOT_SIZE
                slot = bytes(st.ring_pages.buf[off:off + 64])
                st.outstanding.append(self._raw_meta(st, slot, "stale slot"))
            st.ring.req_prod_pvt = (st.ring.req_prod_pvt + k) & 0xFFFFFFFF
            ops.store(R.REQ_PROD_OFF, st.ring.req_prod_pvt)
            self._notify(st.req_port)
            self.collect(st)
            return
        cur = ops.load(R.REQ_PROD_OFF)
        delta = o["delta"]
        ops.store(R.REQ_PROD_OFF, (cur + delta) & 0xFFFFFFFF)
        self._notify(st.req_port)
        st.broken = f"we moved req_prod by {delta}"
        st.outstanding.clear()
        time.sleep(0.02)

    def _unshare(self, st: HStream, what: str) -> None:
        target: list[Any] = []
        if what == "buffer" and st.share is not None:
            target = [st.share["pages"]]
        elif what == "dir" and st.share is not None:
            target = [st.share["dir"]]
        elif what == "ring":
            target = [st.ring_pages]
        elif what == "evt":
            target = [st.evt_pages]
        for p in target:
            try:
                self.sharer.unshare(p)
            except PvSndError as exc:
                self.notes.append(f"unshare: {exc}")

    def check_canaries(self) -> None:
        """The backend wrote nothing beside a buffer, past its end, into a
        directory page, or into a playback buffer."""
        for st in self.streams:
            for sh in st.shares:
                buf, g, n, sz = sh["pages"].buf, sh["guard"], sh["n"], sh["sz"]
                try:
                    before = bytes(buf[:g * PAGE])
                    after = bytes(buf[(g + n) * PAGE:])
                    body = bytes(buf[g * PAGE:(g + n) * PAGE])
                    dirb = bytes(sh["dir"].buf)
                except (ValueError, TypeError):
                    continue
                where = f"{st.sc.path} buffer of {sz} octets"
                if before != _canary(len(before)):
                    self.outside.append(f"{where}: guard page before it was written")
                if after != _canary(len(after)):
                    self.outside.append(f"{where}: guard page after it was written")
                if sz < n * PAGE:
                    tail = body[sz:]
                    if st.capture and tail != _canary(len(tail)):
                        self.outside.append(f"{where}: bytes past buffer_sz were written")
                if not st.capture and sh["play"] is not None and body != sh["play"]:
                    first = next(i for i, (a, b) in enumerate(zip(body, sh["play"])) if a != b)
                    self.outside.append(f"{where}: playback buffer modified at {first}")
                if dirb != sh["dir_bytes"]:
                    self.outside.append(f"{where}: directory page modified")

    def end(self, how: str) -> None:
        if how == "close":
            for st in self.streams:
                if st.opened and not st.broken and st.ring is not None and not self.detached:
                    self.push(st, [self.build(st, {"op": "close"})])  # type: ignore[list-item]
                    self.collect(st)
            self.check_canaries()
            self.write_state("5")
            self.wait_be({"6", "2", "1"}, 1.5)
            self.sharer.close()
            self.write_state("1")
        else:  # "abandon": the process just goes, as a killed guest does
            self.check_canaries()

    def close(self) -> None:
        for h in (self.evtchn, self.sharer):
            try:
                h.close()
            except PvSndError:
                pass
        self.t.close()


def run_hostile_guest(spec: dict[str, Any], sim_dir: str, backend_pid: int | None
                      ) -> dict[str, Any]:
    """One guest-direction case, in a forked child."""
    rng = random.Random(spec.get("rng", 0))
    t0 = time.monotonic()
    g = HostileGuest(sim_dir, spec.get("domid", 2), rng, backend_pid)
    be_after_handshake = g.handshake(spec.get("handshake", {}))
    if be_after_handshake == "4" or spec.get("ops_anyway"):
        g.run_ops(spec.get("ops", []))
    g.close_cpu()
    end = spec.get("end", "close")
    g.end(end)
    res = {"violations": g.violations, "outside": g.outside, "hangs": g.hangs,
           "notes": g.notes[:20], "answers": g.answers, "be_handshake": be_after_handshake,
           "cpu_windows": g.cpu_windows, "t0": t0, "t1": time.monotonic(),
           "trace": g.trace[-40:] if (g.violations or g.hangs or g.outside) else []}
    if end != "abandon":
        g.close()
    return res
