"""The vsnd configuration tree: xenstore keys in, immutable card description out.

Rule 1: pure.  ``parse_card_config`` takes a snapshot of the frontend device
directory as a ``{relative path: value}`` mapping; reading xenstore is the
caller's job.  ``parse_xl_vsnd``/``xl_card_to_xenstore`` model what the
toolstack (``xl``/libxl) writes, for the simulator; they never write anything.
Rule 2: every bad value raises ``ConfigError`` whose message, ``key`` and
``value`` name the offending key by its full relative path ("0/1/type").
Rule 3: inheritance card -> pcm -> stream only narrows.  A lower level that
lists something its parent excluded is a configuration error, not silently
clipped (sndif-protocol.md section 2).  Defaults (Linux
``sound/xen/xen_snd_front_cfg.c``) apply only where no level sets a key, so a
stream may set ``channels-max=6`` when nothing above it mentions channels.

Deliberate differences from the Linux frontend, all towards a clear error:
unknown format names, non-numeric rates, ``channels-*`` of 0 or > 255 and a
``buffer-size`` smaller than two minimal periods raise instead of being ignored
or clamped.  Like Linux, rates outside its fixed list are ignored, streams
beyond 8 per pcm are ignored, and names longer than the sndif limits are
truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError
from .sndif import PcmFormat, format_from_string, format_to_string
from .xsnum import DOMID_MAX, is_decimal, parse_uint

__all__ = [
    "CardConfig",
    "DEFAULT_BUFFER_BYTES_MAX",
    "DEFAULT_CHANNELS_MAX",
    "DEFAULT_CHANNELS_MIN",
    "DEFAULT_FORMATS",
    "DEFAULT_RATES",
    "MAX_STREAMS_PER_PCM",
    "PERIOD_BYTES_MIN",
    "PERIODS_MIN",
    "SUPPORTED_RATES",
    "StreamConfig",
    "XlCard",
    "XlParams",
    "XlPcm",
    "XlStream",
    "parse_card_config",
    "parse_xl_vsnd",
    "xl_card_to_xenstore",
]

# xenstore key names (sndif.h XENSND_FIELD_*); spelled out here so this module
# does not depend on which constants sndif.py chooses to export.
_K_SHORT_NAME = "short-name"
_K_LONG_NAME = "long-name"
_K_NAME = "name"
_K_TYPE = "type"
_K_UNIQUE_ID = "unique-id"
_K_RATES = "sample-rates"
_K_FORMATS = "sample-formats"
_K_CH_MIN = "channels-min"
_K_CH_MAX = "channels-max"
_K_BUFFER = "buffer-size"

# Linux xen_snd_front_cfg.c CFG_HW_SUPPORTED_RATES: any other rate in
# sample-rates is silently ignored there, and so here.
SUPPORTED_RATES: tuple[int, ...] = (
    5512, 8000, 11025, 16000, 22050, 32000, 44100, 48000,
    64000, 88200, 96000, 176400, 192000,
)
# Linux SND_DRV_PCM_HW_DEFAULT (xen_snd_front_cfg.c).
DEFAULT_FORMATS: tuple[PcmFormat, ...] = (PcmFormat.U8, PcmFormat.S16_LE)
DEFAULT_RATES: tuple[int, ...] = tuple(r for r in SUPPORTED_RATES if 5512 <= r <= 48000)
DEFAULT_CHANNELS_MIN = 1
DEFAULT_CHANNELS_MAX = 2
DEFAULT_BUFFER_BYTES_MAX = 64 * 1024
PERIOD_BYTES_MIN = 64
PERIODS_MIN = 2
# Linux VSND_MAX_STREAM: streams per pcm beyond this are not enumerated.
MAX_STREAMS_PER_PCM = 8
# sndif.h: names are at most 32 / 80 octets; Linux strscpy()s (truncates).
_SHORT_NAME_MAX = 32
_LONG_NAME_MAX = 80
_PCM_NAME_MAX = 80
# buffer_sz travels as a uint32 in OPEN (sndif.h xensnd_open_req).
_U32_MAX = 0xFFFF_FFFF
_U8_MAX = 0xFF

_TYPE_PLAYBACK = "p"
_TYPE_CAPTURE = "c"


# --------------------------------------------------------------------------
# Parsed frontend configuration
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamConfig:
    """Effective hardware description of one stream (``<pcm>/<stream>``).

    ``rates`` lists the discrete rates (ascending); ``rate_min``/``rate_max``
    are its bounds.  Byte sizes follow ALSA's ``snd_pcm_hardware`` meaning.
    """

    pcm_index: int
    stream_index: int
    pcm_name: str
    type: str  # "p" or "c"
    unique_id: str
    formats: tuple[PcmFormat, ...]
    rates: tuple[int, ...]
    rate_min: int
    rate_max: int
    channels_min: int
    channels_max: int
    buffer_bytes_max: int
    period_bytes_min: int
    period_bytes_max: int
    periods_min: int
    periods_max: int

    @property
    def is_capture(self) -> bool:
        return self.type == _TYPE_CAPTURE

    @property
    def path(self) -> str:
        """The stream's xenstore directory relative to the frontend dir."""
        return f"{self.pcm_index}/{self.stream_index}"


