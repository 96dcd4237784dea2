"""Event-channel notify -> peer wake latency on the simulated hypervisor,
against a plain eventfd ping-pong between two processes, in the same run.

    .venv/bin/python bench/notify_latency.py [--rounds N] [--blocks K] [--package-dir DIR]

Starts a ``HypervisorServer`` (domains 0 and 1) in a child process and two
more children: a frontend (domain 1) and a backend (domain 0), each with its
own ``SimEventChannel``.  The frontend binds an unbound port, the backend
binds to it.  One round: the frontend notifies; the backend wakes (select on
``fileno()``, ``pending()``, ``unmask()``), notifies back and drains
``pending()`` to None; the frontend wakes the same way.  The same two
processes also run an eventfd ping-pong (select, read, write back).  The two
kinds alternate in blocks so that both see the same machine load.

Prints median, p99 and max of one-way wake latency (round trip / 2) for both,
and the ratio simulator / eventfd against the target (<= 2x).  With
``--package-dir DIR`` the children import ``DIR/alsa_pvplug`` (A/B a change;
``DIR`` needs its ``_native`` built, e.g. ``python pvplug_build.py`` in it).
Every child runs under an alarm and is killed at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TARGET = 2.0
#: Seconds any child may live, and any reply may take.
CHILD_LIFETIME = 600
REPLY_TIMEOUT = 120.0
WAKE_TIMEOUT = 5.0


# -- children ------------------------------------------------------------------

def _child_setup() -> None:
    # PR_SET_PDEATHSIG: if the runner dies, the children go too.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def child_sim(sim_dir: str) -> None:
    import selectors

    from alsa_pvplug.sim.hypervisor import HypervisorServer

    srv = HypervisorServer(Path(sim_dir))
    for domid in (0, 1):
        srv.add_domain(domid)
    sel = selectors.DefaultSelector()
    srv.register(sel)
    running = [True]

    def on_stdin(mask: int) -> None:
        if not os.read(sys.stdin.fileno(), 64):
            running[0] = False

    sel.register(sys.stdin, selectors.EVENT_READ, on_stdin)
    print(json.dumps({"ready": True}), flush=True)
    while running[0]:
        for key, mask in sel.select(1.0):
            key.data(mask)
    srv.close()


class _Waiter:
    """Waits for one event at a time, the way ``Card.process`` handles them:
    ``pending()`` (the port comes masked), ``unmask()``, and after the
    answer, ``pending()`` until None.  A port that drain finds is the next
    event already (the peer was quick): it is counted, not lost."""

    def __init__(self, evt: Any) -> None:
        self.evt = evt
        self.fd = evt.fileno()
        self.early = 0

    def wait(self) -> None:
        if self.early:
            self.early -= 1
            return
        while True:
            if not select.select([self.fd], [], [], WAKE_TIMEOUT)[0]:
                raise TimeoutError("no event within the wake timeout")
            port = self.evt.pending()
            if port is not None:
                self.evt.unmask(port)
                return

    def drain(self) -> None:
        while (port := self.evt.pending()) is not None:
            self.evt.unmask(port)
            self.early += 1


def _wait_efd(fd: int) -> None:
    if not select.select([fd], [], [], WAKE_TIMEOUT)[0]:
        raise TimeoutError("no eventfd wake within the wake timeout")
    os.eventfd_read(fd)


def child_peer(sim_dir: str, domid: int, efd_in: int, efd_out: int) -> None:
    """One domain's process: answers JSON commands on stdin, one reply each."""
    from alsa_pvplug.transport.sim import SimEventChannel, hypervisor_socket

    evt = SimEventChannel(hypervisor_socket(sim_dir, domid))
    waiter = _Waiter(evt)
    port = -1
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        out: dict[str, Any] = {}
        if op == "unbound":
            port = evt.bind_unbound_port(cmd["remote"])
            out["port"] = port
        elif op == "bind":
            port = evt.bind_interdomain(cmd["remote"], cmd["port"])
            out["port"] = port
        elif op == "evtchn_ping":
            rtt = []
            for _ in range(cmd["rounds"]):
                t0 = time.perf_counter_ns()
                evt.notify(port)
                waiter.wait()
                rtt.append(time.perf_counter_ns() - t0)
                waiter.drain()
            out["rtt_ns"] = rtt
        elif op == "evtchn_echo":
            # Tell the runner we are about to wait, then answer every round.
            print(json.dumps({"started": True}), flush=True)
            for _ in range(cmd["rounds"]):
                waiter.wait()
                evt.notify(port)
                waiter.drain()
        elif op == "efd_ping":
            rtt = []
            for _ in range(cmd["rounds"]):
                t0 = time.perf_counter_ns()
                os.eventfd_write(efd_out, 1)
                _wait_efd(efd_in)
                rtt.append(time.perf_counter_ns() - t0)
            out["rtt_ns"] = rtt
        elif op == "efd_echo":
            print(json.dumps({"started": True}), flush=True)
            for _ in range(cmd["rounds"]):
                _wait_efd(efd_in)
                os.eventfd_write(efd_out, 1)
        else:
            raise ValueError(op)
        print(json.dumps(out), flush=True)
    evt.close()


