"""Tests for alsa_pvplug.protocol.sndif: layouts, vectors, round trips, and
conformance against the installed ``xen/io/sndif.h`` (compiled with cffi)."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import struct
import sysconfig

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alsa_pvplug.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from alsa_pvplug.protocol import sndif
from alsa_pvplug.protocol.sndif import (
    GREFS_PER_DIR_PAGE,
    PAGE_SIZE,
    CloseReq,
    CurPosEvt,
    EvtType,
    HwParamQuery,
    HwParams,
    Op,
    OpenReq,
    PcmFormat,
    Resp,
    RwReq,
    Trigger,
    TriggerReq,
    UnknownReq,
    buffer_page_count,
    decode_directory_page,
    decode_event,
    decode_request,
    decode_response,
    dir_page_count,
    encode_event,
    encode_page_directory,
    encode_request,
    encode_response,
    format_from_string,
    format_mask,
    format_to_string,
    formats_from_mask,
    frame_bytes,
    sample_bytes,
)

SNDIF_H = "/usr/include/xen/io/sndif.h"

RW_OPS = [Op.READ, Op.WRITE, Op.SET_VOLUME, Op.GET_VOLUME, Op.MUTE, Op.UNMUTE]


def _hex(dump: str) -> bytes:
    """Bytes from a 'NN: xx xx ..' dump, zero-padded to 64."""
    out = bytearray()
    for line in dump.strip().splitlines():
        out += bytes.fromhex(line.split(":", 1)[1])
    return bytes(out) + bytes(64 - len(out))


# --- golden layouts (docs/protocol.md section 4) -----------------------------

class TestLayout:
    def test_struct_sizes(self) -> None:
        assert struct.calcsize("<HB5x") == 8
        assert struct.calcsize("<IBBHIII") == 20          # xensnd_open_req
        assert struct.calcsize("<II") == 8                # xensnd_rw_req
        assert struct.calcsize("<QIIIIIIII") == 40        # xensnd_query_hw_param
        assert struct.calcsize("<HBxi") == 8
        assert struct.calcsize("<HB5xQ") == 16

    def test_every_slot_is_64_octets(self) -> None:
        hw = HwParams(1, (1, 2), (1, 2), (1, 2), (1, 2))
        reqs = [OpenReq(1, 2, 3, 4, 5, 6, 7), CloseReq(1), RwReq(1, Op.WRITE, 2, 3),
                TriggerReq(1, Trigger.STOP), HwParamQuery(1, hw), UnknownReq(1, 200)]
        for r in reqs:
            assert len(encode_request(r)) == 64
        assert len(encode_response(Resp(1, Op.HW_PARAM_QUERY, 0, hw))) == 64
        assert len(encode_event(CurPosEvt(1, 2))) == 64

    def test_open_field_offsets(self) -> None:
        b = encode_request(OpenReq(0xA1A2, 0xB1B2B3B4, 0xC1, 0xD1, 0xE1E2E3E4, 0xF1F2F3F4,
                                   0x91929394))
        assert b[0:2] == b"\xa2\xa1" and b[2] == Op.OPEN and b[3:8] == bytes(5)
        assert b[8:12] == bytes.fromhex("b4b3b2b1")      # pcm_rate @8
        assert b[12] == 0xC1 and b[13] == 0xD1            # format @12, channels @13
        assert b[14:16] == bytes(2)                       # reserved
        assert b[16:20] == bytes.fromhex("e4e3e2e1")      # buffer_sz @16
        assert b[20:24] == bytes.fromhex("f4f3f2f1")      # gref_directory @20
        assert b[24:28] == bytes.fromhex("94939291")      # period_sz @24
        assert b[28:] == bytes(36)

    def test_hw_param_offsets(self) -> None:
        hw = HwParams(0x0102030405060708, (0x11, 0x12), (0x21, 0x22), (0x31, 0x32),
                      (0x41, 0x42))
        b = encode_request(HwParamQuery(9, hw))
        assert b[8:16] == (0x0102030405060708).to_bytes(8, "little")
        for off, val in [(16, 0x11), (20, 0x12), (24, 0x21), (28, 0x22), (32, 0x31),
                         (36, 0x32), (40, 0x41), (44, 0x42)]:
            assert b[off:off + 4] == val.to_bytes(4, "little"), off
        r = encode_response(Resp(9, Op.HW_PARAM_QUERY, -5, hw))
        assert r[4:8] == (-5).to_bytes(4, "little", signed=True)
        assert r[8:48] == b[8:48]                         # resp.hw_param @8, same layout


# --- docs/protocol.md section 4.8 test vectors --------------------------------

class TestVectors:
    def test_open(self) -> None:
        want = _hex("""
            00: 02 01 00 00 00 00 00 00 80 bb 00 00 02 02 00 00
            10: 00 40 00 00 34 12 00 00 00 10 00 00 00 00 00 00""")
        req = OpenReq(0x0102, 48000, PcmFormat.S16_LE, 2, 16384, 0x1234, 4096)
        assert encode_request(req) == want
        assert decode_request(want) == req

    def test_write(self) -> None:
        want = _hex("00: 03 00 03 00 00 00 00 00 00 10 00 00 00 08 00 00")
        assert encode_request(RwReq(3, Op.WRITE, 4096, 2048)) == want
        assert decode_request(want) == RwReq(3, Op.WRITE, 4096, 2048)

    def test_trigger(self) -> None:
        want = _hex("00: 04 00 08 00 00 00 00 00 00 00 00 00 00 00 00 00")
        assert encode_request(TriggerReq(4, Trigger.START)) == want
        assert decode_request(want) == TriggerReq(4, Trigger.START)

    def test_hw_param_query(self) -> None:
        want = _hex("""
            00: 05 00 09 00 00 00 00 00 04 04 00 00 00 00 00 00
            10: 40 1f 00 00 00 ee 02 00 01 00 00 00 02 00 00 00
            20: 40 00 00 00 00 40 00 00 20 00 00 00 00 20 00 00""")
        hw = HwParams(format_mask([PcmFormat.S16_LE, PcmFormat.S32_LE]), (8000, 192000),
                      (1, 2), (64, 16384), (32, 8192))
        assert encode_request(HwParamQuery(5, hw)) == want
        assert decode_request(want) == HwParamQuery(5, hw)

    def test_response(self) -> None:
        want = _hex("00: 03 00 03 00 ea ff ff ff")
        assert encode_response(Resp(3, Op.WRITE, -22)) == want
        assert decode_response(want) == Resp(3, Op.WRITE, -22, None)

    def test_event(self) -> None:
        want = _hex("00: 07 00 00 00 00 00 00 00 89 67 45 23 01 00 00 00")
        assert encode_event(CurPosEvt(7, 0x123456789)) == want
        assert decode_event(want) == CurPosEvt(7, 0x123456789)


# --- formats -----------------------------------------------------------------

class TestFormats:
    def test_numbering(self) -> None:
        assert [f.value for f in PcmFormat] == list(range(25))
        assert PcmFormat.FLOAT_LE == 14 and PcmFormat.GSM == 24

    @pytest.mark.parametrize("s,fmt", [
        ("float_le", PcmFormat.FLOAT_LE), ("f32_le", PcmFormat.FLOAT_LE),
        ("float_be", PcmFormat.FLOAT_BE), ("f32_be", PcmFormat.FLOAT_BE),
        ("float64_le", PcmFormat.FLOAT64_LE), ("f64_le", PcmFormat.FLOAT64_LE),
        ("float64_be", PcmFormat.FLOAT64_BE), ("F64_BE", PcmFormat.FLOAT64_BE),
        ("S16_LE", PcmFormat.S16_LE), (" s24_le ", PcmFormat.S24_LE),
        ("iec958_subframe_be", PcmFormat.IEC958_SUBFRAME_BE), ("Mu_Law", PcmFormat.MU_LAW),
    ])
    def test_from_string(self, s: str, fmt: PcmFormat) -> None:
        assert format_from_string(s) is fmt

    def test_to_string_round_trip(self) -> None:
        for f in PcmFormat:
            s = format_to_string(f)
            assert len(s) < sndif.SAMPLE_FORMAT_MAX_LEN
            assert format_from_string(s) is f
        assert format_to_string(PcmFormat.FLOAT_LE) == "float_le"
        assert format_to_string(16) == "float64_le"

    @pytest.mark.parametrize("bad", ["", "s16", "float32_le", "s16_le,u8"])
    def test_from_string_rejects(self, bad: str) -> None:
        with pytest.raises(ConfigError) as ei:
            format_from_string(bad)
        assert repr(bad) in str(ei.value)
        assert ei.value.errno == 22

    def test_to_string_rejects(self) -> None:
        with pytest.raises(ConfigError):
            format_to_string(25)

    def test_mask(self) -> None:
        assert format_mask([PcmFormat.U8, PcmFormat.S16_LE]) == 0b110
        assert format_mask([]) == 0
        assert formats_from_mask(0b110) == [PcmFormat.U8, PcmFormat.S16_LE]
        assert formats_from_mask(1 << 63 | 1 << 24) == [PcmFormat.GSM]   # unknown bits ignored
        assert formats_from_mask(format_mask(PcmFormat)) == list(PcmFormat)
        with pytest.raises(ConfigError):
            format_mask([25])

    @pytest.mark.parametrize("fmt,n", [
        (PcmFormat.S8, 1), (PcmFormat.U8, 1), (PcmFormat.MU_LAW, 1), (PcmFormat.A_LAW, 1),
        (PcmFormat.S16_LE, 2), (PcmFormat.U16_BE, 2), (PcmFormat.S24_LE, 4),
        (PcmFormat.U24_LE, 4), (PcmFormat.S32_BE, 4), (PcmFormat.FLOAT_LE, 4),
        (PcmFormat.FLOAT64_BE, 8), (PcmFormat.IEC958_SUBFRAME_LE, 4),
    ])
    def test_sample_bytes(self, fmt: PcmFormat, n: int) -> None:
        assert sample_bytes(fmt) == n
        assert frame_bytes(fmt, 2) == 2 * n

    @pytest.mark.parametrize("fmt", [PcmFormat.IMA_ADPCM, PcmFormat.MPEG, PcmFormat.GSM, 99])
    def test_sample_bytes_rejects(self, fmt: int) -> None:
        with pytest.raises(ConfigError):
            sample_bytes(fmt)

    def test_frame_bytes_rejects_zero_channels(self) -> None:
        with pytest.raises(ConfigError):
            frame_bytes(PcmFormat.S16_LE, 0)


# --- round trips ---------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
i32 = st.integers(-2**31, 2**31 - 1)
pair = st.tuples(u32, u32)
hw_params = st.builds(HwParams, u64, pair, pair, pair, pair)
requests = st.one_of(
    st.builds(OpenReq, u16, u32, u8, u8, u32, u32, u32),
    st.builds(CloseReq, u16),
    st.builds(RwReq, u16, st.sampled_from(RW_OPS), u32, u32),
    st.builds(TriggerReq, u16, u8),
    st.builds(HwParamQuery, u16, hw_params),
    st.builds(UnknownReq, u16, st.integers(10, 255)),
)


class TestRoundTrip:
    @given(requests)
    def test_request(self, req: sndif.Request) -> None:
        b = encode_request(req)
        assert len(b) == 64
        assert decode_request(b) == req
        assert type(decode_request(b)) is type(req)

    @given(u16, st.integers(0, 255).filter(lambda o: o != Op.HW_PARAM_QUERY), i32)
    def test_response(self, rid: int, op: int, status: int) -> None:
        r = Resp(rid, op, status)
        assert decode_response(encode_response(r)) == r

    @given(u16, i32, hw_params)
    def test_hw_param_response(self, rid: int, status: int, hw: HwParams) -> None:
        r = Resp(rid, Op.HW_PARAM_QUERY, status, hw)
        assert decode_response(encode_response(r)) == r

    def test_hw_param_response_without_params_decodes_zeroed(self) -> None:
        r = decode_response(encode_response(Resp(1, Op.HW_PARAM_QUERY, -22)))
        assert r.hw_param == HwParams(0, (0, 0), (0, 0), (0, 0), (0, 0))

    @given(u16, u64)
    def test_event(self, eid: int, pos: int) -> None:
        assert decode_event(encode_event(CurPosEvt(eid, pos))) == CurPosEvt(eid, pos)

    def test_decoded_enums(self) -> None:
        req = decode_request(encode_request(OpenReq(1, 48000, 2, 2, 4096, 1, 1024)))
        assert isinstance(req, OpenReq) and req.pcm_format is PcmFormat.S16_LE
        trig = decode_request(encode_request(TriggerReq(1, 3)))
        assert isinstance(trig, TriggerReq) and trig.type is Trigger.RESUME
        assert decode_response(encode_response(Resp(1, 1, 0))).operation is Op.CLOSE


class TestDecodeHostile:
    @given(st.binary(min_size=64, max_size=64))
    def test_decoders_never_raise_on_64_octets(self, slot: bytes) -> None:
        req = decode_request(slot)
        assert isinstance(req, (OpenReq, CloseReq, RwReq, TriggerReq, HwParamQuery, UnknownReq))
        assert decode_response(slot).id == slot[0] | slot[1] << 8
        evt = decode_event(slot)
        assert (evt is None) == (slot[2] != EvtType.CUR_POS)

    def test_unknown_op(self) -> None:
        slot = bytearray(64)
        slot[0:3] = b"\x07\x00\x2a"
        assert decode_request(bytes(slot)) == UnknownReq(7, 42)

    def test_reserved_bytes_ignored(self) -> None:
        slot = bytearray(encode_request(CloseReq(5)))
        slot[3:64] = b"\xff" * 61
        assert decode_request(bytes(slot)) == CloseReq(5)

    def test_unknown_event_type(self) -> None:
        slot = bytearray(encode_event(CurPosEvt(1, 2)))
        slot[2] = 1
        assert decode_event(bytes(slot)) is None

    @pytest.mark.parametrize("n", [0, 32, 63, 65, 128])
    def test_wrong_length(self, n: int) -> None:
        for dec in (decode_request, decode_response, decode_event):
            with pytest.raises(RemoteProtocolError):
                dec(bytes(n))


class TestEncodeRange:
    @pytest.mark.parametrize("req", [
        CloseReq(0x10000), CloseReq(-1),
        OpenReq(1, 2**32, 2, 2, 0, 0, 0), OpenReq(1, 1, 256, 2, 0, 0, 0),
        OpenReq(1, 1, 2, 256, 0, 0, 0), OpenReq(1, 1, 2, 2, -1, 0, 0),
        OpenReq(1, 1, 2, 2, 0, 2**32, 0), OpenReq(1, 1, 2, 2, 0, 0, 2**32),
        RwReq(1, Op.WRITE, 2**32, 0), RwReq(1, Op.READ, 0, -1),
        RwReq(1, Op.OPEN, 0, 0), RwReq(1, Op.TRIGGER, 0, 0),  # not rw-layout ops
        TriggerReq(1, 256),
        HwParamQuery(1, HwParams(2**64, (0, 0), (0, 0), (0, 0), (0, 0))),
        HwParamQuery(1, HwParams(0, (0, 2**32), (0, 0), (0, 0), (0, 0))),
        UnknownReq(1, 256),
    ])
    def test_request_out_of_range(self, req: sndif.Request) -> None:
        with pytest.raises(LocalProtocolError):
            encode_request(req)

    def test_not_a_request(self) -> None:
        with pytest.raises(LocalProtocolError):
            encode_request("OPEN")  # type: ignore[arg-type]

    @pytest.mark.parametrize("resp", [
        Resp(0x10000, 0, 0), Resp(1, 256, 0), Resp(1, 0, 2**31), Resp(1, 0, -2**31 - 1),
        Resp(1, Op.WRITE, 0, HwParams(0, (0, 0), (0, 0), (0, 0), (0, 0))),
    ])
    def test_response_out_of_range(self, resp: Resp) -> None:
        with pytest.raises(LocalProtocolError):
            encode_response(resp)

    @pytest.mark.parametrize("evt", [CurPosEvt(0x10000, 0), CurPosEvt(0, 2**64),
                                     CurPosEvt(0, -1)])
    def test_event_out_of_range(self, evt: CurPosEvt) -> None:
        with pytest.raises(LocalProtocolError):
            encode_event(evt)


# --- page directory (docs/protocol.md section 4.7) ---------------------------

class TestPageDirectory:
    def test_counts(self) -> None:
        assert GREFS_PER_DIR_PAGE == 1023 and PAGE_SIZE == 4096
        assert buffer_page_count(0) == 0
        assert buffer_page_count(1) == 1
        assert buffer_page_count(4096) == 1
        assert buffer_page_count(4097) == 2
        assert buffer_page_count(65536) == 16
        assert dir_page_count(16) == 1
        assert dir_page_count(1023) == 1
        assert dir_page_count(1024) == 2
        assert dir_page_count(2046) == 2
        assert dir_page_count(2047) == 3
        with pytest.raises(LocalProtocolError):
            buffer_page_count(-1)

    def test_one_page(self) -> None:
        buf = list(range(100, 116))
        pages = encode_page_directory([7], buf)
        assert len(pages) == 1 and len(pages[0]) == 4096
        p = pages[0]
        assert struct.unpack_from("<I", p, 0)[0] == 0              # last next = 0
        assert list(struct.unpack_from("<16I", p, 4)) == buf
        assert p[4 + 16 * 4:] == bytes(4096 - 4 - 64)
        assert decode_directory_page(p, 16) == (0, buf)

    @pytest.mark.parametrize("n", [1024, 1500, 2046, 2047])
    def test_chain(self, n: int) -> None:
        buf = [1000 + i for i in range(n)]
        dirs = [11, 12, 13][:dir_page_count(n)]
        pages = encode_page_directory(dirs, buf)
        assert len(pages) == len(dirs) >= 2
        # Walk the chain as the backend does.
        by_ref = dict(zip(dirs, pages))
        ref, remaining, got = dirs[0], n, []
        while True:
            nxt, grefs = decode_directory_page(by_ref[ref], remaining)
            got += grefs
            remaining -= len(grefs)
            if nxt == 0:
                break
            ref = nxt
        assert got == buf and remaining == 0
        assert struct.unpack_from("<I", pages[-1], 0)[0] == 0
        assert struct.unpack_from("<I", pages[0], 0)[0] == 12

    def test_decode_limits(self) -> None:
        page = encode_page_directory([3], list(range(1, 1024)))[0]
        nxt, grefs = decode_directory_page(page, 5000)
        assert nxt == 0 and grefs == list(range(1, 1024))
        assert decode_directory_page(page, 0) == (0, [])
        with pytest.raises(RemoteProtocolError):
            decode_directory_page(page[:100], 1)
        with pytest.raises(LocalProtocolError):
            decode_directory_page(page, -1)

    def test_encode_rejects(self) -> None:
        with pytest.raises(LocalProtocolError):
            encode_page_directory([1, 2], [5] * 16)          # too many dir pages
        with pytest.raises(LocalProtocolError):
            encode_page_directory([1], [5] * 1024)           # too few
        with pytest.raises(LocalProtocolError):
            encode_page_directory([1, 0], [5] * 1024)        # 0 would end the chain
        with pytest.raises(LocalProtocolError):
            encode_page_directory([0], [5] * 16)
        with pytest.raises(LocalProtocolError):
            encode_page_directory([1], [2**32])


# --- XenStore names ------------------------------------------------------------

def test_field_names() -> None:
    assert sndif.FIELD_RING_REF == "ring-ref"
    assert sndif.FIELD_EVT_CHNL == "event-channel"
    assert sndif.FIELD_EVT_RING_REF == "evt-ring-ref"
    assert sndif.FIELD_EVT_EVT_CHNL == "evt-event-channel"
    assert sndif.STREAM_TYPE_PLAYBACK == "p" and sndif.STREAM_TYPE_CAPTURE == "c"
    assert sndif.PROTOCOL_VERSION == 2


# --- conformance against the real header ---------------------------------------

_CDEF = """
struct pv_num { const char *name; long long value; };
struct pv_str { const char *name; const char *value; };
int pv_num_count(void);
const struct pv_num *pv_num_at(int i);
int pv_str_count(void);
const struct pv_str *pv_str_at(int i);
void pv_open(unsigned char *out, uint16_t id, uint32_t rate, uint8_t fmt, uint8_t ch,
             uint32_t buf, uint32_t gref, uint32_t period);
