"""Tests for alsa_pvplug.protocol.config and the xl model sim/xl.py (pure: no
Xen, no ALSA)."""

from __future__ import annotations

import pytest

from alsa_pvplug.errors import ConfigError
from alsa_pvplug.protocol.config import (
    DEFAULT_RATES,
    SUPPORTED_RATES,
    CardConfig,
    StreamConfig,
    parse_card_config,
)
from alsa_pvplug.protocol.sndif import PcmFormat
from alsa_pvplug.sim.xl import XlCard, XlParams, XlPcm, XlStream, parse_xl_vsnd, xl_card_to_xenstore

F = PcmFormat

# A minimal valid card: one playback stream.
BASE = {"0/0/type": "p"}


def card(**extra: str) -> CardConfig:
    """parse_card_config of BASE plus keys given as key__with__slashes."""
    tree = dict(BASE)
    tree.update({k.replace("__", "/").replace("_", "-"): v for k, v in extra.items()})
    return parse_card_config(tree)


def raises_on(tree: dict[str, str], key: str, value: object) -> ConfigError:
    """Assert parse_card_config(tree) raises a ConfigError naming key and value."""
    with pytest.raises(ConfigError) as info:
        parse_card_config(tree)
    err = info.value
    assert err.key == key
    assert err.value == value
    assert key in str(err)
    if value is not None:
        assert repr(value) in str(err)
    return err


class TestDefaults:
    def test_linux_defaults(self) -> None:
        st = parse_card_config(BASE).stream(0, 0)
        assert st.formats == (F.U8, F.S16_LE)
        assert st.rates == (5512, 8000, 11025, 16000, 22050, 32000, 44100, 48000)
        assert st.rates == DEFAULT_RATES
        assert (st.rate_min, st.rate_max) == (5512, 48000)
        assert (st.channels_min, st.channels_max) == (1, 2)
        assert st.buffer_bytes_max == 65536
        assert st.period_bytes_min == 64
        assert st.period_bytes_max == 65536
        assert (st.periods_min, st.periods_max) == (2, 1024)
        assert st.unique_id == ""
        assert st.pcm_name == ""

    def test_card_names(self) -> None:
        c = parse_card_config({**BASE, "short-name": "Main", "long-name": "Main card"})
        assert (c.short_name, c.long_name) == ("Main", "Main card")
        c = parse_card_config(BASE)
        assert (c.short_name, c.long_name) == ("", "")

    def test_names_truncated_like_linux(self) -> None:
        c = parse_card_config({**BASE, "short-name": "s" * 40, "long-name": "l" * 90,
                               "0/name": "n" * 90})
        assert c.short_name == "s" * 32
        assert c.long_name == "l" * 80
        assert c.stream(0, 0).pcm_name == "n" * 80

    def test_buffer_size_drives_period_limits(self) -> None:
        st = card(buffer_size="16384").stream(0, 0)
        assert st.buffer_bytes_max == 16384
        assert st.period_bytes_max == 16384
        assert st.periods_max == 16384 // 64

    def test_only_channels_min_raises_default_max(self) -> None:
        st = card(channels_min="4").stream(0, 0)
        assert (st.channels_min, st.channels_max) == (4, 4)

    def test_only_channels_max(self) -> None:
        st = card(channels_max="6").stream(0, 0)
        assert (st.channels_min, st.channels_max) == (1, 6)

    def test_defaults_are_not_constraints(self) -> None:
        # Nothing above the stream mentions channels/rates/buffer: the stream
        # may go beyond the Linux defaults.
        st = parse_card_config({**BASE, "0/0/channels-max": "8",
                                "0/0/sample-rates": "96000,192000",
                                "0/0/buffer-size": "1048576",
                                "0/0/sample-formats": "s32_le"}).stream(0, 0)
        assert st.channels_max == 8
        assert st.rates == (96000, 192000)
        assert st.buffer_bytes_max == 1048576
        assert st.formats == (F.S32_LE,)