def child_main(argv: list[str]) -> None:
    signal.alarm(CHILD_LIFETIME)
    if argv[0] == "sim":
        child_sim(argv[1])
    else:
        child_peer(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))


# -- runner --------------------------------------------------------------------

class Child:
    """A child speaking JSON lines; ``stop()`` is idempotent and kills at the end."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path,
                 pass_fds: tuple[int, ...] = ()) -> None:
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=REPO,
            env=env, pass_fds=pass_fds, preexec_fn=_child_setup)
        self.log = log

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdout is not None
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            raise RuntimeError(f"no reply from child {self.proc.args[3]} within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(5)
            raise RuntimeError(f"child {self.proc.args[3]} died ({self.proc.returncode}):\n"
                               + self.log.read_text(errors="replace")[-3000:])
        return json.loads(line)

    def call(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.reply()

    def stop(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(5)
        except (subprocess.TimeoutExpired, OSError):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._log.close()


def _ping_pong(pinger: Child, echoer: Child, kind: str, rounds: int) -> list[float]:
    """One block of ``rounds`` round trips; returns one-way latencies in µs."""
    echoer.send(op=f"{kind}_echo", rounds=rounds)
    assert echoer.reply().get("started")
    rtt = pinger.call(op=f"{kind}_ping", rounds=rounds)["rtt_ns"]
    echoer.reply()
    return [ns / 2000.0 for ns in rtt]


def _stats(us: list[float]) -> dict[str, float]:
    s = sorted(us)
    return {"median": statistics.median(s), "p99": s[min(len(s) - 1, int(len(s) * 0.99))],
            "max": s[-1]}


def run(rounds: int, blocks: int, package_dir: str | None, workdir: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [p for p in (package_dir, str(REPO), env.get("PYTHONPATH")) if p])
    sim_dir = workdir / "sim"
    # Two eventfds: frontend -> backend and back.  Each child inherits both.
    to_back, to_front = os.eventfd(0), os.eventfd(0)
    children: list[Child] = []
    try:
        sim = Child(["sim", str(sim_dir)], env, workdir / "sim.log")
        children.append(sim)
        assert sim.reply().get("ready")
        front = Child(["peer", str(sim_dir), "1", str(to_front), str(to_back)], env,
                      workdir / "front.log", pass_fds=(to_back, to_front))
        children.append(front)
        back = Child(["peer", str(sim_dir), "0", str(to_back), str(to_front)], env,
                     workdir / "back.log", pass_fds=(to_back, to_front))
        children.append(back)
        port = front.call(op="unbound", remote=0)["port"]
        back.call(op="bind", remote=1, port=port)
        warm = max(50, rounds // 20)
        for kind in ("efd", "evtchn"):
            _ping_pong(front, back, kind, warm)
        samples: dict[str, list[float]] = {"efd": [], "evtchn": []}
        per_block = max(1, rounds // blocks)
        for _ in range(blocks):
            for kind in ("efd", "evtchn"):
                samples[kind] += _ping_pong(front, back, kind, per_block)
    finally:
        for child in reversed(children):
            child.stop()
        os.close(to_back)
        os.close(to_front)
    return {kind: _stats(us) for kind, us in samples.items()} | {
        "rounds": len(samples["efd"])}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5000, help="round trips per kind")
    ap.add_argument("--blocks", type=int, default=5,
                    help="alternate the two kinds in this many blocks")
    ap.add_argument("--package-dir", help="import alsa_pvplug from DIR (A/B)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pvplug-notify-") as tmp:
        res = run(args.rounds, args.blocks, args.package_dir, Path(tmp))
    efd, sim = res["efd"], res["evtchn"]
    print(f"notify -> peer wake, one way (round trip / 2), {res['rounds']} rounds each, µs")
    print(f"{'':28}{'median':>9}{'p99':>9}{'max':>9}")
    print(f"{'eventfd ping-pong':28}{efd['median']:9.1f}{efd['p99']:9.1f}{efd['max']:9.1f}")
    print(f"{'simulated event channel':28}{sim['median']:9.1f}{sim['p99']:9.1f}"
          f"{sim['max']:9.1f}")
    ratio = {k: sim[k] / efd[k] for k in ("median", "p99", "max")}
    print(f"{'ratio sim / eventfd':28}{ratio['median']:8.2f}x{ratio['p99']:8.2f}x"
          f"{ratio['max']:8.2f}x   target (median) <= {TARGET:g}x: "
          f"{'met' if ratio['median'] <= TARGET else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(res | {"ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
