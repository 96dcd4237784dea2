"""Binds the C shim's ``extern "Python"`` functions to ``PvPcm`` methods.

The plugin's frozen init code calls ``register(ffi, lib)``; nothing imports
the compiled module by name.  Each wrapper turns a Python exception into a
negative errno (``errors.to_errno``) and logs it: an exception must never
reach the C host, and a callback must never return 0 for a failure.
"""

from __future__ import annotations

import errno
import itertools
import threading
from collections.abc import Callable
from typing import Any

from ..errors import PvSndError, to_errno
from ..log import PACKAGE, get_logger, use_stderr
from . import alsa
from .options import parse_plugin_options
from .pcm import PvPcm

logger = get_logger(PACKAGE)

_instances: dict[int, PvPcm] = {}
_ids = itertools.count(1)
_ids_lock = threading.Lock()


def _get(pcm_id: int) -> PvPcm:
    try:
        return _instances[pcm_id]
    except KeyError:
        raise PvSndError(f"no open PCM with id {pcm_id}", code=errno.EBADFD) from None


def _guard(fn: Callable[..., Any], quiet: tuple[int, ...] = (errno.EPIPE, errno.EAGAIN)
           ) -> Callable[..., int]:
    def wrapper(*args: Any) -> int:
        try:
            result = fn(*args)
            return 0 if result is None else int(result)
        except BaseException as exc:  # noqa: BLE001 - nothing may reach the C host
            code = to_errno(exc)
            if -code in quiet:
                logger.debug("%s: %s", fn.__name__, exc)
            elif isinstance(exc, PvSndError):
                logger.error("%s: %s", fn.__name__, exc)
            else:
                logger.exception("%s: unexpected error", fn.__name__)
            return code
    wrapper.__name__ = fn.__name__
    return wrapper


def open_pcm(keys: list[str], values: list[str], stream: int, mode: int) -> tuple[int, PvPcm]:
    opts = parse_plugin_options(list(zip(keys, values)))
    use_stderr(opts.log_level)
    pcm = PvPcm(opts, capture=stream == alsa.STREAM_CAPTURE, nonblock=bool(mode & alsa.NONBLOCK))
    with _ids_lock:
        pcm_id = next(_ids)
        _instances[pcm_id] = pcm
    return pcm_id, pcm


def close_pcm(pcm_id: int) -> None:
    pcm = _instances.pop(pcm_id, None)
    if pcm is not None:
        pcm.close()


def register(ffi: Any, lib: Any) -> None:
    """Attach the wrappers (called once by the plugin's init code)."""

    def fill(arr: Any, cap: int, values: list[int]) -> int:
        values = values[:cap]
        for i, v in enumerate(values):
            arr[i] = v
        return len(values)

    @ffi.def_extern(error=-errno.EIO, onerror=lambda *a: None)  # type: ignore[untyped-decorator]
    def pvplug_py_open(name: Any, stream: int, mode: int, nopts: int, keys: Any,
                       values: Any, hw: Any, err: Any, errlen: int) -> int:
        try:
            k = [ffi.string(keys[i]).decode(errors="replace") for i in range(nopts)]
            v = [ffi.string(values[i]).decode(errors="replace") for i in range(nopts)]
            pcm_id, pcm = open_pcm(k, v, stream, mode)
            c = pcm.constraints
            hw.n_formats = fill(hw.formats, len(hw.formats), c.formats)
            hw.n_rates = fill(hw.rates, len(hw.rates), c.rates)
            hw.channels_min, hw.channels_max = c.channels
            hw.period_bytes_min, hw.period_bytes_max = c.period_bytes
            hw.buffer_bytes_min, hw.buffer_bytes_max = c.buffer_bytes
            hw.periods_min, hw.periods_max = c.periods
            hw.n_fds = fill(hw.fds, len(hw.fds), pcm.poll_fds())
            hw.fast = ffi.cast("void *", pcm.fast_address)
            return pcm_id
        except BaseException as exc:  # noqa: BLE001
            msg = exc.message if isinstance(exc, PvSndError) else f"{type(exc).__name__}: {exc}"
            raw = msg.encode(errors="replace")[:max(0, errlen - 1)] + b"\0"
            ffi.memmove(err, raw, len(raw))
            if not isinstance(exc, PvSndError):
                logger.exception("open failed")
            return to_errno(exc) or -errno.EIO

    def hw_params(pcm_id: int, access: int, fmt: int, channels: int, rate: int,
                  period: int, buffer: int) -> None:
        _get(pcm_id).hw_params(access, fmt, channels, rate, period, buffer)

    def sw_params(pcm_id: int, avail_min: int, start: int, stop: int, boundary: int) -> None:
        _get(pcm_id).sw_params(avail_min, start, stop, boundary)

    def transfer(pcm_id: int, appl: int, buf: Any, frames: int) -> int:
        pcm = _get(pcm_id)
        g = pcm._geometry()
        return pcm.transfer(appl, ffi.buffer(buf, frames * g.frame_bytes), frames, True)

    def delay(pcm_id: int, appl: int, out: Any) -> None:
        out[0] = _get(pcm_id).delay(appl)

    bindings: dict[str, Callable[..., Any]] = {
        "pvplug_py_hw_params": hw_params,
        "pvplug_py_sw_params": sw_params,
        "pvplug_py_prepare": lambda i: _get(i).prepare(),
        "pvplug_py_start": lambda i, appl: _get(i).start(appl),
        "pvplug_py_stop": lambda i: _get(i).stop(),
        "pvplug_py_pointer": lambda i, appl: _get(i).pointer(appl),
        "pvplug_py_transfer": transfer,
        "pvplug_py_drain": lambda i, appl, nonblock: _get(i).drain(appl, bool(nonblock)),
        "pvplug_py_pause": lambda i, enable: _get(i).pause(bool(enable)),
        "pvplug_py_delay": delay,
        "pvplug_py_poll_revents": lambda i, appl, fired: _get(i).poll_revents(appl, bool(fired)),
        "pvplug_py_hw_free": lambda i: _get(i).hw_free(),
        "pvplug_py_close": close_pcm,
    }
    for name, fn in bindings.items():
        fn.__name__ = name.removeprefix("pvplug_py_")
        ffi.def_extern(name=name, error=-errno.EIO)(_guard(fn))
