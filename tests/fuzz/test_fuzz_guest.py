"""Bounded hostile-guest campaign against the real ``pvplug backend``, with an
honest second guest checked bit-exact throughout (issue 9, guest rows).

PVPLUG_FUZZ_SEED / PVPLUG_FUZZ_GUEST_CASES change the seed and the number of
cases; a failure lists each case with the command that reruns it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from . import campaign as C
from . import checks, gen, report

CASES = int(os.environ.get("PVPLUG_FUZZ_GUEST_CASES", "40"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root: Path = tmp_path_factory.mktemp("fuzz-guest")
    specs = [gen.guest_case(checks.SEED, i) for i in range(CASES)]
    s = C.run_direction("guest", specs, root, log=None)
    print(f"\nguest direction, seed {checks.SEED}, {CASES} cases in {s['seconds']} s")
    print(report.table(s, None))
    print(report.seeds(s, "guest"))
    return s


def test_no_backend_crash(run: dict[str, Any]) -> None:
    checks.assert_none(run, "guest", C.CRASH)


def test_honest_guest_undisturbed(run: dict[str, Any]) -> None:
    checks.assert_honest_guest_undisturbed(run)


def test_device_usable_after_the_hostile_guest(run: dict[str, Any]) -> None:
    checks.assert_none(run, "guest", C.UNUSABLE)


def test_answers_right_and_no_write_outside_the_buffer(run: dict[str, Any]) -> None:
    checks.assert_none(run, "guest", C.WRONG, C.OUTSIDE)


def test_every_request_answered(run: dict[str, Any]) -> None:
    checks.assert_none(run, "guest", C.HANG)


def test_backend_cpu_bounded(run: dict[str, Any]) -> None:
    checks.assert_none(run, "guest", C.CPU)


def test_fuzzer_itself_sound(run: dict[str, Any]) -> None:
    checks.assert_none(run, "guest", C.HARNESS)
