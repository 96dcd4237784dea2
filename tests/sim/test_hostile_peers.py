"""Hostile peers on both sides.  A scripted backend that breaks the protocol
gets typed errors at the frontend, never a hang or an untyped exception; a
guest sending bad requests gets error statuses and the backend keeps serving
its other streams."""

from __future__ import annotations

import errno
import sys
import time
from pathlib import Path

import pytest

from alsa_pvplug.errors import RemoteProtocolError
from alsa_pvplug.frontend import Card
from alsa_pvplug.protocol import ring as ring_mod
from alsa_pvplug.protocol import sndif
from alsa_pvplug.protocol.sndif import (
    HwParamQuery,
    HwParams,
    Op,
    OpenReq,
    PcmFormat,
    RwReq,
    TriggerReq,
    UnknownReq,
)
from alsa_pvplug.transport import open_transport
from tests.support.audio import make_signal
from tests.support.env import Proc, wait_until

HOSTILE_BACKEND = Path(__file__).resolve().parents[1] / "support" / "hostile_backend.py"


@pytest.fixture
def card(sim):
    t = open_transport("sim", sim_dir=sim.dir, domid=1)
    cards = []

    def connect() -> Card:
        # The backend is a fresh interpreter: wait until it offers InitWait.
        be_state = "/local/domain/0/backend/vsnd/1/0/state"
        wait_until(lambda: t.xenstore.read(be_state) == "2", 15, "backend InitWait")
        c = Card.open(t, timeout=1.5)
        cards.append(c)
        return c

    yield connect
    for c in cards:
        c.close()
    t.close()


@pytest.mark.parametrize("mode,match", [
    ("wrong-id", "does not match a request in flight"),
    ("wrong-op", "echoes operation"),
    ("rsp-overflow", "only 1 requests outstanding"),
])
def test_hostile_backend_responses(sim, card, tmp_path, mode, match):
    be = Proc([sys.executable, str(HOSTILE_BACKEND), str(sim.dir), mode],
              tmp_path / "hostile.log")
    try:
        c = card()
        st = c.stream(0, 0)
        t0 = time.monotonic()
        with pytest.raises(RemoteProtocolError, match=match) as exc:
            st.open(PcmFormat.S16_LE, 2, 48000, 1024, 256)
        assert time.monotonic() - t0 < 1.5
        assert "[errno 5 EIO]" in str(exc.value)
        assert be.alive
    finally:
        be.stop()


def test_hostile_backend_absurd_position(sim, card, tmp_path):
    be = Proc([sys.executable, str(HOSTILE_BACKEND), str(sim.dir), "absurd-pos"],
              tmp_path / "hostile.log")
    try:
        c = card()
        st = c.stream(0, 0)
        st.open(PcmFormat.S16_LE, 2, 48000, 1024, 256)
        with pytest.raises(RemoteProtocolError, match="claims .* more than real time allows"):
            st.write(make_signal(PcmFormat.S16_LE, 2, 4096))
            st.drain()
        assert st.hw <= st.appl  # the absurd position was never applied
    finally:
        be.stop()


class RawGuest:
    """Puts arbitrary requests on a stream's ring, bypassing every local check."""

    def __init__(self, card: Card, st) -> None:
        self.card, self.st, self.next_id = card, st, 1000

    def send(self, req) -> sndif.Resp:
        st = self.st
        st.ring.put_request(sndif.encode_request(req))
        if st.ring.push_requests():
            self.card.evtchn.notify(st.req_port)
        deadline = time.monotonic() + 3
        while not (got := self.responses()):
            assert time.monotonic() < deadline, "backend did not answer"
            time.sleep(0.001)
        (resp,) = got
        assert resp.id == req.id
        return resp

    def responses(self) -> list[sndif.Resp]:
        """Answers off the ring directly (the Stream knows none of these ids)."""
        return [sndif.decode_response(s) for s in self.st.ring.take_responses()]

    def rid(self) -> int:
        self.next_id += 1
        return self.next_id

    def open(self, **kw) -> sndif.Resp:
        card = self.card
        pages = card.sharer.share_pages(card.be_domid, 1)
        dirp = card.sharer.share_pages(card.be_domid, 1)
        dirp.buf[:4096] = sndif.encode_page_directory(dirp.refs, pages.refs)[0]
        args = dict(pcm_rate=48000, pcm_format=int(PcmFormat.S16_LE), pcm_channels=2,
                    buffer_sz=4096, gref_directory=dirp.refs[0], period_sz=1024)
        args.update(kw)
        return self.send(OpenReq(self.rid(), **args))


