"""The processes of a fuzz world, each bounded, capped and killed at the end.

- :class:`Sub`: a subprocess (``pvplug sim``, ``pvplug backend``, aplay, ...)
  with its output in a log file (or a capped pipe), killed in ``stop()``.
- :func:`fork_call`: run ``fn(*args)`` in a forked child and get its JSON
  result back under a deadline.  The campaign process itself never opens a
  xenstore handle (libxenstore starts a reader thread, and a forked child must
  not inherit one), so everything that talks to the simulator runs in a child.
- :func:`run_client`: a client process under a timeout with its output capped
  (``run_bounded`` of ``alsa_pvplug/sim/procs.py``), classified by how it ended.
- ``/proc`` readers: VmRSS and CPU seconds of a process.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alsa_pvplug.sim.procs import Ended, run_bounded

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
CLI = [PY, "-m", "alsa_pvplug.cli"]
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """PR_SET_PDEATHSIG: if the campaign dies, its children go too."""
    ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)


def _child_setup() -> None:
    die_with_parent()
    os.setpgrp()  # a kill of the group takes the client and its helpers


# -- /proc ---------------------------------------------------------------------

def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def mem_kb(pid: int) -> dict[str, int]:
    """VmRSS and its parts (RssAnon, RssFile, RssShmem) in kB."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return out


def cpu_seconds(pid: int) -> float | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


# -- subprocesses --------------------------------------------------------------

class Sub:
    """A long-running subprocess whose output goes to ``log`` (appended)."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._logf = open(log, "ab")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=REPO,
                                     preexec_fn=_child_setup,
                                     env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def stop(self, kill: bool = False, wait: float = 5.0) -> int | None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        if not self._logf.closed:
            self._logf.close()
        return self.proc.returncode

    def tail(self, n: int = 6000) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - n))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def trim_log(self, keep: int = 64 * 1024, limit: int = 8 * 1024 * 1024) -> None:
        """Keep a long campaign's log bounded: past ``limit``, start it again
        with the last ``keep`` bytes (the file is opened O_APPEND)."""
        if self.log_size() > limit:
            tail = self.tail(keep)
            with open(self.log, "r+b") as f:
                f.truncate(0)
                f.write(f"[log trimmed; last {keep} bytes follow]\n{tail}".encode())


# -- forked children -----------------------------------------------------------

@dataclass
class ChildEnd:
    """How a forked child ended."""

    how: str                  # "ok" (returned), "exception", "signal", "exit", "timeout"
    result: Any = None        # fn's return value (JSON), or the traceback text
    signal: int | None = None
    code: int | None = None
    seconds: float = 0.0


class _CappedHandler(logging.Handler):
    """Logs to stderr until ``cap`` bytes, then one note and silence."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.left = cap
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if self.left <= 0:
            return
        msg = self.format(record) + "\n"
        self.left -= len(msg)
        if self.left <= 0:
            msg += "[log capped]\n"
        try:
            os.write(2, msg.encode(errors="replace"))
        except OSError:
            pass


