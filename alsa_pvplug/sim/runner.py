"""``pvplug sim``: the simulated hypervisor process.

One process, one selector loop: the xenstore daemon, the grant tables and
event channels, and the toolstack role that creates the domains and their
vsnd devices at start.  Other processes (the backend, ALSA clients) reach it
through the per-domain sockets under the sim directory:
``DIR/dom<N>/xenstored`` and ``DIR/dom<N>/hypervisor``.
"""

from __future__ import annotations

import logging
import os
import resource
import selectors
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from .hypervisor import HypervisorServer
from .toolstack import create_domain, create_vsnd
from .xenstored import XenstoredServer

logger = logging.getLogger(__name__)

READY_FILE = "ready"


def run_sim(sim_dir: str | os.PathLike[str], *, backend_domid: int = 0,
            guest_domids: Sequence[int] = (1,),
            vsnd: Sequence[Sequence[str]] | None = None,
            until: Callable[[], bool] = lambda: False) -> None:
    """Serve until SIGTERM/SIGINT or ``until()``.  Writes ``DIR/ready`` when
    every socket and device exists, and removes it on exit."""
    root = Path(sim_dir)
    root.mkdir(parents=True, exist_ok=True)
    # Grants and not yet fetched event channels are held as fds here.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 1 << 16) if hard != resource.RLIM_INFINITY else 1 << 16
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            logger.debug("could not raise RLIMIT_NOFILE to %d", want)
    (root / READY_FILE).unlink(missing_ok=True)
    xenstored = XenstoredServer(root)
    hypervisor = HypervisorServer(root)
    stopping = False

    def stop(_sig: int, _frm: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    sel = selectors.DefaultSelector()
    try:
        for domid in (backend_domid, *guest_domids):
            xenstored.add_domain(domid)
            hypervisor.add_domain(domid)
            create_domain(xenstored, domid, "Domain-0" if domid == 0 else f"guest{domid}")
        for guest in guest_domids:
            create_vsnd(xenstored, guest, backend_domid, vsnd)
        xenstored.register(sel)
        hypervisor.register(sel)
        (root / READY_FILE).write_text(f"{os.getpid()}\n")
        logger.info("simulated hypervisor ready in %s", root)
        while not stopping and not until():
            for key, mask in sel.select(0.5):
                key.data(mask)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        (root / READY_FILE).unlink(missing_ok=True)
        sel.close()
        hypervisor.close()
        xenstored.close()