def test_hostile_guest_gets_statuses_and_backend_keeps_serving(sim, card, tmp_path):
    be = sim.backend(tmp_path, "--source", "sine:440")
    try:
        c = card()
        g = RawGuest(c, c.stream(0, 0))
        E = lambda code: -code  # noqa: E731
        assert g.send(RwReq(g.rid(), Op.WRITE, 0, 64)).status == E(errno.EBADFD)
        assert g.send(TriggerReq(g.rid(), 0)).status == E(errno.EBADFD)
        assert g.open(pcm_format=int(PcmFormat.FLOAT64_LE)).status == E(errno.EINVAL)
        assert g.open(pcm_format=200).status == E(errno.EINVAL)
        assert g.open(pcm_rate=12345).status == E(errno.EINVAL)
        assert g.open(pcm_channels=0).status == E(errno.EINVAL)
        assert g.open(period_sz=0).status == E(errno.EINVAL)
        assert g.open(buffer_sz=4095).status == E(errno.EINVAL)
        assert g.open(buffer_sz=2**31).status == E(errno.EINVAL)
        assert g.open(gref_directory=99999).status == E(errno.EINVAL)
        assert g.open(gref_directory=0).status == E(errno.EINVAL)
        # a directory that claims more pages than the buffer needs
        assert g.open(buffer_sz=8192).status == E(errno.EINVAL)
        assert g.send(UnknownReq(g.rid(), 42)).status == E(errno.ENOSYS)
        assert g.open().status == 0
        assert g.open().status == E(errno.EBUSY)
        assert g.send(RwReq(g.rid(), Op.WRITE, 4000, 512)).status == E(errno.EINVAL)
        assert g.send(RwReq(g.rid(), Op.WRITE, 0, 0)).status == E(errno.EINVAL)
        assert g.send(RwReq(g.rid(), Op.WRITE, 2, 64)).status == E(errno.EINVAL)
        assert g.send(RwReq(g.rid(), Op.WRITE, 1024, 64)).status == E(errno.EINVAL)
        assert g.send(RwReq(g.rid(), Op.READ, 0, 64)).status == E(errno.EINVAL)
        assert g.send(RwReq(g.rid(), Op.SET_VOLUME, 0, 8)).status == E(errno.ENOTSUP)
        assert g.send(TriggerReq(g.rid(), 9)).status == E(errno.EINVAL)
        assert g.send(TriggerReq(g.rid(), 3)).status == E(errno.EINVAL)  # RESUME, not paused
        q = g.send(HwParamQuery(g.rid(), HwParams(1 << 16, (1, 2), (1, 2), (1, 2), (1, 2))))
        assert q.status == E(errno.EINVAL)
        # Now break the playback ring outright: a request index far past it.
        ops = g.st.ring._ops
        ops.store(ring_mod.REQ_PROD_OFF, (ops.load(ring_mod.REQ_PROD_OFF) + 500) & 0xFFFFFFFF)
        c.evtchn.notify(g.st.req_port)
        # The capture stream of the same card is still served, audio and all.
        cap = c.stream(0, 1)
        cap.open(PcmFormat.S16_LE, 2, 48000, 2048, 512)
        assert len(cap.read(4800)) == 4800 * 4
        cap.close()
        assert be.alive
        assert "no longer served" in be.output()
    finally:
        be.stop()


def test_guest_initialised_without_rings_is_refused_then_recovers(sim, tmp_path):
    """A guest that says Initialised but published no rings: the backend goes
    Closing/Closed instead of crashing, and offers InitWait again once the
    guest returns to Initialising; a real frontend then connects."""
    be = sim.backend(tmp_path)
    t = open_transport("sim", sim_dir=sim.dir, domid=1)
    try:
        be_state = "/local/domain/0/backend/vsnd/1/0/state"
        wait_until(lambda: t.xenstore.read(be_state) == "2", 15, "backend InitWait")
        t.xenstore.write("device/vsnd/0/state", "3")
        wait_until(lambda: t.xenstore.read(be_state) == "6", 5, "backend Closed")
        assert "connect failed" in be.output() and be.alive
        t.xenstore.write("device/vsnd/0/state", "1")
        wait_until(lambda: t.xenstore.read(be_state) == "2", 5, "backend InitWait again")
        c = Card.open(t, timeout=3)
        c.close()
    finally:
        t.close()
        be.stop()


