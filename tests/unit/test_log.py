"""The plugin's open path imports only what opening needs (``alsa_pvplug.log``
defers logging); each check runs in a fresh interpreter, as the plugin's is."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Modules that cost milliseconds of every snd_pcm_open and that opening does
#: not need (measured by bench/datapath.py open; see docs/design.md).
NOT_AT_OPEN = ("logging", "dataclasses", "inspect", "pathlib")


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": ":".join(sys.path)})


def test_the_open_path_does_not_import_what_it_does_not_need() -> None:
    r = run("import sys, alsa_pvplug.glue.embed, alsa_pvplug.transport.sim, "
            "alsa_pvplug.transport.xen\n"
            f"print(sorted(m for m in {NOT_AT_OPEN!r} if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_message_below_the_level_imports_nothing_and_prints_nothing() -> None:
    r = run("import sys\n"
            "from alsa_pvplug.log import get_logger, use_stderr\n"
            "use_stderr('warning')\n"
            "get_logger('alsa_pvplug.x').info('quiet %d', 1)\n"
            "print('logging' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert (r.stdout.strip(), r.stderr) == ("False", "")


@pytest.mark.parametrize("level, shown", [("debug", True), ("warning", False)])
def test_use_stderr_prefixes_messages_at_its_level(level: str, shown: bool) -> None:
    r = run("from alsa_pvplug.log import get_logger, use_stderr\n"
            f"use_stderr({level!r})\n"
            "log = get_logger('alsa_pvplug.x')\n"
            "log.debug('detail %s', 'here')\n"
            "log.warning('careful')\n"
            "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('failed')\n")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert ("pvplug: DEBUG: detail here" in lines) is shown
    assert "pvplug: WARNING: careful" in lines
    assert "pvplug: ERROR: failed" in lines
    assert "ZeroDivisionError: division by zero" in lines  # exception() keeps the traceback


def test_a_host_that_configured_logging_gets_our_messages_through_it() -> None:
    # A Python host (pyalsaaudio) imported logging first: its handlers decide,
    # with the record naming the caller's line, not the lazy logger's.
    r = run("import logging, sys\n"
            "logging.basicConfig(stream=sys.stdout, level=logging.DEBUG,\n"
            "                    format='%(name)s %(levelname)s %(filename)s %(message)s')\n"
            "from alsa_pvplug.log import get_logger\n"
            "get_logger('alsa_pvplug.frontend').debug('seen %d', 7)\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "alsa_pvplug.frontend DEBUG <string> seen 7"
