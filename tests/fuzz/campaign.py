"""Campaigns: run cases against a world, classify them, keep the world alive.

A campaign never waits without a bound: every case, recovery check and
restart runs in a forked child or subprocess under a deadline and is killed
when it is over.  A backend or simulator that dies is restarted (and
counted); the case that was running gets the blame.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alsa_pvplug.backend.wavfile import read_wav
from alsa_pvplug.protocol import sndif
from alsa_pvplug.protocol.sndif import PcmFormat
from alsa_pvplug.sim.toolstack import DEFAULT_VSND
from alsa_pvplug.sim.xl import parse_xl_vsnd

from . import backend_side, guest_side, peers
from .world import CLI, Forked, Sub, fork_call, mem_kb, run_client, start_sim, wait_states

# Outcome classes (the table), most severe first.
CRASH = "backend crashed"
SIGNAL = "crash by signal"
HANG = "hang"
RUNAWAY = "runaway output"
UNTYPED = "untyped exception"
UNUSABLE = "device left unusable"
WRONG = "wrong answer"
OUTSIDE = "write outside the buffer"
CPU = "backend CPU hog"
HARNESS = "harness error"
TYPED = "typed error"
CLEAN = "clean"
SEVERITY = [CRASH, SIGNAL, HANG, RUNAWAY, UNTYPED, UNUSABLE, WRONG, OUTSIDE, CPU, HARNESS,
            TYPED, CLEAN]
#: backend CPU share while a hostile stream runs above this is a hog (the
#: honest guest's takes alone cost the backend about 5 %)
CPU_HOG = 0.20
CPU_WINDOW_MIN = 0.5


#: the simulator's card (DEFAULT_VSND): its buffer-size bounds any period
CARD_BUFFER_BYTES = parse_xl_vsnd(DEFAULT_VSND)[0].params.buffer_size


@dataclass
class CaseResult:
    spec: dict[str, Any]
    outcomes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0
    t0: float = 0.0
    t1: float = 0.0
    cpu: float | None = None

    @property
    def primary(self) -> str:
        if not self.outcomes:
            return CLEAN
        return min(self.outcomes, key=SEVERITY.index)

    @property
    def key(self) -> str:
        return f"{self.spec.get('seed')}:{self.spec.get('index')}"

    def add(self, outcome: str, detail: str = "") -> None:
        if outcome not in self.outcomes:
            self.outcomes.append(outcome)
        if detail:
            self.details.append(f"{outcome}: {detail}"[:1500])

    def as_json(self) -> dict[str, Any]:
        return {"case": self.key, "outcome": self.primary, "outcomes": self.outcomes,
                "details": self.details, "seconds": round(self.seconds, 3),
                "cpu": self.cpu, "spec": self.spec}


def _log(msg: str) -> None:
    print(msg, flush=True)


# -- the guest direction -------------------------------------------------------

class GuestWorld:
    """sim (dom1 honest, dom2 hostile) + the real ``pvplug backend`` + the
    honest guest's take loop."""

    HONEST, HOSTILE = 1, 2

    def __init__(self, root: Path, log: Callable[[str], None] = _log,
                 probe: str | None = None) -> None:
        self.root = root
        self.log = log
        #: None, "on" or "tracemalloc": run the backend under tests/fuzz/backend_probe.py
        self.probe = probe
        self.probe_path = root / "probe.jsonl"
        self.out = root / "out"
        self.events: list[dict[str, Any]] = []  # restarts: time, what, why
        self.backend_n = 0
        self.honest_k = 0
        self.takes_path = root / "takes.jsonl"
        self.sim: Sub | None = None
        self.backend: Sub | None = None
        self.honest: Forked | None = None
        self.start_all()

    @property
    def sim_dir(self) -> Path:
        return self.root / "sim"

    def start_all(self) -> None:
        self.sim = start_sim(self.root, [self.HONEST, self.HOSTILE])
        self.start_backend()
        self.start_honest()

    def start_backend(self) -> None:
        self.backend_n += 1
        self.out.mkdir(parents=True, exist_ok=True)
        args = ["--sim-dir", str(self.sim_dir), "--sink", f"wav:{self.out}", "--source",
                "sine:440"]
        if self.probe:
            argv = [CLI[0], "-m", "tests.fuzz.backend_probe", str(self.probe_path),
                    *(["--tracemalloc"] if self.probe == "tracemalloc" else []), "--", *args]
        else:
            argv = [*CLI, "--log-level", "warning", "backend", *args]
        self.backend = Sub(argv, self.root / "logs" / f"backend-{self.backend_n}.log")
        ok = wait_states(self.sim_dir, [f"/local/domain/0/backend/vsnd/{d}/0/state"
                                        for d in (self.HONEST, self.HOSTILE)],
                         {"2", "4"}, 15)
        if not ok and not self.backend.alive:
            raise RuntimeError(f"pvplug backend did not start:\n{self.backend.tail()}")

    def start_honest(self) -> None:
        self.honest = Forked(peers.honest_loop, (str(self.sim_dir), self.HONEST,
                                                 str(self.takes_path), self.honest_k),
                             self.root / "logs" / "honest.log")

    def event(self, what: str, why: str) -> None:
        self.events.append({"t": time.monotonic(), "what": what, "why": why[-3000:]})
        self.log(f"  [{what}] {why.splitlines()[-1] if why else ''}"[:300])

    def restart_backend(self, why: str) -> None:
        assert self.backend is not None
        self.backend.stop(kill=True)
        self.event("backend restart", why)
        self.start_backend()

    def restart_all(self, why: str) -> None:
        self.event("world restart", why)
        self.stop()
        self.start_all()

    def ensure(self) -> None:
        assert self.sim is not None and self.backend is not None and self.honest is not None
        if not self.sim.alive:
            self.restart_all(f"the simulator died (rc {self.sim.returncode}):\n{self.sim.tail()}")
            return
        if not self.honest.alive:
            end = self.honest.poll()
            self.event("honest guest restart", f"honest guest ended: {end}\n{self.honest.tail()}")
            self.honest_k = self._last_k() + 1
            self.start_honest()
        self.sim.trim_log()
        self.backend.trim_log()

    def _last_k(self) -> int:
        k = self.honest_k
        try:
            for line in self.takes_path.read_text().splitlines():
                try:
                    k = max(k, json.loads(line)["k"])
                except (ValueError, KeyError):
                    pass
        except OSError:
            pass
        return k

    def stop(self) -> None:
        if self.honest is not None:
            self.honest.stop(grace=8.0)
        if self.backend is not None:
            self.backend.stop()
        if self.sim is not None:
            self.sim.stop()


