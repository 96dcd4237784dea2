"""The vsnd configuration tree: xenstore keys in, immutable card description out.

Rule 1: pure.  ``parse_card_config`` takes a snapshot of the frontend device
directory as a ``{relative path: value}`` mapping; reading xenstore is the
caller's job.  Key names, limits and format spellings are sndif.py's.  What
the toolstack writes there is modelled in ``sim/xl.py``.
Rule 2: every bad value raises ``ConfigError`` whose message, ``key`` and
``value`` name the offending key by its full relative path ("0/1/type").
Rule 3: inheritance card -> pcm -> stream only narrows.  A lower level that
lists something its parent excluded is a configuration error, not silently
clipped (docs/protocol.md section 2.3).  Defaults (Linux
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

from collections.abc import Mapping
from typing import NamedTuple

from ..errors import ConfigError
from . import sndif as S
from .sndif import PcmFormat, format_from_string, format_to_string
from .xsnum import is_decimal, parse_uint

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
    "parse_card_config",
]


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
# buffer_sz travels as a uint32 in OPEN (sndif.h xensnd_open_req).
_U32_MAX = 0xFFFF_FFFF
_U8_MAX = 0xFF


# --------------------------------------------------------------------------
# Parsed frontend configuration
# --------------------------------------------------------------------------


class StreamConfig(NamedTuple):
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
        return self.type == S.STREAM_TYPE_CAPTURE

    @property
    def path(self) -> str:
        """The stream's xenstore directory relative to the frontend dir."""
        return f"{self.pcm_index}/{self.stream_index}"


class CardConfig(NamedTuple):
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


class _Constraint(NamedTuple):
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

    key = prefix + S.FIELD_SAMPLE_FORMATS
    if key in tree:
        mine = _parse_formats(key, tree[key])
        if formats is not None and not mine <= formats:
            extra = ",".join(format_to_string(f) for f in sorted(mine - formats))
            raise _err(key, tree[key], f"widens the inherited format list by {extra}")
        formats = mine

    key = prefix + S.FIELD_SAMPLE_RATES
    if key in tree:
        mine_r = _parse_rates(key, tree[key])
        if rates is not None and not mine_r <= rates:
            extra = ",".join(map(str, sorted(mine_r - rates)))
            raise _err(key, tree[key], f"widens the inherited rate list by {extra}")
        rates = mine_r

    key = prefix + S.FIELD_CHANNELS_MIN
    if key in tree:
        v = _parse_uint(key, tree[key], 1, _U8_MAX)
        if ch_min is not None and v < ch_min:
            raise _err(key, tree[key], f"widens the inherited channels-min {ch_min}")
        ch_min = v
    key = prefix + S.FIELD_CHANNELS_MAX
    if key in tree:
        v = _parse_uint(key, tree[key], 1, _U8_MAX)
        if ch_max is not None and v > ch_max:
            raise _err(key, tree[key], f"widens the inherited channels-max {ch_max}")
        ch_max = v
    if ch_min is not None and ch_max is not None and ch_min > ch_max:
        # Name whichever key this level set (max first: it is the one that
        # usually narrows too far).
        bad = prefix + S.FIELD_CHANNELS_MAX
        if bad not in tree:
            bad = prefix + S.FIELD_CHANNELS_MIN
        raise _err(bad, tree.get(bad), f"empty channel range {ch_min}..{ch_max}")

    key = prefix + S.FIELD_BUFFER_SIZE
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
    key = prefix + S.FIELD_TYPE
    if key not in tree:
        # Linux cfg_get_stream_type fails the whole card on a missing type.
        raise _err(key, None, "missing stream type (expected 'p' or 'c')")
    typ = tree[key].strip().lower()  # Linux compares case-insensitively
    if typ not in (S.STREAM_TYPE_PLAYBACK, S.STREAM_TYPE_CAPTURE):
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
        unique_id=tree.get(prefix + S.FIELD_STREAM_UNIQUE_ID, ""),
        formats=formats, rates=rates, rate_min=rates[0], rate_max=rates[-1],
        channels_min=ch_min, channels_max=ch_max,
        buffer_bytes_max=buffer,
        period_bytes_min=PERIOD_BYTES_MIN, period_bytes_max=buffer,
        periods_min=PERIODS_MIN, periods_max=buffer // PERIOD_BYTES_MIN,
    )


def is_card_branch(name: str) -> bool:
    """Whether a node of a vsnd device's tree may have children: in sndif's
    layout only the pcm and stream indexes do, every property is a leaf."""
    return is_decimal(name)


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
        pcm_name = _truncate(tree, f"{p}/{S.FIELD_DEVICE_NAME}", S.DEVICE_NAME_MAX_LEN)
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
        short_name=_truncate(tree, S.FIELD_VCARD_SHORT_NAME, S.VCARD_SHORT_NAME_MAX_LEN),
        long_name=_truncate(tree, S.FIELD_VCARD_LONG_NAME, S.VCARD_LONG_NAME_MAX_LEN),
        streams=tuple(streams),
    )
