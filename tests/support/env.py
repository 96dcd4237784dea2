"""The simulated hypervisor, the reference backend and an ALSA configuration
naming the plugin on them, as the plugin, sim and xen tests start them.

Every process is a :class:`Proc` from ``alsa_pvplug.sim.procs``: it dies with
the test run, its output is capped and goes to a file in the test's tmp dir,
and ``stop()`` is idempotent."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from alsa_pvplug.sim import procs
from alsa_pvplug.sim.procs import SimProcesses, child_setup, run_capped, wait_until

REPO = Path(__file__).resolve().parents[2]
PY = [sys.executable, "-m", "alsa_pvplug.cli", "--log-level", "info"]
SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"
#: bytes a client run to completion may print before it is killed (a client
#: looping on an error)
CLIENT_OUTPUT_CAP = 16 * 1024 * 1024

__all__ = ["CLIENT_OUTPUT_CAP", "PY", "REPO", "SYSTEM_ALSA_CONF", "Client", "Proc", "PvEnv",
           "Sim", "child_setup", "wait_until"]


class Proc(procs.Proc):
    """A child started in the checkout, whose output goes to ``log``."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
                 **kw: object) -> None:
        kw.setdefault("cwd", REPO)
        super().__init__(argv, log, env, **kw)  # type: ignore[arg-type]


class Sim:
    """``pvplug sim`` in ``root/sim`` (extra arguments as given), ready."""

    def __init__(self, root: Path, extra: Sequence[str] = ()) -> None:
        self._procs = SimProcesses(root, guests=(), sim_args=extra, command=PY, cwd=REPO)
        self.dir = self._procs.dir
        self.proc = self._procs.sim

    def backend(self, root: Path, *args: str, name: str = "backend") -> procs.Proc:
        """``pvplug backend`` on this simulator, logging to ``root/NAME.log``
        (``root`` is the simulator's); stopped with it at the latest."""
        assert Path(root) == self._procs.work, (root, self._procs.work)
        return self._procs.backend(*args, name=name)

    def xs_env(self, domid: int) -> dict[str, str]:
        return self._procs.xs_env(domid)

    def stop(self) -> None:
        self._procs.close()


class Client:
    """A finished client run: exit status (-9 after a kill), capped output."""

    def __init__(self, argv: Sequence[str], rc: int, output: str, seconds: float) -> None:
        self.argv, self.rc, self.output, self.seconds = list(argv), rc, output, seconds

    def check(self) -> Client:
        assert self.rc == 0, f"{self.argv} exited {self.rc}:\n{self.output}"
        return self


class PvEnv:
    """A simulated hypervisor, a backend writing WAVs to ``out``, and an ALSA
    configuration whose ``pcm.pvplug`` is our plugin on that simulator."""

    def __init__(self, root: Path, plugin_lib: Path, backend_args: Sequence[str] = (),
                 options: dict[str, object] | None = None, sink: str | None = None,
                 sim_args: Sequence[str] = ()) -> None:
        from alsa_pvplug.glue.install import render_conf

        self.root = root
        self.out = root / "out"
        self.out.mkdir(exist_ok=True)
        self.sim = Sim(root, sim_args)
        self.backend_args = list(backend_args)
        self.sink = sink or f"wav:{self.out}"
        self.backend: Proc | None = None
        self.start_backend()
        opts: dict[str, object] = {"transport": "sim", "sim_dir": str(self.sim.dir), "domid": 1}
        opts.update(options or {})
        self.conf = root / "pvplug.conf"
        self.conf.write_text(render_conf(plugin_lib, opts))
        self.env = {"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{self.conf}"}

    def start_backend(self, *extra: str) -> Proc:
        self.backend = self.sim.backend(self.root, "--sink", self.sink, *self.backend_args,
                                        *extra)
        return self.backend

    def run(self, argv: Sequence[str], timeout: float = 30, env: dict[str, str] | None = None,
            check: bool = True) -> Client:
        """Run a client to completion under ``timeout`` with its output capped."""
        rc, out, seconds = run_capped(argv, timeout, env={**self.env, **(env or {})},
                                      cwd=self.root, cap=CLIENT_OUTPUT_CAP)
        c = Client(argv, rc, out, seconds)
        if check:
            if rc == -9:
                raise AssertionError(f"{argv} did not finish within {timeout} s:\n{out}")
            c.check()
        return c

    def played(self) -> list[Path]:
        """The backend's WAV files, oldest first."""
        return sorted(self.out.glob("*.wav"))

    def stop(self) -> None:
        if self.backend is not None:
            self.backend.stop()
        self.sim.stop()