@dataclass(frozen=True)
class CardConfig:
    """The whole vsnd card: names plus every stream, in (pcm, stream) order."""

    short_name: str
    long_name: str
    streams: tuple[StreamConfig, ...]

    def stream(self, pcm_index: int, stream_index: int) -> StreamConfig:
        """Look up one stream.

        Raises
        ------
        ConfigError
            No such stream on this card (EINVAL).
        """
        for st in self.streams:
            if st.pcm_index == pcm_index and st.stream_index == stream_index:
                return st
        raise ConfigError(
            f"no stream {pcm_index}/{stream_index} on this card "
            f"(have {', '.join(s.path for s in self.streams)})",
            key=f"{pcm_index}/{stream_index}", value=None)


@dataclass(frozen=True)
class _Constraint:
    """What one level and everything above it pinned down; None = unset."""

    formats: frozenset[PcmFormat] | None = None
    rates: frozenset[int] | None = None
    ch_min: int | None = None
    ch_max: int | None = None
    buffer: int | None = None


def _err(key: str, value: object, why: str) -> ConfigError:
    return ConfigError(f"{key}={value!r}: {why}", key=key, value=value)


def _parse_uint(key: str, raw: str, lo: int, hi: int) -> int:
    return parse_uint(raw, lo, hi, key)


def _list_items(raw: str) -> list[str]:
    # Empty items (a trailing comma, "a,,b") are skipped: Linux's strsep loop
    # matches nothing for them.
    return [item.strip() for item in raw.split(",") if item.strip()]


def _parse_formats(key: str, raw: str) -> frozenset[PcmFormat]:
    items = _list_items(raw)
    if not items:
        raise _err(key, raw, "empty format list")
    out = set()
    for item in items:
        try:
            out.add(format_from_string(item))
        except ConfigError:
            raise _err(key, raw, f"unknown sample format {item!r}") from None
    return frozenset(out)


def _parse_rates(key: str, raw: str) -> frozenset[int]:
    items = _list_items(raw)
    out = set()
    for item in items:
        if not is_decimal(item):
            raise _err(key, raw, f"rate {item!r} is not a decimal number")
        rate = int(item)
        if rate in SUPPORTED_RATES:  # others ignored, as Linux cfg_hw_rates
            out.add(rate)
    if not out:
        raise _err(key, raw, f"no supported rate listed (supported: "
                             f"{','.join(map(str, SUPPORTED_RATES))})")
    return frozenset(out)


