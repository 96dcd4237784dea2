"""The ``memory`` transport: peers joined in one process through a
:class:`~alsa_pvplug.sim.memory.MemoryHypervisor`.

Rule 1: each class stands for one libxen* handle and each method forwards
to the hypervisor call named after the C function; the hypervisor raises
the :class:`~alsa_pvplug.errors.XenError` (same errno as the ``sim``
transport).  The only translations are the interface's own, as in
:class:`~alsa_pvplug.transport.xenstore.LibXenStore`: ENOENT from read and
directory is None, from rm success; EAGAIN from a commit is False.

Rule 2: no compiled code.  Pages are ``bytearray`` s, ring indices go
through the pure-Python :class:`~alsa_pvplug.protocol.ring.BufferIndexOps`
(the GIL orders the two peers' accesses; each load and store is one
``struct`` call, never torn), and every ``fileno()`` is an eventfd, so the
frontend's and the backend's ``select`` loops run unchanged.

Not one of the plugin's transports (``open_transport``): it needs the
hypervisor object, so build it directly::

    hv = MemoryHypervisor()
    for domid in (0, 1):
        hv.add_domain(domid)
        create_domain(hv, domid, f"dom{domid}")
    create_vsnd(hv, 1, 0)
    backend = Backend(MemoryTransport(hv, 0), sink, source)   # run() in a thread
    card = Card.open(MemoryTransport(hv, 1))
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from ..errors import XenError
from ..protocol.ring import BufferIndexOps, IndexOps
from ..sim.memory import EvtHandle, GntHandle, MemoryHypervisor, XsHandle
from .base import EventChannel, GrantMapper, GrantSharer, SharedPages, Transport, XenStore


class MemorySharedPages(SharedPages):
    """Pages shared through, or mapped from, the memory hypervisor."""

    def __init__(self, refs: list[int], buf: memoryview, writable: bool = True) -> None:
        self.refs = refs
        self.buf = buf
        self.writable = writable
        self.live = True


class MemoryXenStore(XenStore):
    """xs_* on the memory hypervisor: one connection of domain ``domid``."""

    def __init__(self, hv: MemoryHypervisor, domid: int) -> None:
        self._hv = hv
        self._h: XsHandle = hv.xs_open(domid)

    def read(self, path: str, tx: int = 0) -> str | None:
        try:
            return self._hv.xs_read(self._h, path, tx)
        except XenError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def write(self, path: str, value: str, tx: int = 0) -> None:
        self._hv.xs_write(self._h, path, value, tx)

    def mkdir(self, path: str, tx: int = 0) -> None:
        self._hv.xs_mkdir(self._h, path, tx)

    def rm(self, path: str, tx: int = 0) -> None:
        try:
            self._hv.xs_rm(self._h, path, tx)
        except XenError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def directory(self, path: str, tx: int = 0) -> list[str] | None:
        try:
            return self._hv.xs_directory(self._h, path, tx)
        except XenError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def get_permissions(self, path: str, tx: int = 0) -> list[tuple[int, str]]:
        return self._hv.xs_get_permissions(self._h, path, tx)

    def set_permissions(self, path: str, perms: Sequence[tuple[int, str]], tx: int = 0) -> None:
        self._hv.xs_set_permissions(self._h, path, perms, tx)

    def transaction_start(self) -> int:
        return self._hv.xs_transaction_start(self._h)

    def transaction_end(self, tx: int, abort: bool = False) -> bool:
        try:
            self._hv.xs_transaction_end(self._h, tx, abort)
        except XenError as exc:
            if exc.errno == errno.EAGAIN and not abort:
                return False
            raise
        return True

    def watch(self, path: str, token: str) -> None:
        self._hv.xs_watch(self._h, path, token)

    def unwatch(self, path: str, token: str) -> None:
        self._hv.xs_unwatch(self._h, path, token)

    def fileno(self) -> int:
        if self._h.closed:
            raise XenError("xs_fileno", errno.EBADF, "handle closed")
        return self._h.fd

    def check_watch(self) -> list[tuple[str, str]]:
        return self._hv.xs_check_watch(self._h)

    def wake(self) -> None:
        """Make :meth:`fileno` readable once with no event: a ``select`` loop
        waiting on it (``Backend.run`` in another thread) looks at its exit
        condition now.  Not part of the XenStore interface."""
        self._hv.xs_kick(self._h)

    def get_domain_path(self, domid: int) -> str:
        if type(domid) is not int or not 0 <= domid <= 0xFFFF:
            raise XenError("xs_get_domain_path", errno.EINVAL, str(domid))
        return f"/local/domain/{domid}"

    def close(self) -> None:
        """xs_close (idempotent)."""
        self._hv.xs_close(self._h)


class MemoryGrantSharer(GrantSharer):
    """xengntshr_*: pages are new ``bytearray`` s."""

    def __init__(self, hv: MemoryHypervisor, domid: int) -> None:
        self._hv = hv
        self._h: GntHandle = hv.gnt_open(domid, "xengntshr_open")
        self._shared: list[MemorySharedPages] = []

    def share_pages(self, domid: int, count: int, writable: bool = True) -> MemorySharedPages:
        refs, memory = self._hv.xengntshr_share_pages(self._h, domid, count, writable)
        pages = MemorySharedPages(refs, memoryview(memory))
        self._shared.append(pages)
        return pages

    def unshare(self, pages: SharedPages) -> None:
        if not isinstance(pages, MemorySharedPages) or not pages.live:
            return
        pages.live = False
        if pages in self._shared:
            self._shared.remove(pages)
        if not self._h.closed:
            self._hv.xengntshr_unshare(self._h, pages.refs)
        # The memory goes with the last view of it (a mapping stays valid).

    def close(self) -> None:
        """Close the handle: whatever is still shared is revoked."""
        self._hv.gnt_close(self._h)
        for pages in self._shared:
            pages.live = False
        self._shared.clear()


class MemoryGrantMapper(GrantMapper):
    """xengnttab_*: a mapping is a view of the granter's pages."""

    def __init__(self, hv: MemoryHypervisor, domid: int) -> None:
        self._hv = hv
        self._h: GntHandle = hv.gnt_open(domid, "xengnttab_open")
        self._mapped: list[MemorySharedPages] = []

    def map_domain_grant_refs(self, domid: int, refs: Sequence[int],
                              writable: bool = True) -> MemorySharedPages:
        refs = list(refs)
        buf = self._hv.xengnttab_map_domain_grant_refs(self._h, domid, refs, writable)
        pages = MemorySharedPages(refs, buf, bool(writable))
        self._mapped.append(pages)
        return pages

    def unmap(self, pages: SharedPages) -> None:
        """Drop the mapping (idempotent); views of it stay readable, as the
        sim's do, until the last one goes."""
        if not isinstance(pages, MemorySharedPages) or not pages.live:
            return
        pages.live = False
        if pages in self._mapped:
            self._mapped.remove(pages)

    def close(self) -> None:
        self._hv.gnt_close(self._h)
        for pages in list(self._mapped):
            self.unmap(pages)


