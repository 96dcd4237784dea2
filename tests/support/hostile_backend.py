"""A scripted hostile backend: the reference backend with one misbehaviour.

    python tests/support/hostile_backend.py SIM_DIR MODE

MODE: wrong-id | wrong-op | rsp-overflow | absurd-pos | fail-write (the third
WRITE and later answer -EIO) | slow-write (WRITE answers come 0.2 s late)
"""

from __future__ import annotations

import errno
import signal
import sys
import time

from alsa_pvplug.backend import server
from alsa_pvplug.backend.io import NullSink, SilenceSource
from alsa_pvplug.protocol import ring as ring_mod
from alsa_pvplug.protocol import sndif
from alsa_pvplug.protocol.sndif import CurPosEvt, Resp
from alsa_pvplug.transport import open_transport

sim_dir, mode = sys.argv[1], sys.argv[2]
Stream = server.BackendStream
orig_respond, orig_event = Stream._respond, Stream._event
writes = [0]


def respond(self: Stream, resp: Resp) -> None:
    if mode == "wrong-id":
        resp = Resp((resp.id + 0x1234) & 0xFFFF, resp.operation, resp.status, resp.hw_param)
    elif mode == "wrong-op":
        resp = Resp(resp.id, (resp.operation + 1) % 10, resp.status, resp.hw_param)
    elif mode == "fail-write" and resp.operation == sndif.Op.WRITE:
        writes[0] += 1
        if writes[0] >= 3:
            resp = Resp(resp.id, resp.operation, -errno.EIO, resp.hw_param)
    elif mode == "slow-write" and resp.operation == sndif.Op.WRITE:
        time.sleep(0.2)  # the whole backend waits: a stuck host device (snd_be blocks too)
    elif mode == "rsp-overflow":
        ops = self.ring._ops  # claim a thousand responses that were never asked for
        ops.store(ring_mod.RSP_PROD_OFF, (ops.load(ring_mod.RSP_PROD_OFF) + 1000) & 0xFFFFFFFF)
        self.dev.backend.notify(self.req_port)
        return
    orig_respond(self, resp)


def event(self: Stream, now: float, past: int = 0) -> None:
    if mode == "absurd-pos":
        self.evt.put_event(sndif.encode_event(CurPosEvt(self.evt_id, 2**60)))
        self.dev.backend.notify(self.evt_port)
        return
    orig_event(self, now, past)


Stream._respond = respond
Stream._event = event
transport = open_transport("sim", sim_dir=sim_dir, domid=0)
backend = server.Backend(transport, NullSink(), SilenceSource())
signal.signal(signal.SIGTERM, lambda *_: backend.stop())
try:
    backend.run()
finally:
    backend.close()
