"""The one exception hierarchy, and the one place exceptions become errno.

Every error carries a machine code (``errno``) and a human prefix; ``str()``
shows both, e.g. ``"WRITE failed [backend status -22 EINVAL]"``.
"""

from __future__ import annotations

import errno as _errno
import os


def _errno_name(code: int) -> str:
    return _errno.errorcode.get(abs(code), "E?")


class PvSndError(Exception):
    """Base class; never raised directly."""

    errno: int = _errno.EIO

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.errno = code

    def __str__(self) -> str:
        return f"{self.message} [errno {self.errno} {_errno_name(self.errno)}]"


class ConfigError(PvSndError, ValueError):
    """Bad configuration: a xenstore key, a plugin option, a CLI argument."""

    errno = _errno.EINVAL

    def __init__(self, message: str, *, key: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


class XenError(PvSndError, OSError):  # type: ignore[misc]  # both say errno: an int
    """A transport call failed (libxen*, or the simulated hypervisor)."""

    def __init__(self, func: str, code: int, detail: str = "") -> None:
        msg = f"{func}: {os.strerror(code)}" + (f" ({detail})" if detail else "")
        PvSndError.__init__(self, msg, code=code)
        self.func = func


class BackendError(PvSndError):
    """The backend answered a request with a negative status."""

    def __init__(self, operation: str, status: int, detail: str = "") -> None:
        # status is "0 or -XEN_Exx"; Xen errno values equal Linux x86 ones.
        super().__init__(f"{operation} failed" + (f": {detail}" if detail else ""),
                         code=-status if status < 0 else _errno.EIO)
        self.operation = operation
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} [backend status {self.status} {_errno_name(self.status)}]"


class BackendTimeout(BackendError):
    """The backend did not answer within the request timeout."""

    def __init__(self, operation: str, timeout: float) -> None:
        super().__init__(operation, -_errno.ETIMEDOUT, f"no answer within {timeout:g} s")
        self.timeout = timeout


class BackendGone(BackendError):
    """The backend left Connected (closed, restarted or died); the card must reconnect."""

    def __init__(self, operation: str, detail: str) -> None:
        super().__init__(operation, -_errno.ENODEV, detail)


class LocalProtocolError(PvSndError):
    """We were asked to do something the protocol state does not allow."""

    errno = _errno.EBADFD


class RemoteProtocolError(PvSndError):
    """The peer broke the protocol: bad id, bad op echo, ring overflow, bad event."""

    errno = _errno.EIO


class DeviceBusy(PvSndError):
    """The card or stream is in use (another process, or this one)."""

    errno = _errno.EBUSY


class Xrun(PvSndError):
    """Under-/overrun detected on the pointer path."""

    errno = _errno.EPIPE


def to_errno(exc: BaseException) -> int:
    """The negative errno an ALSA callback returns for ``exc``."""
    if isinstance(exc, PvSndError):
        return -abs(exc.errno)
    if isinstance(exc, OSError) and exc.errno:
        return -abs(exc.errno)
    return -_errno.EIO