class TestStreamConfig:
    def test_properties(self) -> None:
        c = parse_card_config({"0/0/type": "p", "0/1/type": "c", "1/0/type": "C",
                               "0/1/unique-id": "alsa<hw:0;0>"})
        assert [s.path for s in c.streams] == ["0/0", "0/1", "1/0"]
        assert [s.is_capture for s in c.streams] == [False, True, True]
        assert c.stream(0, 1).unique_id == "alsa<hw:0;0>"
        assert c.stream(1, 0).type == "c"  # normalised to lower case

    def test_frozen(self) -> None:
        st = parse_card_config(BASE).stream(0, 0)
        with pytest.raises(AttributeError):
            st.type = "c"  # type: ignore[misc]

    def test_lookup_missing_stream(self) -> None:
        c = parse_card_config(BASE)
        with pytest.raises(ConfigError) as info:
            c.stream(0, 1)
        assert info.value.key == "0/1"
        assert "0/1" in str(info.value)
        with pytest.raises(ConfigError):
            c.stream(1, 0)

    def test_unrelated_keys_ignored(self) -> None:
        tree = {**BASE, "backend": "/local/domain/0/backend/vsnd/1/0",
                "backend-id": "0", "state": "4", "0/0/ring-ref": "8",
                "0/0/event-channel": "9", "0/0/evt-ring-ref": "10",
                "0/0/evt-event-channel": "11", "versions": "1,2", "0/foo": "bar",
                "x/0/type": "c", "00/0/type": "c"}
        c = parse_card_config(tree)
        assert [s.path for s in c.streams] == ["0/0"]


class TestEnumeration:
    def test_stops_at_first_missing_pcm(self) -> None:
        c = parse_card_config({"0/0/type": "p", "1/0/type": "c", "3/0/type": "p"})
        assert [s.path for s in c.streams] == ["0/0", "1/0"]

    def test_stops_at_first_missing_stream(self) -> None:
        c = parse_card_config({"0/0/type": "p", "0/1/type": "c", "0/3/type": "p"})
        assert [s.path for s in c.streams] == ["0/0", "0/1"]

    def test_skipped_indices_not_even_validated(self) -> None:
        # Beyond the gap nothing is read, so garbage there is not an error.
        c = parse_card_config({"0/0/type": "p", "0/2/type": "garbage"})
        assert len(c.streams) == 1

    def test_directory_nodes_count(self) -> None:
        c = parse_card_config({"0": "", "0/0": "", "0/0/type": "p", "0/1": "",
                               "0/1/type": "c", "1": "", "2/0/type": "p"})
        # "1" exists (a pcm without streams), so pcm 2 is reached as well.
        assert [s.path for s in c.streams] == ["0/0", "0/1", "2/0"]
        raises_on({"0/0/type": "p", "0/1": ""}, "0/1/type", None)

    def test_pcm_without_streams_keeps_enumerating(self) -> None:
        c = parse_card_config({"0/name": "empty", "1/0/type": "p"})
        assert [s.path for s in c.streams] == ["1/0"]

    def test_at_most_eight_streams_per_pcm(self) -> None:
        tree = {f"0/{i}/type": "p" for i in range(10)}
        tree["1/0/type"] = "c"
        c = parse_card_config(tree)
        assert [s.path for s in c.streams] == [f"0/{i}" for i in range(8)] + ["1/0"]

    def test_no_streams_is_an_error(self) -> None:
        for tree in ({}, {"short-name": "x", "state": "1"}, {"1/0/type": "p"}):
            with pytest.raises(ConfigError) as info:
                parse_card_config(tree)
            assert "0/0" in str(info.value)


class TestStreamType:
    @pytest.mark.parametrize("raw,expected", [("p", "p"), ("P", "p"), ("c", "c"), ("C", "c")])
    def test_case_insensitive(self, raw: str, expected: str) -> None:
        assert parse_card_config({"0/0/type": raw}).stream(0, 0).type == expected

    @pytest.mark.parametrize("raw", ["", "x", "playback", "pc"])
    def test_bad_type(self, raw: str) -> None:
        raises_on({"0/0/type": "p", "0/1/type": raw}, "0/1/type", raw)

    def test_missing_type(self) -> None:
        raises_on({"0/0/type": "p", "0/1/unique-id": "1"}, "0/1/type", None)


