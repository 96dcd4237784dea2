"""The plugin's options: what a ``pcm.NAME { type pvplug ... }`` block may
say (asoundrc.example), validated as ALSA hands them over."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ..errors import ConfigError
from ..protocol.xsnum import DOMID_MAX, parse_uint
from ..transport import KINDS as TRANSPORTS

__all__ = ["LOG_LEVELS", "PluginOptions", "TRANSPORTS", "parse_plugin_options"]


def _err(key: str, value: object, why: str) -> ConfigError:
    return ConfigError(f"{key}={value!r}: {why}", key=key, value=value)


def _parse_uint(key: str, raw: str, lo: int, hi: int) -> int:
    return parse_uint(raw, lo, hi, key)

LOG_LEVELS = ("error", "warning", "info", "debug")


class PluginOptions(NamedTuple):
    """What a ``pcm.NAME { type pvplug ... }`` block may say (asoundrc.example)."""

    card: int = 0                  # vsnd device index (device/vsnd/<card>)
    device: int = 0                # pcm index inside the card
    stream: int | None = None      # stream index; default: the pcm's first of our direction
    transport: str = "xen"
    sim_dir: str | None = None     # the simulated hypervisor's directory (transport sim)
    domid: int | None = None       # our domain (sim: required; xen: read from xenstore)
    backend_domid: int | None = None  # if set, the card's backend must be this domain
    timeout: float = 3.0           # seconds per backend request
    log_level: str = "warning"


def _parse_choice(key: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().strip('"').lower()
    if value not in choices:
        raise _err(key, raw, f"must be one of {', '.join(choices)}")
    return value


def _parse_seconds(key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _err(key, raw, "must be a number of seconds") from None
    if not 0.01 <= value <= 600:
        raise _err(key, raw, "must be between 0.01 and 600 seconds")
    return value


_OPTION_PARSERS: dict[str, Callable[[str, str], object]] = {
    "card": lambda k, v: _parse_uint(k, v, 0, 2**31 - 1),
    "device": lambda k, v: _parse_uint(k, v, 0, 2**31 - 1),
    "stream": lambda k, v: _parse_uint(k, v, 0, 2**31 - 1),
    "transport": lambda k, v: _parse_choice(k, v, TRANSPORTS),
    "sim_dir": lambda k, v: v,
    "domid": lambda k, v: _parse_uint(k, v, 0, DOMID_MAX),
    "backend_domid": lambda k, v: _parse_uint(k, v, 0, DOMID_MAX),
    "timeout": _parse_seconds,
    "log_level": lambda k, v: _parse_choice(k, v, LOG_LEVELS),
}


def parse_plugin_options(items: list[tuple[str, str]]) -> PluginOptions:
    """Validate ``(name, value)`` pairs as ALSA hands them over; the error
    names the offending option."""
    values: dict[str, object] = {}
    for key, raw in items:
        parse = _OPTION_PARSERS.get(key)
        if parse is None:
            raise ConfigError(f"unknown option '{key}' (known: {', '.join(_OPTION_PARSERS)})",
                              key=key, value=raw)
        if key in values:
            raise ConfigError(f"option '{key}' given twice", key=key, value=raw)
        values[key] = parse(key, raw)
    opts = PluginOptions(**values)  # type: ignore[arg-type]
    if opts.transport == "sim" and (opts.sim_dir is None or opts.domid is None):
        raise ConfigError("transport sim needs the options 'sim_dir' and 'domid'",
                          key="sim_dir" if opts.sim_dir is None else "domid")
    return opts