def _narrow(tree: Mapping[str, str], prefix: str, parent: _Constraint) -> _Constraint:
    """Apply the keys of one level (``prefix`` = "", "0/" or "0/1/")."""
    formats, rates = parent.formats, parent.rates
    ch_min, ch_max, buffer = parent.ch_min, parent.ch_max, parent.buffer

    key = prefix + _K_FORMATS
    if key in tree:
        mine = _parse_formats(key, tree[key])
        if formats is not None and not mine <= formats:
            extra = ",".join(format_to_string(f) for f in sorted(mine - formats))
            raise _err(key, tree[key], f"widens the inherited format list by {extra}")
        formats = mine

    key = prefix + _K_RATES
    if key in tree:
        mine_r = _parse_rates(key, tree[key])
        if rates is not None and not mine_r <= rates:
            extra = ",".join(map(str, sorted(mine_r - rates)))
            raise _err(key, tree[key], f"widens the inherited rate list by {extra}")
        rates = mine_r

    key = prefix + _K_CH_MIN
    if key in tree:
        v = _parse_uint(key, tree[key], 1, _U8_MAX)
        if ch_min is not None and v < ch_min:
            raise _err(key, tree[key], f"widens the inherited channels-min {ch_min}")
        ch_min = v
    key = prefix + _K_CH_MAX
    if key in tree:
        v = _parse_uint(key, tree[key], 1, _U8_MAX)
        if ch_max is not None and v > ch_max:
            raise _err(key, tree[key], f"widens the inherited channels-max {ch_max}")
        ch_max = v
    if ch_min is not None and ch_max is not None and ch_min > ch_max:
        # Name whichever key this level set (max first: it is the one that
        # usually narrows too far).
        bad = prefix + _K_CH_MAX if prefix + _K_CH_MAX in tree else prefix + _K_CH_MIN
        raise _err(bad, tree.get(bad), f"empty channel range {ch_min}..{ch_max}")

    key = prefix + _K_BUFFER
    if key in tree:
        v = _parse_uint(key, tree[key], PERIODS_MIN * PERIOD_BYTES_MIN, _U32_MAX)
        if buffer is not None and v > buffer:
            raise _err(key, tree[key], f"widens the inherited buffer-size {buffer}")
        buffer = v

    return _Constraint(formats, rates, ch_min, ch_max, buffer)


def _truncate(tree: Mapping[str, str], key: str, limit: int) -> str:
    return tree.get(key, "")[:limit]


def _subdir_exists(tree: Mapping[str, str], prefix: str) -> bool:
    # The directory node itself ("0/1", value "") counts too, in case the
    # caller's snapshot lists directories as well as leaves.
    return any(k.startswith(prefix) or k == prefix[:-1] for k in tree)


def _make_stream(tree: Mapping[str, str], p: int, s: int, pcm_name: str,
                 c: _Constraint) -> StreamConfig:
    prefix = f"{p}/{s}/"
    key = prefix + _K_TYPE
    if key not in tree:
        # Linux cfg_get_stream_type fails the whole card on a missing type.
        raise _err(key, None, "missing stream type (expected 'p' or 'c')")
    typ = tree[key].strip().lower()  # Linux compares case-insensitively
    if typ not in (_TYPE_PLAYBACK, _TYPE_CAPTURE):
        raise _err(key, tree[key], "stream type must be 'p' or 'c'")

    formats = tuple(sorted(c.formats)) if c.formats is not None else DEFAULT_FORMATS
    rates = tuple(sorted(c.rates)) if c.rates is not None else DEFAULT_RATES
    ch_min = c.ch_min if c.ch_min is not None else DEFAULT_CHANNELS_MIN
    if c.ch_max is not None:
        ch_max = c.ch_max
    else:
        # sndif.h: channels-max "must be at least channels-min"; with only a
        # min given, let the default max follow it up instead of failing.
        ch_max = max(DEFAULT_CHANNELS_MAX, ch_min)
    buffer = c.buffer if c.buffer is not None else DEFAULT_BUFFER_BYTES_MAX
    return StreamConfig(
        pcm_index=p, stream_index=s, pcm_name=pcm_name, type=typ,
        unique_id=tree.get(prefix + _K_UNIQUE_ID, ""),
        formats=formats, rates=rates, rate_min=rates[0], rate_max=rates[-1],
        channels_min=ch_min, channels_max=ch_max,
        buffer_bytes_max=buffer,
        period_bytes_min=PERIOD_BYTES_MIN, period_bytes_max=buffer,
        periods_min=PERIODS_MIN, periods_max=buffer // PERIOD_BYTES_MIN,
    )


