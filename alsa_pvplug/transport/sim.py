"""Client side of the simulated hypervisor (:mod:`alsa_pvplug.sim.hypervisor`).

Rule 1: each class stands for one libxen* handle and each method for one C
function; failures raise :class:`~alsa_pvplug.errors.XenError` named after
that function, with the errno the simulator (or the socket) gave.

Rule 2: no call waits on the simulator for longer than :data:`TIMEOUT`
seconds; a dead or wedged simulator gives ``ETIMEDOUT``/``ECONNRESET``, never
a hang.  After such an error the handle's connection is dropped, because a
late reply would otherwise be read as the answer to the next request.

Rule 3: replies are untrusted input too: a malformed one is ``EPROTO``.
"""

from __future__ import annotations

import errno
import json
import logging
import mmap
import os
import pathlib
import socket
import struct
import threading
from typing import Any, Sequence

from ..errors import XenError
from .base import PAGE_SIZE, EventChannel, GrantMapper, GrantSharer, SharedPages, Transport

logger = logging.getLogger(__name__)

#: Seconds any request may wait for the simulator's reply.
TIMEOUT = 5.0
#: Matches the server's bound on one message.
MAX_MESSAGE = 128 * 1024
#: The server's bound on pages per share/map call.
MAX_PAGES_PER_CALL = 4096

_PORT = struct.Struct("<I")


def hypervisor_socket(sim_dir: str | os.PathLike[str], domid: int) -> pathlib.Path:
    """Path of domain ``domid``'s hypervisor socket under ``sim_dir``."""
    return pathlib.Path(sim_dir) / f"dom{domid}" / "hypervisor"


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class _Control:
    """One request/reply connection to the simulator (one request at a time)."""

    def __init__(self, path: str | os.PathLike[str], open_func: str) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(self.path)
        except socket.timeout:
            sock.close()
            raise XenError(open_func, errno.ETIMEDOUT, f"connecting to {self.path}") from None
        except OSError as exc:
            sock.close()
            raise XenError(open_func, exc.errno or errno.EIO,
                           f"simulated hypervisor at {self.path}") from None
        self._sock: socket.socket | None = sock

    @property
    def closed(self) -> bool:
        return self._sock is None

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _lost(self, func: str, code: int, detail: str) -> XenError:
        # Called with the lock held: drop the connection, it is out of sync.
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return XenError(func, code, detail)

    def call(self, func: str, req: dict[str, Any], fds: Sequence[int] = (),
             max_fds: int = 0) -> tuple[dict[str, Any], list[int]]:
        """Send ``req`` (+ ``fds``), return (reply, received fds); raise XenError."""
        data = json.dumps(req, separators=(",", ":")).encode()
        with self._lock:
            sock = self._sock
            if sock is None:
                raise XenError(func, errno.EBADF, "handle is closed")
            try:
                if fds:
                    socket.send_fds(sock, [data], list(fds))
                else:
                    sock.send(data)
                msg, rfds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, max(max_fds, 1),
                                                      socket.MSG_CMSG_CLOEXEC)
            except socket.timeout:
                raise self._lost(func, errno.ETIMEDOUT,
                                 f"no reply from the simulated hypervisor within {TIMEOUT:g} s"
                                 ) from None
            except OSError as exc:
                raise self._lost(func, exc.errno or errno.EIO,
                                 "connection to the simulated hypervisor failed") from None
            if not msg:
                _close_fds(rfds)
                raise self._lost(func, errno.ECONNRESET, "simulated hypervisor closed the connection")
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                _close_fds(rfds)
                raise self._lost(func, errno.EPROTO, "oversized reply")
        try:
            reply = json.loads(msg)
        except (ValueError, UnicodeDecodeError):
            reply = None
        if not isinstance(reply, dict):
            _close_fds(rfds)
            raise XenError(func, errno.EPROTO, "malformed reply")
        if "errno" in reply:
            _close_fds(rfds)
            code = reply["errno"]
            if type(code) is not int or not 0 < code < 4096:
                raise XenError(func, errno.EPROTO, f"bad errno in reply: {code!r}")
            detail = reply.get("detail")
            raise XenError(func, code, detail if isinstance(detail, str) else "")
        if reply.get("ok") is not True or len(rfds) > max_fds:
            _close_fds(rfds)
            raise XenError(func, errno.EPROTO, "malformed reply")
        return reply, rfds


def _check_domid(func: str, domid: int) -> None:
    if type(domid) is not int or not 0 <= domid < 0x7FF0:
        raise XenError(func, errno.EINVAL, f"bad domid {domid!r}")


class SimSharedPages(SharedPages):
    """Pages this process shares: a memfd mapped with Python's mmap."""

    def __init__(self, refs: list[int], mm: mmap.mmap) -> None:
        self.refs = refs
        self._mmap: mmap.mmap | None = mm
        self.buf = memoryview(mm)


