"""The real transport: libxengnttab, libxenevtchn and libxenstore through cffi.

Rule 1: each method is one library call; ``NULL``/``-1`` becomes
:class:`~alsa_pvplug.errors.XenError` named after the C function, carrying
the errno the library left (``ffi.errno``).  No decisions are made here.

Rule 2: raw pointers become Python buffers at once (``ffi.buffer`` wrapped
in a memoryview) and a handle keeps its C pointer until :meth:`close`, which
is idempotent.

Prototypes: /usr/include/xengnttab.h and /usr/include/xenevtchn.h (Debian
libxen-dev).  This module needs a Xen guest (``/dev/xen/*``); on any other
machine :class:`XenTransport` fails at once with :func:`require`'s list of
what is missing.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
from collections.abc import Sequence
from typing import Any

from ..errors import XenError
from ..log import get_logger
from ..protocol.ring import IndexOps
from .base import PAGE_SIZE, EventChannel, GrantMapper, GrantSharer, SharedPages, Transport

logger = get_logger(__name__)

#: Devices a guest frontend needs (Linux xen-gntalloc, xen-evtchn).
GNTALLOC_DEVICE = "/dev/xen/gntalloc"
GNTDEV_DEVICE = "/dev/xen/gntdev"
EVTCHN_DEVICE = "/dev/xen/evtchn"
#: libxenstore tries the first, then the second (xs.c xs_domain_dev()).
XENBUS_DEVICES = ("/dev/xen/xenbus", "/proc/xen/xenbus")


def _native() -> tuple[Any, Any]:
    # Imported on use so that importing this module never needs the build.
    from .._native import ffi, lib

    return ffi, lib


def _error(func: str, detail: str = "") -> XenError:
    ffi, _ = _native()
    return XenError(func, ffi.errno or errno.EIO, detail)


def _check_domid(func: str, domid: int) -> None:
    if type(domid) is not int or not 0 <= domid < 0x7FF0:
        raise XenError(func, errno.EINVAL, f"bad domid {domid!r}")


class XenSharedPages(SharedPages):
    """Pages shared by xengntshr_share_pages or mapped by xengnttab_map_domain_grant_refs."""

    def __init__(self, refs: list[int], ptr: Any, writable: bool = True) -> None:
        ffi, _ = _native()
        self.refs = refs
        self._ptr: Any = ptr
        buf = memoryview(ffi.buffer(ffi.cast("char *", ptr), len(refs) * PAGE_SIZE))
        self.buf = buf if writable else buf.toreadonly()

    def _release(self) -> Any:
        """Take the pointer (None if already released) and drop our view."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            try:
                self.buf.release()
            except BufferError:
                logger.debug("views of refs %s outlive their pages", self.refs)
        return ptr


class XenGrantSharer(GrantSharer):
    """xengntshr_*: allocate our pages and grant them (needs /dev/xen/gntalloc)."""

    def __init__(self) -> None:
        ffi, lib = _native()
        handle = lib.xengntshr_open(ffi.NULL, 0)
        if handle == ffi.NULL:
            raise _error("xengntshr_open", GNTALLOC_DEVICE)
        self._h: Any = handle

    def _handle(self, func: str) -> Any:
        if self._h is None:
            raise XenError(func, errno.EBADF, "handle is closed")
        return self._h

    def share_pages(self, domid: int, count: int, writable: bool = True) -> XenSharedPages:
        func = "xengntshr_share_pages"
        ffi, lib = _native()
        _check_domid(func, domid)
        if type(count) is not int or count < 1:
            raise XenError(func, errno.EINVAL, f"bad page count {count!r}")
        refs = ffi.new("uint32_t[]", count)
        ptr = lib.xengntshr_share_pages(self._handle(func), domid, count, refs, int(bool(writable)))
        if ptr == ffi.NULL:
            raise _error(func)
        # Our own mapping of gntalloc pages is always read-write.
        return XenSharedPages([int(r) for r in refs], ptr, writable=True)

    def unshare(self, pages: SharedPages) -> None:
        _, lib = _native()
        if not isinstance(pages, XenSharedPages):
            return
        ptr = pages._release()
        if ptr is None:
            return
        if lib.xengntshr_unshare(self._handle("xengntshr_unshare"), ptr, len(pages.refs)):
            raise _error("xengntshr_unshare")

    def close(self) -> None:
        _, lib = _native()
        handle, self._h = self._h, None
        if handle is not None and lib.xengntshr_close(handle):
            logger.warning("xengntshr_close failed: %s", _error("xengntshr_close"))


