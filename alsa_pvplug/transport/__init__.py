"""Transports: the real Xen libraries (``xen``) or the simulated hypervisor (``sim``).

Rule: this package only chooses; the implementations are imported on demand
so that choosing ``sim`` never needs Xen and neither needs the other.

A third transport, ``memory`` (:class:`.memory.MemoryTransport`), joins a
frontend and a backend in one process for tests.  It is not offered here,
nor as the plugin's ``transport`` option: it needs the
:class:`~alsa_pvplug.sim.memory.MemoryHypervisor` object both peers share,
so it is constructed directly.
"""

from __future__ import annotations

import os

from ..errors import ConfigError
from .base import Transport

__all__ = ["KINDS", "open_transport"]

KINDS = ("sim", "xen")


def open_transport(kind: str, *, sim_dir: str | os.PathLike[str] | None = None,
                   domid: int | None = None, role: str = "frontend") -> Transport:
    """Open the transport ``kind`` for this process.

    Parameters
    ----------
    kind
        ``"xen"`` (real libxen*) or ``"sim"`` (the simulated hypervisor).
    sim_dir
        The simulator's directory; required for ``"sim"``.
    domid
        Our domain id; required for ``"sim"``, read from xenstore for ``"xen"``
        when None.
    role
        ``"frontend"`` or ``"backend"``: which devices ``"xen"`` checks for.

    Raises
    ------
    ConfigError
        Unknown ``kind``, or ``"sim"`` without ``sim_dir``/``domid`` (EINVAL).
    XenError
        The transport could not be opened.
    """
    if kind == "sim":
        if sim_dir is None:
            raise ConfigError("transport 'sim' needs sim_dir", key="sim_dir", value=sim_dir)
        if domid is None:
            raise ConfigError("transport 'sim' needs domid", key="domid", value=domid)
        from .sim import SimTransport

        return SimTransport(sim_dir, domid)
    if kind == "xen":
        from .xen import XenTransport

        return XenTransport(domid, role=role)
    raise ConfigError(f"unknown transport {kind!r} (expected one of {', '.join(KINDS)})",
                      key="transport", value=kind)
