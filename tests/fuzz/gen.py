"""Seeded case generators: ``(seed, index)`` -> a JSON case spec.

Pure: nothing here touches a process or a clock.  A case is reproducible
from its seed and index alone (``python -m tests.fuzz --direction D --seed S
--case I``); the spec it gives can be kept verbatim as a regression case
(``tests/fuzz/test_regressions.py``) and run with ``--spec FILE``.
"""

from __future__ import annotations

import random
from typing import Any

# The default card of `pvplug sim` (alsa_pvplug/sim/toolstack.py DEFAULT_VSND).
CONFIG_FORMATS = {"U8": 1, "S16_LE": 2, "S24_LE": 6, "S32_LE": 10, "FLOAT_LE": 14}
SAMPLE_BYTES = {1: 1, 2: 2, 6: 4, 10: 4, 14: 4, 0: 1, 3: 2, 16: 8, 20: 1}
CONFIG_RATES = [8000, 16000, 22050, 32000, 44100, 48000, 96000]
BUFFER_MAX = 1048576
RING_KEYS = ("ring-ref", "event-channel", "evt-ring-ref", "evt-event-channel")
STREAMS = ("0/0", "0/1")

#: numbers as a peer may spell them: non-ASCII digits (str.isdigit() accepts
#: several that int() refuses), signs, spaces, hex, overflow, junk
GARBAGE_NUMBERS = ["²", "³", "¹²", "①", "⁵", "١", "٣٤", "１２", "𝟗", "߁", "", " ", "-1", "+5",
                   "0x10", "1e3", "3.0", " 9", "9 ", "\t7", "abc", "4294967295",
                   "4294967296", "18446744073709551616", "9" * 40, "0", "08", "\udcff",
                   "7\n", "½"]
SYMBOLIC = ["$foreign_ref", "$ro_ref", "$revoked_ref", "$other_port", "$swap",
            "$other_stream", "$plus_one"]
STATE_GARBAGE = ["abc", "²", "", " ", "03", " 3", "3\n", "9", "99", "-1", "4294967299",
                 "٣", "3abc", "0x3", "\udcff", "3" * 50, "1e0"]
CONFIG_MUTATIONS = {
    "sample-rates": ["48000;abc", "", "²", "0", "4294967296", "48000," * 200, "x"],
    "sample-formats": ["s16_le;zz", "", "mpeg", "gsm", "ima_adpcm", "s16_le," * 100, "²"],
    "channels-min": ["0", "²", "256", "9", "-1", ""],
    "channels-max": ["0", "²", "256", "1", "", "99999999999"],
    "buffer-size": ["0", "²", "1", "4294967296", "", "64"],
    "0/0/type": ["x", "", "pc", "²", "P"],
    "0/1/type": ["p", "x", ""],
    "0/0/unique-id": ["", "x" * 300],
    "0/name": ["", "y" * 500],
    "0/0/sample-rates": ["44100", "12345", "abc"],
    "0/0/channels-max": ["1", "9", "0"],
    "0/0/buffer-size": ["128", "0", "²"],
    "1/0/type": ["p", "c", "x"],
    "0/9/type": ["p"],
    "short-name": ["", "z" * 400],
}
STATUSES = [1, 5, 2**31 - 1, -2**31, -1, -5, -11, -19, -22, -32, -95, -110, -4096, 0]
OPS = ["OPEN", "CLOSE", "READ", "WRITE", "TRIGGER", "HW_PARAM_QUERY"]


def _sb(fmt: int) -> int:
    return SAMPLE_BYTES.get(fmt, 2)


# -- guest direction ---------------------------------------------------------

class _Model:
    """The generator's guess of a stream's geometry (the executor checks for real)."""

    def __init__(self, capture: bool) -> None:
        self.capture = capture
        self.open = False
        self.fb = 4
        self.buffer_sz = 16384
        self.period_sz = 4096
        self.pos = 0
        self.running = False


