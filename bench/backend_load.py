"""What guests cost the backend: CPU per stream-second, with honest and hostile guests.

    .venv/bin/python bench/backend_load.py [--guests N] [--hostile-period FRAMES]
                                           [--seconds S] [--period P] [--repo DIR] [--json F]

Starts the simulator with guests 1..N (plus one more when ``--hostile-period``
is given), one ``pvplug backend --sink wav:DIR``, and in each honest guest an
``aplay -D pvplug`` of S seconds of 48 kHz S16_LE stereo noise (``--period``
frames, four periods of buffer).  The hostile guest opens its stream through
the Python API with a period of FRAMES frames (falling back to the shortest
the backend allows) and writes as fast as it may.  It prints the backend's
CPU (utime+stime over the wall time of the run, % of one core), CPU per
stream-second, the CUR_POS reports the hostile guest received, and for each
honest guest whether it kept real time (aplay's run time), its underruns and
whether the backend's WAV is bit-exact.  ``--repo DIR`` measures another
checkout with the same command (before/after).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import REPO, System, cpu_seconds, repo_arg, rss_kib, wait_until

HOSTILE = r"""
import sys, time
from alsa_pvplug.errors import PvSndError
from alsa_pvplug.frontend import Card
from alsa_pvplug.protocol.sndif import HwParams, PcmFormat, format_mask
from alsa_pvplug.transport import open_transport
sim_dir, domid = sys.argv[1], int(sys.argv[2])
period, seconds = int(sys.argv[3]), float(sys.argv[4])
t = open_transport("sim", sim_dir=sim_dir, domid=domid)
c = Card.open(t, timeout=5)
st = c.stream(0, 0)
try:
    st.open(PcmFormat.S16_LE, 2, 48000, 4096, period)
except PvSndError as exc:
    q = st.query_hw_params(HwParams(format_mask([PcmFormat.S16_LE]), (48000, 48000), (2, 2),
                                    (1, 4096), (1, 4096)))
    print(f"refused period {period}: {exc}; the backend allows {q.period[0]}", flush=True)
    period = q.period[0]
    st.open(PcmFormat.S16_LE, 2, 48000, 4096, period)
print(f"period {period}", flush=True)
chunk = bytes(4 * max(period, 16))
end = time.monotonic() + seconds
errors = 0
while time.monotonic() < end:
    try:
        st.write(chunk)
    except PvSndError as exc:  # -EBUSY over the request rate: a hostile guest goes on
        errors += 1