class TestFormats:
    @pytest.mark.parametrize("spelling", ["float_le", "f32_le", "FLOAT_LE", "F32_LE"])
    def test_both_float_spellings(self, spelling: str) -> None:
        st = card(sample_formats=f"s16_le,{spelling}").stream(0, 0)
        assert st.formats == (F.S16_LE, F.FLOAT_LE)

    def test_sorted_and_deduplicated(self) -> None:
        st = card(sample_formats="s32_le, s16_le,s16_le,float64_be,f64_be,").stream(0, 0)
        assert st.formats == (F.S16_LE, F.S32_LE, F.FLOAT64_BE)

    def test_unknown_format_names_key_and_value(self) -> None:
        err = raises_on({**BASE, "0/0/sample-formats": "s16_le,s17_le"},
                        "0/0/sample-formats", "s16_le,s17_le")
        assert "s17_le" in str(err)

    def test_empty_list(self) -> None:
        raises_on({**BASE, "sample-formats": " , "}, "sample-formats", " , ")

    def test_narrowing(self) -> None:
        c = parse_card_config({"sample-formats": "s16_le,s32_le,float_le",
                               "0/sample-formats": "s16_le,f32_le",
                               "0/0/type": "p", "0/0/sample-formats": "float_le",
                               "0/1/type": "c"})
        assert c.stream(0, 0).formats == (F.FLOAT_LE,)
        assert c.stream(0, 1).formats == (F.S16_LE, F.FLOAT_LE)  # inherits the pcm's

    def test_widening_names_the_lower_key(self) -> None:
        err = raises_on({"sample-formats": "s16_le", "0/0/type": "p",
                         "0/0/sample-formats": "s16_le,s32_le"},
                        "0/0/sample-formats", "s16_le,s32_le")
        assert "s32_le" in str(err) and "widen" in str(err)

    def test_widening_at_pcm_level(self) -> None:
        raises_on({"sample-formats": "s16_le", "0/sample-formats": "u8",
                   "0/0/type": "p"}, "0/sample-formats", "u8")


class TestRates:
    def test_unknown_rates_ignored(self) -> None:
        st = card(sample_rates="12345,48000,44100,99").stream(0, 0)
        assert st.rates == (44100, 48000)
        assert (st.rate_min, st.rate_max) == (44100, 48000)

    def test_all_supported_rates(self) -> None:
        st = card(sample_rates=",".join(map(str, SUPPORTED_RATES))).stream(0, 0)
        assert st.rates == SUPPORTED_RATES
        assert (st.rate_min, st.rate_max) == (5512, 192000)

    @pytest.mark.parametrize("raw", ["12345", "", "1,2,3", " , "])
    def test_none_supported(self, raw: str) -> None:
        raises_on({**BASE, "0/sample-rates": raw}, "0/sample-rates", raw)

    @pytest.mark.parametrize("raw", ["48000,fast", "-8000", "4.8e4", "0x1f40"])
    def test_not_decimal(self, raw: str) -> None:
        raises_on({**BASE, "sample-rates": raw}, "sample-rates", raw)

    def test_narrowing(self) -> None:
        c = parse_card_config({"sample-rates": "8000,44100,48000,96000",
                               "0/sample-rates": "44100,48000",
                               "0/0/type": "p", "0/0/sample-rates": "48000"})
        assert c.stream(0, 0).rates == (48000,)

    def test_unknown_rate_below_is_not_widening(self) -> None:
        # 12345 is dropped before the subset check, as Linux drops it.
        c = parse_card_config({"sample-rates": "48000", "0/0/type": "p",
                               "0/0/sample-rates": "48000,12345"})
        assert c.stream(0, 0).rates == (48000,)

    def test_widening(self) -> None:
        err = raises_on({"sample-rates": "44100,48000", "0/0/type": "p",
                         "0/0/sample-rates": "48000,96000"},
                        "0/0/sample-rates", "48000,96000")
        assert "96000" in str(err)


class TestChannels:
    def test_narrowing(self) -> None:
        c = parse_card_config({"channels-min": "1", "channels-max": "8",
                               "0/channels-min": "2", "0/0/type": "p",
                               "0/0/channels-max": "4", "0/1/type": "c"})
        assert (c.stream(0, 0).channels_min, c.stream(0, 0).channels_max) == (2, 4)
        assert (c.stream(0, 1).channels_min, c.stream(0, 1).channels_max) == (2, 8)

    def test_widening_max(self) -> None:
        raises_on({"channels-max": "2", "0/0/type": "p", "0/0/channels-max": "6"},
                  "0/0/channels-max", "6")

    def test_widening_min(self) -> None:
        raises_on({"channels-min": "2", "0/channels-min": "1", "0/0/type": "p"},
                  "0/channels-min", "1")

    def test_empty_intersection(self) -> None:
        raises_on({"channels-min": "4", "channels-max": "8", "0/0/type": "p",
                   "0/0/channels-max": "2"}, "0/0/channels-max", "2")

    def test_empty_intersection_via_min(self) -> None:
        raises_on({"channels-max": "2", "0/0/type": "p", "0/0/channels-min": "3"},
                  "0/0/channels-min", "3")

    def test_min_above_max_same_level(self) -> None:
        raises_on({**BASE, "channels-min": "3", "channels-max": "2"},
                  "channels-max", "2")

    @pytest.mark.parametrize("raw", ["0", "256", "-1", "two", "", "1.5"])
    def test_bad_values(self, raw: str) -> None:
        raises_on({**BASE, "0/0/channels-min": raw}, "0/0/channels-min", raw)
        raises_on({**BASE, "channels-max": raw}, "channels-max", raw)

    def test_uint8_max(self) -> None:
        assert card(channels_max="255").stream(0, 0).channels_max == 255


