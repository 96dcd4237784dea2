"""The hostile backend (dom0) and the frontends it is fuzzed against.

:func:`run_hostile_backend` is the reference backend with a *plan* of
misbehaviour (see ``gen.backend_case``), hooked in by subclassing
``BackendStream`` and wrapping ``VsndDevice`` (test code only; nothing in
``alsa_pvplug`` changes): answers with a wrong id, operation, status or
ranges, dropped / duplicated / late / extra answers, ring index jumps,
CUR_POS of every kind, event storms, dom0 xenstore writes (its own state
and versions, and the frontend's nodes), sudden death or a freeze.

The frontends, each in a forked child against dom1: the Python API
(``Card``/``Stream``) and the plugin's callbacks through ``IoplugHarness``
(checking that what the C shim would store fits a C ``long``).  ``aplay`` /
``arecord`` through the real plugin are run by the campaign
(:func:`plugin_argv`).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from alsa_pvplug.errors import PvSndError, Xrun
from alsa_pvplug.protocol import ring as R
from alsa_pvplug.protocol import sndif
from alsa_pvplug.protocol.sndif import CurPosEvt, HwParams, Op, PcmFormat, Resp
from alsa_pvplug.transport import open_transport
from alsa_pvplug.transport.native_index import NativeIndexOps

LONG_MIN, LONG_MAX = -2**63, 2**63 - 1
logger = logging.getLogger("fuzz.hostile_backend")

_OPS = {"OPEN": Op.OPEN, "CLOSE": Op.CLOSE, "READ": Op.READ, "WRITE": Op.WRITE,
        "TRIGGER": Op.TRIGGER, "HW_PARAM_QUERY": Op.HW_PARAM_QUERY}


class Plan:
    """The hooks' shared state: counters, phases, pending late answers."""

    def __init__(self, plan: dict[str, Any], transport: Any) -> None:
        self.plan = plan
        self.rng = random.Random(plan.get("rng", 0))
        self.transport = transport
        self.resp_seen: dict[str, int] = {}
        self.evt_seen = 0
        self.late: list[tuple[float, Any, Resp]] = []
        self.phases = {p: threading.Event() for p in
                       ("start", "initialised", "connected", "open", "running", "exit")}
        self.streams: list[Any] = []
        self.backend: Any = None
        self.log: list[str] = []

    def phase(self, name: str) -> None:
        ev = self.phases[name]
        if not ev.is_set():
            ev.set()
            for a in self.plan.get("xs", []):
                if a.get("at") == name and not a.get("delay") and not a.get("repeat"):
                    self.xs_action(a)  # synchronous: deterministic order

    # -- xenstore ------------------------------------------------------------
    def _path(self, spec: str) -> str:
        side, _, rel = spec.partition(":")
        base = ("/local/domain/0/backend/vsnd/1/0" if side == "be"
                else "/local/domain/1/device/vsnd/0")
        return f"{base}/{rel}"

    def xs_action(self, a: dict[str, Any], xs: Any = None) -> None:
        xs = xs or self.transport.xenstore
        values = a["values"] if "values" in a else [a.get("value")]
        repeat = a.get("repeat", 1)
        for i in range(repeat * len(values)):
            v = values[i % len(values)]
            try:
                if v is None:
                    xs.rm(self._path(a["path"]))
                else:
                    xs.write(self._path(a["path"]), v)
            except PvSndError as exc:
                self.log.append(f"xs {a['path']}: {exc}")
            if a.get("interval"):
                time.sleep(a["interval"])

    def thread(self) -> None:
        """Timed actions: delayed xenstore writes, storms, death."""
        xs = None
        try:
            from alsa_pvplug.transport.xenstore import LibXenStore

            xs = LibXenStore.open(str(Path(self.transport.sim_dir) / "dom0" / "xenstored"))
        except PvSndError:
            pass
        acts: list[tuple[str, dict[str, Any]]] = []
        for a in self.plan.get("xs", []):
            if a.get("delay") or a.get("repeat"):
                acts.append(("xs", a))
        if "storm" in self.plan:
            acts.append(("storm", self.plan["storm"]))
        if "death" in self.plan:
            acts.append(("death", self.plan["death"]))
        threads = [threading.Thread(target=self._act, args=(k, a, xs), daemon=True)
                   for k, a in acts]
        for t in threads:
            t.start()

    def _act(self, kind: str, a: dict[str, Any], xs: Any) -> None:
        if not self.phases[a.get("at", "start")].wait(30):
            return
        time.sleep(a.get("delay", 0.0))
        if kind == "xs":
            self.xs_action(a, xs)
        elif kind == "storm":
            self.storm(a)
        elif kind == "death":
            how = a.get("how", "kill")
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif how == "freeze":
                os.kill(os.getpid(), signal.SIGSTOP)
            elif self.backend is not None:
                self.backend.stop()

    def storm(self, a: dict[str, Any]) -> None:
        be = self.backend
        for i in range(a.get("count", 100)):
            for st in list(self.streams):
                port = st.evt_port if a.get("port", "evt") == "evt" else st.req_port
                if port < 0:
                    continue
                if a.get("fill") and st.evt is not None and i == 0:
                    for _ in range(R.EVT_RING_LEN):
                        st.evt.put_event(sndif.encode_event(CurPosEvt(
                            self.rng.getrandbits(16), st.done)))
                try:
                    be.evtchn.notify(port)
                except PvSndError:
                    pass

    def tick(self) -> bool:
        """Called by Backend.run every loop: deliver late answers that are due."""
        now = time.monotonic()
        due = [x for x in self.late if x[0] <= now]
        for item in due:
            self.late.remove(item)
            _, st, resp = item
            if st.ring is not None:
                try:
                    ORIG["respond"](st, resp)
                except Exception as exc:  # noqa: BLE001 - the plan may make it impossible
                    self.log.append(f"late answer: {exc}")
        return False