def parse_card_config(tree: Mapping[str, str]) -> CardConfig:
    """Build the card description from the frontend directory's keys.

    Parameters
    ----------
    tree : Mapping[str, str]
        Key paths relative to the frontend device dir (``"short-name"``,
        ``"0/name"``, ``"0/1/type"`` ...) to their values.  Keys this parser
        does not know (``backend``, ``state``, ``0/0/ring-ref`` ...) are
        ignored.

    Returns
    -------
    CardConfig
        Streams in (pcm, stream) order.  PCM and stream indices are enumerated
        from 0 and stop at the first missing one, like both peers; at most
        ``MAX_STREAMS_PER_PCM`` (8) streams per pcm are taken, further ones
        are ignored without error (Linux ``VSND_MAX_STREAM``).

    Raises
    ------
    ConfigError
        A bad value, a lower level widening its parent, an empty range, a
        missing/unknown stream ``type``, or a card without streams (EINVAL).
        ``key`` is the full relative path, ``value`` the raw value.
    """
    card_c = _narrow(tree, "", _Constraint())
    streams: list[StreamConfig] = []
    p = 0
    while _subdir_exists(tree, f"{p}/"):
        pcm_c = _narrow(tree, f"{p}/", card_c)
        pcm_name = _truncate(tree, f"{p}/{_K_NAME}", _PCM_NAME_MAX)
        s = 0
        while s < MAX_STREAMS_PER_PCM and _subdir_exists(tree, f"{p}/{s}/"):
            st_c = _narrow(tree, f"{p}/{s}/", pcm_c)
            streams.append(_make_stream(tree, p, s, pcm_name, st_c))
            s += 1
        p += 1
    if not streams:
        raise ConfigError("card has no streams (no '0/0/' keys under the device dir)",
                          key="0/0", value=None)
    return CardConfig(
        short_name=_truncate(tree, _K_SHORT_NAME, _SHORT_NAME_MAX),
        long_name=_truncate(tree, _K_LONG_NAME, _LONG_NAME_MAX),
        streams=tuple(streams),
    )


# --------------------------------------------------------------------------
# Toolstack side: xl.cfg(5) "vsnd" syntax and what libxl writes for it
# --------------------------------------------------------------------------

# libxl_vsnd_pcm_format_to_string: lower-cased libxl enum names, which differ
# from the sndif strings only for the floats (sndif-protocol.md section 2).
_LIBXL_FLOAT_NAMES = {
    PcmFormat.FLOAT_LE: "f32_le",
    PcmFormat.FLOAT_BE: "f32_be",
    PcmFormat.FLOAT64_LE: "f64_le",
    PcmFormat.FLOAT64_BE: "f64_be",
}


def _libxl_format_name(fmt: PcmFormat) -> str:
    return _LIBXL_FLOAT_NAMES.get(fmt) or format_to_string(fmt)


@dataclass(frozen=True)
class XlParams:
    """``libxl_vsnd_params``: 0 / empty means "not set" (not written)."""

    sample_rates: tuple[int, ...] = ()
    sample_formats: tuple[PcmFormat, ...] = ()
    channels_min: int = 0
    channels_max: int = 0
    buffer_size: int = 0


@dataclass(frozen=True)
class XlStream:
    """``libxl_vsnd_stream``; ``type`` is "p", "c" or None (unset)."""

    unique_id: str | None = None
    type: str | None = None
    params: XlParams = field(default_factory=XlParams)


@dataclass(frozen=True)
class XlPcm:
    """``libxl_vsnd_pcm``."""

    name: str | None = None
    params: XlParams = field(default_factory=XlParams)
    streams: tuple[XlStream, ...] = ()


@dataclass(frozen=True)
class XlCard:
    """``libxl_device_vsnd``: one element of the xl.cfg ``vsnd`` list."""

    backend: str | None = None
    short_name: str | None = None
    long_name: str | None = None
    params: XlParams = field(default_factory=XlParams)
    pcms: tuple[XlPcm, ...] = ()


_XL_PARAM_KEYS = (_K_RATES, _K_FORMATS, _K_CH_MIN, _K_CH_MAX, _K_BUFFER)
_XL_EXTRA_KEYS = {
    "card": ("backend", _K_SHORT_NAME, _K_LONG_NAME),
    "pcm": (_K_NAME,),
    "stream": (_K_UNIQUE_ID, _K_TYPE),
}