def _open_op(rng: random.Random, m: _Model, valid: bool, period1: bool = False) -> dict[str, Any]:
    fmt = rng.choice(list(CONFIG_FORMATS.values()))
    ch = rng.choice([1, 2, 2, 2, 4, 6, 8])
    rate = rng.choice(CONFIG_RATES)
    fb = _sb(fmt) * ch
    period = 1 if period1 else rng.choice([16, 64, 256, 512, 1024, 1024, 2048, 4096])
    periods = rng.choice([2, 3, 4, 8, 16, 64])
    while period * periods * fb > BUFFER_MAX and periods > 2:
        periods //= 2
    while period * periods * fb > BUFFER_MAX and period > 1:
        period //= 2
    o: dict[str, Any] = {"op": "open", "format": fmt, "channels": ch, "rate": rate,
                         "buffer_sz": period * periods * fb, "period_sz": period * fb, "dir": "ok"}
    if not valid:
        what = rng.choice(["format", "channels", "rate", "buffer", "period", "dir", "dir",
                           "dir", "big"])
        if what == "format":
            o["format"] = rng.choice([0, 3, 16, 18, 20, 22, 23, 24, 25, 200, 255])
        elif what == "channels":
            o["channels"] = rng.choice([0, 9, 255])
        elif what == "rate":
            o["rate"] = rng.choice([0, 1, 11025, 12345, 192000, 2**32 - 1])
        elif what == "buffer":
            o["buffer_sz"] = rng.choice([0, 1, o["buffer_sz"] + 1, BUFFER_MAX + fb, 2**31,
                                         2**32 - 1, fb])
        elif what == "period":
            o["period_sz"] = rng.choice([0, 1 if fb > 1 else 0, o["buffer_sz"] + fb,
                                         o["period_sz"] + 1, 2**32 - 1])
        elif what == "big":
            o["buffer_sz"] = BUFFER_MAX - BUFFER_MAX % fb
            o["period_sz"] = rng.choice([fb, o["buffer_sz"], o["buffer_sz"] // 2 // fb * fb])
        else:
            o["dir"] = rng.choice(["zero", "unknown", "bufref", "garbage", "loop", "short",
                                   "dup", "foreign_dir", "foreign_buf", "ro_buffer", "revoked"])
    if rng.random() < 0.05:
        o["id"] = rng.choice([0, 0xFFFF, 100])
    if valid or o["dir"] == "dup":
        m.fb, m.buffer_sz, m.period_sz, m.pos = fb, o["buffer_sz"], o["period_sz"], 0
        m.open, m.running = True, False
    return o


def _rw_op(rng: random.Random, m: _Model) -> dict[str, Any]:
    code = 2 if m.capture else 3
    if rng.random() < 0.08:
        code = rng.choice([2, 3, 4, 5, 6, 7])
    r = rng.random()
    if r < 0.65 and m.open:
        length = min(m.period_sz * rng.choice([1, 1, 2, 4]), m.buffer_sz - m.pos % m.buffer_sz)
        off = m.pos % m.buffer_sz
        m.pos += length
    elif r < 0.8 and m.open:
        off = rng.randrange(0, max(1, m.buffer_sz), max(1, m.fb))
        length = rng.randrange(m.fb, max(m.fb + 1, m.buffer_sz - off + 1), max(1, m.fb))
    else:
        off = rng.choice([0, 1, 2, 3, m.buffer_sz, m.buffer_sz - 1, 2**31, 2**32 - 1,
                          rng.getrandbits(32)])
        length = rng.choice([0, 1, m.fb, m.buffer_sz, m.buffer_sz + m.fb, 2**32 - 1,
                             2**32 - off % 2**32, rng.getrandbits(32)])
    return {"op": "rw", "code": code, "offset": off, "length": length,
            "fill": rng.random() < 0.8}


def _query_op(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.4:
        p = [sum(1 << f for f in CONFIG_FORMATS.values()), 1, 2**32 - 1, 1, 255, 1, 2**31,
             1, 2**31]
    else:
        def r32() -> int:
            return rng.choice([0, 1, 2, 64, 1024, 8000, 48000, 2**31, 2**32 - 1,
                               rng.getrandbits(32)])
        p = [rng.choice([0, 1 << 2, 2**64 - 1, rng.getrandbits(64)])] + [r32() for _ in range(8)]
    return {"op": "query", "params": p}


def _raw_op(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.5:
        return {"op": "raw"}  # random bytes, from the executor's rng
    slot = bytearray(64)
    slot[2] = rng.choice([0, 1, 2, 3, 8, 9])
    for _ in range(rng.randint(1, 6)):
        slot[rng.randrange(64)] = rng.getrandbits(8)
    return {"op": "raw", "hex": bytes(slot).hex()}


def _gen_ops(rng: random.Random, n: int, models: list[_Model]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for _ in range(n):
        s = rng.choice([0, 0, 1])
        m = models[s]
        r = rng.random()
        if not m.open and r < 0.5:
            o = _open_op(rng, m, valid=rng.random() < 0.7)
        elif r < 0.45:
            o = _rw_op(rng, m)
        elif r < 0.6:
            t = rng.choice([0, 0, 0, 1, 2, 2, 3, rng.randint(4, 255)])
            if t == 0:
                m.running = True
            o = {"op": "trigger", "type": t}
        elif r < 0.65:
            o = _open_op(rng, m, valid=rng.random() < 0.5)
        elif r < 0.7:
            o = {"op": "close"}
            m.open = m.running = False
        elif r < 0.75:
            o = _query_op(rng)
        elif r < 0.79:
            o = {"op": "unknown", "code": rng.choice([10, 11, 99, 128, 255, rng.randint(10, 255)])}
        elif r < 0.84:
            o = _raw_op(rng)
        elif r < 0.89:
            subs = []
            for _ in range(rng.randint(2, 12)):
                subs.append(rng.choice([_rw_op(rng, m), _query_op(rng), _raw_op(rng),
                                        {"op": "trigger", "type": rng.randint(0, 4)}]))
            o = {"op": "batch", "reqs": subs}
        elif r < 0.91:
            o = {"op": "jump", "mode": "stale", "k": rng.randint(1, 8)}
        elif r < 0.92:
            o = {"op": "jump", "mode": "far", "delta": rng.choice([33, 64, 1000, 2**31, -1, -7])}
        elif r < 0.94:
            o = {"op": "flood", "port": rng.choice(["req", "evt"]), "count": rng.randint(20, 600)}
        elif r < 0.97:
            o = {"op": "sleep", "t": round(rng.uniform(0.01, 0.25), 3)}
        elif r < 0.98:
            o = {"op": "evt_cons", "value": rng.getrandbits(32)}
        else:
            o = {"op": "ring_event", "field": rng.choice(["req_event", "rsp_event"]),
                 "value": rng.getrandbits(32)}
        o["s"] = s
        ops.append(o)
    return ops


def _play_ops(rng: random.Random, m: _Model, s: int, seconds: float) -> list[dict[str, Any]]:
    """Keep a running stream fed (playback) or read (capture) for ``seconds``."""
    ops: list[dict[str, Any]] = [{"op": "trigger", "type": 0, "s": s}]
    step = 0.05
    for _ in range(int(seconds / step)):
        if m.capture:
            ops.append({"op": "sleep", "t": step, "s": s})
        else:
            ln = min(m.buffer_sz // 2, max(m.fb, int(step * 48000) * m.fb))
            ln -= ln % m.fb
            off = m.pos % m.buffer_sz
            ln = min(ln, m.buffer_sz - off)
            m.pos += ln
            ops.append({"op": "rw", "code": 3, "offset": off, "length": ln, "fill": True, "s": s})
            ops.append({"op": "sleep", "t": step, "s": s})
    return ops


def guest_case(seed: int, index: int) -> dict[str, Any]:
    rng = random.Random(f"guest/{seed}/{index}")
    kind = rng.choices(["xs", "req", "stress", "kill", "revoke"], [24, 46, 10, 10, 10])[0]
    spec: dict[str, Any] = {"dir": "guest", "seed": seed, "index": index, "kind": kind,
                            "rng": rng.getrandbits(32), "handshake": {}, "ops": [],
                            "end": "close"}
    models = [_Model(False), _Model(True)]
    hs = spec["handshake"]
    if kind == "xs":
        what = rng.choice(["keys", "keys", "keys", "states", "states", "version", "config",
                           "ring_garbage", "mixed"])
        if what in ("keys", "mixed"):
            keys = {}
            for _ in range(rng.randint(1, 3)):
                k = f"{rng.choice(STREAMS)}/{rng.choice(RING_KEYS)}"
                keys[k] = rng.choice(GARBAGE_NUMBERS + SYMBOLIC + [None])
            hs["keys"] = keys
        if what in ("states", "mixed"):
            r = rng.random()
            if r < 0.4:
                hs["states"] = [[rng.choice(STATE_GARBAGE), 0.0]]
            elif r < 0.6:
                hs["states"] = [[None, 0.0]]
            else:
                seq = rng.choice([["3", "1"], ["3", "1", "3"], ["3", "4", "5", "6", "1", "3"],
                                  ["3", "5"], ["3", "6", "1"], ["4"], ["5"], ["6"], ["3", "abc"],
                                  ["3", "2", "3"], ["3", "8", "7"]])
                reps = rng.choice([1, 1, 2, 5])
                hs["states"] = [[v, rng.choice([0.0, 0.0, 0.002, 0.02, 0.1])]
                                for v in seq * reps]
        if what == "version":
            hs["version"] = rng.choice(["1", "abc", "", "2,3", "²", "99999999999", None])
        if what == "config":
            hs["config"] = {k: rng.choice(CONFIG_MUTATIONS[k])
                            for k in rng.sample(sorted(CONFIG_MUTATIONS), rng.randint(1, 2))}
        if what == "ring_garbage":
            hs["ring_garbage"] = True
        # if the backend connects anyway, it must serve what it accepted
        spec["ops"] = [_open_op(rng, models[0], True), {"op": "trigger", "type": 0},
                       {"op": "sleep", "t": 0.05}, {"op": "close"}]
        for o in spec["ops"]:
            o["s"] = 0
    elif kind == "req":
        spec["ops"] = _gen_ops(rng, rng.randint(3, 25), models)
        spec["end"] = rng.choice(["close", "close", "close", "abandon"])
    elif kind == "stress":
        sub = rng.choice(["period1", "period1", "churn", "bigbuf", "flood", "queue"])
        spec["sub"] = sub
        s = rng.choice([0, 1])
        m = models[s]
        if sub == "period1":
            o = _open_op(rng, m, True, period1=True)
            o.update(format=2, channels=2, rate=48000, buffer_sz=4096 * 4, period_sz=4)
            m.fb, m.buffer_sz, m.period_sz, m.pos = 4, 4096 * 4, 4, 0
            ops = [o, *_play_ops(rng, m, s, 1.0), {"op": "trigger", "type": 2},
                   {"op": "close"}]
        elif sub == "churn":
            ops = []
            for _ in range(rng.randint(10, 40)):
                ops += [_open_op(rng, m, True), {"op": "close"}]
        elif sub == "bigbuf":
            o = _open_op(rng, m, True)
            o.update(format=2, channels=2, rate=48000, buffer_sz=BUFFER_MAX,
                     period_sz=rng.choice([4096, 65536]))
            m.fb, m.buffer_sz, m.period_sz, m.pos = 4, BUFFER_MAX, o["period_sz"], 0
            ops = [o]
            if not m.capture:
                ops += [{"op": "rw", "code": 3, "offset": 0, "length": BUFFER_MAX, "fill": True},
                        {"op": "rw", "code": 3, "offset": 0, "length": BUFFER_MAX, "fill": True}]
            ops += [{"op": "trigger", "type": 0}, {"op": "sleep", "t": 0.4},
                    {"op": "trigger", "type": 2}, {"op": "close"}]
        elif sub == "flood":
            ops = [_open_op(rng, m, True), {"op": "trigger", "type": 0},
                   {"op": "flood", "port": rng.choice(["req", "evt"]),
                    "count": rng.randint(500, 3000)},
                   {"op": "sleep", "t": 0.1}, {"op": "close"}]
        else:
            o = _open_op(rng, m, True)
            ops = [o, {"op": "batch", "reqs": [_rw_op(rng, m) for _ in range(31)]},
                   {"op": "trigger", "type": 0}, {"op": "sleep", "t": 0.1}, {"op": "close"}]
        for op in ops:
            op["s"] = s
        spec["ops"] = ops
    elif kind == "kill":
        s = rng.choice([0, 1])
        m = models[s]
        ops = [_open_op(rng, m, True), *_play_ops(rng, m, s, rng.uniform(0.05, 0.4))]
        cut = rng.randint(1, len(ops))
        ops = ops[:cut] + [{"op": "kill"}]
        for op in ops:
            op["s"] = s
        spec["ops"] = ops
        spec["end"] = "abandon"
    else:  # revoke
        s = rng.choice([0, 1])
        m = models[s]
        ops = [_open_op(rng, m, True), *_play_ops(rng, m, s, 0.15)]
        for _ in range(rng.randint(1, 3)):
            r = rng.random()
            if r < 0.45:
                ops.append({"op": "unshare", "what": rng.choice(["buffer", "dir", "ring", "evt"])})
            elif r < 0.6:
                ops.append({"op": "unbind", "port": rng.choice(["req", "evt"])})
            elif r < 0.7:
                ops.append({"op": "close_evtchn"})
            else:
                ops.append({"op": "state", "value": rng.choice(["1", "5", "6", "0", "3",
                                                                 *STATE_GARBAGE[:6], None]),
                            "wait": rng.choice([0.0, 0.05, 0.3])})
        ops += _play_ops(rng, m, s, 0.1) + [{"op": "close"}]
        for op in ops:
            op["s"] = s
        spec["ops"] = ops
        spec["end"] = rng.choice(["close", "abandon"])
    return spec


# -- backend direction ---------------------------------------------------------

DRIVERS = ["api-play", "api-cap", "harness-play", "harness-cap", "aplay", "arecord"]
DRIVER_WEIGHTS = [30, 20, 14, 11, 13, 12]


def _geometry(rng: random.Random) -> dict[str, Any]:
    fmt = rng.choice(list(CONFIG_FORMATS))
    ch = rng.choice([1, 1, 2, 2, 2, 4, 6, 8])
    rate = rng.choice(CONFIG_RATES)
    period = rng.choice([64, 256, 512, 1024, 1024, 2048])
    periods = rng.choice([2, 3, 4, 8])
    fb = _sb(CONFIG_FORMATS[fmt]) * ch
    while period * periods * fb > BUFFER_MAX:
        periods = max(2, periods // 2)
        period //= 2
    return {"format": fmt, "channels": ch, "rate": rate, "buffer": period * periods,
            "period": period}


def _resp_rule(rng: random.Random) -> dict[str, Any]:
    do = rng.choice(["id", "op", "status", "status", "hw", "drop", "dup", "late", "extra",
                     "jump", "garbage"])
    rule: dict[str, Any] = {"op": rng.choice([None, None, *OPS]),
                            "nth": rng.choice([0, 0, 1, 2, 5]),
                            "every": rng.random() < 0.3, "do": do}
    if do == "id":
        rule["value"] = rng.choice([1, 0x8000, 0xFFFF, rng.getrandbits(16)])
    elif do == "op":
        rule["value"] = rng.choice([0, 1, 2, 3, 8, 9, 10, 255])
    elif do == "status":
        rule["value"] = rng.choice(STATUSES)
    elif do == "hw":
        rule["op"] = "HW_PARAM_QUERY"
        rule["value"] = rng.choice(["ok", "keep"])
    elif do == "late":
        rule["value"] = round(rng.uniform(0.2, 2.5), 2)
    elif do == "extra":
        rule["value"] = rng.randint(1, 3)
    elif do == "jump":
        rule["value"] = rng.choice([2, 31, 33, 1000, 2**31, 2**32 - 1])
    return rule


def _pos_rule(rng: random.Random) -> dict[str, Any]:
    mode = rng.choice(["huge", "huge", "back", "zero", "beyond", "beyond", "random", "badid",
                       "dup", "badtype", "skip", "jump", "storm"])
    rule: dict[str, Any] = {"mode": mode, "from": rng.choice([0, 0, 1, 3, 10]),
                            "every": rng.random() < 0.6}
    if mode == "huge":
        rule["value"] = rng.choice([2**63, 2**64 - 1, 2**62, 2**48, 2**32, 2**31, 2**63 + 4])
    elif mode in ("back", "beyond"):
        rule["value"] = rng.choice([1, 2, 4, 1000])
    elif mode == "badtype":
        rule["value"] = rng.choice([1, 2, 128, 255])
    elif mode == "jump":
        rule["value"] = rng.choice([64, 100, 1000, 2**31, 2**32 - 1])
    elif mode == "storm":
        rule["value"] = rng.choice([10, 63, 200])
    return rule


def _xs_rule(rng: random.Random) -> dict[str, Any]:
    target = rng.choice(["be:state", "be:state", "be:state", "be:versions", "fe:state",
                         "fe:state", "fe:ring", "fe:backend-id"])
    at = rng.choice(["start", "initialised", "connected", "connected", "open", "running",
                     "exit"])
    a: dict[str, Any] = {"at": at, "delay": rng.choice([0.0, 0.0, 0.01, 0.1, 0.3])}
    if target == "be:state":
        a["path"] = "be:state"
        r = rng.random()
        if r < 0.4:
            a["value"] = rng.choice(STATE_GARBAGE + [None, "1", "5", "6", "7", "0"])
        else:
            a["values"] = rng.choice([["2", "4"], ["4", "2"], ["5", "6", "2"], ["4", "abc"],
                                      ["6", "4"], ["1", "2"], [None, "4"]])
            a["repeat"] = rng.choice([1, 3, 10])
            a["interval"] = rng.choice([0.0, 0.005, 0.05])
    elif target == "be:versions":
        a["path"] = "be:versions"
        a["value"] = rng.choice(["1", "", "x", "3,4", "1,2,3", "²", " 2", "2 ", None,
                                 "2" * 100, "1,,2"])
    elif target == "fe:state":
        a["path"] = "fe:state"
        a["value"] = rng.choice(STATE_GARBAGE + [None, "5", "6", "0", "8"])
    elif target == "fe:ring":
        a["path"] = f"fe:{rng.choice(STREAMS)}/{rng.choice(RING_KEYS)}"
        a["value"] = rng.choice(GARBAGE_NUMBERS + [None])
    else:
        a["path"] = "fe:backend-id"
        a["value"] = rng.choice(["abc", "7", "", "²", None])
    return a


def backend_case(seed: int, index: int, plugin_share: float | None = None) -> dict[str, Any]:
    rng = random.Random(f"backend/{seed}/{index}")
    weights = list(DRIVER_WEIGHTS)
    if plugin_share is not None:
        api = sum(weights[:4])
        plug = sum(weights[4:])
        scale_api = (1 - plugin_share) / api
        scale_plug = plugin_share / plug if plug else 0
        weights = [w * scale_api for w in weights[:4]] + [w * scale_plug for w in weights[4:]]
    driver = rng.choices(DRIVERS, weights)[0]
    geo = _geometry(rng)
    frames = int(geo["rate"] * rng.choice([0.03, 0.05, 0.1, 0.2, 0.3]))
    frames = max(frames, geo["period"])
    plan: dict[str, Any] = {"rng": rng.getrandbits(32)}
    n = rng.choices([1, 2, 3], [60, 30, 10])[0]
    for _ in range(n):
        cat = rng.choices(["resp", "pos", "storm", "xs", "death"], [34, 34, 8, 16, 8])[0]
        if cat == "resp":
            plan.setdefault("resp", []).append(_resp_rule(rng))
        elif cat == "pos":
            plan["pos"] = _pos_rule(rng)
        elif cat == "storm":
            plan["storm"] = {"at": rng.choice(["connected", "open", "running"]),
                             "delay": rng.choice([0.0, 0.02, 0.1]),
                             "port": rng.choice(["evt", "req"]),
                             "count": rng.choice([50, 500, 2000]), "fill": rng.random() < 0.5}
        elif cat == "xs":
            if rng.random() < 0.15:
                plan["versions"] = rng.choice(["1", "", "x", "3,4", "²", "2,"])
            else:
                plan.setdefault("xs", []).append(_xs_rule(rng))
        else:
            plan["death"] = {"at": rng.choice(["start", "initialised", "connected", "open",
                                               "running", "running"]),
                             "delay": rng.choice([0.0, 0.01, 0.05, 0.2]),
                             "how": rng.choice(["kill", "kill", "exit", "freeze"])}
    kill = rng.choice(["term", "kill"])
    if any(a.get("at") == "exit" for a in plan.get("xs", [])):
        kill = "term"  # the exit actions run in its SIGTERM handler
        for a in plan["xs"]:
            if a.get("at") == "exit":
                a["delay"] = 0.0
                a.pop("repeat", None)
    return {"dir": "backend", "seed": seed, "index": index, "driver": driver, "geometry": geo,
            "frames": frames, "timeout": 1.0, "rng": rng.getrandbits(32),
            "query": rng.random() < 0.3, "pause": rng.random() < 0.1, "plan": plan,
            "kill_backend": kill}