void pv_close(unsigned char *out, uint16_t id);
void pv_rw(unsigned char *out, uint16_t id, uint8_t op, uint32_t offset, uint32_t length);
void pv_trigger(unsigned char *out, uint16_t id, uint8_t type);
void pv_hw(unsigned char *out, uint16_t id, const uint64_t *formats, const uint32_t *r);
void pv_resp(unsigned char *out, uint16_t id, uint8_t op, int32_t status, int with_hw,
             const uint64_t *formats, const uint32_t *r);
void pv_evt(unsigned char *out, uint16_t id, uint64_t pos);
"""

_NUM_NAMES = (
    ["XENSND_PROTOCOL_VERSION", "XENSND_EVT_CUR_POS", "XENSND_SAMPLE_RATE_MAX_LEN",
     "XENSND_SAMPLE_FORMAT_MAX_LEN", "XENSND_IN_RING_OFFS", "XENSND_IN_RING_LEN"]
    + [f"XENSND_OP_{o.name}" for o in Op]
    + [f"XENSND_OP_TRIGGER_{t.name}" for t in Trigger]
)
# sndif.h spells the float formats F32/F64; our member names follow the strings.
_C_FMT = {"FLOAT_LE": "F32_LE", "FLOAT_BE": "F32_BE", "FLOAT64_LE": "F64_LE",
          "FLOAT64_BE": "F64_BE"}
_FIELDS = ["BE_VERSIONS", "FE_VERSION", "VCARD_SHORT_NAME", "VCARD_LONG_NAME", "RING_REF",
           "EVT_CHNL", "EVT_RING_REF", "EVT_EVT_CHNL", "DEVICE_NAME", "TYPE",
           "STREAM_UNIQUE_ID", "CHANNELS_MIN", "CHANNELS_MAX", "SAMPLE_RATES",
           "SAMPLE_FORMATS", "BUFFER_SIZE"]

# (C expression, expected value)
_LAYOUT = {
    "sizeof(struct xensnd_req)": 64, "sizeof(struct xensnd_resp)": 64,
    "sizeof(struct xensnd_evt)": 64, "sizeof(struct xensnd_event_page)": 64,
    "sizeof(struct xensnd_open_req)": 20, "sizeof(struct xensnd_rw_req)": 8,
    "sizeof(struct xensnd_trigger_req)": 1, "sizeof(struct xensnd_query_hw_param)": 40,
    "sizeof(struct xensnd_cur_pos_evt)": 8, "sizeof(grant_ref_t)": 4,
    "sizeof(union xen_sndif_sring_entry)": 64,
    "offsetof(struct xensnd_req, id)": 0, "offsetof(struct xensnd_req, operation)": 2,
    "offsetof(struct xensnd_req, op)": 8,
    "offsetof(struct xensnd_req, op.open.pcm_rate)": 8,
    "offsetof(struct xensnd_req, op.open.pcm_format)": 12,
    "offsetof(struct xensnd_req, op.open.pcm_channels)": 13,
    "offsetof(struct xensnd_req, op.open.buffer_sz)": 16,
    "offsetof(struct xensnd_req, op.open.gref_directory)": 20,
    "offsetof(struct xensnd_req, op.open.period_sz)": 24,
    "offsetof(struct xensnd_req, op.rw.offset)": 8,
    "offsetof(struct xensnd_req, op.rw.length)": 12,
    "offsetof(struct xensnd_req, op.trigger.type)": 8,
    "offsetof(struct xensnd_req, op.hw_param.formats)": 8,
    "offsetof(struct xensnd_req, op.hw_param.rates.min)": 16,
    "offsetof(struct xensnd_req, op.hw_param.rates.max)": 20,
    "offsetof(struct xensnd_req, op.hw_param.channels.min)": 24,
    "offsetof(struct xensnd_req, op.hw_param.channels.max)": 28,
    "offsetof(struct xensnd_req, op.hw_param.buffer.min)": 32,
    "offsetof(struct xensnd_req, op.hw_param.buffer.max)": 36,
    "offsetof(struct xensnd_req, op.hw_param.period.min)": 40,
    "offsetof(struct xensnd_req, op.hw_param.period.max)": 44,
    "offsetof(struct xensnd_resp, id)": 0, "offsetof(struct xensnd_resp, operation)": 2,
    "offsetof(struct xensnd_resp, status)": 4,
    "offsetof(struct xensnd_resp, resp.hw_param)": 8,
    "offsetof(struct xensnd_evt, id)": 0, "offsetof(struct xensnd_evt, type)": 2,
    "offsetof(struct xensnd_evt, op.cur_pos.position)": 8,
    "offsetof(struct xensnd_event_page, in_cons)": 0,
    "offsetof(struct xensnd_event_page, in_prod)": 4,
    "offsetof(struct xensnd_page_directory, gref_dir_next_page)": 0,
    "offsetof(struct xensnd_page_directory, gref)": 4,
    "offsetof(struct xen_sndif_sring, req_prod)": 0,
    "offsetof(struct xen_sndif_sring, req_event)": 4,
    "offsetof(struct xen_sndif_sring, rsp_prod)": 8,
    "offsetof(struct xen_sndif_sring, rsp_event)": 12,
    "offsetof(struct xen_sndif_sring, ring)": 64,
    "__CONST_RING_SIZE(xen_sndif, 4096)": 32,
}


def _csource() -> str:
    nums = list(_NUM_NAMES) + list(_LAYOUT)
    nums += [f"XENSND_PCM_FORMAT_{_C_FMT.get(f.name, f.name)}" for f in PcmFormat]
    strs = [f"XENSND_FIELD_{f}" for f in _FIELDS]
    strs += ["XENSND_STREAM_TYPE_PLAYBACK", "XENSND_STREAM_TYPE_CAPTURE",
             "XENSND_DRIVER_NAME", "XENSND_LIST_SEPARATOR"]
    strs += [f"XENSND_PCM_FORMAT_{_C_FMT.get(f.name, f.name)}_STR" for f in PcmFormat]
    num_rows = ",\n".join(f'    {{"{n}", (long long)({n})}}' for n in nums)
    str_rows = ",\n".join(f'    {{"{s}", {s}}}' for s in strs)
    return f"""
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <xen/io/sndif.h>