ORIG: dict[str, Any] = {}


def _raw_put(st: Any, slot: bytes, plan: Plan) -> None:
    """Put a response slot past BackRing's bookkeeping (a duplicate/extra)."""
    ring = st.ring
    off = R.RING_HEADER + (ring.rsp_prod_pvt & (R.RING_SIZE - 1)) * R.SLOT_SIZE
    ring._mv[off:off + R.SLOT_SIZE] = slot
    ring.rsp_prod_pvt = (ring.rsp_prod_pvt + 1) & 0xFFFFFFFF
    ring._ops.store(R.RSP_PROD_OFF, ring.rsp_prod_pvt)
    st.dev.backend.notify(st.req_port)


def _rand_hw(rng: random.Random) -> HwParams:
    def rng32() -> int:
        return rng.choice([0, 1, 2, 7, 1024, 48000, 2**31, 2**32 - 1, rng.getrandbits(32)])

    def pair() -> tuple[int, int]:
        return (rng32(), rng32())

    return HwParams(rng.choice([0, 1 << 2, rng.getrandbits(64), 2**64 - 1]),
                    pair(), pair(), pair(), pair())


def make_stream_class(base: type, plan: Plan) -> type:
    rules = plan.plan.get("resp", [])
    pos = plan.plan.get("pos")

    class HostileStream(base):  # type: ignore[misc, valid-type]
        def connect(self, mapper: Any, evtchn: Any, keys: dict[str, int]) -> None:
            super().connect(mapper, evtchn, keys)
            plan.streams.append(self)

        def _open(self, req: Any) -> None:
            plan.phase("open")
            super()._open(req)

        def _trigger(self, req: Any, now: float) -> None:
            super()._trigger(req, now)
            if req.type == 0:
                plan.phase("running")

        def _respond(self, resp: Resp) -> None:
            try:
                opname = Op(resp.operation).name
            except ValueError:
                opname = str(resp.operation)
            n_op = plan.resp_seen.get(opname, 0)
            n_all = plan.resp_seen.get("*", 0)
            plan.resp_seen[opname] = n_op + 1
            plan.resp_seen["*"] = n_all + 1
            for rule in rules:
                target = rule.get("op")
                if target not in (None, opname):
                    continue
                n = n_all if target is None else n_op
                if not (rule.get("every") and n >= rule.get("nth", 0)) and n != rule.get("nth", 0):
                    continue
                resp = self._mutate(rule, resp)
                if resp is None:
                    return
            ORIG["respond"](self, resp)

        def _mutate(self, rule: dict[str, Any], resp: Resp) -> Resp | None:
            do, v = rule["do"], rule.get("value")
            rng = plan.rng
            hw = resp.hw_param
            if do == "id":
                return Resp((resp.id + (v or 1)) & 0xFFFF, resp.operation, resp.status, hw)
            if do == "op":
                op = v & 0xFF
                return Resp(resp.id, op, resp.status, hw if op == Op.HW_PARAM_QUERY else None)
            if do == "status":
                return Resp(resp.id, resp.operation, v, hw)
            if do == "hw":
                if resp.operation == Op.HW_PARAM_QUERY:
                    return Resp(resp.id, resp.operation, resp.status if v != "ok" else 0,
                                _rand_hw(rng))
                return resp
            if do == "drop":
                return None
            if do == "late":
                plan.late.append((time.monotonic() + v, self, resp))
                return None
            if do == "dup":
                ORIG["respond"](self, resp)
                _raw_put(self, sndif.encode_response(resp), plan)
                return None
            if do == "extra":
                ORIG["respond"](self, resp)
                for _ in range(v or 1):
                    _raw_put(self, rng.randbytes(64), plan)
                return None
            if do == "garbage":
                slot = rng.randbytes(64)
                off = R.RING_HEADER + (self.ring.rsp_prod_pvt & (R.RING_SIZE - 1)) * R.SLOT_SIZE
                self.ring._mv[off:off + 64] = slot
                self.ring.rsp_prod_pvt = (self.ring.rsp_prod_pvt + 1) & 0xFFFFFFFF
                if self.ring.push_responses():
                    self.dev.backend.notify(self.req_port)
                return None
            if do == "jump":
                ORIG["respond"](self, resp)
                ops = self.ring._ops
                ops.store(R.RSP_PROD_OFF, (ops.load(R.RSP_PROD_OFF) + v) & 0xFFFFFFFF)
                self.dev.backend.notify(self.req_port)
                return None
            return resp

        def _event(self, now: float = 0.0, past: int = 0, pos_: int | None = None) -> None:
            if pos is None or self.evt is None:
                ORIG["event"](self, now, past, pos_)
                return
            n = plan.evt_seen
            plan.evt_seen += 1
            if n < pos.get("from", 0) or (not pos.get("every", True) and n != pos.get("from", 0)):
                ORIG["event"](self, now, past, pos_)
                return
            mode, v, rng = pos["mode"], pos.get("value"), plan.rng
            done = self.done if pos_ is None else pos_
            p: int | None = None
            if mode == "huge":
                p = v
            elif mode == "back":
                p = max(0, done - (v or 1) * max(1, self.period_sz))
            elif mode == "zero":
                p = 0
            elif mode == "beyond":
                p = done + (v or 1) * max(1, self.buffer_sz)
            elif mode == "random":
                p = rng.getrandbits(64)
            elif mode == "badid":
                self.evt.put_event(sndif.encode_event(CurPosEvt(rng.getrandbits(16), done)))
                self.dev.backend.notify(self.evt_port)
                self.last_evt_pos = done
                return
            elif mode == "dup":
                ORIG["event"](self, now, past, pos_)
                ORIG["event"](self, now, past, pos_)
                return
            elif mode == "badtype":
                slot = bytearray(sndif.encode_event(CurPosEvt(self.evt_id, done)))
                slot[2] = v
                self.evt.put_event(bytes(slot))
                self.dev.backend.notify(self.evt_port)
                self.last_evt_pos = done
                return
            elif mode == "skip":
                self.last_evt_pos = done
                return
            elif mode == "jump":
                ORIG["event"](self, now, past, pos_)
                ops = NativeIndexOps(self.evt_page.buf)
                self.evt.in_prod = (self.evt.in_prod + v) & 0xFFFFFFFF
                ops.store(R.IN_PROD_OFF, self.evt.in_prod)
                self.dev.backend.notify(self.evt_port)
                return
            elif mode == "storm":
                for _ in range(v or 63):
                    ORIG["event"](self, now, past, pos_)
                return
            if p is None:
                ORIG["event"](self, now, past, pos_)
                return
            self.last_evt_pos = done
            self.evt.put_event(sndif.encode_event(CurPosEvt(self.evt_id, p & (2**64 - 1))))
            self.evt_id = (self.evt_id + 1) & 0xFFFF
            self.dev.backend.notify(self.evt_port)

    return HostileStream


