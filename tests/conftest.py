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
from pathlib import Path
from typing import Iterator, Sequence

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