struct pv_num {{ const char *name; long long value; }};
struct pv_str {{ const char *name; const char *value; }};
static const struct pv_num pv_nums[] = {{
{num_rows}
}};
static const struct pv_str pv_strs[] = {{
{str_rows}
}};
int pv_num_count(void) {{ return (int)(sizeof(pv_nums) / sizeof(pv_nums[0])); }}
const struct pv_num *pv_num_at(int i) {{ return &pv_nums[i]; }}
int pv_str_count(void) {{ return (int)(sizeof(pv_strs) / sizeof(pv_strs[0])); }}
const struct pv_str *pv_str_at(int i) {{ return &pv_strs[i]; }}

static void pv_fill_hw(struct xensnd_query_hw_param *h, const uint64_t *f, const uint32_t *r)
{{
    h->formats = *f;
    h->rates.min = r[0]; h->rates.max = r[1];
    h->channels.min = r[2]; h->channels.max = r[3];
    h->buffer.min = r[4]; h->buffer.max = r[5];
    h->period.min = r[6]; h->period.max = r[7];
}}
void pv_open(unsigned char *out, uint16_t id, uint32_t rate, uint8_t fmt, uint8_t ch,
             uint32_t buf, uint32_t gref, uint32_t period)
{{
    struct xensnd_req q; memset(&q, 0, sizeof q);
    q.id = id; q.operation = XENSND_OP_OPEN;
    q.op.open.pcm_rate = rate; q.op.open.pcm_format = fmt; q.op.open.pcm_channels = ch;
    q.op.open.buffer_sz = buf; q.op.open.gref_directory = gref; q.op.open.period_sz = period;
    memcpy(out, &q, sizeof q);
}}
void pv_close(unsigned char *out, uint16_t id)
{{
    struct xensnd_req q; memset(&q, 0, sizeof q);
    q.id = id; q.operation = XENSND_OP_CLOSE;
    memcpy(out, &q, sizeof q);
}}
void pv_rw(unsigned char *out, uint16_t id, uint8_t op, uint32_t offset, uint32_t length)
{{
    struct xensnd_req q; memset(&q, 0, sizeof q);
    q.id = id; q.operation = op; q.op.rw.offset = offset; q.op.rw.length = length;
    memcpy(out, &q, sizeof q);
}}
void pv_trigger(unsigned char *out, uint16_t id, uint8_t type)
{{
    struct xensnd_req q; memset(&q, 0, sizeof q);
    q.id = id; q.operation = XENSND_OP_TRIGGER; q.op.trigger.type = type;
    memcpy(out, &q, sizeof q);
}}
void pv_hw(unsigned char *out, uint16_t id, const uint64_t *f, const uint32_t *r)
{{
    struct xensnd_req q; memset(&q, 0, sizeof q);
    q.id = id; q.operation = XENSND_OP_HW_PARAM_QUERY;
    pv_fill_hw(&q.op.hw_param, f, r);
    memcpy(out, &q, sizeof q);
}}
void pv_resp(unsigned char *out, uint16_t id, uint8_t op, int32_t status, int with_hw,
             const uint64_t *f, const uint32_t *r)
{{
    struct xensnd_resp p; memset(&p, 0, sizeof p);
    p.id = id; p.operation = op; p.status = status;
    if (with_hw) pv_fill_hw(&p.resp.hw_param, f, r);
    memcpy(out, &p, sizeof p);
}}
void pv_evt(unsigned char *out, uint16_t id, uint64_t pos)
{{
    struct xensnd_evt e; memset(&e, 0, sizeof e);
    e.id = id; e.type = XENSND_EVT_CUR_POS; e.op.cur_pos.position = pos;
    memcpy(out, &e, sizeof e);
}}
"""


def _have_compiler() -> bool:
    cc = sysconfig.get_config_var("CC") or "cc"
    return shutil.which(shlex.split(cc)[0]) is not None


@pytest.fixture(scope="module")
def real_header(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(ffi, lib) of a tiny extension compiled against the installed sndif.h."""
    cffi = pytest.importorskip("cffi", reason="cffi not installed: cannot compile against sndif.h")
    if not os.path.exists(SNDIF_H):
        pytest.skip(f"{SNDIF_H} not installed (libxen-dev): cannot check conformance")
    if not _have_compiler():
        pytest.skip("no C compiler: cannot check conformance against sndif.h")
    tmp = tmp_path_factory.mktemp("sndif_c")
    ffi = cffi.FFI()
    ffi.cdef(_CDEF)
    name = "_pv_sndif_conformance"
    ffi.set_source(name, _csource())
    so = ffi.compile(tmpdir=str(tmp), verbose=False)
    spec = importlib.util.spec_from_file_location(name, so)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ffi, mod.lib


