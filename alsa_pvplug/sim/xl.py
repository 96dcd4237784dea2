"""xl.cfg(5)'s ``vsnd = [...]`` syntax and the xenstore keys libxl writes for
it (``libxl_vsnd.c``): the toolstack half of the simulator.  Pure: it parses
and returns; ``sim/toolstack.py`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ..protocol import sndif as S
from ..protocol.sndif import PcmFormat, format_from_string, format_to_string

__all__ = ["XlCard", "XlParams", "XlPcm", "XlStream", "parse_xl_vsnd", "xl_card_to_xenstore"]

_U32_MAX = 0xFFFF_FFFF

def _libxl_format_name(fmt: PcmFormat) -> str:
    """libxl_vsnd_pcm_format_to_string: libxl's own spelling (floats differ)."""
    return S.LIBXL_FORMAT_NAMES.get(fmt) or format_to_string(fmt)


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


_XL_PARAM_KEYS = (S.FIELD_SAMPLE_RATES, S.FIELD_SAMPLE_FORMATS, S.FIELD_CHANNELS_MIN,
                  S.FIELD_CHANNELS_MAX, S.FIELD_BUFFER_SIZE)
_XL_EXTRA_KEYS = {
    "card": ("backend", S.FIELD_VCARD_SHORT_NAME, S.FIELD_VCARD_LONG_NAME),
    "pcm": (S.FIELD_DEVICE_NAME,),
    "stream": (S.FIELD_STREAM_UNIQUE_ID, S.FIELD_TYPE),
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


def _xl_uint_or_0(where: str, key: str, params: dict[str, str]) -> int:
    return _xl_uint(where, key, params[key]) if key in params else 0


def _xl_params(where: str, params: dict[str, str]) -> XlParams:
    rates: tuple[int, ...] = ()
    formats: tuple[PcmFormat, ...] = ()
    if S.FIELD_SAMPLE_RATES in params:
        # xl splits list values on ';' because ',' separates the item's params.
        rates = tuple(_xl_uint(where, S.FIELD_SAMPLE_RATES, r)
                      for r in params[S.FIELD_SAMPLE_RATES].split(";") if r.strip())
    if S.FIELD_SAMPLE_FORMATS in params:
        out = []
        for f in params[S.FIELD_SAMPLE_FORMATS].split(";"):
            if not f.strip():
                continue
            try:
                # Real xl accepts only libxl's spellings (f32_le, not float_le);
                # accept both here, write libxl's.
                out.append(format_from_string(f))
            except ConfigError:
                raise ConfigError(
                    f"{where}: {S.FIELD_SAMPLE_FORMATS}={params[S.FIELD_SAMPLE_FORMATS]!r}: "
                    f"unknown format {f.strip()!r}",
                    key=S.FIELD_SAMPLE_FORMATS, value=params[S.FIELD_SAMPLE_FORMATS]) from None
        formats = tuple(out)
    return XlParams(
        sample_rates=rates,
        sample_formats=formats,
        channels_min=_xl_uint_or_0(where, S.FIELD_CHANNELS_MIN, params),
        channels_max=_xl_uint_or_0(where, S.FIELD_CHANNELS_MAX, params),
        buffer_size=_xl_uint_or_0(where, S.FIELD_BUFFER_SIZE, params),
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
                name = params.pop(S.FIELD_DEVICE_NAME, None)
                pcms.append(_PcmBuilder(name, _xl_params(where, params)))
            else:
                if not pcms:  # xl parse_vsnd_create_item: implicit pcm
                    pcms.append(_PcmBuilder(None, XlParams()))
                uid = params.pop(S.FIELD_STREAM_UNIQUE_ID, None)
                typ = params.pop(S.FIELD_TYPE, None)
                if typ is not None:
                    # libxl_vsnd_stream_type_from_string is case-insensitive
                    if typ.lower() not in (S.STREAM_TYPE_PLAYBACK, S.STREAM_TYPE_CAPTURE):
                        raise ConfigError(f"{where}: {S.FIELD_TYPE}={typ!r}: expected p or c",
                                          key=S.FIELD_TYPE, value=typ)
                    typ = typ.lower()
                pcms[-1].streams.append(XlStream(uid, typ, _xl_params(where, params)))
        cards.append(XlCard(
            backend=names.get("backend"),
            short_name=names.get(S.FIELD_VCARD_SHORT_NAME),
            long_name=names.get(S.FIELD_VCARD_LONG_NAME),
            params=_xl_params(where_card, card_params),
            pcms=tuple(XlPcm(b.name, b.params, tuple(b.streams)) for b in pcms),
        ))
    return cards


def _xl_params_to_xenstore(prefix: str, p: XlParams, out: dict[str, str]) -> None:
    # libxl__set_params_vsnd: unset (empty / 0) values are not written.
    if p.sample_rates:
        out[prefix + S.FIELD_SAMPLE_RATES] = ",".join(str(r) for r in p.sample_rates)
    if p.sample_formats:
        out[prefix + S.FIELD_SAMPLE_FORMATS] = ",".join(_libxl_format_name(f)
                                                        for f in p.sample_formats)
    if p.channels_min:
        out[prefix + S.FIELD_CHANNELS_MIN] = str(p.channels_min)
    if p.channels_max:
        out[prefix + S.FIELD_CHANNELS_MAX] = str(p.channels_max)
    if p.buffer_size:
        out[prefix + S.FIELD_BUFFER_SIZE] = str(p.buffer_size)


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
        out[S.FIELD_VCARD_LONG_NAME] = card.long_name
    if card.short_name is not None:
        out[S.FIELD_VCARD_SHORT_NAME] = card.short_name
    _xl_params_to_xenstore("", card.params, out)
    for pi, pcm in enumerate(card.pcms):
        if pcm.name is not None:
            out[f"{pi}/{S.FIELD_DEVICE_NAME}"] = pcm.name
        _xl_params_to_xenstore(f"{pi}/", pcm.params, out)
        for si, st in enumerate(pcm.streams):
            prefix = f"{pi}/{si}/"
            if st.unique_id is not None:
                out[prefix + S.FIELD_STREAM_UNIQUE_ID] = st.unique_id
            if st.type is not None:
                out[prefix + S.FIELD_TYPE] = st.type
            _xl_params_to_xenstore(prefix, st.params, out)
    return out
