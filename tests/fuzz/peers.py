"""Honest peers and xenstore upkeep, shared by both directions.

- the honest guest's *takes*: a known signal per take number, played through
  the Python API, with the longest gap in its progress measured;
- the recovery peer: a fresh frontend that must connect, play and capture;
- the toolstack's own keys of a vsnd device, and their repair (as dom0).

Everything here runs in a forked child (it opens xenstore handles).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from alsa_pvplug.errors import PvSndError, Xrun
from alsa_pvplug.frontend import Card
from alsa_pvplug.protocol.sndif import PcmFormat
from alsa_pvplug.sim.toolstack import DEFAULT_VSND
from alsa_pvplug.sim.xl import parse_xl_vsnd, xl_card_to_xenstore
from alsa_pvplug.transport import open_transport

#: a take: S16_LE stereo 48 kHz, buffer 4096 / period 1024 frames, 0.2 s
TAKE_FRAMES = 9600
TAKE_RATE = 48000
TAKE_GEOMETRY = dict(fmt=PcmFormat.S16_LE, channels=2, rate=TAKE_RATE, buffer_frames=4096,
                     period_frames=1024)
#: a progress gap at least this long disrupts the honest guest
STALL_SECONDS = 0.5


def take_signal(k: int, frames: int = TAKE_FRAMES) -> bytes:
    """Take ``k``'s signal; its first frame spells ``k`` so a WAV names its take."""
    a = np.random.default_rng(k + 1).integers(-2**15, 2**15, (frames, 2), dtype="<i2")
    a[0, 0], a[0, 1] = k & 0x7FFF, (k >> 15) & 0x7FFF
    return a.tobytes()


def take_of(data: bytes) -> int | None:
    """The take number a WAV's data starts with (None if too short)."""
    if len(data) < 4:
        return None
    a = np.frombuffer(data[:4], "<i2")
    return int(a[0]) | int(a[1]) << 15


class _Progress:
    """Wraps ``card.process`` to time every advance of a stream's position."""

    def __init__(self, card: Card, st: Any) -> None:
        self.card, self.st = card, st
        self.last_hw = st.hw
        self.last_t = time.monotonic()
        self.max_gap = 0.0
        self._orig = card.process

        def process(timeout: float) -> None:
            self._orig(timeout)
            self.tick()

        card.process = process  # type: ignore[method-assign]

    def tick(self) -> None:
        now = time.monotonic()
        hw = self.st.hw
        if hw != self.last_hw:
            self.max_gap = max(self.max_gap, now - self.last_t)
            self.last_hw, self.last_t = hw, now

    def finish(self) -> float:
        self.tick()
        self.max_gap = max(self.max_gap, time.monotonic() - self.last_t)
        self.card.process = self._orig  # type: ignore[method-assign]
        return self.max_gap


def play_take(card: Card, k: int, frames: int = TAKE_FRAMES) -> dict[str, Any]:
    """Open, write, drain, close one take; timings of every step."""
    st = card.stream(0, 0)
    rec: dict[str, Any] = {"k": k, "t0": time.monotonic()}
    t = time.monotonic()
    st.open(**TAKE_GEOMETRY)
    rec["open_s"] = time.monotonic() - t
    data = take_signal(k, frames)
    prog = _Progress(card, st)
    try:
        step = 1024 * 4
        for off in range(0, len(data), step):
            st.write(data[off:off + step])
            prog.tick()
        st.drain()
    finally:
        rec["gap_s"] = prog.finish()
    t = time.monotonic()
    st.close()
    rec["close_s"] = time.monotonic() - t
    rec["t1"] = time.monotonic()
    rec["ok"] = True
    return rec


def honest_loop(sim_dir: str, domid: int, out_path: str, first_k: int = 0) -> None:
    """The honest guest: plays takes until SIGTERM, one JSON line per take.
    A failed take is recorded; the card is then reopened (each attempt that
    fails is a take too, so an outage counts for what it costs)."""
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    out = open(out_path, "a", buffering=1)
    transport = open_transport("sim", sim_dir=sim_dir, domid=domid)
    card: Card | None = None
    k = first_k
    while not stop:
        t0 = time.monotonic()
        try:
            if card is None:
                card = Card.open(transport, timeout=3.0)
            rec = play_take(card, k)
        except PvSndError as exc:
            rec = {"k": k, "t0": t0, "t1": time.monotonic(), "ok": False,
                   "error": f"{type(exc).__name__}: {exc}"}
            if card is not None:
                card.close()
                card = None
            time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001 - an honest guest bug is reported too
            rec = {"k": k, "t0": t0, "t1": time.monotonic(), "ok": False,
                   "error": f"untyped {type(exc).__name__}: {exc}"}
            if card is not None:
                card.close()
                card = None
            time.sleep(0.05)
        out.write(json.dumps(rec) + "\n")
        k += 1
    if card is not None:
        card.close()
    transport.close()
    out.close()