class XenGrantMapper(GrantMapper):
    """xengnttab_*: map pages other domains granted us (needs /dev/xen/gntdev)."""

    def __init__(self) -> None:
        ffi, lib = _native()
        handle = lib.xengnttab_open(ffi.NULL, 0)
        if handle == ffi.NULL:
            raise _error("xengnttab_open", GNTDEV_DEVICE)
        self._h: Any = handle

    def _handle(self, func: str) -> Any:
        if self._h is None:
            raise XenError(func, errno.EBADF, "handle is closed")
        return self._h

    def map_domain_grant_refs(self, domid: int, refs: Sequence[int],
                              writable: bool = True) -> XenSharedPages:
        func = "xengnttab_map_domain_grant_refs"
        ffi, lib = _native()
        _check_domid(func, domid)
        refs = list(refs)
        if not refs or any(type(r) is not int or not 0 <= r <= 0xFFFFFFFF for r in refs):
            raise XenError(func, errno.EINVAL, "bad refs")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        c_refs = ffi.new("uint32_t[]", refs)
        ptr = lib.xengnttab_map_domain_grant_refs(self._handle(func), len(refs), domid,
                                                  c_refs, prot)
        if ptr == ffi.NULL:
            raise _error(func)
        return XenSharedPages(refs, ptr, writable=bool(writable))

    def unmap(self, pages: SharedPages) -> None:
        _, lib = _native()
        if not isinstance(pages, XenSharedPages):
            return
        ptr = pages._release()
        if ptr is None:
            return
        if lib.xengnttab_unmap(self._handle("xengnttab_unmap"), ptr, len(pages.refs)):
            raise _error("xengnttab_unmap")

    def close(self) -> None:
        _, lib = _native()
        handle, self._h = self._h, None
        if handle is not None and lib.xengnttab_close(handle):
            logger.warning("xengnttab_close failed: %s", _error("xengnttab_close"))


class XenEventChannel(EventChannel):
    """xenevtchn_*: one /dev/xen/evtchn handle."""

    def __init__(self) -> None:
        ffi, lib = _native()
        handle = lib.xenevtchn_open(ffi.NULL, 0)
        if handle == ffi.NULL:
            raise _error("xenevtchn_open", EVTCHN_DEVICE)
        fd = lib.xenevtchn_fd(handle)
        if fd < 0:
            exc = _error("xenevtchn_fd")
            lib.xenevtchn_close(handle)
            raise exc
        self._h: Any = handle
        self._fd = int(fd)

    def _handle(self, func: str) -> Any:
        if self._h is None:
            raise XenError(func, errno.EBADF, "handle is closed")
        return self._h

    def fileno(self) -> int:
        self._handle("xenevtchn_fd")
        return self._fd

    def _port(self, func: str, rc: int) -> int:
        if rc < 0:
            raise _error(func)
        return int(rc)

    def bind_unbound_port(self, remote_domid: int) -> int:
        func = "xenevtchn_bind_unbound_port"
        _, lib = _native()
        _check_domid(func, remote_domid)
        return self._port(func, lib.xenevtchn_bind_unbound_port(self._handle(func), remote_domid))

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        func = "xenevtchn_bind_interdomain"
        _, lib = _native()
        _check_domid(func, remote_domid)
        if type(remote_port) is not int or not 0 <= remote_port <= 0xFFFFFFFF:
            raise XenError(func, errno.EINVAL, f"bad port {remote_port!r}")
        return self._port(func, lib.xenevtchn_bind_interdomain(self._handle(func), remote_domid,
                                                               remote_port))

    def _port_call(self, name: str, port: int) -> None:
        func = f"xenevtchn_{name}"
        _, lib = _native()
        if type(port) is not int or not 0 <= port <= 0xFFFFFFFF:
            raise XenError(func, errno.EINVAL, f"bad port {port!r}")
        if getattr(lib, func)(self._handle(func), port) < 0:
            raise _error(func)

    def notify(self, port: int) -> None:
        self._port_call("notify", port)

    def unmask(self, port: int) -> None:
        self._port_call("unmask", port)

    def unbind(self, port: int) -> None:
        self._port_call("unbind", port)

    def pending(self) -> int | None:
        func = "xenevtchn_pending"
        _, lib = _native()
        handle = self._handle(func)
        # xenevtchn.h: pending() may block even on a non-blocking fd, so poll
        # first (timeout 0) and only read when something is there.
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        if not poller.poll(0):
            return None
        rc = lib.xenevtchn_pending(handle)
        if rc < 0:
            exc = _error(func)
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                return None
            raise exc
        return int(rc)

    def close(self) -> None:
        _, lib = _native()
        handle, self._h = self._h, None
        if handle is not None and lib.xenevtchn_close(handle):
            logger.warning("xenevtchn_close failed: %s", _error("xenevtchn_close"))


class XenTransport(Transport):
    """What this guest process can reach on real Xen.

    Parameters
    ----------
    domid
        Our domain id; read from xenstore's (relative) ``domid`` node if None.
    role
        ``"frontend"`` or ``"backend"``: what :func:`require` checks first.

    Raises
    ------
    XenError
        When this process lacks a device (all of them named at once),
        xenstore cannot be opened or ``domid`` cannot be read.
    """

    kind = "xen"

    def __init__(self, domid: int | None = None, *, role: str = "frontend") -> None:
        from .xenstore import LibXenStore

        require(role)
        self.xenstore = LibXenStore.open(None)
        if domid is None:
            value = None
            try:
                value = self.xenstore.read("domid")
                domid = int(value) if value is not None else None
            except ValueError:
                domid = None
            except BaseException:
                self.xenstore.close()
                raise
            if domid is None or not 0 <= domid < 0x7FF0:
                self.xenstore.close()
                raise XenError("xs_read", errno.ENOENT, f"no valid 'domid' node ({value!r})")
        self.domid = domid

    def open_grant_sharer(self) -> XenGrantSharer:
        return XenGrantSharer()

    def open_grant_mapper(self) -> XenGrantMapper:
        return XenGrantMapper()

    def open_event_channel(self) -> XenEventChannel:
        return XenEventChannel()

    def index_ops(self, buf: memoryview) -> IndexOps:
        from .native_index import NativeIndexOps

        return NativeIndexOps(buf)

    def bound_kernel_driver(self, devtype: str, devid: int) -> str | None:
        return bound_kernel_driver(devtype, devid)