def _c_nums(ffi, lib) -> dict[str, int]:  # type: ignore[no-untyped-def]
    out = {}
    for i in range(lib.pv_num_count()):
        row = lib.pv_num_at(i)
        out[ffi.string(row.name).decode()] = row.value
    return out


def _c_strs(ffi, lib) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = {}
    for i in range(lib.pv_str_count()):
        row = lib.pv_str_at(i)
        out[ffi.string(row.name).decode()] = ffi.string(row.value).decode()
    return out


class TestRealHeader:
    def test_layout(self, real_header) -> None:  # type: ignore[no-untyped-def]
        nums = _c_nums(*real_header)
        for expr, want in _LAYOUT.items():
            assert nums[expr] == want, expr

    def test_numeric_constants(self, real_header) -> None:  # type: ignore[no-untyped-def]
        from alsa_pvplug.protocol import ring
        nums = _c_nums(*real_header)
        assert nums["XENSND_PROTOCOL_VERSION"] == sndif.PROTOCOL_VERSION
        assert nums["XENSND_EVT_CUR_POS"] == EvtType.CUR_POS
        assert nums["XENSND_SAMPLE_RATE_MAX_LEN"] == sndif.SAMPLE_RATE_MAX_LEN
        assert nums["XENSND_SAMPLE_FORMAT_MAX_LEN"] == sndif.SAMPLE_FORMAT_MAX_LEN
        assert nums["XENSND_IN_RING_LEN"] == ring.EVT_RING_LEN == 63
        assert nums["XENSND_IN_RING_OFFS"] == ring.EVT_RING_OFFS
        assert nums["__CONST_RING_SIZE(xen_sndif, 4096)"] == ring.RING_SIZE
        assert nums["offsetof(struct xen_sndif_sring, ring)"] == ring.RING_HEADER
        assert nums["offsetof(struct xen_sndif_sring, rsp_event)"] == ring.RSP_EVENT_OFF
        for o in Op:
            assert nums[f"XENSND_OP_{o.name}"] == o.value, o
        for t in Trigger:
            assert nums[f"XENSND_OP_TRIGGER_{t.name}"] == t.value, t
        for f in PcmFormat:
            assert nums[f"XENSND_PCM_FORMAT_{_C_FMT.get(f.name, f.name)}"] == f.value, f
        dir_head = nums["offsetof(struct xensnd_page_directory, gref)"]
        assert (PAGE_SIZE - dir_head) // nums["sizeof(grant_ref_t)"] == GREFS_PER_DIR_PAGE

    def test_string_constants(self, real_header) -> None:  # type: ignore[no-untyped-def]
        strs = _c_strs(*real_header)
        for f in _FIELDS:
            assert getattr(sndif, f"FIELD_{f}") == strs[f"XENSND_FIELD_{f}"], f
        assert sndif.STREAM_TYPE_PLAYBACK == strs["XENSND_STREAM_TYPE_PLAYBACK"]
        assert sndif.STREAM_TYPE_CAPTURE == strs["XENSND_STREAM_TYPE_CAPTURE"]
        assert sndif.DRIVER_NAME == strs["XENSND_DRIVER_NAME"]
        assert sndif.LIST_SEPARATOR == strs["XENSND_LIST_SEPARATOR"]
        for f in PcmFormat:
            name = _C_FMT.get(f.name, f.name)
            assert format_to_string(f) == strs[f"XENSND_PCM_FORMAT_{name}_STR"]

    def test_vectors_match_c(self, real_header) -> None:  # type: ignore[no-untyped-def]
        ffi, lib = real_header
        out = ffi.new("unsigned char[64]")
        lib.pv_open(out, 0x0102, 48000, 2, 2, 16384, 0x1234, 4096)
        assert ffi.buffer(out)[:] == encode_request(
            OpenReq(0x0102, 48000, PcmFormat.S16_LE, 2, 16384, 0x1234, 4096))

    @settings(max_examples=60, deadline=None)
    @given(data=st.data())
    def test_every_type_matches_c(self, real_header, data) -> None:  # type: ignore[no-untyped-def]
        ffi, lib = real_header
        out = ffi.new("unsigned char[64]")
        f = ffi.new("uint64_t *")
        r = ffi.new("uint32_t[8]")

        def c_bytes() -> bytes:
            return bytes(ffi.buffer(out))

        def set_hw(hw: HwParams) -> None:
            f[0] = hw.formats
            r[0:8] = [*hw.rates, *hw.channels, *hw.buffer, *hw.period]

        req = data.draw(st.builds(OpenReq, u16, u32, u8, u8, u32, u32, u32))
        lib.pv_open(out, req.id, req.pcm_rate, req.pcm_format, req.pcm_channels,
                    req.buffer_sz, req.gref_directory, req.period_sz)
        assert c_bytes() == encode_request(req)

        rid = data.draw(u16)
        lib.pv_close(out, rid)
        assert c_bytes() == encode_request(CloseReq(rid))

        rw = data.draw(st.builds(RwReq, u16, st.sampled_from(RW_OPS), u32, u32))
        lib.pv_rw(out, rw.id, rw.operation, rw.offset, rw.length)
        assert c_bytes() == encode_request(rw)

        trig = data.draw(st.builds(TriggerReq, u16, st.sampled_from(list(Trigger))))
        lib.pv_trigger(out, trig.id, trig.type)
        assert c_bytes() == encode_request(trig)

        hw = data.draw(hw_params)
        set_hw(hw)
        lib.pv_hw(out, rid, f, r)
        assert c_bytes() == encode_request(HwParamQuery(rid, hw))

        status = data.draw(i32)
        lib.pv_resp(out, rid, Op.HW_PARAM_QUERY, status, 1, f, r)
        assert c_bytes() == encode_response(Resp(rid, Op.HW_PARAM_QUERY, status, hw))
        op = data.draw(st.sampled_from(list(Op)))
        lib.pv_resp(out, rid, op, status, 0, f, r)
        assert c_bytes() == encode_response(Resp(rid, op, status))

        pos = data.draw(u64)
        lib.pv_evt(out, rid, pos)
        assert c_bytes() == encode_event(CurPosEvt(rid, pos))
        assert decode_event(c_bytes()) == CurPosEvt(rid, pos)


def test_all_exports_exist() -> None:
    for name in sndif.__all__:
        assert hasattr(sndif, name), name
    assert {n for n in dir(sndif) if n.startswith("FIELD_")} <= set(sndif.__all__)