def _play_bit_exact(t, out: Path, domid: int, seed: int) -> None:
    c = Card.open(t, timeout=3)
    try:
        st = c.stream(0, 0)
        n_before = len(list(out.glob(f"dom{domid}-*.wav")))
        st.open(PcmFormat.S16_LE, 2, 48000, buffer_frames=4800, period_frames=960)
        data = make_signal(PcmFormat.S16_LE, 2, 4800, seed=seed)
        st.write(data)
        st.drain()
        st.close()
        wait_until(lambda: len(list(out.glob(f"dom{domid}-*.wav"))) > n_before, 5, "a WAV")
        wav = sorted(out.glob(f"dom{domid}-*.wav"))[-1]
        from alsa_pvplug.backend.wavfile import read_wav
        assert read_wav(str(wav))[1] == data
    finally:
        c.close()


@pytest.mark.parametrize("key", [sndif.FIELD_RING_REF, sndif.FIELD_EVT_CHNL,
                                 sndif.FIELD_EVT_RING_REF, sndif.FIELD_EVT_EVT_CHNL])
@pytest.mark.parametrize("value", ["\u00b2", "\u0661\u0662", "+7", "99999999999999999999999"])
def test_guest_garbage_ring_key_closes_only_its_device(tmp_path, key, value):
    """Regression (issue 9, defect 1): a ring key "²" (str.isdigit() is true,
    int() raises) killed the backend for every guest.  Now only that guest's
    device closes, with the reason in the xenbus error node; the other guest
    plays on, and the hostile one connects once it behaves."""
    from tests.support.env import Sim

    sim = Sim(tmp_path, ["--guest", "1", "--guest", "2"])
    out = tmp_path / "out"
    be = sim.backend(tmp_path, "--sink", f"wav:{out}")
    honest = open_transport("sim", sim_dir=sim.dir, domid=1)
    hostile = open_transport("sim", sim_dir=sim.dir, domid=2)
    try:
        be_state = "/local/domain/0/backend/vsnd/2/0/state"
        wait_until(lambda: hostile.xenstore.read(be_state) == "2", 15, "backend InitWait")
        for path in ("0/0", "0/1"):
            for k in (sndif.FIELD_RING_REF, sndif.FIELD_EVT_CHNL,
                      sndif.FIELD_EVT_RING_REF, sndif.FIELD_EVT_EVT_CHNL):
                hostile.xenstore.write(f"device/vsnd/0/{path}/{k}", value if k == key else "8")
        hostile.xenstore.write("device/vsnd/0/state", "3")
        wait_until(lambda: hostile.xenstore.read(be_state) == "6", 5, "backend Closed")
        assert be.alive, be.output()
        dom0 = open_transport("sim", sim_dir=sim.dir, domid=0)
        try:
            err = dom0.xenstore.read("/local/domain/0/error/backend/vsnd/2/0/error")
        finally:
            dom0.close()
        assert err is not None and err.startswith("22 ") and key in err, err
        _play_bit_exact(honest, out, 1, seed=1)
        # The hostile guest starts over: Initialising, then a real handshake.
        hostile.xenstore.write("device/vsnd/0/state", "1")
        wait_until(lambda: hostile.xenstore.read(be_state) == "2", 5, "InitWait again")
        _play_bit_exact(hostile, out, 2, seed=2)
        assert be.alive
    finally:
        honest.close()
        hostile.close()
        be.stop()
        sim.stop()


@pytest.mark.parametrize("garbage", ["abc", "", "\u00b2", "99", "4 4"])
def test_garbage_in_own_state_node_is_reset(sim, tmp_path, garbage):
    """Regression (issue 9, defect 4): dom0 left garbage in the frontend's own
    state node; connect failed parsing it before the stale-state reset, so
    every later open failed until someone repaired xenstore."""
    be = sim.backend(tmp_path, "--sink", f"wav:{tmp_path / 'out'}")
    t = open_transport("sim", sim_dir=sim.dir, domid=1)
    dom0 = open_transport("sim", sim_dir=sim.dir, domid=0)
    try:
        wait_until(lambda: t.xenstore.read("/local/domain/0/backend/vsnd/1/0/state") == "2",
                   15, "backend InitWait")
        dom0.xenstore.write("/local/domain/1/device/vsnd/0/state", garbage)
        _play_bit_exact(t, tmp_path / "out", 1, seed=3)
        assert be.alive
    finally:
        dom0.close()
        t.close()
        be.stop()