def recovery_peer(sim_dir: str, domid: int, timeout: float = 3.0) -> dict[str, Any]:
    """A fresh frontend: connect, play 2048 frames, capture 1024, disconnect."""
    t0 = time.monotonic()
    transport = open_transport("sim", sim_dir=sim_dir, domid=domid)
    card = None
    try:
        card = Card.open(transport, timeout=timeout)
        st = card.stream(0, 0)
        st.open(PcmFormat.S16_LE, 2, 48000, 2048, 512)
        st.write(take_signal(0, 2048))
        st.drain()
        st.close()
        cap = card.stream(0, 1)
        cap.open(PcmFormat.S16_LE, 2, 48000, 2048, 512)
        for attempt in range(3):
            try:
                got = cap.read(1024)
                break
            except Xrun:
                # A peer descheduled for a buffer's time on a busy machine
                # overruns like any client; it recovers as one would.
                if attempt == 2:
                    raise
                cap.prepare()
        cap.close()
        ok = len(got) == 1024 * 4
        return {"ok": ok, "seconds": time.monotonic() - t0,
                "error": None if ok else f"captured {len(got)} bytes"}
    except PvSndError as exc:
        return {"ok": False, "seconds": time.monotonic() - t0,
                "error": f"{type(exc).__name__}: {exc}"}
    finally:
        if card is not None:
            card.close()
        transport.close()


# -- the toolstack's keys -----------------------------------------------------

RUNTIME_FE_KEYS = ("state", "version", "ring-ref", "event-channel", "evt-ring-ref",
                   "evt-event-channel")


def toolstack_fe(fe_domid: int, be_domid: int = 0, devid: int = 0) -> dict[str, str]:
    """What ``pvplug sim`` (as xl) writes into the frontend dir, minus state."""
    card = parse_xl_vsnd([list(c) for c in DEFAULT_VSND])[devid]
    keys = dict(xl_card_to_xenstore(card))
    keys["backend"] = f"/local/domain/{be_domid}/backend/vsnd/{fe_domid}/{devid}"
    keys["backend-id"] = str(be_domid)
    return keys


def toolstack_be(fe_domid: int, devid: int = 0) -> dict[str, str]:
    return {"frontend": f"/local/domain/{fe_domid}/device/vsnd/{devid}",
            "frontend-id": str(fe_domid), "online": "1"}


def repair(sim_dir: str, fe_domids: list[int], states: bool = False,
           be_domid: int = 0) -> list[str]:
    """As dom0: put back the toolstack's keys of every vsnd device (config,
    backend links), remove keys nobody should have written, and, with
    ``states``, reset both state nodes.  Returns what was changed."""
    t = open_transport("sim", sim_dir=sim_dir, domid=0)
    xs = t.xenstore
    changed: list[str] = []
    try:
        for fe_domid in fe_domids:
            fe = f"/local/domain/{fe_domid}/device/vsnd/0"
            be = f"/local/domain/{be_domid}/backend/vsnd/{fe_domid}/0"
            for base, want, runtime, owner, peer in (
                    (fe, toolstack_fe(fe_domid, be_domid), RUNTIME_FE_KEYS, fe_domid, be_domid),
                    (be, toolstack_be(fe_domid), ("state",), be_domid, fe_domid)):
                tree = xs.read_tree(base) if xs.read(base) is not None else {}
                if xs.read(base) is None:
                    xs.write(base, "")
                    xs.set_permissions(base, [(owner, "n"), (peer, "r")])
                    changed.append(f"{base} recreated")
                for rel, value in want.items():
                    if tree.get(rel) != value:
                        xs.write(f"{base}/{rel}", value)
                        changed.append(f"{base}/{rel}")
                for rel in tree:
                    leaf = rel.rsplit("/", 1)[-1]
                    if rel in want or leaf in runtime:
                        continue
                    if any(k.startswith(rel + "/") for k in want):
                        continue  # a directory on the way to a wanted key
                    xs.rm(f"{base}/{rel}")
                    changed.append(f"rm {base}/{rel}")
            if states and xs.read(f"{fe}/state") != "1":
                xs.write(f"{fe}/state", "1")
                changed.append(f"{fe}/state=1")
    finally:
        t.close()
    return changed


def dump_device(sim_dir: str, fe_domid: int) -> dict[str, Any]:
    """Both directories of a device, for a report."""
    t = open_transport("sim", sim_dir=sim_dir, domid=0)
    try:
        fe = f"/local/domain/{fe_domid}/device/vsnd/0"
        be = f"/local/domain/0/backend/vsnd/{fe_domid}/0"
        return {"fe": t.xenstore.read_tree(fe), "be": t.xenstore.read_tree(be)}
    finally:
        t.close()


def write_nodes(sim_dir: str, domid: int, nodes: dict[str, str | None]) -> None:
    """Write (or, for None, remove) xenstore nodes as ``domid``."""
    t = open_transport("sim", sim_dir=sim_dir, domid=domid)
    try:
        for path, value in nodes.items():
            if value is None:
                t.xenstore.rm(path)
            else:
                t.xenstore.write(path, value)
    finally:
        t.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def wav_files(out_dir: Path, label_prefix: str) -> list[Path]:
    return sorted(out_dir.glob(f"{label_prefix}*.wav"))