def run_backend(sim_dir: str, plan: dict[str, Any] | None = None, sink: str = "null",
                source: str = "sine:1000") -> dict[str, Any]:
    """The reference backend, with ``plan``'s misbehaviour if given; runs
    until SIGTERM (in a forked child)."""
    from alsa_pvplug.backend import server
    from alsa_pvplug.backend.io import parse_sink, parse_source

    transport = open_transport("sim", sim_dir=sim_dir, domid=0, role="backend")
    p = None
    if plan is not None:
        p = Plan(plan, transport)
        ORIG["respond"] = server.BackendStream._respond
        ORIG["event"] = server.BackendStream._event
        server.BackendStream = make_stream_class(server.BackendStream, p)  # type: ignore[misc]
        dev_cls = server.VsndDevice
        orig_connect, orig_write = dev_cls.connect, dev_cls.write_state

        def connect(self: Any) -> None:
            p.phase("initialised")
            orig_connect(self)

        def write_state(self: Any, state: Any) -> None:
            orig_write(self, state)
            if int(state) == 4:
                p.phase("connected")

        dev_cls.connect = connect  # type: ignore[method-assign]
        dev_cls.write_state = write_state  # type: ignore[method-assign]
        v = plan.get("versions")
        if v is not None:
            transport.xenstore.write("/local/domain/0/backend/vsnd/1/0/versions", v)
    backend = server.Backend(transport, parse_sink(sink), parse_source(source))

    def on_term(*_: object) -> None:
        if p is not None:
            p.phase("exit")  # dom0's last words: written as the backend goes
        backend.stop()

    signal.signal(signal.SIGTERM, on_term)
    if p is not None:
        p.backend = backend
        p.thread()
        p.phase("start")
    try:
        backend.run(until=p.tick if p is not None else (lambda: False))
    finally:
        backend.close()
        transport.close()
    return {"log": p.log[:20] if p else []}