def _xl_uint(where: str, key: str, raw: str) -> int:
    # xl uses strtoul(.., 0): decimal, 0x hex (and leading-0 octal, which we
    # reject rather than silently reinterpret).
    s = raw.strip()
    try:
        v = int(s, 16) if s.lower().startswith("0x") else int(s, 10)
    except ValueError:
        raise ConfigError(f"{where}: {key}={raw!r} is not a number",
                          key=key, value=raw) from None
    if not 0 <= v <= _U32_MAX:
        raise ConfigError(f"{where}: {key}={raw!r} out of range", key=key, value=raw)
    return v


def _xl_params(where: str, params: dict[str, str]) -> XlParams:
    rates: tuple[int, ...] = ()
    formats: tuple[PcmFormat, ...] = ()
    if _K_RATES in params:
        # xl splits list values on ';' because ',' separates the item's params.
        rates = tuple(_xl_uint(where, _K_RATES, r)
                      for r in params[_K_RATES].split(";") if r.strip())
    if _K_FORMATS in params:
        out = []
        for f in params[_K_FORMATS].split(";"):
            if not f.strip():
                continue
            try:
                # Real xl accepts only libxl's spellings (f32_le, not float_le);
                # accept both here, write libxl's.
                out.append(format_from_string(f))
            except ConfigError:
                raise ConfigError(
                    f"{where}: {_K_FORMATS}={params[_K_FORMATS]!r}: "
                    f"unknown format {f.strip()!r}",
                    key=_K_FORMATS, value=params[_K_FORMATS]) from None
        formats = tuple(out)
    return XlParams(
        sample_rates=rates,
        sample_formats=formats,
        channels_min=_xl_uint(where, _K_CH_MIN, params[_K_CH_MIN]) if _K_CH_MIN in params else 0,
        channels_max=_xl_uint(where, _K_CH_MAX, params[_K_CH_MAX]) if _K_CH_MAX in params else 0,
        buffer_size=_xl_uint(where, _K_BUFFER, params[_K_BUFFER]) if _K_BUFFER in params else 0,
    )


def _xl_item(item: str, where: str) -> tuple[str, dict[str, str]]:
    """Split one item string into (kind, {param: value}) like xl's strtok."""
    tokens = [t.strip() for t in item.split(",")]
    tokens = [t for t in tokens if t]
    if not tokens:
        raise ConfigError(f"{where}: empty vsnd item", key=None, value=item)
    kind = tokens[0].lower()  # xl: strcasecmp(key, "card"/"pcm"/"stream")
    if kind not in _XL_EXTRA_KEYS:
        raise ConfigError(f"{where}: unknown vsnd item kind {tokens[0]!r} "
                          "(expected card, pcm or stream)", key=None, value=item)
    allowed = _XL_PARAM_KEYS + _XL_EXTRA_KEYS[kind]
    params: dict[str, str] = {}
    for tok in tokens[1:]:
        key, eq, value = tok.partition("=")
        key = key.strip()
        if not eq or key not in allowed:
            raise ConfigError(f"{where}: invalid {kind} parameter {tok!r} "
                              f"(allowed: {', '.join(allowed)})", key=key, value=tok)
        params[key] = value.strip()
    return kind, params


@dataclass
class _PcmBuilder:
    name: str | None
    params: XlParams
    streams: list[XlStream] = field(default_factory=list)


