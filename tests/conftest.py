"""Fixtures that start the real processes: the simulated hypervisor and the
reference backend.  Every process is started under a deadline and killed in
teardown; its output goes to a file in the test's tmp dir."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PY = [sys.executable, "-m", "alsa_pvplug.cli", "--log-level", "info"]


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if the test run itself crashes, its children go too.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


class Proc:
    """A child process with its log file; ``stop()`` is idempotent."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log = log
        self._logf = open(log, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=REPO,
                                     preexec_fn=_die_with_parent,
                                     env={**os.environ, **(env or {})})

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig_kill: bool = False) -> None:
        if self.proc.poll() is None:
            (self.proc.kill if sig_kill else self.proc.terminate)()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._logf.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def wait_until(cond, timeout: float, what: str, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Sim:
    def __init__(self, root: Path, extra: Sequence[str] = ()) -> None:
        self.dir = root / "sim"
        self.proc = Proc([*PY, "sim", "--dir", str(self.dir), *extra], root / "sim.log")
        wait_until(lambda: (self.dir / "ready").exists() or not self.proc.alive, 15, "sim ready")
        assert self.proc.alive, self.proc.output()

    def backend(self, root: Path, *args: str, name: str = "backend") -> Proc:
        return Proc([*PY, "backend", "--sim-dir", str(self.dir), *args], root / f"{name}.log")

    def xs_env(self, domid: int) -> dict[str, str]:
        return {"XENSTORED_PATH": str(self.dir / f"dom{domid}" / "xenstored")}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    s = Sim(tmp_path)
    try:
        yield s
    finally:
        s.proc.stop()


# -- the ALSA plugin -----------------------------------------------------------

SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"
OUTPUT_CAP = 16 * 1024 * 1024  # bytes a client may write to its log (RLIMIT_FSIZE)


@pytest.fixture(scope="session")
def plugin_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libasound_module_pcm_pvplug.so, built once per test run."""
    from alsa_pvplug.glue.build import build_plugin

    return build_plugin(tmp_path_factory.mktemp("plugin"))


def _read_capped(p: subprocess.Popen[bytes], timeout: float) -> str:
    """Collect the output of ``p`` until it exits; kill it at ``timeout`` or
    when it has written OUTPUT_CAP bytes (a client looping on an error).
    Keeps the tail.  ``p.returncode`` is -9 after a kill."""
    import selectors

    assert p.stdout is not None
    tail = bytearray()
    total = 0
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or total > OUTPUT_CAP:
                p.kill()
                break
            if not sel.select(min(left, 1.0)):
                continue
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            total += len(chunk)
            tail += chunk
            del tail[:-20000]
    finally:
        sel.close()
        p.stdout.close()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    if total > OUTPUT_CAP:
        tail += f"\n[output cut after {total} bytes]".encode()
    return tail.decode(errors="replace")


class Client:
    """A finished client run: return code and (capped) output."""

    def __init__(self, argv: Sequence[str], rc: int, output: str, seconds: float) -> None:
        self.argv, self.rc, self.output, self.seconds = list(argv), rc, output, seconds

    def check(self) -> Client:
        assert self.rc == 0, f"{self.argv} exited {self.rc}:\n{self.output}"
        return self


class PvEnv:
    """A simulated hypervisor, a backend writing WAVs to ``out``, and an ALSA
    configuration whose ``pcm.pvplug`` is our plugin on that simulator."""

    def __init__(self, root: Path, plugin_lib: Path, backend_args: Sequence[str] = (),
                 options: dict[str, object] | None = None, sink: str | None = None) -> None:
        from alsa_pvplug.glue.install import render_conf

        self.root = root
        self.out = root / "out"
        self.out.mkdir(exist_ok=True)
        self.sim = Sim(root)
        self.backend_args = list(backend_args)
        self.sink = sink or f"wav:{self.out}"
        self.backend: Proc | None = None
        self.start_backend()
        opts: dict[str, object] = {"transport": "sim", "sim_dir": str(self.sim.dir), "domid": 1}
        opts.update(options or {})
        self.conf = root / "pvplug.conf"
        self.conf.write_text(render_conf(plugin_lib, opts))
        self.env = {"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{self.conf}"}
        self._n = 0

    def start_backend(self, *extra: str) -> Proc:
        self.backend = self.sim.backend(self.root, "--sink", self.sink, *self.backend_args,
                                        *extra)
        return self.backend

    def run(self, argv: Sequence[str], timeout: float = 30, env: dict[str, str] | None = None,
            check: bool = True) -> Client:
        """Run a client to completion under ``timeout`` with its output capped."""
        t0 = time.monotonic()
        p = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, cwd=self.root,
                             preexec_fn=_die_with_parent,
                             env={**os.environ, **self.env, **(env or {})})
        out = _read_capped(p, timeout)
        rc = p.returncode
        c = Client(argv, rc, out, time.monotonic() - t0)
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
        self.sim.proc.stop()


@pytest.fixture
def pvenv(tmp_path: Path, plugin_lib: Path) -> Iterator[PvEnv]:
    env = PvEnv(tmp_path, plugin_lib)
    try:
        yield env
    finally:
        env.stop()