class SimMappedPages(SharedPages):
    """Pages granted by another domain, mapped into one contiguous range."""

    def __init__(self, refs: list[int], base: Any, writable: bool) -> None:
        from .._native import ffi

        self.refs = refs
        self._base: Any = base
        self.writable = writable
        # ffi.buffer keeps ``base`` (an ffi.gc pointer) alive: the pages stay
        # mapped while any view of them exists.
        buf = memoryview(ffi.buffer(base, len(refs) * PAGE_SIZE))
        # A read-only view so Python code gets TypeError instead of SIGSEGV.
        self.buf = buf if writable else buf.toreadonly()


class SimGrantSharer(GrantSharer):
    """xengntshr_* against the simulator: pages are memfds handed over by SCM_RIGHTS.

    Parameters
    ----------
    path
        The domain's hypervisor socket (``sim_dir/dom<N>/hypervisor``).

    Raises
    ------
    XenError
        ``xengntshr_open`` with ENOENT/ECONNREFUSED when no simulator listens.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._ctl = _Control(path, "xengntshr_open")
        self._shared: list[SimSharedPages] = []

    def share_pages(self, domid: int, count: int, writable: bool = True) -> SimSharedPages:
        func = "xengntshr_share_pages"
        _check_domid(func, domid)
        if type(count) is not int or not 1 <= count <= MAX_PAGES_PER_CALL:
            raise XenError(func, errno.EINVAL, f"bad page count {count!r}")
        size = count * PAGE_SIZE
        fd = os.memfd_create("pvplug-grant", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            # Map before handing it over: for a read-only grant the simulator
            # seals the memfd against new writable mappings.
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                reply, _ = self._ctl.call(func, {"op": "share", "domid": domid, "count": count,
                                                 "writable": bool(writable)}, fds=[fd])
                refs = reply.get("refs")
                if (not isinstance(refs, list) or len(refs) != count
                        or any(type(r) is not int for r in refs)):
                    raise XenError(func, errno.EPROTO, "malformed refs in reply")
            except BaseException:
                mm.close()
                raise
        finally:
            os.close(fd)
        pages = SimSharedPages(refs, mm)
        self._shared.append(pages)
        return pages

    def unshare(self, pages: SharedPages) -> None:
        if not isinstance(pages, SimSharedPages) or pages._mmap is None:
            return
        mm, pages._mmap = pages._mmap, None
        if pages in self._shared:
            self._shared.remove(pages)
        if not self._ctl.closed:
            self._ctl.call("xengntshr_unshare", {"op": "unshare", "refs": pages.refs})
        # The grant is revoked; the memory itself goes with the last Python
        # reference.  Closing the mmap here would leave views (a ring's index
        # accessor, say) pointing at unmapped memory: a crash, not an error.
        del mm

    def close(self) -> None:
        """Close the handle; the simulator revokes whatever is still shared."""
        self._ctl.close()  # first, so unshare() below skips the round trips
        for pages in list(self._shared):
            self.unshare(pages)


class SimGrantMapper(GrantMapper):
    """xengnttab_* against the simulator: fds from SCM_RIGHTS, mapped contiguously."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._ctl = _Control(path, "xengnttab_open")
        self._mapped: list[SimMappedPages] = []

    def map_domain_grant_refs(self, domid: int, refs: Sequence[int],
                              writable: bool = True) -> SimMappedPages:
        from .._native import ffi, lib

        func = "xengnttab_map_domain_grant_refs"
        _check_domid(func, domid)
        refs = list(refs)
        if (not 1 <= len(refs) <= MAX_PAGES_PER_CALL
                or any(type(r) is not int or not 0 <= r <= 0xFFFFFFFF for r in refs)):
            raise XenError(func, errno.EINVAL, "bad refs")
        reply, fds = self._ctl.call(func, {"op": "map", "domid": domid, "refs": refs,
                                           "writable": bool(writable)}, max_fds=253)
        try:
            pages = reply.get("pages")
            if (not isinstance(pages, list) or len(pages) != len(refs)
                    or not all(isinstance(p, list) and len(p) == 2
                               and type(p[0]) is int and 0 <= p[0] < len(fds)
                               and type(p[1]) is int and p[1] >= 0 and p[1] % PAGE_SIZE == 0
                               for p in pages)):
                raise XenError(func, errno.EPROTO, "malformed pages in reply")
            base = lib.pvplug_reserve_pages(len(refs))
            if base == ffi.NULL:
                raise XenError(func, ffi.errno or errno.ENOMEM, "reserving address space")
            for i, (fd_index, offset) in enumerate(pages):
                if lib.pvplug_map_page_at(base, i, fds[fd_index], offset, int(bool(writable))):
                    code = ffi.errno or errno.EIO
                    lib.pvplug_unmap_pages(base, len(refs))
                    raise XenError(func, code, f"mapping ref {refs[i]}")
        finally:
            _close_fds(fds)  # the mappings hold their own references
        # Unmapped when the last view of it dies (see unmap).
        base = ffi.gc(base, lambda p, n=len(refs): lib.pvplug_unmap_pages(p, n))
        mapped = SimMappedPages(refs, base, bool(writable))
        self._mapped.append(mapped)
        return mapped

    def unmap(self, pages: SharedPages) -> None:
        """Drop the mapping (idempotent).  The pages are unmapped once no view
        of ``pages.buf`` is left, so a stale view reads old data instead of
        crashing the process; the grant side no longer sees it as ours."""
        if not isinstance(pages, SimMappedPages) or pages._base is None:
            return
        pages._base = None
        if pages in self._mapped:
            self._mapped.remove(pages)

    def close(self) -> None:
        self._ctl.close()
        for pages in list(self._mapped):
            try:
                self.unmap(pages)
            except XenError as exc:
                logger.warning("closing grant mapper: %s", exc)


