"""A private, headless PipeWire daemon on ``pcm.pvplug``, as the PipeWire test
(tests/plugin/test_clients_pipewire.py) and benchmark (bench/pipewire.py)
run it: no session manager, so what WirePlumber would do (PortConfig and
links for a client stream) is done by hand in :meth:`PipeWireDaemon.connect`."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from alsa_pvplug.sim.procs import Proc, run_capped, wait_until

#: The modules of /usr/share/pipewire/minimal.conf, a fixed quantum (min = max
#: = default) and our two nodes.  No format is imposed on the nodes (PipeWire
#: picks from what the plugin offers), only rate and channels; ``alsa_props``
#: adds node properties (e.g. ``api.alsa.headroom = 1024``).
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
                 media.class = Audio/Sink api.alsa.path = "{device}" {alsa_props}
                 audio.rate = {rate} audio.channels = 2 audio.position = [ FL FR ]
                 node.suspend-on-idle = true priority.driver = 30000
                 adapter.auto-port-config = {{ mode = dsp monitor = false control = false
                                               position = preserve }} }} }}
    {{ factory = adapter
       args = {{ factory.name = api.alsa.pcm.source node.name = pvsource
                 media.class = Audio/Source api.alsa.path = "{device}" {alsa_props}
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

CHANNELS = ("FL", "FR")

#: starts the daemon: (argv, env) -> a bounded Proc
Starter = Callable[[Sequence[str], dict[str, str]], Proc]


class PipeWireDaemon:
    """A private pipewire in ``root`` with our sink and source, its own socket
    and dirs.

    ``start`` lets a caller run the daemon as its other processes (the bench:
    ``System.start``, so it is stopped with them); by default it is a
    :class:`Proc` logging to ``root/pipewire.log``.
    """

    def __init__(self, root: Path, alsa_env: dict[str, str], *, quantum: int = 256,
                 rate: int = 48000, rt_prio: int = 10, device: str = "pvplug",
                 alsa_props: str = "", start: Starter | None = None) -> None:
        self.rate = rate
        (root / "home").mkdir(parents=True, exist_ok=True)
        (root / "run").mkdir(mode=0o700, exist_ok=True)
        conf = root / "pipewire.conf"
        conf.write_text(PW_CONF.format(rate=rate, quantum=quantum, rt_prio=rt_prio,
                                       device=device, alsa_props=alsa_props))
        self.env = {
            **alsa_env,
            "HOME": str(root / "home"),
            "XDG_RUNTIME_DIR": str(root / "run"),
            "XDG_CONFIG_HOME": str(root / "home" / ".config"),
            "PIPEWIRE_RUNTIME_DIR": str(root / "run"),
            "PIPEWIRE_REMOTE": "pipewire-0",
            "DBUS_SESSION_BUS_ADDRESS": "disabled:",
            "PIPEWIRE_LOG_SYSTEMD": "false",
        }
        start = start or (lambda argv, env: Proc(argv, root / "pipewire.log", env=env))
        # PIPEWIRE_DEBUG=3: info, which has the ALSA geometry and the xruns.
        self.proc = start(["pipewire", "-c", str(conf)], {**self.env, "PIPEWIRE_DEBUG": "3"})
        self.log = self.proc.log
        try:
            sink = {f"pvsink:playback_{c}" for c in CHANNELS}
            wait_until(lambda: not self.proc.alive or sink <= self.ports("-i"), 20,
                       "pipewire and its pvsink node")
            if not self.proc.alive:
                raise RuntimeError(f"pipewire exited:\n{self.output()[-4000:]}")
            if not {f"pvsource:capture_{c}" for c in CHANNELS} <= self.ports("-o"):
                raise RuntimeError(f"pipewire has no pvsource ports:\n{self.output()[-4000:]}")
        except BaseException:
            self.stop()  # the caller gets no object to stop
            raise

    def tool(self, *argv: str, timeout: float = 10, check: bool = True) -> str:
        """Run a pw-* tool against this daemon; its (capped) output."""
        rc, out, _ = run_capped(argv, timeout, env=self.env)
        if check and rc != 0:
            raise RuntimeError(f"{list(argv)} exited {rc}:\n{out}")
        return out

    def ports(self, which: str) -> set[str]:
        """``pw-link -o`` (outputs) or ``-i`` (inputs); empty before the
        daemon listens."""
        rc, out, _ = run_capped(["pw-link", which], 10, env=self.env)
        return {ln.strip() for ln in out.splitlines() if ln.strip()} if rc == 0 else set()

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
            if not stream.alive:
                raise RuntimeError(f"{name} exited:\n{stream.output()}")
            return self.node_id(name) is not None
        wait_until(have_node, 15, f"the {name} node", interval=0.1)
        self.tool("pw-cli", "set-param", str(self.node_id(name)), "PortConfig",
                  PORT_CONFIG.format(direction="Output" if playback else "Input",
                                     rate=self.rate))
        if playback:
            pairs = [(f"{name}:output_{c}", f"pvsink:playback_{c}") for c in CHANNELS]
        else:
            pairs = [(f"pvsource:capture_{c}", f"{name}:input_{c}") for c in CHANNELS]
        mine = {p[0] if playback else p[1] for p in pairs}
        wait_until(lambda: mine <= self.ports("-o" if playback else "-i"), 10,
                   f"the ports of {name}", interval=0.05)
        for out, inp in pairs:
            self.tool("pw-link", out, inp)

    def output(self) -> str:
        """The whole daemon log."""
        return self.log.read_text(errors="replace")

    def stop(self) -> int | None:
        self.proc.stop()
        return self.proc.returncode
