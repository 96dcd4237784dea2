"""The plugin's options (``parse_plugin_options``), the ALSA numbers the glue
hard-codes (``glue.alsa``), and the configuration snippet ``pvplug install``
writes (``glue.install.render_conf``) as alsa-lib itself reads it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import alsaaudio
import pytest

from alsa_pvplug.errors import ConfigError
from alsa_pvplug.glue import alsa
from alsa_pvplug.glue.harness import State
from alsa_pvplug.glue.install import render_conf
from alsa_pvplug.glue.options import PluginOptions, parse_plugin_options

SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"

# -- parse_plugin_options ---------------------------------------------------------


def test_defaults() -> None:
    opts = parse_plugin_options([])
    assert opts == PluginOptions()
    assert (opts.card, opts.device, opts.stream, opts.transport, opts.timeout,
            opts.log_level) == (0, 0, None, "xen", 3.0, "warning")


SIM = [("transport", "sim"), ("sim_dir", "/run/sim"), ("domid", "1")]


@pytest.mark.parametrize("key,raw,value", [
    ("card", "3", 3),
    ("card", " 2147483647 ", 2**31 - 1),
    ("device", "1", 1),
    ("stream", "0", 0),
    ("stream", "7", 7),
    ("transport", "xen", "xen"),
    ("transport", '"SIM"', "sim"),  # quoted and any case, as alsa-lib may hand it over
    ("sim_dir", "/tmp/a dir", "/tmp/a dir"),
    ("domid", "0", 0),
    ("domid", "32751", 0x7FEF),
    ("backend_domid", "5", 5),
    ("timeout", "0.5", 0.5),
    ("timeout", "600", 600.0),
    ("timeout", "0.01", 0.01),
    ("log_level", "debug", "debug"),
    ("log_level", "ERROR", "error"),
])
def test_each_option(key: str, raw: str, value: object) -> None:
    items = [(k, v) for k, v in SIM if k != key] + [(key, raw)]
    if key == "transport" and value == "xen":
        items = [(key, raw)]
    assert getattr(parse_plugin_options(items), key) == value


def test_all_options_together() -> None:
    opts = parse_plugin_options(SIM + [
        ("card", "1"), ("device", "2"), ("stream", "3"), ("backend_domid", "0"),
        ("timeout", "1.5"), ("log_level", "info")])
    assert opts == PluginOptions(card=1, device=2, stream=3, transport="sim",
                                 sim_dir="/run/sim", domid=1, backend_domid=0,
                                 timeout=1.5, log_level="info")


def test_unknown_option_names_the_key() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_plugin_options([("card", "0"), ("sim-dir", "/x")])
    assert ei.value.key == "sim-dir" and "'sim-dir'" in ei.value.message
    assert "sim_dir" in ei.value.message  # the known ones are listed
    assert ei.value.errno == 22


def test_option_given_twice() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_plugin_options([("card", "0"), ("card", "1")])
    assert ei.value.key == "card" and "twice" in ei.value.message


@pytest.mark.parametrize("key,raw", [
    ("card", "-1"), ("card", "1.5"), ("card", "x"), ("card", ""), ("card", "0x10"),
    ("card", "2147483648"), ("device", "abc"), ("stream", "-2"),
    ("transport", "usb"), ("transport", ""),
    ("domid", "32752"), ("domid", "one"), ("backend_domid", "-1"),
    ("timeout", "0"), ("timeout", "0.001"), ("timeout", "601"), ("timeout", "abc"),
    ("timeout", ""), ("log_level", "verbose"), ("log_level", "3"),
])
def test_malformed_value_names_the_key(key: str, raw: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_plugin_options([(key, raw)])
    assert ei.value.key == key and ei.value.value == raw
    assert ei.value.message.startswith(f"{key}=") and ei.value.errno == 22


@pytest.mark.parametrize("items,missing", [
    ([("transport", "sim")], "sim_dir"),
    ([("transport", "sim"), ("domid", "1")], "sim_dir"),
    ([("transport", "sim"), ("sim_dir", "/x")], "domid"),
])
def test_sim_needs_sim_dir_and_domid(items: list[tuple[str, str]], missing: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_plugin_options(items)
    assert ei.value.key == missing and "sim_dir" in ei.value.message \
        and "domid" in ei.value.message


# -- the ALSA numbers in glue/alsa.py ------------------------------------------------


def test_formats_match_pyalsaaudio() -> None:
    checked = 0
    for fmt, value in alsa.ALSA_FORMATS.items():
        theirs = getattr(alsaaudio, f"PCM_FORMAT_{fmt.name}", None)
        if theirs is not None:
            assert value == theirs, fmt.name
            assert alsa.sndif_format(theirs) == fmt
            checked += 1
    assert checked >= 20  # all but the IEC958 ones, which pyalsaaudio lacks
    with pytest.raises(ValueError):
        alsa.sndif_format(alsaaudio.PCM_FORMAT_S24_3LE)  # no sndif equivalent


def test_stream_mode_and_states_match_pyalsaaudio() -> None:
    assert (alsa.STREAM_PLAYBACK, alsa.STREAM_CAPTURE) == \
        (alsaaudio.PCM_PLAYBACK, alsaaudio.PCM_CAPTURE)
    assert alsa.NONBLOCK == alsaaudio.PCM_NONBLOCK
    for st in State:  # the harness's copy of snd_pcm_state_t
        assert st == getattr(alsaaudio, f"PCM_STATE_{st.name}"), st.name


def test_constants_match_the_alsa_headers(tmp_path: Path) -> None:
    """What pyalsaaudio does not export, from <alsa/asoundlib.h> itself."""
    cc = shutil.which("cc")
    if cc is None or not Path("/usr/include/alsa/asoundlib.h").exists():
        pytest.skip("no C compiler or no alsa-lib headers")
    names = {"SND_PCM_ACCESS_MMAP_INTERLEAVED": alsa.ACCESS_MMAP_INTERLEAVED,
             "SND_PCM_ACCESS_RW_INTERLEAVED": alsa.ACCESS_RW_INTERLEAVED,
             "SND_PCM_STREAM_PLAYBACK": alsa.STREAM_PLAYBACK,
             "SND_PCM_STREAM_CAPTURE": alsa.STREAM_CAPTURE,
             "SND_PCM_NONBLOCK": alsa.NONBLOCK,
             "POLLIN": alsa.POLLIN, "POLLOUT": alsa.POLLOUT, "POLLERR": alsa.POLLERR}
    names.update({f"SND_PCM_FORMAT_{f.name}": v for f, v in alsa.ALSA_FORMATS.items()})
    src = tmp_path / "consts.c"
    body = "".join(f'\tprintf("{n} %ld\\n", (long){n});\n' for n in names)
    src.write_text("#include <stdio.h>\n#include <poll.h>\n#include <alsa/asoundlib.h>\n"
                   f"int main(void) {{\n{body}\treturn 0;\n}}\n")
    exe = tmp_path / "consts"
    subprocess.run([cc, str(src), "-o", str(exe)], check=True, timeout=60,
                   capture_output=True)
    out = subprocess.run([str(exe)], check=True, timeout=10, capture_output=True, text=True)
    got = dict(line.split() for line in out.stdout.splitlines())
    assert {n: int(v) for n, v in got.items()} == names


# -- render_conf, read by alsa-lib ---------------------------------------------------

# Runs in a child: alsa-lib's global configuration is per process.  Looks the
# PCM up as snd_pcm_open does and lists its options as the C shim collects
# them (pv_collect_options: get_ascii, skipping comment/type/hint).
_DUMP = textwrap.dedent("""
    import ctypes, json, sys
    lib = ctypes.CDLL("libasound.so.2")
    P = ctypes.c_void_p
    for f in ("snd_config_iterator_first", "snd_config_iterator_end",
              "snd_config_iterator_next", "snd_config_iterator_entry"):
        getattr(lib, f).restype = P
        getattr(lib, f).argtypes = [P]
    assert lib.snd_config_update() >= 0
    top = P.in_dll(lib, "snd_config")
    node = P()
    err = lib.snd_config_search_definition(top, b"pcm", sys.argv[1].encode(),
                                           ctypes.byref(node))
    if err < 0:
        sys.exit(f"search_definition: {err}")
    pairs, it = [], lib.snd_config_iterator_first(node)
    while it != lib.snd_config_iterator_end(node):
        c = P(lib.snd_config_iterator_entry(it))
        key, text = ctypes.c_char_p(), ctypes.c_char_p()
        lib.snd_config_get_id(c, ctypes.byref(key))
        if key.value.decode() not in ("comment", "type", "hint"):
            assert lib.snd_config_get_ascii(c, ctypes.byref(text)) >= 0
            pairs.append([key.value.decode(), text.value.decode()])
        it = lib.snd_config_iterator_next(it)
    print(json.dumps(pairs))
