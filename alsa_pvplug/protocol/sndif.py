"""sndif.h (Xen para-virtual sound, protocol version 2) in Python.

Rule 1: this module never performs I/O, never reads a clock and imports
nothing but pure stdlib modules and :mod:`alsa_pvplug.errors`.

Rule 2: every wire structure is exactly 64 octets, little-endian, with all
reserved bytes zero on encode.  Decoders of peer data never raise on a
64-byte slot (an unknown operation or event type is reported as a value);
they raise :class:`~alsa_pvplug.errors.RemoteProtocolError` only for a slot
of the wrong length.  Encoders check every field against its C width and
raise :class:`~alsa_pvplug.errors.LocalProtocolError`.

Layouts are those of ``/usr/include/xen/io/sndif.h`` (Xen 4.17), verified
against the compiled header by ``tests/unit/test_sndif.py``; see
``docs/protocol.md`` sections 2 and 4.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from enum import IntEnum
from typing import NamedTuple

from ..errors import ConfigError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "PROTOCOL_VERSION", "Op", "Trigger", "EvtType", "PcmFormat",
    "format_to_string", "format_from_string", "format_mask", "formats_from_mask",
    "sample_bytes", "frame_bytes", "silence",
    "HwParams", "OpenReq", "CloseReq", "RwReq", "TriggerReq", "HwParamQuery",
    "UnknownReq", "Request", "Resp", "CurPosEvt",
    "encode_request", "decode_request", "encode_response", "decode_response",
    "encode_event", "decode_event",
    "PAGE_SIZE", "GREFS_PER_DIR_PAGE", "buffer_page_count", "dir_page_count",
    "encode_page_directory", "decode_directory_page",
    "SLOT_SIZE", "DRIVER_NAME", "LIST_SEPARATOR",
    "LIBXL_FORMAT_NAMES",
    "FIELD_BE_VERSIONS", "FIELD_FE_VERSION", "FIELD_VCARD_SHORT_NAME", "FIELD_VCARD_LONG_NAME",
    "FIELD_RING_REF", "FIELD_EVT_CHNL", "FIELD_EVT_RING_REF", "FIELD_EVT_EVT_CHNL",
    "FIELD_DEVICE_NAME", "FIELD_TYPE", "FIELD_STREAM_UNIQUE_ID", "FIELD_CHANNELS_MIN",
    "FIELD_CHANNELS_MAX", "FIELD_SAMPLE_RATES", "FIELD_SAMPLE_FORMATS", "FIELD_BUFFER_SIZE",
    "STREAM_TYPE_PLAYBACK", "STREAM_TYPE_CAPTURE", "SAMPLE_RATE_MAX_LEN", "SAMPLE_FORMAT_MAX_LEN",
    "VCARD_SHORT_NAME_MAX_LEN", "VCARD_LONG_NAME_MAX_LEN", "DEVICE_NAME_MAX_LEN",
]

PROTOCOL_VERSION = 2  # XENSND_PROTOCOL_VERSION

#: Every request, response and event is one 64-octet ring slot (sndif v2).
SLOT_SIZE = 64


class Op(IntEnum):
    """XENSND_OP_*."""

    OPEN = 0
    CLOSE = 1
    READ = 2
    WRITE = 3
    SET_VOLUME = 4
    GET_VOLUME = 5
    MUTE = 6
    UNMUTE = 7
    TRIGGER = 8
    HW_PARAM_QUERY = 9


class Trigger(IntEnum):
    """XENSND_OP_TRIGGER_*."""

    START = 0
    PAUSE = 1
    STOP = 2
    RESUME = 3


class EvtType(IntEnum):
    """XENSND_EVT_*."""

    CUR_POS = 0


class PcmFormat(IntEnum):
    """XENSND_PCM_FORMAT_* (wire value in OPEN, bit number in the query mask)."""

    S8 = 0
    U8 = 1
    S16_LE = 2
    S16_BE = 3
    U16_LE = 4
    U16_BE = 5
    S24_LE = 6
    S24_BE = 7
    U24_LE = 8
    U24_BE = 9
    S32_LE = 10
    S32_BE = 11
    U32_LE = 12
    U32_BE = 13
    FLOAT_LE = 14      # XENSND_PCM_FORMAT_F32_LE
    FLOAT_BE = 15      # XENSND_PCM_FORMAT_F32_BE
    FLOAT64_LE = 16    # XENSND_PCM_FORMAT_F64_LE
    FLOAT64_BE = 17    # XENSND_PCM_FORMAT_F64_BE
    IEC958_SUBFRAME_LE = 18
    IEC958_SUBFRAME_BE = 19
    MU_LAW = 20
    A_LAW = 21
    IMA_ADPCM = 22
    MPEG = 23
    GSM = 24


# --- XenStore keys and limits (sndif.h "XenStore field and path name") ------

DRIVER_NAME = "vsnd"          # XENSND_DRIVER_NAME
LIST_SEPARATOR = ","          # XENSND_LIST_SEPARATOR

FIELD_BE_VERSIONS = "versions"
FIELD_FE_VERSION = "version"
FIELD_VCARD_SHORT_NAME = "short-name"
FIELD_VCARD_LONG_NAME = "long-name"
FIELD_RING_REF = "ring-ref"
FIELD_EVT_CHNL = "event-channel"
FIELD_EVT_RING_REF = "evt-ring-ref"
FIELD_EVT_EVT_CHNL = "evt-event-channel"
FIELD_DEVICE_NAME = "name"
FIELD_TYPE = "type"
FIELD_STREAM_UNIQUE_ID = "unique-id"
FIELD_CHANNELS_MIN = "channels-min"
FIELD_CHANNELS_MAX = "channels-max"
FIELD_SAMPLE_RATES = "sample-rates"
FIELD_SAMPLE_FORMATS = "sample-formats"
FIELD_BUFFER_SIZE = "buffer-size"

STREAM_TYPE_PLAYBACK = "p"
STREAM_TYPE_CAPTURE = "c"

SAMPLE_RATE_MAX_LEN = 11      # XENSND_SAMPLE_RATE_MAX_LEN
SAMPLE_FORMAT_MAX_LEN = 24    # XENSND_SAMPLE_FORMAT_MAX_LEN
# Card name limits from the sndif.h prose ("short-name ... 32", "long-name ... 80")
VCARD_SHORT_NAME_MAX_LEN = 32
VCARD_LONG_NAME_MAX_LEN = 80
DEVICE_NAME_MAX_LEN = 80

# --- PCM formats --------------------------------------------------------------

# libxl writes its own enum spellings for floats (docs/protocol.md section 2.4).
_LIBXL_ALIASES = {
    "f32_le": PcmFormat.FLOAT_LE,
    "f32_be": PcmFormat.FLOAT_BE,
    "f64_le": PcmFormat.FLOAT64_LE,
    "f64_be": PcmFormat.FLOAT64_BE,
}
#: what libxl writes for a format where it differs from the sndif string
LIBXL_FORMAT_NAMES = {fmt: name for name, fmt in _LIBXL_ALIASES.items()}
# The sndif spellings are exactly the lower-cased member names.
_FROM_STRING = {f.name.lower(): f for f in PcmFormat} | _LIBXL_ALIASES

_SAMPLE_BYTES = {
    PcmFormat.S8: 1, PcmFormat.U8: 1, PcmFormat.MU_LAW: 1, PcmFormat.A_LAW: 1,
    PcmFormat.S16_LE: 2, PcmFormat.S16_BE: 2, PcmFormat.U16_LE: 2, PcmFormat.U16_BE: 2,
    # ALSA's S24/U24 are 24 bits in a 32-bit container (the packed ones are S24_3LE).
    PcmFormat.S24_LE: 4, PcmFormat.S24_BE: 4, PcmFormat.U24_LE: 4, PcmFormat.U24_BE: 4,
    PcmFormat.S32_LE: 4, PcmFormat.S32_BE: 4, PcmFormat.U32_LE: 4, PcmFormat.U32_BE: 4,
    PcmFormat.FLOAT_LE: 4, PcmFormat.FLOAT_BE: 4,
    PcmFormat.FLOAT64_LE: 8, PcmFormat.FLOAT64_BE: 8,
    PcmFormat.IEC958_SUBFRAME_LE: 4, PcmFormat.IEC958_SUBFRAME_BE: 4,
}


def format_to_string(fmt: int) -> str:
    """The sndif xenstore spelling of ``fmt`` (``XENSND_PCM_FORMAT_*_STR``).

    Parameters
    ----------
    fmt : PcmFormat or int

    Returns
    -------
    str
        e.g. ``"s16_le"``, ``"float_le"``.

    Raises
    ------
    ConfigError
        ``fmt`` is not a sndif format number (EINVAL).
    """
    try:
        return PcmFormat(fmt).name.lower()
    except ValueError:
        raise ConfigError(f"unknown PCM format number {fmt!r}", value=fmt) from None


def format_from_string(s: str) -> PcmFormat:
    """Parse one format name from ``sample-formats``.

    Accepts the sndif spellings (``float_le``) and libxl's (``f32_le``),
    case-insensitively, ignoring surrounding white space.

    Raises
    ------
    ConfigError
        Unknown name; the message names the string (EINVAL).
    """
    try:
        return _FROM_STRING[s.strip().lower()]
    except (KeyError, AttributeError):
        raise ConfigError(f"unknown PCM format {s!r}", key=FIELD_SAMPLE_FORMATS,
                          value=s) from None


def format_mask(formats: Iterable[int]) -> int:
    """The HW_PARAM_QUERY ``formats`` mask: OR of ``1 << fmt``.

    Raises
    ------
    ConfigError
        A value is not a sndif format number (EINVAL).
    """
    mask = 0
    for f in formats:
        try:
            mask |= 1 << PcmFormat(f)
        except ValueError:
            raise ConfigError(f"unknown PCM format number {f!r}", value=f) from None
    return mask


def formats_from_mask(mask: int) -> list[PcmFormat]:
    """The known formats whose bit is set in ``mask``, ascending; unknown bits are ignored."""
    return [f for f in PcmFormat if mask >> f & 1]


def sample_bytes(fmt: int) -> int:
    """Physical bytes per sample of ``fmt`` (ALSA's layout: S24_LE is 4).

    Raises
    ------
    ConfigError
        Unknown or compressed format (IMA_ADPCM, MPEG, GSM) (EINVAL).
    """
    try:
        return _SAMPLE_BYTES[PcmFormat(fmt)]
    except (ValueError, KeyError):
        raise ConfigError(f"PCM format {fmt!r} has no fixed sample size", value=fmt) from None


def frame_bytes(fmt: int, channels: int) -> int:
    """Bytes per frame: ``sample_bytes(fmt) * channels``.

    Raises
    ------
    ConfigError
        Bad format (see :func:`sample_bytes`) or ``channels < 1`` (EINVAL).
    """
    if channels < 1:
        raise ConfigError(f"channel count must be >= 1, got {channels}", value=channels)
    return sample_bytes(fmt) * channels


# --- Wire structures ---------------------------------------------------------

# docs/protocol.md section 4.8: formats checked against the C structs.
_HDR = struct.Struct("<HB5x")              # xensnd_req: id, operation, reserved[5]
_OPEN = struct.Struct("<IBBHIII")          # xensnd_open_req @8 (20 octets)
_RW = struct.Struct("<II")                 # xensnd_rw_req @8
_TRIGGER = struct.Struct("<B")             # xensnd_trigger_req @8
_HW_PARAM = struct.Struct("<QIIIIIIII")    # xensnd_query_hw_param @8 (40 octets)
_RESP_HDR = struct.Struct("<HBxi")         # xensnd_resp: id, operation, reserved, status
_EVT = struct.Struct("<HB5xQ")             # xensnd_evt + xensnd_cur_pos_evt
_BODY = 8                                  # offsetof(struct xensnd_req, op)

_RW_OPS = frozenset({Op.READ, Op.WRITE, Op.SET_VOLUME, Op.GET_VOLUME, Op.MUTE, Op.UNMUTE})

_U8 = 0xFF
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF


def _check(name: str, value: int, limit: int) -> int:
    """``value`` as an int in ``0..limit``, or LocalProtocolError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise LocalProtocolError(f"{name}={value!r} out of range 0..{limit:#x}")
    return int(value)


def _check_len(slot: bytes, what: str) -> None:
    if len(slot) != SLOT_SIZE:
        raise RemoteProtocolError(f"{what} slot is {len(slot)} octets, expected {SLOT_SIZE}")


def _maybe(enum: type[IntEnum], value: int) -> int:
    """The enum member for ``value`` if it names one, else the plain int."""
    try:
        return enum(value)
    except ValueError:
        return value


class HwParams(NamedTuple):
    """``struct xensnd_query_hw_param``; each range is ``(min, max)``.

    ``buffer`` and ``period`` are in FRAMES (unlike OPEN's octets).
    """

    formats: int
    rates: tuple[int, int]
    channels: tuple[int, int]
    buffer: tuple[int, int]
    period: tuple[int, int]

    def _pack(self) -> bytes:
        vals = [_check("formats", self.formats, _U64)]
        for name in ("rates", "channels", "buffer", "period"):
            rng = getattr(self, name)
            if len(rng) != 2:
                raise LocalProtocolError(f"{name}={rng!r} is not a (min, max) pair")
            vals += [_check(f"{name}.min", rng[0], _U32), _check(f"{name}.max", rng[1], _U32)]
        return _HW_PARAM.pack(*vals)

    @classmethod
    def _unpack(cls, slot: bytes) -> HwParams:
        f, r0, r1, c0, c1, b0, b1, p0, p1 = _HW_PARAM.unpack_from(slot, _BODY)
        return cls(f, (r0, r1), (c0, c1), (b0, b1), (p0, p1))


class OpenReq(NamedTuple):
    """``struct xensnd_open_req``; ``buffer_sz`` and ``period_sz`` in octets."""

    id: int
    pcm_rate: int
    pcm_format: int
    pcm_channels: int
    buffer_sz: int
    gref_directory: int
    period_sz: int

    @property
    def operation(self) -> Op:
        return Op.OPEN


class CloseReq(NamedTuple):
    """XENSND_OP_CLOSE (no payload)."""

    id: int

    @property
    def operation(self) -> Op:
        return Op.CLOSE


class RwReq(NamedTuple):
    """``struct xensnd_rw_req``: READ, WRITE and the volume/mute ops sharing its layout."""

    id: int
    operation: Op
    offset: int
    length: int


class TriggerReq(NamedTuple):
    """``struct xensnd_trigger_req``; ``type`` is a :class:`Trigger` value."""

    id: int
    type: int

    @property
    def operation(self) -> Op:
        return Op.TRIGGER


class HwParamQuery(NamedTuple):
    """XENSND_OP_HW_PARAM_QUERY with the requested ranges."""

    id: int
    params: HwParams

    @property
    def operation(self) -> Op:
        return Op.HW_PARAM_QUERY


class UnknownReq(NamedTuple):
    """A decoded request whose operation we do not know (answer it with an error)."""

    id: int
    operation: int


Request = OpenReq | CloseReq | RwReq | TriggerReq | HwParamQuery | UnknownReq


class Resp(NamedTuple):
    """``struct xensnd_resp``; ``status`` is 0 or a negative errno.

    ``hw_param`` is only meaningful (and only decoded) for HW_PARAM_QUERY.
    """

    id: int
    operation: int
    status: int
    hw_param: HwParams | None = None


class CurPosEvt(NamedTuple):
    """``struct xensnd_cur_pos_evt``: stream position in octets (uint64)."""

    id: int
    position: int

    @property
    def type(self) -> EvtType:
        return EvtType.CUR_POS


def encode_request(req: Request) -> bytes:
    """The 64-octet ring slot for ``req``, reserved bytes zero.

    Raises
    ------
    LocalProtocolError
        A field does not fit its C type, or the request kind and operation
        disagree (EBADFD).
    """
    if not isinstance(req, (OpenReq, CloseReq, RwReq, TriggerReq, HwParamQuery, UnknownReq)):
        raise LocalProtocolError(f"not a sndif request: {req!r}")
    slot = bytearray(SLOT_SIZE)  # zero-filled: reserved bytes and union tail
    rid = _check("id", req.id, _U16)
    op: int
    if isinstance(req, OpenReq):
        op = Op.OPEN
        _OPEN.pack_into(slot, _BODY,
                        _check("pcm_rate", req.pcm_rate, _U32),
                        _check("pcm_format", req.pcm_format, _U8),
                        _check("pcm_channels", req.pcm_channels, _U8),
                        0,
                        _check("buffer_sz", req.buffer_sz, _U32),
                        _check("gref_directory", req.gref_directory, _U32),
                        _check("period_sz", req.period_sz, _U32))
    elif isinstance(req, CloseReq):
        op = Op.CLOSE
    elif isinstance(req, RwReq):
        if req.operation not in _RW_OPS:
            raise LocalProtocolError(f"operation {req.operation!r} does not use the rw layout")
        op = Op(req.operation)
        _RW.pack_into(slot, _BODY, _check("offset", req.offset, _U32),
                      _check("length", req.length, _U32))
    elif isinstance(req, TriggerReq):
        op = Op.TRIGGER
        _TRIGGER.pack_into(slot, _BODY, _check("type", req.type, _U8))
    elif isinstance(req, HwParamQuery):
        op = Op.HW_PARAM_QUERY
        slot[_BODY:_BODY + _HW_PARAM.size] = req.params._pack()
    else:  # UnknownReq
        # Lets tests (and a hostile-peer fake) put arbitrary operations on the wire.
        op = _check("operation", req.operation, _U8)
    _HDR.pack_into(slot, 0, rid, op)
    return bytes(slot)


def decode_request(slot: bytes) -> Request:
    """Parse a request slot (backend side).

    Unknown operations give :class:`UnknownReq`; reserved bytes are ignored.

    Raises
    ------
    RemoteProtocolError
        ``slot`` is not 64 octets (EIO).
    """
    _check_len(slot, "request")
    rid, op = _HDR.unpack_from(slot, 0)
    if op == Op.OPEN:
        rate, fmt, ch, _res, buf, gref, period = _OPEN.unpack_from(slot, _BODY)
        return OpenReq(rid, rate, _maybe(PcmFormat, fmt), ch, buf, gref, period)
    if op == Op.CLOSE:
        return CloseReq(rid)
    if op in _RW_OPS:
        offset, length = _RW.unpack_from(slot, _BODY)
        return RwReq(rid, Op(op), offset, length)
    if op == Op.TRIGGER:
        (ttype,) = _TRIGGER.unpack_from(slot, _BODY)
        return TriggerReq(rid, _maybe(Trigger, ttype))
    if op == Op.HW_PARAM_QUERY:
        return HwParamQuery(rid, HwParams._unpack(slot))
    return UnknownReq(rid, op)


def encode_response(resp: Resp) -> bytes:
    """The 64-octet slot for ``resp`` (backend side).

    ``hw_param`` is written only for HW_PARAM_QUERY; ``None`` there gives a
    zeroed range block (fine for an error status).

    Raises
    ------
    LocalProtocolError
        Field out of range, or ``hw_param`` given for another operation (EBADFD).
    """
    slot = bytearray(SLOT_SIZE)
    status = resp.status
    if isinstance(status, bool) or not isinstance(status, int) \
            or not -2**31 <= status < 2**31:
        raise LocalProtocolError(f"status={status!r} does not fit int32")
    op = _check("operation", resp.operation, _U8)
    _RESP_HDR.pack_into(slot, 0, _check("id", resp.id, _U16), op, status)
    if resp.hw_param is not None:
        if op != Op.HW_PARAM_QUERY:
            raise LocalProtocolError(f"hw_param in a response to operation {op}")
        slot[_BODY:_BODY + _HW_PARAM.size] = resp.hw_param._pack()
    return bytes(slot)


def decode_response(slot: bytes) -> Resp:
    """Parse a response slot (frontend side); never raises on 64 octets.

    Raises
    ------
    RemoteProtocolError
        ``slot`` is not 64 octets (EIO).
    """
    _check_len(slot, "response")
    rid, op, status = _RESP_HDR.unpack_from(slot, 0)
    hw = HwParams._unpack(slot) if op == Op.HW_PARAM_QUERY else None
    return Resp(rid, _maybe(Op, op), status, hw)


def encode_event(evt: CurPosEvt) -> bytes:
    """The 64-octet event slot for ``evt`` (backend side).

    Raises
    ------
    LocalProtocolError
        Field out of range (EBADFD).
    """
    if not isinstance(evt, CurPosEvt):
        raise LocalProtocolError(f"not a sndif event: {evt!r}")
    slot = bytearray(SLOT_SIZE)
    _EVT.pack_into(slot, 0, _check("id", evt.id, _U16), EvtType.CUR_POS,
                   _check("position", evt.position, _U64))
    return bytes(slot)


def decode_event(slot: bytes) -> CurPosEvt | None:
    """Parse an event slot (frontend side); ``None`` for unknown event types.

    Raises
    ------
    RemoteProtocolError
        ``slot`` is not 64 octets (EIO).
    """
    _check_len(slot, "event")
    eid, etype, position = _EVT.unpack_from(slot, 0)
    if etype != EvtType.CUR_POS:
        return None
    return CurPosEvt(eid, position)


# --- Page directory (docs/protocol.md section 4.7) ----------------------------

PAGE_SIZE = 4096
_GREF = 4                                    # sizeof(grant_ref_t)
_DIR_HEAD = 4                                # offsetof(struct xensnd_page_directory, gref)
GREFS_PER_DIR_PAGE = (PAGE_SIZE - _DIR_HEAD) // _GREF   # 1023
_DIR_PAGE = struct.Struct(f"<I{GREFS_PER_DIR_PAGE}I")
assert _DIR_PAGE.size == PAGE_SIZE


def buffer_page_count(buffer_sz: int) -> int:
    """Number of 4 KiB pages (= buffer grefs) that hold ``buffer_sz`` octets.

    Raises
    ------
    LocalProtocolError
        ``buffer_sz`` is negative or exceeds uint32 (EBADFD).
    """
    _check("buffer_sz", buffer_sz, _U32)
    return -(-buffer_sz // PAGE_SIZE)


def dir_page_count(n_buffer_pages: int) -> int:
    """Number of directory pages for ``n_buffer_pages`` buffer grefs (0 for 0)."""
    if n_buffer_pages < 0:
        raise LocalProtocolError(f"negative page count {n_buffer_pages}")
    return -(-n_buffer_pages // GREFS_PER_DIR_PAGE)


def encode_page_directory(dir_refs: list[int], buffer_refs: list[int]) -> list[bytes]:
    """The contents of the directory pages, one 4096-octet page per ``dir_refs`` entry.

    Page i holds ``next`` = ``dir_refs[i + 1]`` (0 on the last page) and up to
    1023 buffer grefs, zero-padded.  ``dir_refs[0]`` goes into OPEN's
    ``gref_directory``.

    Raises
    ------
    LocalProtocolError
        ``len(dir_refs) != dir_page_count(len(buffer_refs))``, a ref does not
        fit uint32, or a directory ref is 0, which the peer reads as the
        end of the chain (EBADFD).
    """
    need = dir_page_count(len(buffer_refs))
    if len(dir_refs) != need:
        raise LocalProtocolError(
            f"{len(buffer_refs)} buffer pages need {need} directory pages, got {len(dir_refs)}")
    for ref in dir_refs:
        # 0 terminates the chain (snd_be walks until it reads 0); Xen never hands it out.
        if _check("dir_ref", ref, _U32) == 0:
            raise LocalProtocolError("grant ref 0 cannot be a directory page: it ends the chain")
    for ref in buffer_refs:
        _check("buffer_ref", ref, _U32)
    pages = []
    for i in range(need):
        chunk = list(buffer_refs[i * GREFS_PER_DIR_PAGE:(i + 1) * GREFS_PER_DIR_PAGE])
        chunk += [0] * (GREFS_PER_DIR_PAGE - len(chunk))
        nxt = dir_refs[i + 1] if i + 1 < need else 0
        pages.append(_DIR_PAGE.pack(nxt, *chunk))
    return pages


def decode_directory_page(page: bytes, remaining: int) -> tuple[int, list[int]]:
    """Read one directory page: ``(gref_dir_next_page, buffer grefs)``.

    Returns at most ``min(remaining, 1023)`` grefs; the caller walks the
    chain and decides whether ``next`` is consistent with what remains.

    Raises
    ------
    RemoteProtocolError
        ``page`` is not 4096 octets (EIO).
    LocalProtocolError
        ``remaining`` is negative (EBADFD).
    """
    if len(page) != PAGE_SIZE:
        raise RemoteProtocolError(f"directory page is {len(page)} octets, expected {PAGE_SIZE}")
    if remaining < 0:
        raise LocalProtocolError(f"negative remaining gref count {remaining}")
    n = min(remaining, GREFS_PER_DIR_PAGE)
    nxt = struct.unpack_from("<I", page, 0)[0]
    grefs = list(struct.unpack_from(f"<{n}I", page, _DIR_HEAD))
    return nxt, grefs


def silence(fmt: PcmFormat, nbytes: int) -> bytes:
    """``nbytes`` of silence: zeros, the midpoint for unsigned formats, the
    codes for zero in mu-law and A-law."""
    if fmt == PcmFormat.MU_LAW:
        return b"\xff" * nbytes
    if fmt == PcmFormat.A_LAW:
        return b"\xd5" * nbytes
    if not fmt.name.startswith("U"):
        return bytes(nbytes)
    width = sample_bytes(fmt)
    bits = 24 if fmt.name.startswith("U24") else 8 * width
    mid = (1 << (bits - 1)).to_bytes(width, "big" if fmt.name.endswith("_BE") else "little")
    return mid * (nbytes // width)