class TakeBook:
    """The honest guest's takes: its own records plus the WAVs the backend wrote."""

    def __init__(self, world: GuestWorld) -> None:
        self.world = world
        self.takes: dict[int, dict[str, Any]] = {}
        self.wavs: dict[int, str] = {}   # k -> "exact" or what is wrong
        self._offset = 0

    def update(self, final: bool = False) -> None:
        path = self.world.takes_path
        try:
            with open(path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            chunk = b""
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        for line in chunk[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            self.takes[rec["k"]] = rec
        done = max(self.takes, default=-1)
        for wav in peers.wav_files(self.world.out, f"dom{GuestWorld.HONEST}-"):
            try:
                _info, data = read_wav(str(wav))
            except (OSError, ValueError, Exception):  # noqa: BLE001 - a torn file
                if final:
                    wav.unlink(missing_ok=True)
                continue
            k = peers.take_of(data)
            if k is None or (k > done and not final):
                if final:
                    wav.unlink(missing_ok=True)
                continue
            want = peers.take_signal(k)
            if data == want:
                self.wavs[k] = "exact"
            else:
                first = next((i for i, (a, b) in enumerate(zip(data, want)) if a != b),
                             min(len(data), len(want)))
                self.wavs[k] = f"not bit-exact ({len(data)} of {len(want)} bytes, first " \
                               f"difference at byte {first})"
            wav.unlink(missing_ok=True)

    def verdicts(self) -> list[dict[str, Any]]:
        out = []
        for k, rec in sorted(self.takes.items()):
            why = []
            if not rec.get("ok"):
                why.append(rec.get("error", "failed"))
            else:
                w = self.wavs.get(k)
                if w is None:
                    why.append("no WAV from the backend")
                elif w != "exact":
                    why.append(w)
                gap = max(rec.get("gap_s", 0), rec.get("open_s", 0), rec.get("close_s", 0))
                if gap >= peers.STALL_SECONDS:
                    why.append(f"stalled {gap:.2f} s")
            out.append({"k": k, "t0": rec["t0"], "t1": rec["t1"], "why": why,
                        "gap": max(rec.get("gap_s", 0), rec.get("open_s", 0),
                                   rec.get("close_s", 0)) if rec.get("ok") else None})
        return out


class GuestCampaign:
    def __init__(self, root: Path, log: Callable[[str], None] = _log,
                 case_log: Callable[[CaseResult], None] | None = None,
                 probe: str | None = None, probe_every: int = 100) -> None:
        self.root = root
        self.log = log
        self.case_log = case_log
        self.world = GuestWorld(root, log, probe)
        self.probe_every = probe_every
        self.book = TakeBook(self.world)
        self.results: list[CaseResult] = []
        #: (case number, backend instance, VmRSS kB, RssAnon kB, RssShmem kB)
        self.rss: list[tuple[int, int, int, int, int]] = []
        self.crash_causes: dict[str, int] = {}

    def run(self, specs: Iterable[dict[str, Any]]) -> list[CaseResult]:
        try:
            for i, spec in enumerate(specs):
                self.world.ensure()
                r = self.run_case(spec)
                self.results.append(r)
                if self.case_log:
                    self.case_log(r)
                self._sample_rss(i)
                if i % 20 == 19:
                    self.book.update()
                if self.world.probe and i % self.probe_every == 0:
                    self._probe()
        finally:
            self.world.stop()
            self.book.update(final=True)
        return self.results

    def _probe(self) -> None:
        be = self.world.backend
        if be is not None and be.alive:
            import signal as _signal

            os.kill(be.pid, _signal.SIGUSR1)

    def _sample_rss(self, i: int) -> None:
        be = self.world.backend
        if be is not None and be.alive:
            m = mem_kb(be.pid)
            if "VmRSS" in m:
                self.rss.append((i, self.world.backend_n, m["VmRSS"], m.get("RssAnon", 0),
                                 m.get("RssShmem", 0)))

    def run_case(self, spec: dict[str, Any]) -> CaseResult:
        w = self.world
        r = CaseResult(spec, t0=time.monotonic())
        logs = self.root / "logs" / "cases"
        name = f"g-{spec.get('seed')}-{spec.get('index')}"
        be = w.backend
        assert be is not None
        be_log_at = be.log_size()
        end = fork_call(guest_side.run_hostile_guest, (spec, str(w.sim_dir), be.pid),
                        logs / f"{name}.log", timeout=45)
        res = end.result if end.how == "ok" else None
        if end.how == "ok":
            for v in res["violations"]:
                r.add(WRONG, v)
            for v in res["outside"]:
                r.add(OUTSIDE, v)
            for v in res["hangs"]:
                r.add(HANG, v)
            if res.get("trace"):
                r.details.append("trace: " + " | ".join(res["trace"]))
            r.cpu = _cpu_share(res.get("cpu_windows", []))
            if r.cpu is not None and r.cpu > CPU_HOG:
                r.add(CPU, f"backend used {r.cpu:.0%} of a CPU while the hostile stream ran")
        elif end.how == "signal" and end.signal == 9 and any(
                o.get("op") == "kill" for o in spec.get("ops", [])):
            pass  # the case killed itself, as planned
        elif end.how == "timeout":
            r.add(HANG, "the hostile guest did not finish within 45 s")
        else:
            r.add(HARNESS, f"hostile guest ended {end.how} {end.signal or end.code}: "
                  f"{_last_line(end.result)}\n{str(end.result)[-1500:]}")
        self._check_backend(r, be_log_at)
        self._recover(r, spec)
        for wav in peers.wav_files(w.out, f"dom{GuestWorld.HOSTILE}-"):
            wav.unlink(missing_ok=True)
        r.t1 = time.monotonic()
        r.seconds = r.t1 - r.t0
        if r.primary == CLEAN:
            (logs / f"{name}.log").unlink(missing_ok=True)
        return r

    def _check_backend(self, r: CaseResult, log_at: int) -> bool:
        be = self.world.backend
        assert be is not None
        if be.alive:
            return True
        time.sleep(0.05)
        tail = be.tail(8000)
        cause = _crash_cause(tail)
        key = crash_key(cause)
        self.crash_causes[key] = self.crash_causes.get(key, 0) + 1
        r.add(CRASH, f"pvplug backend exited {be.returncode}: {cause}\n{tail[-2500:]}")
        self.world.restart_backend(f"crashed in case {r.key}: {cause}")
        return False

    def _recover(self, r: CaseResult, spec: dict[str, Any]) -> None:
        w = self.world
        logs = self.root / "logs" / "cases"
        name = f"g-{spec.get('seed')}-{spec.get('index')}"
        if spec.get("handshake", {}).get("config"):
            fork_call(peers.repair, (str(w.sim_dir), [GuestWorld.HOSTILE]),
                      logs / f"{name}-repair.log", timeout=15)
        end = fork_call(peers.recovery_peer, (str(w.sim_dir), GuestWorld.HOSTILE),
                        logs / f"{name}-recovery.log", timeout=20)
        if end.how == "ok" and end.result["ok"]:
            return
        if not self._check_backend(r, 0):
            return
        why = end.result["error"] if end.how == "ok" else f"recovery peer ended {end.how}"
        dump = fork_call(peers.dump_device, (str(w.sim_dir), GuestWorld.HOSTILE),
                         logs / f"{name}-dump.log", timeout=10)
        r.add(UNUSABLE, f"a fresh guest could not use the device: {why}; device "
              f"{json.dumps(dump.result)[:800] if dump.how == 'ok' else '?'}")
        fork_call(peers.repair, (str(w.sim_dir), [GuestWorld.HOSTILE], True),
                  logs / f"{name}-repair.log", timeout=15)
        end = fork_call(peers.recovery_peer, (str(w.sim_dir), GuestWorld.HOSTILE),
                        logs / f"{name}-recovery2.log", timeout=20)
        if not (end.how == "ok" and end.result["ok"]):
            w.restart_backend(f"dom2's device still unusable after case {r.key} and a repair")


def _last_line(text: object) -> str:
    lines = [ln for ln in str(text).splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _cpu_share(windows: list[list[float]]) -> float | None:
    best = None
    for t0, t1, c0, c1 in windows:
        if t1 - t0 >= CPU_WINDOW_MIN:
            share = (c1 - c0) / (t1 - t0)
            best = share if best is None else max(best, share)
    return best


def _crash_cause(tail: str) -> str:
    """``ExcType at file:line`` of the traceback's innermost alsa_pvplug frame,
    then the message (the value that broke it varies; the cause does not)."""
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    where = ""
    for ln in lines:
        s = ln.strip()
        if s.startswith('File "') and "alsa_pvplug" in s and "line " in s:
            f = s.split('"')[1]
            where = f"{f[f.find('alsa_pvplug'):]}:{s.split('line ')[1].split(',')[0]}"
    for ln in reversed(lines):
        s = ln.strip()
        head = s.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return f"{head} at {where or '?'}: {s[len(head) + 1:].strip()[:160]}"
    return lines[-1][:200] if lines else "no output"


def crash_key(cause: str) -> str:
    return cause.split(": ", 1)[0]


# -- the backend direction -----------------------------------------------------

class BackendWorld:
    """sim (dom1) + a plugin configuration; backends come and go per case."""

    def __init__(self, root: Path, plugin_lib: Path | None = None,
                 log: Callable[[str], None] = _log) -> None:
        self.root = root
        self.log = log
        self.events: list[dict[str, Any]] = []
        self.work = root / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.plugin_lib = plugin_lib
        self.sim: Sub | None = None
        self.sim = start_sim(root, [1])
        self.env: dict[str, str] = {}

    @property
    def sim_dir(self) -> Path:
        return self.root / "sim"

    def plugin_env(self) -> dict[str, str]:
        if not self.env:
            from alsa_pvplug.glue.install import render_conf

            if self.plugin_lib is None:
                from alsa_pvplug.glue.build import build_plugin

                self.plugin_lib = build_plugin(self.root / "plugin")
            conf = self.root / "pvplug.conf"
            conf.write_text(render_conf(self.plugin_lib, {
                "transport": "sim", "sim_dir": str(self.sim_dir), "domid": 1, "timeout": 1}))
            self.env = {"ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}",
                        "PVPLUG_LOG_LEVEL": "warning"}
        return self.env

    def event(self, what: str, why: str) -> None:
        self.events.append({"t": time.monotonic(), "what": what, "why": why[-3000:]})
        self.log(f"  [{what}] {why.splitlines()[-1] if why else ''}"[:300])

    def ensure(self) -> None:
        assert self.sim is not None
        if not self.sim.alive:
            self.restart_sim(f"the simulator died (rc {self.sim.returncode}):\n{self.sim.tail()}")
        self.sim.trim_log()

    def restart_sim(self, why: str) -> None:
        self.event("simulator restart", why)
        assert self.sim is not None
        self.sim.stop(kill=True)
        shutil.rmtree(self.sim_dir, ignore_errors=True)
        self.sim = start_sim(self.root, [1])

    def stop(self) -> None:
        if self.sim is not None:
            self.sim.stop()


class BackendCampaign:
    def __init__(self, root: Path, plugin_lib: Path | None = None,
                 log: Callable[[str], None] = _log,
                 case_log: Callable[[CaseResult], None] | None = None) -> None:
        self.root = root
        self.log = log
        self.case_log = case_log
        self.world = BackendWorld(root, plugin_lib, log)
        self.results: list[CaseResult] = []

    def run(self, specs: Iterable[dict[str, Any]]) -> list[CaseResult]:
        try:
            for spec in specs:
                self.world.ensure()
                r = self.run_case(spec)
                self.results.append(r)
                if self.case_log:
                    self.case_log(r)
        finally:
            self.world.stop()
        return self.results

    def deadline(self, spec: dict[str, Any]) -> float:
        """Hang = no end within the audio's length + the request timeout + 2 s
        for each wait a frontend may make (connect, one request, teardown)."""
        geo = spec["geometry"]
        audio = spec["frames"] / geo["rate"]
        if spec["driver"] == "aplay" and any(
                r.get("op") == "HW_PARAM_QUERY" and r.get("do") == "hw"
                for r in spec["plan"].get("resp", [])):
            # A rewritten query may leave only long periods, up to half the
            # card's buffer, and aplay pads its last chunk to a period (case
            # 4002:78: 1024 frames played as one 16.4 s period, then drained).
            fb = sndif.frame_bytes(PcmFormat[geo["format"]], geo["channels"])
            audio = max(audio, CARD_BUFFER_BYTES // 2 // fb / geo["rate"])
        startup = 2.5 if spec["driver"] in ("aplay", "arecord") else 0.5
        return 1.5 * audio + 3 * (spec["timeout"] + 2.0) + startup

    def run_case(self, spec: dict[str, Any]) -> CaseResult:
        w = self.world
        r = CaseResult(spec, t0=time.monotonic())
        logs = self.root / "logs" / "cases"
        name = f"b-{spec.get('seed')}-{spec.get('index')}"
        hostile = Forked(backend_side.run_backend, (str(w.sim_dir), spec["plan"]),
                         logs / f"{name}-backend.log", log_cap=64 * 1024)
        try:
            deadline = self.deadline(spec)
            if spec["driver"] in ("aplay", "arecord"):
                argv = backend_side.plugin_argv(spec, w.work)
                end = run_client(argv, deadline, env=w.plugin_env(), cwd=w.work)
                found = backend_side.classify_client(end)
                if found[0][0] != "clean":
                    (logs / f"{name}-client.log").write_text(
                        f"{' '.join(argv)}\nrc {end.rc} after {end.seconds:.2f} s, "
                        f"{end.total} bytes, killed {end.killed}\n{end.output}")
                for outcome, detail in found:
                    _add_frontend(r, outcome, detail)
            else:
                fe = fork_call(backend_side.run_frontend, (spec, str(w.sim_dir)),
                               logs / f"{name}-frontend.log", timeout=deadline,
                               log_level=30)
                if fe.how == "ok":
                    res = fe.result
                    _add_frontend(r, res["outcome"],
                                  res.get("error", "") + ("\n" + res["traceback"]
                                                          if res.get("traceback") else ""))
                    for outcome, detail in res.get("also", []):
                        _add_frontend(r, outcome, detail)
                elif fe.how == "timeout":
                    r.add(HANG, f"the frontend did not finish within {deadline:.1f} s")
                elif fe.how == "signal":
                    r.add(SIGNAL, f"the frontend died of signal {fe.signal}")
                else:
                    r.add(HARNESS, f"frontend child ended {fe.how}: {_last_line(fe.result)}\n"
                          f"{str(fe.result)[-1500:]}")
        finally:
            if spec.get("kill_backend") == "kill":
                hostile.kill()
            else:
                hostile.stop(grace=2.0)
        he = hostile.poll()
        if he is not None and he.how == "exception":
            r.details.append(f"(hostile backend raised: {str(he.result)[-600:]})")
        self._recover(r, spec)
        r.t1 = time.monotonic()
        r.seconds = r.t1 - r.t0
        if r.primary in (CLEAN, TYPED):
            for f in logs.glob(f"{name}-*.log"):
                f.unlink(missing_ok=True)
        return r

    def _recover(self, r: CaseResult, spec: dict[str, Any]) -> None:
        w = self.world
        logs = self.root / "logs" / "cases"
        name = f"b-{spec.get('seed')}-{spec.get('index')}"
        plan = spec["plan"]
        if plan.get("xs") or "versions" in plan:
            # The toolstack's keys (config, links) and junk dom0 left in its
            # own directory are put back; state and ring nodes are not.
            fork_call(peers.repair, (str(w.sim_dir), [1]), logs / f"{name}-repair.log",
                      timeout=15)
        ok, why = self._recovery_check(logs / f"{name}-recovery")
        if ok:
            return
        dump = fork_call(peers.dump_device, (str(w.sim_dir), 1), logs / f"{name}-dump.log",
                         timeout=10)
        r.add(UNUSABLE, f"with an honest backend, a fresh frontend failed: {why}; device "
              f"{json.dumps(dump.result)[:800] if dump.how == 'ok' else '?'}")
        fork_call(peers.repair, (str(w.sim_dir), [1], True), logs / f"{name}-repair.log",
                  timeout=15)
        ok, why = self._recovery_check(logs / f"{name}-recovery2")
        if not ok:
            w.restart_sim(f"dom1's device still unusable after case {r.key} and a repair: {why}")

    def _recovery_check(self, stem: Path) -> tuple[bool, str]:
        w = self.world
        honest = Forked(backend_side.run_backend, (str(w.sim_dir), None),
                        stem.with_name(stem.name + "-backend.log"))
        try:
            end = fork_call(peers.recovery_peer, (str(w.sim_dir), 1),
                            stem.with_name(stem.name + ".log"), timeout=20)
        finally:
            honest.stop(grace=3.0)
        if end.how == "ok" and end.result["ok"]:
            return True, ""
        return False, end.result["error"] if end.how == "ok" else f"peer ended {end.how}"


def _add_frontend(r: CaseResult, outcome: str, detail: str) -> None:
    mapping = {"clean": CLEAN, "typed": TYPED, "untyped": UNTYPED, "runaway": RUNAWAY,
               "hang": HANG, "signal": SIGNAL}
    o = mapping.get(outcome, HARNESS)
    if o != CLEAN:
        r.add(o, detail)


def run_direction(direction: str, specs: list[dict[str, Any]], root: Path,
                  plugin_lib: Path | None = None, log: Callable[[str], None] | None = _log,
                  case_log: Callable[[CaseResult], None] | None = None,
                  probe: str | None = None) -> dict[str, Any]:
    """Run ``specs`` of one direction in a fresh world under ``root``;
    returns the summary (``report.guest_summary`` / ``backend_summary``)."""
    from . import report

    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    quiet = log or (lambda m: None)
    if direction == "guest":
        gc = GuestCampaign(root, log=quiet, case_log=case_log, probe=probe)
        gc.run(specs)
        s = report.guest_summary(gc)
    else:
        bc = BackendCampaign(root, plugin_lib=plugin_lib, log=quiet, case_log=case_log)
        bc.run(specs)
        s = report.backend_summary(bc)
    s["seconds"] = round(time.monotonic() - t0, 1)
    return s
