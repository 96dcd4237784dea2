"""PipeWire through the real plugin: the daemon a current desktop guest runs.

A private, headless ``pipewire`` (started here, as whoever runs the tests,
with its own HOME, XDG_RUNTIME_DIR and socket; no D-Bus, no session manager)
has an ``api.alsa.pcm.sink`` and an ``api.alsa.pcm.source`` node on
``pcm.pvplug`` (one card, shared by both nodes in one process).  What a
session manager would do is done here by hand: ``pw-cli set-param`` gives a
client stream its DSP ports (PortConfig, as WirePlumber does) and ``pw-link``
links them.

* ``pw-play`` of a known signal must reach the backend's WAV (normalized
  correlation at the best alignment >= 0.99);
* ``pw-record`` from the source must carry the backend's 1000 Hz sine.

Skipped (with the reason) only when a program is not installed.
"""

from __future__ import annotations

import re
import signal
import time
import wave
from pathlib import Path

import numpy as np

from alsa_pvplug.backend.wavfile import read_wav
from alsa_pvplug.protocol.sndif import PcmFormat
from tests.plugin.test_clients_pa_jack import (
    RATE,
    _need,
    _samples,
    _test_signal,
    best_alignment,
    dominant_frequency,
)
from tests.support.audio import write_wav
from tests.support.env import Proc, PvEnv, wait_until

PW_PROGRAMS = ("pipewire", "pw-play", "pw-record", "pw-cli", "pw-link", "pw-dump")

#: The daemon: the modules of /usr/share/pipewire/minimal.conf (no session
#: manager), a fixed quantum and our two nodes.  No format is imposed on the
#: nodes (PipeWire picks from what the plugin offers), only rate and channels.
PW_CONF = """\
context.properties = {{
    core.daemon = true
    core.name = pipewire-0
    link.max-buffers = 16
    default.clock.rate = {rate}
    default.clock.allowed-rates = [ {rate} ]
    default.clock.quantum = {quantum}
    default.clock.min-quantum = {quantum}
    default.clock.max-quantum = {quantum}
    settings.check-quantum = true
    settings.check-rate = true
}}
context.spa-libs = {{
    audio.convert.* = audioconvert/libspa-audioconvert
    api.alsa.*      = alsa/libspa-alsa
    support.*       = support/libspa-support
}}
context.modules = [
    {{ name = libpipewire-module-rt
       args = {{ rt.prio = {rt_prio} nice.level = -11 }} flags = [ ifexists nofail ] }}
    {{ name = libpipewire-module-protocol-native }}
    {{ name = libpipewire-module-profiler }}
    {{ name = libpipewire-module-metadata }}
    {{ name = libpipewire-module-spa-node-factory }}
    {{ name = libpipewire-module-client-node }}
    {{ name = libpipewire-module-access args = {{ }} }}
    {{ name = libpipewire-module-adapter }}
    {{ name = libpipewire-module-link-factory }}
]
context.objects = [
    {{ factory = metadata args = {{ metadata.name = default }} }}
    {{ factory = spa-node-factory
       args = {{ factory.name = support.node.driver node.name = Dummy-Driver
                 node.group = pipewire.dummy priority.driver = 20000 }} }}
    {{ factory = adapter
       args = {{ factory.name = api.alsa.pcm.sink node.name = pvsink
                 media.class = Audio/Sink api.alsa.path = "{device}"
                 audio.rate = {rate} audio.channels = 2 audio.position = [ FL FR ]
                 node.suspend-on-idle = true priority.driver = 30000
                 adapter.auto-port-config = {{ mode = dsp monitor = false control = false
                                               position = preserve }} }} }}
    {{ factory = adapter
       args = {{ factory.name = api.alsa.pcm.source node.name = pvsource
                 media.class = Audio/Source api.alsa.path = "{device}"
                 audio.rate = {rate} audio.channels = 2 audio.position = [ FL FR ]
                 node.suspend-on-idle = true priority.driver = 29000
                 adapter.auto-port-config = {{ mode = dsp monitor = false control = false
                                               position = preserve }} }} }}
]
"""

#: PortConfig for a client stream: DSP mode, one F32 port per channel
PORT_CONFIG = ('{{ "direction": "{direction}", "mode": "dsp", "format": {{ '
               '"mediaType": "audio", "mediaSubtype": "raw", "format": "F32P", '
               '"rate": {rate}, "channels": 2, "position": [ "FL", "FR" ] }} }}')