#: xs_open(0) tries xenstored's socket first (dom0), then a xenbus device.
XENSTORED_SOCKETS = ("/run/xenstored/socket", "/var/run/xenstored/socket")
#: Linux names a xenbus device ``<type>-<id>`` here; its ``driver`` link exists
#: while a guest kernel driver owns it (xenbus_probe.c, xenbus_register_driver_common).
SYSFS_XEN_BUS = "/sys/bus/xen"
#: glibc dlopen()s it for pthread_cancel, which libxenstore's xs_close() calls
#: on its reader thread; when it is missing glibc aborts the whole process.
LIBGCC_S = "libgcc_s.so.1"

ROLES = ("frontend", "backend")


def _problems(role: str) -> list[tuple[int, str]]:
    """(errno, reason) for everything ``role`` needs and this process lacks."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    problems: list[tuple[int, str]] = []

    def denied(path: str) -> tuple[int, str]:
        return (errno.EACCES, f"{path} is not readable and writable by uid {os.getuid()}: "
                "give it a group of yours (udev rule in the README)")

    def need(path: str, module: str) -> None:
        if not os.path.exists(path):
            problems.append((errno.ENODEV, f"{path} is missing: load the kernel module "
                             f"{module} (is this a Xen domain?)"))
        elif not os.access(path, os.R_OK | os.W_OK):
            problems.append(denied(path))

    need(GNTALLOC_DEVICE if role == "frontend" else GNTDEV_DEVICE,
         "xen-gntalloc" if role == "frontend" else "xen-gntdev")
    need(EVTCHN_DEVICE, "xen-evtchn")
    # xs_open(0): a backend in dom0 may reach xenstored's socket instead of xenbus
    sockets = XENSTORED_SOCKETS if role == "backend" else ()
    if not any(os.path.exists(p) for p in sockets):
        present = [p for p in XENBUS_DEVICES if os.path.exists(p)]
        if not present:
            where = " or ".join(sockets[:1] + XENBUS_DEVICES)
            problems.append((errno.ENODEV, f"xenstore is unreachable: no {where} (is this a "
                             "Xen domain, with xenfs mounted or xen-xenbus loaded?)"))
        elif not any(os.access(p, os.R_OK | os.W_OK) for p in present):
            problems.append(denied(present[0]))
    try:
        ctypes.CDLL(LIBGCC_S)
    except OSError:
        problems.append((errno.ENOENT, f"{LIBGCC_S} cannot be loaded: glibc needs it to "
                         "close libxenstore's thread and would abort the process "
                         "(Debian package libgcc-s1)"))
    return problems


def check_requirements(role: str = "frontend") -> list[str]:
    """Human-readable reasons this process cannot run the xen transport.

    Parameters
    ----------
    role
        ``"frontend"`` (the plugin in a guest: gntalloc, evtchn, xenbus) or
        ``"backend"`` (gntdev, evtchn, xenstored's socket or xenbus).

    Returns
    -------
    list of str
        Empty when everything is present and readable/writable by us.
    """
    return [reason for _code, reason in _problems(role)]


def require(role: str) -> None:
    """Raise one :class:`XenError` naming everything ``role`` lacks here.

    Raises
    ------
    XenError
        EACCES when only permissions are missing, else ENODEV/ENOENT.
    """
    problems = _problems(role)
    if problems:
        codes = {code for code, _ in problems}
        code = errno.EACCES if codes == {errno.EACCES} else min(codes - {errno.EACCES})
        raise XenError(f"xen transport ({role})", code,
                       "; ".join(reason for _code, reason in problems))


def bound_kernel_driver(devtype: str, devid: int, sysfs: str = SYSFS_XEN_BUS) -> str | None:
    """The guest kernel driver that owns xenbus device ``devtype``/``devid``, or None.

    Returns ``"<driver> (module <module>)"`` when the module is known, e.g.
    ``"vsnd (module snd_xen_front)"``.
    """
    dev = os.path.join(sysfs, "devices", f"{devtype}-{devid}")
    try:
        driver = os.readlink(os.path.join(dev, "driver"))
    except OSError:
        return None  # no such device in sysfs, or no driver bound
    name = os.path.basename(driver)
    try:
        module = os.path.basename(os.readlink(os.path.join(sysfs, "drivers", name, "module")))
    except OSError:
        return name
    return f"{name} (module {module})"