class SimEventChannel(EventChannel):
    """xenevtchn_* against the simulator.

    Requests travel on a control connection; fired ports arrive on a separate
    notification socket (handed over at open), which is what :meth:`fileno`
    returns.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._ctl = _Control(path, "xenevtchn_open")
        try:
            _, fds = self._ctl.call("xenevtchn_open", {"op": "evtchn_open"}, max_fds=1)
            if len(fds) != 1:
                raise XenError("xenevtchn_open", errno.EPROTO, "no notification fd in reply")
            notify = socket.socket(fileno=fds[0])
        except BaseException:
            self._ctl.close()
            raise
        notify.setblocking(False)
        self._notify: socket.socket | None = notify

    def fileno(self) -> int:
        if self._notify is None:
            raise XenError("xenevtchn_fd", errno.EBADF, "handle is closed")
        return self._notify.fileno()

    def _port_reply(self, func: str, req: dict[str, Any]) -> int:
        reply, _ = self._ctl.call(func, req)
        port = reply.get("port")
        if type(port) is not int or not 0 < port <= 0xFFFFFFFF:
            raise XenError(func, errno.EPROTO, f"bad port in reply: {port!r}")
        return port

    def bind_unbound_port(self, remote_domid: int) -> int:
        func = "xenevtchn_bind_unbound_port"
        _check_domid(func, remote_domid)
        return self._port_reply(func, {"op": "bind_unbound_port", "remote_domid": remote_domid})

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        func = "xenevtchn_bind_interdomain"
        _check_domid(func, remote_domid)
        if type(remote_port) is not int or not 0 <= remote_port <= 0xFFFFFFFF:
            raise XenError(func, errno.EINVAL, f"bad port {remote_port!r}")
        return self._port_reply(func, {"op": "bind_interdomain", "remote_domid": remote_domid,
                                       "remote_port": remote_port})

    def _port_op(self, func: str, op: str, port: int) -> None:
        if type(port) is not int or not 0 <= port <= 0xFFFFFFFF:
            raise XenError(func, errno.EINVAL, f"bad port {port!r}")
        self._ctl.call(func, {"op": op, "port": port})

    def notify(self, port: int) -> None:
        self._port_op("xenevtchn_notify", "notify", port)

    def unmask(self, port: int) -> None:
        self._port_op("xenevtchn_unmask", "unmask", port)

    def unbind(self, port: int) -> None:
        self._port_op("xenevtchn_unbind", "unbind", port)

    def pending(self) -> int | None:
        func = "xenevtchn_pending"
        if self._notify is None:
            raise XenError(func, errno.EBADF, "handle is closed")
        try:
            data = self._notify.recv(16)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise XenError(func, exc.errno or errno.EIO) from None
        if not data:
            # EOF keeps fileno() readable: report it instead of spinning on None.
            raise XenError(func, errno.ECONNRESET, "simulated hypervisor went away")
        if len(data) != _PORT.size:
            raise XenError(func, errno.EPROTO, "malformed notification")
        return int(_PORT.unpack(data)[0])

    def close(self) -> None:
        """Close the handle (idempotent); the simulator closes its ports."""
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        self._ctl.close()


class SimTransport(Transport):
    """Everything one process of simulated domain ``domid`` can reach.

    Parameters
    ----------
    sim_dir
        The simulator's directory (``dom<N>/hypervisor``, ``dom<N>/xenstored``).
    domid
        Our domain.
    """

    kind = "sim"

    def __init__(self, sim_dir: str | os.PathLike[str], domid: int) -> None:
        # Imported here so the grant/evtchn classes work without the xenstore client.
        from .xenstore import LibXenStore

        self.sim_dir = pathlib.Path(sim_dir)
        self.domid = domid
        self.hypervisor_path = hypervisor_socket(self.sim_dir, domid)
        self.xenstore = LibXenStore.open(str(self.sim_dir / f"dom{domid}" / "xenstored"))

    def open_grant_sharer(self) -> SimGrantSharer:
        return SimGrantSharer(self.hypervisor_path)

    def open_grant_mapper(self) -> SimGrantMapper:
        return SimGrantMapper(self.hypervisor_path)

    def open_event_channel(self) -> SimEventChannel:
        return SimEventChannel(self.hypervisor_path)