class PipeWireDaemon:
    """A private pipewire with our sink and source, its own socket and dirs."""

    def __init__(self, env: PvEnv, quantum: int = 256) -> None:
        self.pv = env
        root = env.root / "pipewire"
        (root / "home").mkdir(parents=True)
        (root / "run").mkdir(mode=0o700)
        self.log = root / "pipewire.log"
        conf = root / "pipewire.conf"
        conf.write_text(PW_CONF.format(rate=RATE, quantum=quantum, rt_prio=10,
                                       device="pvplug"))
        self.env = {
            **env.env,
            "HOME": str(root / "home"),
            "XDG_RUNTIME_DIR": str(root / "run"),
            "XDG_CONFIG_HOME": str(root / "home" / ".config"),
            "PIPEWIRE_RUNTIME_DIR": str(root / "run"),
            "PIPEWIRE_REMOTE": "pipewire-0",
            "DBUS_SESSION_BUS_ADDRESS": "disabled:",
            "PIPEWIRE_LOG_SYSTEMD": "false",
        }
        # PIPEWIRE_DEBUG=3: info, which has the ALSA geometry and the xruns.
        self.proc = Proc(["pipewire", "-c", str(conf)], self.log,
                         env={**self.env, "PIPEWIRE_DEBUG": "3"})
        wait_until(lambda: not self.proc.alive or {"pvsink:playback_FL", "pvsink:playback_FR"}
                   <= self.ports("-i"), 20, "pipewire and its pvsink node")
        assert self.proc.alive, self.output()
        assert {"pvsource:capture_FL", "pvsource:capture_FR"} <= self.ports("-o"), \
            self.output()

    def tool(self, *argv: str, timeout: float = 10, check: bool = True) -> str:
        """Run a pw-* tool against this daemon; its (capped) output."""
        return self.pv.run(list(argv), timeout=timeout, env=self.env, check=check).output

    def ports(self, which: str) -> set[str]:
        """``pw-link -o`` (outputs) or ``-i`` (inputs); empty before the
        daemon listens."""
        c = self.pv.run(["pw-link", which], timeout=10, env=self.env, check=False)
        return {ln.strip() for ln in c.output.splitlines() if ln.strip()} if c.rc == 0 else set()

    def node_id(self, name: str) -> int | None:
        """The id of node ``name`` in ``pw-cli ls Node`` (small, unlike pw-dump)."""
        node = None
        for ln in self.tool("pw-cli", "ls", "Node").splitlines():
            m = re.match(r"\s*id (\d+), type PipeWire:Interface:Node", ln)
            if m:
                node = int(m.group(1))
            elif node is not None and re.match(rf'\s*node.name = "{re.escape(name)}"$', ln):
                return node
        return None

    def connect(self, stream: Proc, name: str, playback: bool) -> None:
        """What a session manager does for a new stream ``name``: DSP ports
        (PortConfig) and links to our sink (playback) or from our source."""
        def have_node() -> bool:
            assert stream.alive, stream.output()
            return self.node_id(name) is not None
        wait_until(have_node, 15, f"the {name} node", interval=0.1)
        node = self.node_id(name)
        direction = "Output" if playback else "Input"
        self.tool("pw-cli", "set-param", str(node), "PortConfig",
                  PORT_CONFIG.format(direction=direction, rate=RATE))
        if playback:
            pairs = [(f"{name}:output_{ch}", f"pvsink:playback_{ch}") for ch in ("FL", "FR")]
        else:
            pairs = [(f"pvsource:capture_{ch}", f"{name}:input_{ch}") for ch in ("FL", "FR")]
        mine = {p[0] if playback else p[1] for p in pairs}
        wait_until(lambda: mine <= self.ports("-o" if playback else "-i"), 10,
                   f"the ports of {name}", interval=0.05)
        for out, inp in pairs:
            self.tool("pw-link", out, inp)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int | None:
        self.proc.stop()
        return self.proc.proc.returncode


def _read_pw_wav(path: Path) -> np.ndarray:
    """pw-record's WAV (libsndfile: plain PCM for S16 stereo), frames x 2."""
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, RATE)
        raw = w.readframes(w.getnframes())
    return np.frombuffer(raw, "<i2").reshape(-1, 2).astype(np.float64)