def parse_xl_vsnd(spec: list[list[str]]) -> list[XlCard]:
    """Parse the xl.cfg(5) ``vsnd`` option.

    Parameters
    ----------
    spec : list of list of str
        One list per card; each element an item string such as
        ``"card, short-name=Main, sample-rates=44100;48000"``,
        ``"pcm, name=Main"`` or ``"stream, unique-id=0, type=p"``.
        The first token is the item kind (case-insensitive).  A ``pcm``
        belongs to the card, a ``stream`` to the preceding ``pcm`` (as in xl,
        a ``stream`` before any ``pcm`` opens an unnamed pcm).  Lists inside a
        value are separated by ``;``.  A later ``card`` item adds parameters
        to the same card, as in xl.

    Returns
    -------
    list of XlCard

    Raises
    ------
    ConfigError
        Unknown item kind, unknown parameter, malformed number, format or
        stream type (EINVAL).  The message names the card/item and the
        parameter.
    """
    cards: list[XlCard] = []
    for ci, items in enumerate(spec):
        where_card = f"vsnd card {ci}"
        names: dict[str, str] = {}
        card_params: dict[str, str] = {}
        pcms: list[_PcmBuilder] = []
        for ii, item in enumerate(items):
            where = f"{where_card} item {ii}"
            kind, params = _xl_item(item, where)
            if kind == "card":
                for k in _XL_EXTRA_KEYS["card"]:
                    if k in params:
                        names[k] = params.pop(k)
                card_params.update(params)
            elif kind == "pcm":
                name = params.pop(_K_NAME, None)
                pcms.append(_PcmBuilder(name, _xl_params(where, params)))
            else:
                if not pcms:  # xl parse_vsnd_create_item: implicit pcm
                    pcms.append(_PcmBuilder(None, XlParams()))
                uid = params.pop(_K_UNIQUE_ID, None)
                typ = params.pop(_K_TYPE, None)
                if typ is not None:
                    # libxl_vsnd_stream_type_from_string is case-insensitive
                    if typ.lower() not in (_TYPE_PLAYBACK, _TYPE_CAPTURE):
                        raise ConfigError(f"{where}: {_K_TYPE}={typ!r}: expected p or c",
                                          key=_K_TYPE, value=typ)
                    typ = typ.lower()
                pcms[-1].streams.append(XlStream(uid, typ, _xl_params(where, params)))
        cards.append(XlCard(
            backend=names.get("backend"),
            short_name=names.get(_K_SHORT_NAME),
            long_name=names.get(_K_LONG_NAME),
            params=_xl_params(where_card, card_params),
            pcms=tuple(XlPcm(b.name, b.params, tuple(b.streams)) for b in pcms),
        ))
    return cards


def _xl_params_to_xenstore(prefix: str, p: XlParams, out: dict[str, str]) -> None:
    # libxl__set_params_vsnd: unset (empty / 0) values are not written.
    if p.sample_rates:
        out[prefix + _K_RATES] = ",".join(str(r) for r in p.sample_rates)
    if p.sample_formats:
        out[prefix + _K_FORMATS] = ",".join(_libxl_format_name(f) for f in p.sample_formats)
    if p.channels_min:
        out[prefix + _K_CH_MIN] = str(p.channels_min)
    if p.channels_max:
        out[prefix + _K_CH_MAX] = str(p.channels_max)
    if p.buffer_size:
        out[prefix + _K_BUFFER] = str(p.buffer_size)


def xl_card_to_xenstore(card: XlCard) -> dict[str, str]:
    """The frontend-dir keys libxl writes for ``card`` (libxl_vsnd.c).

    Returns
    -------
    dict[str, str]
        Relative key path -> value: card names and params, per pcm ``name``
        and params, per stream ``unique-id``, ``type`` and params.  Lists are
        comma-separated; float formats use libxl's spelling (``f32_le``), as
        real ``xl`` writes them.  Unset values are omitted.  The generic
        device keys (``backend``, ``backend-id``, ``state``) are not included.
    """
    out: dict[str, str] = {}
    if card.long_name is not None:
        out[_K_LONG_NAME] = card.long_name
    if card.short_name is not None:
        out[_K_SHORT_NAME] = card.short_name
    _xl_params_to_xenstore("", card.params, out)
    for pi, pcm in enumerate(card.pcms):
        if pcm.name is not None:
            out[f"{pi}/{_K_NAME}"] = pcm.name
        _xl_params_to_xenstore(f"{pi}/", pcm.params, out)
        for si, st in enumerate(pcm.streams):
            prefix = f"{pi}/{si}/"
            if st.unique_id is not None:
                out[prefix + _K_UNIQUE_ID] = st.unique_id
            if st.type is not None:
                out[prefix + _K_TYPE] = st.type
            _xl_params_to_xenstore(prefix, st.params, out)
    return out



# -- ALSA plugin options (pcm.pvplug { type pvplug ... }) --------------------

LOG_LEVELS = ("error", "warning", "info", "debug")
TRANSPORTS = ("xen", "sim")


@dataclass(frozen=True)
class PluginOptions:
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