""")


def _alsa_env(conf: Path) -> dict[str, str]:
    return {**os.environ, "ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}"}


def _as_alsa_reads_it(conf: Path, name: str) -> list[tuple[str, str]]:
    p = subprocess.run([sys.executable, "-c", _DUMP, name], env=_alsa_env(conf),
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    return [tuple(x) for x in json.loads(p.stdout)]


def _conf(tmp_path: Path, text: str) -> Path:
    if not Path(SYSTEM_ALSA_CONF).exists():
        pytest.skip(f"no {SYSTEM_ALSA_CONF}")
    conf = tmp_path / "pvplug.conf"
    conf.write_text(text)
    return conf


OPTIONS = {"transport": "sim", "sim_dir": "/tmp/a sim dir", "domid": 1,
           "backend_domid": 0, "timeout": 0.5, "log_level": "debug", "stream": None}


def test_render_conf_gives_the_plugin_its_options(tmp_path: Path) -> None:
    conf = _conf(tmp_path, render_conf(Path("/nowhere/libasound_module_pcm_pvplug.so"),
                                       OPTIONS))
    want = PluginOptions(transport="sim", sim_dir="/tmp/a sim dir", domid=1,
                         backend_domid=0, timeout=0.5, log_level="debug")
    assert parse_plugin_options(_as_alsa_reads_it(conf, "pvplug")) == want
    # The @args: "pvplug:CARD,DEV".
    opts = parse_plugin_options(_as_alsa_reads_it(conf, "pvplug:2,1"))
    assert (opts.card, opts.device) == (2, 1)


def test_render_conf_is_listed_by_aplay(tmp_path: Path) -> None:
    if shutil.which("aplay") is None:
        pytest.skip("no aplay")
    conf = _conf(tmp_path, render_conf(None, OPTIONS, name="pvtest"))

    def listing(path: Path) -> str:
        p = subprocess.run(["aplay", "-L"], env=_alsa_env(path), capture_output=True,
                           text=True, timeout=20)
        return p.stdout + p.stderr

    out = listing(conf)
    assert "\npvtest\n" in f"\n{out}" and "Xen para-virtual sound (pvplug)" in out, out
    assert "ALSA lib" not in out, out
    # The check can fail: a snippet alsa-lib cannot parse is reported.
    broken = _conf(tmp_path, render_conf(None, OPTIONS, name="pvtest").rstrip()[:-1])
    assert "ALSA lib" in listing(broken)


def test_render_conf_escapes_strings(tmp_path: Path) -> None:
    odd = '/tmp/a "quoted" dir\\x'
    conf = _conf(tmp_path, render_conf(None, {**OPTIONS, "sim_dir": odd}))
    assert parse_plugin_options(_as_alsa_reads_it(conf, "pvplug")).sim_dir == odd