def test_backend_bounds_period_and_reports_it(sim, card, tmp_path):
    """Regression (issue 9, defect 6): a one-frame period drove the backend's
    CPU from 5 % to 30 %.  OPEN below --min-period-us is refused with a
    message; HW_PARAM_QUERY says what the minimum is."""
    be = sim.backend(tmp_path, "--min-period-us", "1000")
    try:
        c = card()
        g = RawGuest(c, c.stream(0, 0))
        assert g.open(period_sz=4).status == -errno.EINVAL  # one S16 stereo frame
        assert g.open(period_sz=47 * 4).status == -errno.EINVAL  # 0.98 ms at 48 kHz
        q = g.send(HwParamQuery(g.rid(), HwParams(1 << int(PcmFormat.S16_LE), (48000, 48000),
                                                  (2, 2), (1, 1 << 20), (1, 1 << 20))))
        assert q.status == 0 and q.hw_param.period[0] == 48
        assert "shorter than this backend's minimum of 1000 us" in be.output()
        assert g.open(period_sz=48 * 4).status == 0
    finally:
        be.stop()


def _flood(g: RawGuest, n: int) -> list[int]:
    """Keep the ring full of HW_PARAM_QUERYs for ``n`` answers; their statuses."""
    st, card = g.st, g.card
    q = HwParams(1 << int(PcmFormat.S16_LE), (48000, 48000), (2, 2), (1, 4096), (256, 256))
    statuses: list[int] = []
    outstanding = 0
    deadline = time.monotonic() + 20
    while len(statuses) < n:
        assert time.monotonic() < deadline, f"flood stalled after {len(statuses)} answers"
        while outstanding < ring_mod.RING_SIZE:
            st.ring.put_request(sndif.encode_request(HwParamQuery(g.rid() & 0xFFFF, q)))
            outstanding += 1
        if st.ring.push_requests():
            card.evtchn.notify(st.req_port)
        time.sleep(0.002)
        for resp in g.responses():
            statuses.append(resp.status)
            outstanding -= 1
    return statuses


def test_request_flood_is_refused_and_the_other_stream_plays(sim, card, tmp_path):
    """Above --max-request-rate a stream's requests get -EBUSY (then wait);
    the capture stream of the same card meanwhile records in real time."""
    be = sim.backend(tmp_path, "--max-request-rate", "500", "--source", "sine:440")
    try:
        c = card()
        g = RawGuest(c, c.stream(0, 0))
        cap = c.stream(0, 1)
        cap.open(PcmFormat.S16_LE, 2, 48000, 4800, 960)
        t0 = time.monotonic()
        statuses = _flood(g, 600)
        assert set(statuses) <= {0, -errno.EBUSY}
        assert statuses.count(-errno.EBUSY) > 50, statuses.count(-errno.EBUSY)
        # 600 answers at 500/s served + 125/s refused, after bursts of 64 + 32:
        assert time.monotonic() - t0 > 0.5
        assert "requests a second (--max-request-rate): answering -EBUSY" in be.output()
        assert len(cap.read(9600)) == 9600 * 4
        cap.close()
        assert be.alive
    finally:
        be.stop()


NOTIFY_FLOOD = r"""
import sys, time
from alsa_pvplug.frontend import Card
from alsa_pvplug.transport import open_transport
t = open_transport("sim", sim_dir=sys.argv[1], domid=2)
c = Card.open(t, timeout=5)
st = c.stream(0, 0)
n, end = 0, time.monotonic() + float(sys.argv[2])
print("flooding", flush=True)
while time.monotonic() < end:
    for port in (st.req_port, st.evt_port):
        c.evtchn.notify(port)
        n += 1
print("notified", n, flush=True)
c.close()
t.close()
"""


def test_notify_flood_does_not_disturb_another_guest(tmp_path):
    """A guest notifying its ports without pause: the backend's wakes for it
    are bounded (the port stays masked over --max-request-rate) and another
    guest plays bit-exact meanwhile."""
    from tests.support.env import Sim

    sim = Sim(tmp_path, ["--guest", "1", "--guest", "2"])
    out = tmp_path / "out"
    be = sim.backend(tmp_path, "--sink", f"wav:{out}", "--max-request-rate", "1000")
    honest = open_transport("sim", sim_dir=sim.dir, domid=1)
    flood = None
    try:
        flood = Proc([sys.executable, "-c", NOTIFY_FLOOD, str(sim.dir), "4"],
                     tmp_path / "flood.log")
        wait_until(lambda: "flooding" in flood.output() or not flood.alive, 15, "the flood")
        t0 = time.monotonic()
        _play_bit_exact(honest, out, 1, seed=5)  # 0.1 s of audio
        _play_bit_exact(honest, out, 1, seed=6)
        assert time.monotonic() - t0 < 3, "the honest guest was slowed down"
        wait_until(lambda: not flood.alive, 15, "the flood to end")
        assert "notified" in flood.output(), flood.output()
        assert be.alive
    finally:
        if flood is not None:
            flood.stop()
        honest.close()
        be.stop()
        sim.stop()