class Forked:
    """``fn(*args)`` in a forked child; its stdout/stderr go to ``log``."""

    def __init__(self, fn: Callable[..., Any], args: Sequence[Any], log: Path,
                 log_level: int = logging.WARNING, log_cap: int = 256 * 1024) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.result_path = log.with_name(log.name + ".result")
        self.result_path.unlink(missing_ok=True)
        self.log = log
        self.t_start = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 70
            try:
                die_with_parent()
                os.setpgrp()
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGPIPE):
                    signal.signal(sig, signal.SIG_DFL)
                signal.setitimer(signal.ITIMER_REAL, 0)
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.close(fd)
                sys.stdout = open(1, "w", closefd=False, buffering=1)
                sys.stderr = open(2, "w", closefd=False, buffering=1)
                root = logging.getLogger()
                root.handlers = [_CappedHandler(log_cap)]
                root.setLevel(log_level)
                for name in list(logging.root.manager.loggerDict):
                    lg = logging.getLogger(name)
                    lg.handlers = []
                    lg.propagate = True
                try:
                    out: dict[str, Any] = {"how": "ok", "result": fn(*args)}
                except BaseException:  # noqa: BLE001 - reported to the parent
                    out = {"how": "exception", "result": traceback.format_exc()}
                tmp = self.result_path.with_name(self.result_path.name + ".tmp")
                tmp.write_text(json.dumps(out, default=repr))
                os.replace(tmp, self.result_path)
                code = 0
            except BaseException:  # noqa: BLE001
                try:
                    traceback.print_exc()
                except BaseException:  # noqa: BLE001
                    pass
            finally:
                os._exit(code)
        self.pid = pid
        self._end: ChildEnd | None = None

    def poll(self) -> ChildEnd | None:
        if self._end is not None:
            return self._end
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return None
        self._end = self._decode(status)
        return self._end

    def _decode(self, status: int) -> ChildEnd:
        secs = time.monotonic() - self.t_start
        if os.WIFSIGNALED(status):
            return ChildEnd("signal", signal=os.WTERMSIG(status), seconds=secs)
        code = os.WEXITSTATUS(status)
        try:
            out = json.loads(self.result_path.read_text())
            self.result_path.unlink(missing_ok=True)
            return ChildEnd(out["how"], out["result"], code=code, seconds=secs)
        except (OSError, ValueError, KeyError):
            return ChildEnd("exit", code=code, seconds=secs)

    @property
    def alive(self) -> bool:
        return self.poll() is None

    def wait(self, timeout: float) -> ChildEnd:
        """Wait up to ``timeout`` s; then kill it and report "timeout"."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            end = self.poll()
            if end is not None:
                return end
            if time.monotonic() >= deadline:
                self.kill()
                return ChildEnd("timeout", seconds=time.monotonic() - self.t_start)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.02)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self._end is not None:
            return
        for target in (lambda: os.killpg(self.pid, sig), lambda: os.kill(self.pid, sig)):
            try:
                target()
                break
            except (ProcessLookupError, PermissionError):
                continue
        if sig == signal.SIGKILL:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self._end = ChildEnd("killed", seconds=time.monotonic() - self.t_start)

    def stop(self, grace: float = 2.0) -> ChildEnd:
        """SIGTERM, then SIGKILL after ``grace`` s."""
        if self.poll() is None:
            self.kill(signal.SIGTERM)
            end = self.wait(grace)
            return end
        return self._end  # type: ignore[return-value]

    def tail(self, n: int = 4000) -> str:
        try:
            data = self.log.read_bytes()
        except OSError:
            return ""
        return data[-n:].decode(errors="replace")


def fork_call(fn: Callable[..., Any], args: Sequence[Any], log: Path, timeout: float,
              **kw: Any) -> ChildEnd:
    return Forked(fn, args, log, **kw).wait(timeout)


# -- clients -------------------------------------------------------------------

OUTPUT_CAP = 256 * 1024      # a client writing more than this is runaway
RUNAWAY_AT_DEADLINE = 32 * 1024  # killed at the deadline having written this much
ClientEnd = Ended


def run_client(argv: Sequence[str], timeout: float, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> ClientEnd:
    """Run a client to completion under ``timeout`` with its output capped."""
    return run_bounded(argv, timeout, env=env, cwd=cwd or REPO, cap=OUTPUT_CAP, keep=16000,
                       group=True)


# -- the simulator and the backend ---------------------------------------------

def start_sim(root: Path, guests: Sequence[int], log_level: str = "warning") -> Sub:
    sim_dir = root / "sim"
    (sim_dir / "ready").unlink(missing_ok=True)
    args = [*CLI, "--log-level", log_level, "sim", "--dir", str(sim_dir)]
    for g in guests:
        args += ["--guest", str(g)]
    sub = Sub(args, root / "logs" / "sim.log")
    deadline = time.monotonic() + 20
    while not (sim_dir / "ready").exists():
        if not sub.alive or time.monotonic() > deadline:
            sub.stop(kill=True)
            raise RuntimeError(f"pvplug sim did not start:\n{sub.tail()}")
        time.sleep(0.02)
    return sub


def xs_state(sim_dir: Path, path: str, domid: int = 0) -> str | None:
    """Read one node with xenstore-read (a short-lived process: no handle here)."""
    try:
        r = subprocess.run(["xenstore-read", path], capture_output=True, timeout=5,
                           env={**os.environ,
                                "XENSTORED_PATH": str(sim_dir / f"dom{domid}" / "xenstored")})
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return r.stdout.decode(errors="replace").rstrip("\n")


def wait_states(sim_dir: Path, paths: Sequence[str], want: set[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if all(xs_state(sim_dir, p) in want for p in paths):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
