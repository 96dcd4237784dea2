"""Bounded hostile-backend campaign against the Python API, the plugin's
callbacks (IoplugHarness) and aplay/arecord through the real plugin (issue 9,
backend rows).

PVPLUG_FUZZ_SEED / PVPLUG_FUZZ_BACKEND_CASES change the seed and the number
of cases; a failure lists each case with the command that reruns it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from . import campaign as C
from . import checks, gen, report

CASES = int(os.environ.get("PVPLUG_FUZZ_BACKEND_CASES", "24"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, plugin_lib: Path) -> dict[str, Any]:
    root: Path = tmp_path_factory.mktemp("fuzz-backend")
    specs = [gen.backend_case(checks.SEED, i) for i in range(CASES)]
    s = C.run_direction("backend", specs, root, plugin_lib=plugin_lib, log=None)
    print(f"\nbackend direction, seed {checks.SEED}, {CASES} cases in {s['seconds']} s")
    print(report.table(None, s))
    print(report.seeds(s, "backend"))
    return s


def test_no_client_hangs(run: dict[str, Any]) -> None:
    checks.assert_none(run, "backend", C.HANG, C.RUNAWAY)


def test_errors_are_typed(run: dict[str, Any]) -> None:
    checks.assert_none(run, "backend", C.UNTYPED, C.SIGNAL)


def test_device_usable_after_the_hostile_backend(run: dict[str, Any]) -> None:
    checks.assert_none(run, "backend", C.UNUSABLE)


def test_fuzzer_itself_sound(run: dict[str, Any]) -> None:
    checks.assert_none(run, "backend", C.HARNESS)
