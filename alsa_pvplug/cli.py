"""``pvplug``: the command line.

    pvplug sim --dir DIR              the simulated hypervisor (dom0 + dom1, one vsnd card)
    pvplug backend --sim-dir DIR ...  the reference backend (dom0 side)
    pvplug demo                       sim + backend + a Python frontend, with a summary
    pvplug install [--user] ...       build the ALSA plugin, write the pcm.pvplug snippet
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .backend.limits import UNBOUNDED_RATE, StreamLimits
from .errors import ConfigError, PvSndError


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)


def _read_vsnd_config(path: str) -> list[list[str]]:
    """An xl-style ``vsnd = [[...], ...]`` (or just the list) from a file."""
    text = Path(path).read_text()
    _, eq, rhs = text.partition("=")
    try:
        value = ast.literal_eval(rhs if eq and text.lstrip().startswith("vsnd") else text)
    except (SyntaxError, ValueError) as exc:
        raise ConfigError(f"{path}: not an xl vsnd list: {exc}", key="vsnd") from None
    if not isinstance(value, list) or not all(isinstance(c, list) for c in value):
        raise ConfigError(f"{path}: vsnd must be a list of cards (lists of strings)", key="vsnd")
    return value


def cmd_sim(args: argparse.Namespace) -> int:
    from .sim.runner import run_sim

    vsnd = _read_vsnd_config(args.vsnd_config) if args.vsnd_config else None
    run_sim(args.dir, backend_domid=args.backend_domid, guest_domids=args.guest, vsnd=vsnd)
    return 0


def cmd_backend(args: argparse.Namespace) -> int:
    from .backend.io import parse_sink, parse_source
    from .backend.server import Backend, BackendOptions, pin_malloc_threshold
    from .transport import open_transport

    pin_malloc_threshold()
    transport = open_transport(args.transport, sim_dir=args.sim_dir, domid=args.domid,
                               role="backend")
    # Unpaced, audio moves faster than real time and so do requests and
    # reports: rates are not bounded unless asked for.
    rates = StreamLimits() if not args.unpaced else StreamLimits(
        max_request_rate=UNBOUNDED_RATE, max_event_rate=UNBOUNDED_RATE)
    limits = StreamLimits(
        min_period_us=args.min_period_us,
        max_request_rate=args.max_request_rate or rates.max_request_rate,
        max_event_rate=args.max_event_rate or rates.max_event_rate)
    backend = Backend(transport, parse_sink(args.sink), parse_source(args.source),
                      BackendOptions(paced=not args.unpaced, pos_frames=args.pos_frames,
                                     limits=limits, compat=args.compat,
                                     clock_ppm=args.clock_ppm))
    signal.signal(signal.SIGTERM, lambda *_: backend.stop())
    signal.signal(signal.SIGINT, lambda *_: backend.stop())
    try:
        backend.run()
    finally:
        backend.close()
        transport.close()
    return 0


def _client(argv: list[str], env: dict[str, str]) -> None:
    """Run an ALSA client to its end: bounded in time and output."""
    from .sim.procs import run_capped

    rc, out, _ = run_capped(argv, 30, env=env)
    if rc != 0:
        raise RuntimeError(f"{argv[0]} exited {rc}:\n{out}")


def _demo_alsa(work: Path, sim_dir: Path, out_dir: Path, data: bytes, rate: int,
               channels: int) -> bool:
    """The same sound through the ALSA plugin: aplay and arecord -D pvplug."""
    import shutil

    from .backend.wavfile import WavInfo, WavWriter, read_wav
    from .glue.build import build_plugin
    from .glue.install import render_conf
    from .protocol.sndif import PcmFormat

    if shutil.which("aplay") is None:
        print("ALSA plugin:        skipped (no aplay; apt-get install alsa-utils)")
        return True
    t0 = time.monotonic()
    lib = build_plugin(work / "plugin")
    conf = work / "pvplug.conf"
    conf.write_text(render_conf(lib, {"transport": "sim", "sim_dir": str(sim_dir), "domid": 1}))
    env = {"ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}
    src = work / "tone.wav"
    w = WavWriter(str(src), WavInfo(PcmFormat.S16_LE, channels, rate))
    w.write(data)
    w.close()
    t_build = time.monotonic() - t0
    before = set(out_dir.glob("*.wav"))
    t1 = time.monotonic()
    _client(["aplay", "-q", "-D", "pvplug", str(src)], env)
    t_play = time.monotonic() - t1
    (new,) = set(out_dir.glob("*.wav")) - before
    got = read_wav(str(new))[1]
    exact = got[:len(data)] == data and not any(got[len(data):])
    rec = work / "capture.wav"
    _client(["arecord", "-q", "-D", "pvplug", "-f", "S16_LE", "-c", str(channels),
             "-r", str(rate), "-d", "1", str(rec)], env)
    print(f"ALSA plugin:        built in {t_build:.1f} s; `aplay -D pvplug` took {t_play:.2f} s, "
          f"bit-exact: {exact}; `arecord -D pvplug` wrote {rec.stat().st_size} bytes")
    return exact


def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from .backend.wavfile import read_wav
    from .frontend import Card
    from .protocol.sndif import PcmFormat
    from .sim.procs import SimProcesses, cli
    from .transport import open_transport

    work = Path(args.dir or tempfile.mkdtemp(prefix="pvplug-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    out_dir = work / "out"
    rate, channels, seconds = 48000, 2, args.seconds
    t0 = time.monotonic()
    try:
        procs = SimProcesses(work, command=cli(log_level=args.log_level))
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo failed: {exc}\n(logs in {work})", file=sys.stderr)
        return 1
    sim_dir = procs.dir
    try:
        backend = procs.backend("--sink", f"wav:{out_dir}", "--source", "sine:1000")
        transport = open_transport("sim", sim_dir=sim_dir, domid=1)
        card = Card.open(transport)
        t_conn = time.monotonic() - t0
        t = np.arange(int(rate * seconds)) / rate
        tone = (0.4 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
        signal_ = np.repeat(tone[:, None], channels, axis=1)
        out = card.stream(0, 0)
        out.open(PcmFormat.S16_LE, channels, rate, buffer_frames=4096, period_frames=1024)
        t1 = time.monotonic()
        out.write(signal_)
        out.drain()
        t_play = time.monotonic() - t1
        events = out.cur_pos_events
        out.close()
        cap = card.stream(0, 1)
        cap.open(PcmFormat.S16_LE, channels, rate, buffer_frames=4096, period_frames=1024)
        got = np.frombuffer(cap.read(rate // 2), "<i2").reshape(-1, channels)
        cap.close()
        card.close()
        transport.close()
        wavs = sorted(out_dir.glob("*.wav"))
        info, data = read_wav(str(wavs[-1]))
        exact = data == signal_.tobytes()
        alsa_ok = _demo_alsa(work, sim_dir, out_dir, signal_.tobytes(), rate, channels)
        backend.stop()
        spectrum = np.abs(np.fft.rfft(got[:, 0].astype(float)))
        peak = np.fft.rfftfreq(len(got), 1 / rate)[int(np.argmax(spectrum))]
        print(f"demo directory:     {work} (sim.log, backend.log: their output)")
        print(f"connect:            {t_conn * 1000:.0f} ms (sim start, backend start, handshake)")
        print(f"played:             {len(signal_)} frames {info.format.name} {info.channels}ch "
              f"{info.rate} Hz in {t_play:.2f} s, {events} CUR_POS events")
        print(f"backend WAV:        {wavs[-1]} ({len(data)} bytes), bit-exact: {exact}")
        print(f"captured:           {len(got)} frames, dominant frequency {peak:.0f} Hz "
              f"(backend source: sine 1000 Hz)")
        return 0 if exact and alsa_ok and abs(peak - 1000) < 5 else 1
    except (PvSndError, RuntimeError) as exc:
        print(f"demo failed: {exc}\n(logs in {work})", file=sys.stderr)
        return 1
    finally:
        procs.close()


def _positive(kind: type) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pvplug", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log-level", default=os.environ.get("PVPLUG_LOG_LEVEL", "warning"))
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("sim", help="run the simulated hypervisor")
    s.add_argument("--dir", required=True, help="directory for the per-domain sockets")
    s.add_argument("--backend-domid", type=int, default=0)
    s.add_argument("--guest", type=int, action="append", help="guest domid (repeatable; default 1)")
    s.add_argument("--vsnd-config", help="file with an xl-style vsnd = [[...]] list")
    s.set_defaults(func=cmd_sim)

    b = sub.add_parser("backend", help="run the reference backend")
    b.add_argument("--transport", choices=("sim", "xen"), default="sim")
    b.add_argument("--sim-dir", help="the simulator's directory (transport sim)")
    b.add_argument("--domid", type=int, default=0, help="our domain (default 0)")
    b.add_argument("--sink", default="null", help="null | wav:DIR | alsa:DEVICE | loop")
    b.add_argument("--source", default="sine:440",
                   help="null | wav:FILE | sine:FREQ | alsa:DEVICE | loop")
    b.add_argument("--unpaced", action="store_true", help="do not pace to the clock")
    b.add_argument("--pos-frames", type=int, help="send CUR_POS at least every N frames")
    b.add_argument("--clock-ppm", type=float, default=0.0, metavar="N",
                   help="pace N ppm off our clock (+: faster), as a sound card's crystal "
                   "runs: for testing drift (paced sinks and sources)")
    b.add_argument("--compat", choices=("sndbe",),
                   help="behave as xen-troops snd_be does (READ fills the buffer, positions "
                   "from OPEN, millisecond report timer, wide HW_PARAM_QUERY, OPEN refusals)")
    defaults = StreamLimits()
    b.add_argument("--min-period-us", type=_positive(int), default=defaults.min_period_us,
                   metavar="US", help="per stream: refuse OPEN with a shorter period "
                   f"(default {defaults.min_period_us})")
    b.add_argument("--max-request-rate", type=_positive(float), metavar="N",
                   help="per stream: requests a second before answering -EBUSY "
                   f"(default {defaults.max_request_rate:g}; --unpaced: no bound)")
    b.add_argument("--max-event-rate", type=_positive(float), metavar="N",
                   help=f"per stream: CUR_POS events a second at most "
                   f"(default {defaults.max_event_rate:g}; --unpaced: no bound)")
    b.set_defaults(func=cmd_backend)

    d = sub.add_parser("demo", help="play and capture through sim + backend")
    d.add_argument("--dir", help="work directory (default: a new temporary one)")
    d.add_argument("--seconds", type=float, default=2.0)
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("install", help="build and install the ALSA plugin and its config")
    from .glue import install

    install.add_arguments(i)
    i.set_defaults(func=install.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "guest", None) is None and args.cmd == "sim":
        args.guest = [1]
    _setup_logging(args.log_level)
    try:
        return int(args.func(args))
    except PvSndError as exc:
        print(f"pvplug {args.cmd}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