def test_pipewire_sink_and_source(tmp_path: Path, plugin_lib: Path) -> None:
    _need(*PW_PROGRAMS)
    env = PvEnv(tmp_path, plugin_lib, backend_args=["--source", "sine:1000"])
    try:
        _pipewire(env)
    finally:
        env.stop()


def _pipewire(env: PvEnv) -> None:
    root = env.root
    pw: PipeWireDaemon | None = None
    rec: Proc | None = None
    play: Proc | None = None
    ref = _test_signal()
    rec_wav = root / "pw-record.wav"
    want = RATE * 4  # bytes: 1 s of S16 stereo
    try:
        t0 = time.monotonic()
        pw = PipeWireDaemon(env)
        startup = time.monotonic() - t0

        # Capture: pw-record from pvsource until 1 s has arrived; SIGINT
        # makes pw-record finish its WAV header.
        rec = Proc(["pw-record", "--target", "0", "-P", "{ node.name = pvrec }",
                    "--rate", str(RATE), "--channels", "2", "--format", "s16", str(rec_wav)],
                   root / "pw-record.log", env=pw.env)
        t1 = time.monotonic()
        pw.connect(rec, "pvrec", playback=False)
        wait_until(lambda: rec_wav.exists() and rec_wav.stat().st_size >= want + 4096, 15,
                   "1 s from pw-record", interval=0.05)
        rec_seconds = time.monotonic() - t1
        rec.proc.send_signal(signal.SIGINT)
        rec.proc.wait(10)

        # Playback: a 1 s chirp/tone file, then 0.5 s of silence, so that the
        # sink closing its PCM when pw-play leaves cuts only silence.
        wav = root / "chirp.wav"
        pad = np.zeros((RATE // 2, 2), "<i2")
        write_wav(str(wav), PcmFormat.S16_LE, 2, RATE, np.concatenate([ref, pad]).tobytes())
        play = Proc(["pw-play", "--target", "0", "-P", "{ node.name = pvplay }", str(wav)],
                    root / "pw-play.log", env=pw.env)
        t2 = time.monotonic()
        pw.connect(play, "pvplay", playback=True)
        play.proc.wait(20)
        play_seconds = time.monotonic() - t2
        assert play.proc.returncode == 0, play.output()
        assert pw.proc.alive, pw.output()[-4000:]
    finally:
        for p in (play, rec):
            if p is not None:
                p.stop()
        if pw is not None:
            pw.stop()
    pw_log = pw.output()
    geometry = [ln.split("()] ", 1)[-1] for ln in pw_log.splitlines()
                if "spa_alsa_set_format" in ln]
    xruns = [ln for ln in pw_log.splitlines() if "XRun" in ln or "xrun" in ln]
    print("pipewire: " + "; ".join(geometry) + f"; {len(xruns)} xrun lines")

    def played_enough() -> bool:
        return any(len(read_wav(str(p))[1]) >= ref.nbytes for p in env.played())
    wait_until(played_enough, 10, "the backend's WAV with the played signal")
    best: tuple[int, float, str] = (-1, 0.0, "")
    for p in env.played():
        info, got = _samples(p)
        if (info.channels, info.rate) != (2, RATE) or len(got) < len(ref):
            continue
        lag, corr = best_alignment(got, ref.astype(np.float64))
        if corr > best[1]:
            best = (lag, corr, f"{p.name} ({info.format.name})")
    lag, corr, name = best
    print(f"pipewire: startup {startup:.2f} s; pw-play {play_seconds:.2f} s; "
          f"sink correlation {corr:.6f} at frame {lag} of {name}")
    assert corr >= 0.99, (best, pw_log[-4000:])

    data = _read_pw_wav(rec_wav)
    assert len(data) >= RATE, len(data)
    tail = data[RATE // 2: RATE]  # past any start-up silence
    for ch in range(2):
        freq, share = dominant_frequency(tail[:, ch], RATE)
        rms = float(np.sqrt(np.mean(tail[:, ch] ** 2)))
        print(f"pipewire: pw-record ch{ch}: {freq:.1f} Hz, {share:.4f} of the energy, "
              f"rms {rms:.0f}; 1 s arrived in {rec_seconds:.2f} s")
        # An xrun's splice spreads some energy: 0.9 still names the tone.
        assert abs(freq - 1000) < 2 and share > 0.9 and rms > 1000, \
            (ch, freq, share, rms, pw_log[-4000:])