class TestBufferSize:
    def test_narrowing(self) -> None:
        c = parse_card_config({"buffer-size": "65536", "0/0/type": "p",
                               "0/0/buffer-size": "8192", "0/1/type": "c"})
        assert c.stream(0, 0).buffer_bytes_max == 8192
        assert c.stream(0, 1).buffer_bytes_max == 65536

    def test_widening(self) -> None:
        raises_on({"buffer-size": "8192", "0/buffer-size": "16384", "0/0/type": "p"},
                  "0/buffer-size", "16384")

    @pytest.mark.parametrize("raw", ["0", "127", "-5", "64k", "", "4294967296"])
    def test_bad_values(self, raw: str) -> None:
        raises_on({**BASE, "buffer-size": raw}, "buffer-size", raw)

    def test_smallest(self) -> None:
        st = card(buffer_size="128").stream(0, 0)
        assert (st.periods_min, st.periods_max) == (2, 2)


# ---------------------------------------------------------------------------
# xl / libxl side
# ---------------------------------------------------------------------------

BRIEF_SPEC = [[
    "card, short-name=Main, sample-formats=s16_le;f32_le, sample-rates=44100;48000, "
    "buffer-size=65536, channels-max=6",
    "pcm, name=Main",
    "stream, unique-id=0, type=p",
    "stream, unique-id=1, type=c",
]]


class TestXlParse:
    def test_brief_example(self) -> None:
        (c,) = parse_xl_vsnd(BRIEF_SPEC)
        assert c == XlCard(
            short_name="Main",
            params=XlParams(sample_rates=(44100, 48000),
                            sample_formats=(F.S16_LE, F.FLOAT_LE),
                            channels_max=6, buffer_size=65536),
            pcms=(XlPcm(name="Main", streams=(XlStream("0", "p"), XlStream("1", "c"))),),
        )

    def test_structure_and_case(self) -> None:
        cards = parse_xl_vsnd([
            ["CARD, backend=dom0, long-name=Long", "Pcm, name=A, channels-min=2",
             "STREAM, type=P, unique-id=pulse, sample-rates=48000",
             "pcm, name=B", "stream, type=c, unique-id=alsa<hw:0;0>"],
            ["stream, type=p"],
        ])
        assert len(cards) == 2
        a, b = cards
        assert a.backend == "dom0" and a.long_name == "Long" and a.short_name is None
        assert [p.name for p in a.pcms] == ["A", "B"]
        assert a.pcms[0].params.channels_min == 2
        assert a.pcms[0].streams == (XlStream("pulse", "p", XlParams(sample_rates=(48000,))),)
        assert a.pcms[1].streams == (XlStream("alsa<hw:0;0>", "c"),)
        # xl opens an unnamed pcm for a stream that has none.
        assert b.pcms == (XlPcm(name=None, streams=(XlStream(None, "p"),)),)

    def test_later_card_item_adds_params(self) -> None:
        (c,) = parse_xl_vsnd([["card, short-name=A", "pcm", "stream, type=p",
                               "card, buffer-size=0x2000"]])
        assert c.short_name == "A" and c.params.buffer_size == 8192

    @pytest.mark.parametrize("item", ["device, name=x", "pcmx", "", " , "])
    def test_unknown_item_kind(self, item: str) -> None:
        with pytest.raises(ConfigError) as info:
            parse_xl_vsnd([["card", item]])
        assert "item 1" in str(info.value)

    @pytest.mark.parametrize("item,param", [
        ("card, name=x", "name"),          # name is a pcm parameter
        ("pcm, type=p", "type"),           # type is a stream parameter
        ("stream, short-name=x", "short-name"),
        ("stream, colour=red", "colour"),
        ("stream, type", "type"),          # no '='
    ])
    def test_unknown_param(self, item: str, param: str) -> None:
        with pytest.raises(ConfigError) as info:
            parse_xl_vsnd([["pcm", item]])
        assert info.value.key == param
        assert param in str(info.value) and "item 1" in str(info.value)

    @pytest.mark.parametrize("item,key", [
        ("stream, type=x", "type"),
        ("card, sample-formats=s16_le;s99", "sample-formats"),
        ("card, sample-rates=44100;fast", "sample-rates"),
        ("card, channels-max=many", "channels-max"),
        ("card, buffer-size=-1", "buffer-size"),
    ])
    def test_bad_values(self, item: str, key: str) -> None:
        with pytest.raises(ConfigError) as info:
            parse_xl_vsnd([["pcm", item]])
        assert info.value.key == key
        assert key in str(info.value)