class MemoryEventChannel(EventChannel):
    """xenevtchn_*: ports in the hypervisor, ``fileno()`` an eventfd that is
    readable while a port of this handle is pending and unmasked."""

    def __init__(self, hv: MemoryHypervisor, domid: int) -> None:
        self._hv = hv
        self._h: EvtHandle = hv.xenevtchn_open(domid)

    def fileno(self) -> int:
        if self._h.closed:
            raise XenError("xenevtchn_fd", errno.EBADF, "handle is closed")
        return self._h.fd

    def bind_unbound_port(self, remote_domid: int) -> int:
        return self._hv.xenevtchn_bind_unbound_port(self._h, remote_domid)

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        return self._hv.xenevtchn_bind_interdomain(self._h, remote_domid, remote_port)

    def notify(self, port: int) -> None:
        self._hv.xenevtchn_notify(self._h, port)

    def pending(self) -> int | None:
        return self._hv.xenevtchn_pending(self._h)

    def unmask(self, port: int) -> None:
        self._hv.xenevtchn_unmask(self._h, port)

    def unbind(self, port: int) -> None:
        self._hv.xenevtchn_unbind(self._h, port)

    def close(self) -> None:
        """Close the handle (idempotent); its ports close."""
        self._hv.xenevtchn_close(self._h)


class MemoryTransport(Transport):
    """Everything one peer of in-process domain ``domid`` can reach.

    Parameters
    ----------
    hv
        The hypervisor both peers share.
    domid
        Our domain (created with ``hv.add_domain``).

    Raises
    ------
    XenError
        ``xs_open`` with ENOENT when ``hv`` has no domain ``domid``.
    """

    kind = "memory"

    def __init__(self, hv: MemoryHypervisor, domid: int) -> None:
        self.hv = hv
        self.domid = domid
        self.xenstore: MemoryXenStore = MemoryXenStore(hv, domid)

    def open_grant_sharer(self) -> MemoryGrantSharer:
        return MemoryGrantSharer(self.hv, self.domid)

    def open_grant_mapper(self) -> MemoryGrantMapper:
        return MemoryGrantMapper(self.hv, self.domid)

    def open_event_channel(self) -> MemoryEventChannel:
        return MemoryEventChannel(self.hv, self.domid)

    def index_ops(self, buf: memoryview) -> IndexOps:
        return BufferIndexOps(buf)

