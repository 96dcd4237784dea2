"""The transport interface: grants, event channels, xenstore.

Rule: each method is one hypervisor/library operation, named after the C
function it stands for (``xenevtchn_notify`` -> ``EventChannel.notify``).
It raises :class:`~alsa_pvplug.errors.XenError` with the errno and makes no
decisions.  Three implementations: ``xen`` (the real libraries), ``sim``
(the simulated hypervisor in :mod:`alsa_pvplug.sim`) and ``memory`` (peers
joined in one process, :mod:`alsa_pvplug.transport.memory`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..protocol.ring import IndexOps

PAGE_SIZE = 4096

T = TypeVar("T")


class SharedPages(abc.ABC):
    """Pages this domain shares (gntshr) or maps (gnttab): one contiguous range.

    ``buf`` is a writable (or, for a read-only mapping, read-only) memoryview
    of ``len(refs) * 4096`` bytes; ``refs`` are the grant references.
    """

    refs: list[int]
    buf: memoryview

    @property
    def count(self) -> int:
        return len(self.refs)


class GrantSharer(abc.ABC):
    """xengntshr_*: grant our own pages to another domain (frontend side)."""

    @abc.abstractmethod
    def share_pages(self, domid: int, count: int, writable: bool = True) -> SharedPages:
        """Allocate ``count`` zeroed pages, grant each to ``domid``."""

    @abc.abstractmethod
    def unshare(self, pages: SharedPages) -> None:
        """Revoke the grants and release the memory (idempotent)."""

    @abc.abstractmethod
    def close(self) -> None: ...


class GrantMapper(abc.ABC):
    """xengnttab_*: map pages another domain granted us (backend side)."""

    @abc.abstractmethod
    def map_domain_grant_refs(self, domid: int, refs: Sequence[int],
                              writable: bool = True) -> SharedPages:
        """Map ``refs`` granted by ``domid`` into one contiguous range."""

    @abc.abstractmethod
    def unmap(self, pages: SharedPages) -> None:
        """Unmap (idempotent)."""

    @abc.abstractmethod
    def close(self) -> None: ...


class EventChannel(abc.ABC):
    """xenevtchn_*: one handle, many ports, one pollable fd.

    Protocol as in Linux's /dev/xen/evtchn: when a port fires it is masked
    and reported once by :meth:`pending`; it fires again only after
    :meth:`unmask` (notifications while masked are latched, not lost).
    """

    @abc.abstractmethod
    def fileno(self) -> int:
        """Readable when :meth:`pending` has a port to report."""

    @abc.abstractmethod
    def bind_unbound_port(self, remote_domid: int) -> int:
        """A new local port that ``remote_domid`` (and only it) may bind to."""

    @abc.abstractmethod
    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        """Connect a new local port to ``remote_port`` of ``remote_domid``."""

    @abc.abstractmethod
    def notify(self, port: int) -> None: ...

    def native_notify(self, port: int) -> tuple[Any, int, Any, int, Any] | None:
        """What C needs to notify ``port`` without Python: the simulator's
        ``pvplug_evtchn_notify`` arguments (epoch word, epoch, peer word,
        peer fd) and an object to hold while C may use them; None where
        only :meth:`notify` can (real Xen, in memory)."""
        return None

    @abc.abstractmethod
    def pending(self) -> int | None:
        """The next fired port (now masked), or None if none is waiting.

        Never blocks: call it when :meth:`fileno` polls readable.
        """

    @abc.abstractmethod
    def unmask(self, port: int) -> None: ...

    @abc.abstractmethod
    def unbind(self, port: int) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class XenStore(abc.ABC):
    """xs_*: one connection to xenstored.  ``tx`` = 0 means no transaction.

    Paths may be absolute or relative to the caller's domain path.
    """

    @abc.abstractmethod
    def read(self, path: str, tx: int = 0) -> str | None:
        """The value, or None when the node does not exist (ENOENT)."""

    @abc.abstractmethod
    def write(self, path: str, value: str, tx: int = 0) -> None: ...

    @abc.abstractmethod
    def mkdir(self, path: str, tx: int = 0) -> None: ...

    @abc.abstractmethod
    def rm(self, path: str, tx: int = 0) -> None:
        """Remove the subtree; a missing node is not an error."""

    @abc.abstractmethod
    def directory(self, path: str, tx: int = 0) -> list[str] | None:
        """Child names, or None when the node does not exist."""

    @abc.abstractmethod
    def get_permissions(self, path: str, tx: int = 0) -> list[tuple[int, str]]:
        """[(domid, "n"|"r"|"w"|"b"), ...]; the first entry is the owner."""

    @abc.abstractmethod
    def set_permissions(self, path: str, perms: Sequence[tuple[int, str]], tx: int = 0) -> None: ...

    @abc.abstractmethod
    def transaction_start(self) -> int: ...

    @abc.abstractmethod
    def transaction_end(self, tx: int, abort: bool = False) -> bool:
        """True if committed; False if the commit lost a race (EAGAIN)."""

    @abc.abstractmethod
    def watch(self, path: str, token: str) -> None: ...

    @abc.abstractmethod
    def unwatch(self, path: str, token: str) -> None: ...

    @abc.abstractmethod
    def fileno(self) -> int:
        """Readable when :meth:`check_watch` may return events."""

    @abc.abstractmethod
    def check_watch(self) -> list[tuple[str, str]]:
        """All queued watch events as (path, token); never blocks."""

    @abc.abstractmethod
    def get_domain_path(self, domid: int) -> str: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def transact(self, body: Callable[[int], T], attempts: int = 16) -> T:
        """Run ``body(tx)`` in a transaction, retrying the whole body on EAGAIN."""
        import errno

        from ..errors import XenError

        for _ in range(attempts):
            tx = self.transaction_start()
            try:
                result = body(tx)
            except BaseException:
                self.transaction_end(tx, abort=True)
                raise
            if self.transaction_end(tx):
                return result
        raise XenError("xs_transaction_end", errno.EAGAIN, f"gave up after {attempts} attempts")

    def read_tree(self, base: str, branch: Callable[[str], bool] | None = None
                  ) -> dict[str, str]:
        """Every node below ``base`` as {path relative to base: value}.

        ``branch(name)`` says whether a node may have children; the others
        are not listed (a round trip each, to a xenstored that may be busy)."""
        tree: dict[str, str] = {}

        def walk(rel: str) -> None:
            for child in self.directory(f"{base}/{rel}" if rel else base) or []:
                sub = f"{rel}/{child}" if rel else child
                value = self.read(f"{base}/{sub}")
                if value is not None:
                    tree[sub] = value
                if branch is None or branch(child):
                    walk(sub)

        walk("")
        return tree


class Transport(abc.ABC):
    """What one process of one domain can reach: its xenstore and factories."""

    kind: str
    domid: int
    xenstore: XenStore

    @abc.abstractmethod
    def open_grant_sharer(self) -> GrantSharer: ...

    @abc.abstractmethod
    def open_grant_mapper(self) -> GrantMapper: ...

    @abc.abstractmethod
    def open_event_channel(self) -> EventChannel: ...

    @abc.abstractmethod
    def index_ops(self, buf: memoryview) -> IndexOps:
        """How the rings on ``buf`` (a page this transport shared or mapped)
        load and store their indices and order memory around them: in C for
        pages another process or domain may map (sim, xen), plain Python
        where the peers are threads of one process (memory)."""

    def bound_kernel_driver(self, devtype: str, devid: int) -> str | None:
        """The guest kernel driver that owns this xenbus device, or None.

        Only real Xen has one (e.g. Linux snd_xen_front on ``vsnd``); a device
        it owns must not be driven from userspace too.
        """
        return None

    def close(self) -> None:
        self.xenstore.close()