class TestXlToXenstore:
    def test_brief_example_keys(self) -> None:
        (c,) = parse_xl_vsnd(BRIEF_SPEC)
        assert xl_card_to_xenstore(c) == {
            "short-name": "Main",
            "sample-rates": "44100,48000",
            "sample-formats": "s16_le,f32_le",  # libxl's float spelling
            "channels-max": "6",
            "buffer-size": "65536",
            "0/name": "Main",
            "0/0/unique-id": "0",
            "0/0/type": "p",
            "0/1/unique-id": "1",
            "0/1/type": "c",
        }

    def test_float_spellings_written_like_libxl(self) -> None:
        (c,) = parse_xl_vsnd([["card, sample-formats=float_le;F32_BE;f64_le;float64_be;u8",
                               "stream, type=p"]])
        assert xl_card_to_xenstore(c)["sample-formats"] == "f32_le,f32_be,f64_le,f64_be,u8"

    def test_unset_values_not_written(self) -> None:
        keys = xl_card_to_xenstore(XlCard(pcms=(XlPcm(streams=(XlStream(),)),)))
        assert keys == {}

    def test_params_at_every_level(self) -> None:
        (c,) = parse_xl_vsnd([[
            "card, long-name=L, channels-min=1, channels-max=8",
            "pcm, name=P, sample-rates=44100;48000;96000",
            "stream, type=p, unique-id=u0, sample-rates=48000, channels-max=2",
            "stream, type=c, unique-id=u1, buffer-size=16384, sample-formats=s16_le",
        ]])
        keys = xl_card_to_xenstore(c)
        assert keys == {
            "long-name": "L", "channels-min": "1", "channels-max": "8",
            "0/name": "P", "0/sample-rates": "44100,48000,96000",
            "0/0/unique-id": "u0", "0/0/type": "p", "0/0/sample-rates": "48000",
            "0/0/channels-max": "2",
            "0/1/unique-id": "u1", "0/1/type": "c", "0/1/buffer-size": "16384",
            "0/1/sample-formats": "s16_le",
        }
        cfg = parse_card_config(keys)
        p, cap = cfg.streams
        assert (p.rates, p.channels_min, p.channels_max) == ((48000,), 1, 2)
        assert (cap.rates, cap.channels_max, cap.buffer_bytes_max) == \
            ((44100, 48000, 96000), 8, 16384)
        assert cap.formats == (F.S16_LE,)
        assert p.formats == (F.U8, F.S16_LE)  # default: nobody set formats


class TestRoundTrip:
    def test_brief_example(self) -> None:
        (c,) = parse_xl_vsnd(BRIEF_SPEC)
        # Simulated xenstore: libxl's keys plus the generic device keys.
        tree = {**xl_card_to_xenstore(c), "backend": "/local/domain/0/backend/vsnd/1/0",
                "backend-id": "0", "state": "1"}
        cfg = parse_card_config(tree)
        assert cfg.short_name == "Main" and cfg.long_name == ""
        common = dict(pcm_index=0, pcm_name="Main",
                      formats=(F.S16_LE, F.FLOAT_LE), rates=(44100, 48000),
                      rate_min=44100, rate_max=48000, channels_min=1, channels_max=6,
                      buffer_bytes_max=65536, period_bytes_min=64,
                      period_bytes_max=65536, periods_min=2, periods_max=1024)
        assert cfg.streams == (
            StreamConfig(stream_index=0, type="p", unique_id="0", **common),  # type: ignore[arg-type]
            StreamConfig(stream_index=1, type="c", unique_id="1", **common),  # type: ignore[arg-type]
        )

    def test_widening_in_xl_config_is_caught_after_writing(self) -> None:
        (c,) = parse_xl_vsnd([["card, channels-max=2", "pcm",
                               "stream, type=p, channels-max=6"]])
        raises_on(xl_card_to_xenstore(c), "0/0/channels-max", "6")

    def test_stream_without_type_fails_on_the_frontend(self) -> None:
        (c,) = parse_xl_vsnd([["pcm, name=x", "stream, unique-id=0"]])
        raises_on(xl_card_to_xenstore(c), "0/0/type", None)
