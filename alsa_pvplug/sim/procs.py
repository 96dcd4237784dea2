"""Processes around the simulator, bounded: the one way the demo
(``pvplug demo``), the benchmarks (bench/harness.py) and the tests
(tests/support) start the simulator, the backend and clients.

Rules: every child dies with its parent (PR_SET_PDEATHSIG) and may write at
most ``OUTPUT_CAP`` bytes to a file (RLIMIT_FSIZE: a client looping on an
error cannot fill the disk); every wait has a deadline; ``stop()`` is
idempotent and ends in SIGKILL if SIGTERM is not enough.
"""

from __future__ import annotations

import ctypes
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: bytes a child may write to any file, its log included
OUTPUT_CAP = 256 * 1024 * 1024
#: the simulator writes this file into its directory once it serves
READY_FILE = "ready"
_PR_SET_PDEATHSIG = 1


def child_setup(rt: int = 0, output_cap: int = OUTPUT_CAP) -> None:
    """In the child, before exec: die with the parent, cap file output, and
    with ``rt`` > 0 run SCHED_FIFO at that priority."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_FSIZE, (output_cap, output_cap))
    if rt:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt))


def wait_until(cond: Callable[[], object], timeout: float, what: str,
               interval: float = 0.01) -> None:
    """Poll ``cond`` until true; TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A child whose output goes to ``log``."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
                 *, rt: int = 0, cwd: str | os.PathLike[str] | None = None,
                 output_cap: int = OUTPUT_CAP) -> None:
        self.argv = list(argv)
        self.log = Path(log)
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=cwd,
                                     preexec_fn=lambda: child_setup(rt, output_cap),
                                     env={**os.environ, **(env or {})})

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float) -> int:
        """Wait for the exit status; kill at ``timeout`` (TimeoutError)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise TimeoutError(f"{self.argv[0]} did not finish within {timeout} s:\n"
                               f"{self.output()}") from None

    def stop(self, sig_kill: bool = False) -> None:
        if self.proc.poll() is None:
            (self.proc.kill if sig_kill else self.proc.terminate)()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._logf.closed:
            self._logf.close()

    def output(self, tail: int = 4000) -> str:
        if not self._logf.closed:
            self._logf.flush()
        return self.log.read_text(errors="replace")[-tail:]


@dataclass
class Ended:
    """How a child run by :func:`run_bounded` ended."""

    rc: int               # exit status; negative for a signal (-9 after a kill here)
    output: str           # the tail of its stdout + stderr
    total: int            # bytes it wrote there
    seconds: float
    killed: str | None    # None, "deadline" or "cap"
    cpu: float            # its own user + system seconds


def run_bounded(argv: Sequence[str], timeout: float, *, env: dict[str, str] | None = None,
                cwd: str | os.PathLike[str] | None = None, cap: int = 16 * 1024 * 1024,
                keep: int = 20000, group: bool = False) -> Ended:
    """Run a client to its end, killed at ``timeout`` or once it has written
    more than ``cap`` bytes (a client looping on an error), keeping the last
    ``keep`` bytes.  With ``group`` it leads a new process group and a kill
    takes the whole group (helpers it started)."""
    def setup() -> None:
        child_setup()
        if group:
            os.setpgrp()

    def kill() -> None:
        try:
            (os.killpg if group else os.kill)(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    t0 = time.monotonic()
    p = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, cwd=cwd, preexec_fn=setup,
                         env={**os.environ, **(env or {})})
    assert p.stdout is not None
    tail = bytearray()
    total = 0
    killed = None
    deadline = t0 + timeout
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                killed = "deadline"
                break
            if total > cap:
                killed = "cap"
                break
            if not sel.select(min(left, 0.5)):
                continue
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            total += len(chunk)
            tail += chunk
            del tail[:-keep]
    finally:
        sel.close()
        if killed is not None:
            kill()
        p.stdout.close()
        # Reaped here rather than by Popen.wait, which discards the rusage.
        reap_by = time.monotonic() + 5
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        while pid == 0 and time.monotonic() < reap_by:
            time.sleep(0.002)
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid == 0:
            kill()
            pid, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return Ended(p.returncode, tail.decode(errors="replace"), total, time.monotonic() - t0,
                 killed, usage.ru_utime + usage.ru_stime)


def run_capped(argv: Sequence[str], timeout: float, *, env: dict[str, str] | None = None,
               cwd: str | os.PathLike[str] | None = None,
               cap: int = 16 * 1024 * 1024) -> tuple[int, str, float]:
    """:func:`run_bounded` as (exit status, -9 after a kill; the tail of its
    output, marked if cut at ``cap``; seconds)."""
    end = run_bounded(argv, timeout, env=env, cwd=cwd, cap=cap)
    out = end.output
    if end.total > cap:
        out += f"\n[output cut after {end.total} bytes]"
    return end.rc, out, end.seconds


def cli(python: str = sys.executable, log_level: str = "info") -> list[str]:
    """The ``pvplug`` command line of one interpreter (a checkout's venv)."""
    return [python, "-m", "alsa_pvplug.cli", "--log-level", log_level]


class SimProcesses:
    """``pvplug sim`` in ``work/sim`` (logs in ``work``), and backends on it.

    ``close()`` stops every process started here, last first.
    """

    def __init__(self, work: Path, *, guests: Sequence[int] = (1,),
                 sim_args: Sequence[str] = (), command: Sequence[str] | None = None,
                 cwd: str | os.PathLike[str] | None = None, rt: int = 0,
                 ready_timeout: float = 15.0) -> None:
        self.work = Path(work)
        self.dir = self.work / "sim"
        self.command = list(command or cli())
        self.cwd = cwd
        self.rt = rt
        self.procs: list[Proc] = []
        guest_args = [a for g in guests for a in ("--guest", str(g))]
        self.sim = self.start([*self.command, "sim", "--dir", str(self.dir), *guest_args,
                               *sim_args], "sim")
        try:
            wait_until(lambda: (self.dir / READY_FILE).exists() or not self.sim.alive,
                       ready_timeout, "the simulator")
        except TimeoutError:
            self.close()
            raise
        if not self.sim.alive:
            out = self.sim.output()
            self.close()
            raise RuntimeError(f"pvplug sim exited {self.sim.returncode}:\n{out}")

    def start(self, argv: Sequence[str], name: str, env: dict[str, str] | None = None,
              rt: int | None = None) -> Proc:
        p = Proc(argv, self.work / f"{name}.log", env=env, cwd=self.cwd,
                 rt=self.rt if rt is None else rt)
        self.procs.append(p)
        return p

    def backend(self, *args: str, name: str = "backend") -> Proc:
        """``pvplug backend`` serving this simulator."""
        return self.start([*self.command, "backend", "--sim-dir", str(self.dir), *args], name)

    def xs_env(self, domid: int) -> dict[str, str]:
        """The environment libxenstore needs to reach domain ``domid``'s xenstored."""
        return {"XENSTORED_PATH": str(self.dir / f"dom{domid}" / "xenstored")}

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