# -- the frontends -------------------------------------------------------------

def make_signal(fmt: PcmFormat, channels: int, frames: int, seed: int) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (frames, channels)
    if fmt == PcmFormat.U8:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
    elif fmt == PcmFormat.S16_LE:
        a = rng.integers(-2**15, 2**15, shape, dtype="<i2")
    elif fmt == PcmFormat.S24_LE:
        a = rng.integers(-2**23, 2**23, shape, dtype="<i4")
    elif fmt == PcmFormat.S32_LE:
        a = rng.integers(-2**31, 2**31, shape, dtype="<i4")
    else:
        a = rng.uniform(-1, 1, shape).astype("<f4")
    return a.tobytes()


def _typed(exc: BaseException) -> dict[str, Any]:
    return {"outcome": "typed", "error": f"{type(exc).__name__}: {exc}"}


def _untyped(exc: BaseException) -> dict[str, Any]:
    return {"outcome": "untyped", "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-3000:]}


#: a frontend that keeps recovering from xruns without progress (what
#: arecord's endless "overrun!!!" is) is runaway
XRUN_LIMIT = 50


def run_frontend(case: dict[str, Any], sim_dir: str) -> dict[str, Any]:
    """One frontend run of a backend-direction case (in a forked child)."""
    drv = case["driver"]
    try:
        if drv.startswith("api"):
            return _api(case, sim_dir)
        return _harness(case, sim_dir)
    except PvSndError as exc:
        return _typed(exc)
    except Exception as exc:  # noqa: BLE001 - the point: none may escape untyped
        return _untyped(exc)


def _geometry(case: dict[str, Any]) -> tuple[PcmFormat, int, int, int, int, int]:
    g = case["geometry"]
    return (PcmFormat[g["format"]], g["channels"], g["rate"], g["buffer"], g["period"],
            case["frames"])


def _api(case: dict[str, Any], sim_dir: str) -> dict[str, Any]:
    from alsa_pvplug.frontend import Card

    fmt, ch, rate, buf, per, frames = _geometry(case)
    t = open_transport("sim", sim_dir=sim_dir, domid=1)
    card = None
    notes = []
    try:
        card = Card.open(t, timeout=case["timeout"])
        capture = case["driver"] == "api-cap"
        st = card.stream(0, 1 if capture else 0)
        if case.get("query"):
            q = st.query_hw_params(HwParams(sndif.format_mask(st.config.formats),
                                            (1, 2**32 - 1), (1, 255), (1, 2**31), (1, 2**31)))
            notes.append(f"query {q}")
        st.open(fmt, ch, rate, buf, per)
        fb = sndif.frame_bytes(fmt, ch)
        if capture:
            got = 0
            while got < frames:
                n = min(per, frames - got)
                got += len(st.read(n)) // fb
                _ = (st.avail, st.delay, st.hw)
        else:
            data = make_signal(fmt, ch, frames, case.get("rng", 0))
            step = per * fb
            for i, off in enumerate(range(0, len(data), step)):
                st.write(data[off:off + step])
                _ = (st.avail, st.delay, st.hw)
                if case.get("pause") and i == 2:
                    st.pause()
                    time.sleep(0.05)
                    st.resume()
            st.drain()
        st.close()
        return {"outcome": "clean", "notes": notes}
    finally:
        if card is not None:
            card.close()
        t.close()


def _runaway(why: str, ranges: list[str]) -> dict[str, Any]:
    res: dict[str, Any] = {"outcome": "runaway", "error": why}
    if ranges:
        res["also"] = [["untyped", ranges[0]]]
    return res


def _harness(case: dict[str, Any], sim_dir: str) -> dict[str, Any]:
    from alsa_pvplug.glue.harness import IoplugHarness

    fmt, ch, rate, buf, per, frames = _geometry(case)
    capture = case["driver"] == "harness-cap"
    xruns = 0
    ranges: list[str] = []
    h = IoplugHarness(transport="sim", sim_dir=sim_dir, domid=1, timeout=case["timeout"],
                      capture=capture, wait_timeout=case["timeout"] + 1.0)
    try:
        h.hw_params(fmt, ch, rate, per, buf)
        fb = sndif.frame_bytes(fmt, ch)

        def delay_check() -> None:
            try:
                d = h.delay()
            except PvSndError:
                return
            if not LONG_MIN <= d <= LONG_MAX:
                ranges.append(f"delay {d} does not fit a C long (the shim's `*delayp = d` "
                              "raises OverflowError)")

        if capture:
            got = 0
            while got < frames:
                try:
                    data = h.readi(min(per, frames - got))
                    got += len(data) // fb
                except Xrun:
                    xruns += 1
                    delay_check()  # arecord's xrun report asks for the status
                    if xruns > XRUN_LIMIT:
                        return _runaway(f"{xruns} xruns in a row, {got} of {frames} frames "
                                        "read", ranges)
                    h.prepare()
                delay_check()
        else:
            data = make_signal(fmt, ch, frames, case.get("rng", 0))
            done = 0
            while done < frames:
                try:
                    n = h.writei(data[done * fb:(done + per) * fb])
                    done += n
                    if n == 0 and h.last_error is not None:
                        raise h.last_error
                except Xrun:
                    xruns += 1
                    delay_check()
                    if xruns > XRUN_LIMIT:
                        return _runaway(f"{xruns} xruns, {done} of {frames} frames written",
                                        ranges)
                    h.prepare()
                delay_check()
            h.drain()
        if ranges:
            return {"outcome": "untyped", "error": ranges[0]}
        return {"outcome": "clean", "xruns": xruns}
    except PvSndError as exc:
        res = _typed(exc)
        if ranges:
            res["also"] = [["untyped", ranges[0]]]
        return res
    except AssertionError as exc:  # the harness's pointer contract checks
        return {"outcome": "untyped", "error": f"pointer contract: {exc}",
                "traceback": traceback.format_exc()[-3000:]}
    finally:
        try:
            h.close()
        except PvSndError:
            pass


# -- the real plugin -------------------------------------------------------------

_ALSA_FMT = {"U8": "U8", "S16_LE": "S16_LE", "S24_LE": "S24_LE", "S32_LE": "S32_LE",
             "FLOAT_LE": "FLOAT_LE"}


def plugin_argv(case: dict[str, Any], work: Path) -> list[str]:
    """aplay/arecord argv for a plugin case; writes aplay's input WAV."""
    from alsa_pvplug.backend.wavfile import WavInfo, WavWriter

    fmt, ch, rate, buf, per, frames = _geometry(case)
    common = [f"--buffer-size={buf}", f"--period-size={per}"]
    if case["driver"] == "aplay":
        src = work / f"in-{fmt.name}-{ch}-{rate}-{frames}.wav"
        if not src.exists():
            w = WavWriter(str(src), WavInfo(fmt, ch, rate))
            w.write(make_signal(fmt, ch, frames, 7))
            w.close()
        return ["aplay", "-D", "pvplug", *common, str(src)]
    return ["arecord", "-D", "pvplug", "-t", "raw", "-f", _ALSA_FMT[fmt.name], "-c", str(ch),
            "-r", str(rate), "-s", str(frames), *common, str(work / "capture.raw")]


def classify_client(end: Any) -> list[tuple[str, str]]:
    """[(outcome, detail), ...] of an aplay/arecord run (a world.ClientEnd)."""
    out = end.output
    found: list[tuple[str, str]] = []
    if "Traceback" in out or "unexpected error" in out:
        found.append(("untyped", _excerpt(out, ("Error:", "unexpected error"))))
    if end.killed == "cap":
        found.append(("runaway", f"killed after {end.total} bytes of output: "
                      + _excerpt(out, ("overrun", "underrun", "pvplug:"))))
    elif end.killed == "deadline":
        if end.total > 32 * 1024:
            found.append(("runaway", f"still writing at the deadline ({end.total} bytes): "
                          + _excerpt(out, ("overrun", "underrun", "pvplug:"))))
        else:
            found.append(("hang", f"no exit within {end.seconds:.1f} s"))
    elif end.rc is not None and end.rc < 0:
        found.append(("signal", f"killed by signal {-end.rc}"))
    elif end.rc != 0 and not found:
        found.append(("typed", _excerpt(out, ("pvplug:", "aplay:", "arecord:", "ALSA lib"))))
    return found or [("clean", "")]


def _excerpt(out: str, marks: tuple[str, ...]) -> str:
    lines = []
    for ln in out.splitlines():
        if any(m in ln for m in marks) and ln not in lines:
            lines.append(ln)
    text = " | ".join(lines[:3]) if lines else out[-300:]
    return text[:600]
