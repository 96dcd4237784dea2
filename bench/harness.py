"""What every benchmark starts: the simulator, the backend, the plugin, clients.

``System(repo=...)`` runs all of them from one checkout (its ``.venv``), so a
benchmark measures this tree or another one (``--repo DIR``: the same
command before and after a change).  Every process is bounded: children die
with the runner (PR_SET_PDEATHSIG), their file output is capped, and
``System.close()`` kills what is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from alsa_pvplug.sim.procs import OUTPUT_CAP, Proc, SimProcesses, cli, wait_until

__all__ = ["BENCH", "OUTPUT_CAP", "Proc", "REPO", "System", "cpu_seconds", "repo_arg",
           "rss_kib", "wait_until"]

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# bench/NAME.py runs with bench/ as sys.path[0]; the root makes tests.support importable.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (and its reaped children), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class System:
    """The simulator, the backend and the plugin of one checkout.

    Parameters
    ----------
    repo
        The checkout to run (its ``.venv/bin/python`` runs everything).
    guests
        Guest domids; each gets the default vsnd card.
    backend_args
        Extra ``pvplug backend`` arguments (``--sink``, ``--unpaced`` ...).
    """

    def __init__(self, repo: Path = REPO, work: Path | None = None,
                 guests: Sequence[int] = (1,), backend_args: Sequence[str] = (),
                 rt: int = 0, sim_args: Sequence[str] = (), keep: bool = False) -> None:
        self.repo = Path(repo).resolve()
        self._remove = work is None and not keep
        self.python = str(self.repo / ".venv" / "bin" / "python")
        if not Path(self.python).exists():
            raise RuntimeError(f"{self.repo} has no .venv (run its scripts/setup-env.sh)")
        self.work = Path(work or tempfile.mkdtemp(prefix="pvplug-bench-")).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.rt = rt
        self.guests = list(guests)
        self._sim = SimProcesses(self.work, guests=self.guests, sim_args=sim_args,
                                 command=self.cli, cwd=self.repo, rt=rt)
        self.sim, self.sim_dir, self.procs = self._sim.sim, self._sim.dir, self._sim.procs
        self.backend: Proc | None = None
        if backend_args is not None:
            self.start_backend(backend_args)
        self._plugin: Path | None = None

    @property
    def cli(self) -> list[str]:
        return cli(self.python, "warning")

    def start(self, argv: Sequence[str], name: str, env: dict[str, str] | None = None,
              rt: int | None = None) -> Proc:
        return self._sim.start(argv, name, env=env, rt=rt)

    def start_backend(self, args: Sequence[str] = ()) -> Proc:
        self.backend = self._sim.backend(*args)
        return self.backend

    def start_queue_tap(self, out: Path, args: Sequence[str] = ()) -> Proc:
        """The backend through ``bench/queue_tap.py`` (this checkout's script,
        the measured checkout's Python): its log of every stream's queue goes
        to ``out`` when it is stopped."""
        self.backend = self.start([self.python, str(BENCH / "queue_tap.py"), str(out),
                                   "--log-level", "warning", "backend", "--sim-dir",
                                   str(self.sim_dir), *args], "backend")
        return self.backend

    def run_py(self, code: str, *args: str, timeout: float = 120) -> str:
        """Run ``code`` with this checkout's Python; its stdout."""
        out = subprocess.run([self.python, "-c", code, *args], cwd=self.repo, timeout=timeout,
                             check=True, capture_output=True, text=True)
        return out.stdout

    def plugin(self) -> Path:
        """This checkout's plugin, built once into the work directory."""
        if self._plugin is None:
            code = ("import sys; from alsa_pvplug.glue.build import build_plugin; "
                    "print(build_plugin(sys.argv[1]))")
            self._plugin = Path(self.run_py(code, str(self.work / "plugin"),
                                            timeout=300).strip().splitlines()[-1])
        return self._plugin

    def alsa_env(self, domid: int = 1, **options: object) -> dict[str, str]:
        """Environment whose ``pcm.pvplug`` is this plugin on guest ``domid``."""
        conf = self.work / f"pvplug-dom{domid}.conf"
        opts = {"transport": "sim", "sim_dir": str(self.sim_dir), "domid": domid, **options}
        code = ("import sys, ast; from alsa_pvplug.glue.install import render_conf; "
                "sys.stdout.write(render_conf(sys.argv[1], ast.literal_eval(sys.argv[2])))")
        conf.write_text(self.run_py(code, str(self.plugin()), repr(opts)))
        return {"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}"}

    def close(self) -> None:
        self._sim.close()
        if self._remove:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repo_arg(value: str) -> Path:
    path = Path(value).resolve()
    if not (path / "alsa_pvplug" / "__init__.py").is_file():
        raise SystemExit(f"{path} is not an alsa-pvplug checkout")
    return path


if __name__ == "__main__":
    sys.exit("bench/harness.py is a module for the bench/*.py commands")