print(f"reports {st.cur_pos_events} CUR_POS received, {errors} failed writes", flush=True)
c.close()
"""


def noise(frames: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(-2**15, 2**15, (frames, 2), dtype="<i2").tobytes()


def write_wav(path: Path, data: bytes, rate: int = 48000) -> None:
    import struct
    hdr = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 2, rate, rate * 4, 4, 16) + b"data" + struct.pack("<I", len(data))
    path.write_bytes(hdr + data)


def wav_data(path: Path) -> bytes:
    raw = path.read_bytes()
    i = raw.index(b"data")
    return raw[i + 8:]


def run(args: argparse.Namespace) -> dict[str, Any]:
    honest = list(range(1, args.guests + 1))
    hostile = args.guests + 1 if args.hostile_period else None
    guests = honest + ([hostile] if hostile else [])
    frames = int(args.seconds * 48000)
    with System(args.repo, guests=guests, backend_args=None) as sysm:
        out = sysm.work / "out"
        be = sysm.start_backend(["--sink", f"wav:{out}", *args.backend_arg])
        envs = {g: sysm.alsa_env(g) for g in honest}
        wavs = {}
        for g in honest:
            wavs[g] = noise(frames, g)
            write_wav(sysm.work / f"in{g}.wav", wavs[g])
        wait_until(lambda: be.alive and (sysm.work / "backend.log").exists(), 5, "backend")
        time.sleep(1.0)  # the backend's interpreter start is not the guests' cost
        c0, t0 = cpu_seconds(be.pid), time.monotonic()
        rss0 = rss_kib(be.pid)
        players, started = {}, {}
        for g in honest:
            if players and args.stagger:
                time.sleep(args.stagger)
            players[g] = sysm.start(["aplay", "-q", "-D", "pvplug", f"--period-size={args.period}",
                                     f"--buffer-size={4 * args.period}",
                                     str(sysm.work / f"in{g}.wav")], f"aplay{g}", env=envs[g])
            started[g] = time.monotonic()
        hostile_p = None
        if hostile:
            hostile_p = sysm.start([sysm.python, "-c", HOSTILE, str(sysm.sim_dir), str(hostile),
                                    str(args.hostile_period), str(args.seconds)], "hostile")
        ended: dict[int, float] = {}
        deadline = time.monotonic() + args.seconds * 3 + 30
        while len(ended) < len(honest) or (hostile_p is not None and hostile_p.alive):
            if time.monotonic() > deadline:
                raise RuntimeError("clients did not finish in time")
            for g, p in players.items():
                if g not in ended and not p.alive:
                    ended[g] = time.monotonic()
            time.sleep(0.02)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(be.pid) - c0
        rss1 = rss_kib(be.pid)
        be.stop()
        result: dict[str, Any] = {
            "repo": str(args.repo), "seconds": args.seconds, "period": args.period,
            "guests": args.guests, "hostile_period": args.hostile_period,
            "backend_cpu_pct": 100 * cpu / wall, "wall_s": wall,
            "backend_rss_kib": [rss0, rss1], "players": {}}
        streams = len(honest) + (1 if hostile else 0)
        result["cpu_per_stream_second_ms"] = 1000 * cpu / (streams * args.seconds)
        for g, p in players.items():
            log = p.output()
            files = sorted(out.glob(f"dom{g}-*.wav"))
            got = wav_data(files[-1]) if files else b""
            # aplay pads its last period with silence
            exact = got[:len(wavs[g])] == wavs[g] and not any(got[len(wavs[g]):])
            result["players"][g] = {
                "rc": p.proc.returncode, "run_s": ended[g] - started[g],
                "underruns": log.count("underrun"), "bit_exact": exact,
                "log": log[-300:] if p.proc.returncode else ""}
        if hostile_p is not None:
            log = hostile_p.output()
            result["hostile"] = {line.split()[0]: line for line in log.splitlines()
                                 if line.split()[:1] in (["period"], ["reports"], ["refused"])}
        return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--guests", type=int, default=1, help="honest guests, one aplay each")
    p.add_argument("--hostile-period", type=int, default=0, metavar="FRAMES",
                   help="add a guest that opens with this period and writes flat out")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--stagger", type=float, default=0.0, metavar="S",
                   help="start the guests' players S seconds apart (0: all at once; each "
                        "start is an interpreter's start and a handshake in the guest)")
    p.add_argument("--period", type=int, default=1024, help="the honest guests' period")
    p.add_argument("--backend-arg", action="append", default=[],
                   help="extra pvplug backend argument (repeatable)")
    p.add_argument("--repo", type=repo_arg, default=REPO, help="the checkout to measure")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    r = run(args)
    print(f"backend load ({r['repo']}): {args.guests} honest guest(s), aplay {args.seconds:g} s "
          f"48 kHz S16 stereo, period {args.period}"
          + (f", hostile guest with period {args.hostile_period}" if args.hostile_period else ""))
    print(f"  backend CPU {r['backend_cpu_pct']:.1f} % of a core over {r['wall_s']:.1f} s; "
          f"{r['cpu_per_stream_second_ms']:.2f} ms per stream-second; RSS "
          f"{r['backend_rss_kib'][0] / 1024:.1f} -> {r['backend_rss_kib'][1] / 1024:.1f} MiB")
    for g, pl in r["players"].items():
        print(f"  guest {g}: aplay rc {pl['rc']}, {pl['run_s']:.2f} s for {args.seconds:g} s, "
              f"underruns {pl['underruns']}, bit-exact {pl['bit_exact']} {pl['log']}")
    for line in r.get("hostile", {}).values():
        print(f"  hostile guest: {line}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
