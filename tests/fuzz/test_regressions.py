"""Every defect the fuzzer found, kept as a fixed, named case (issue 9).

Each case is a literal spec (what ``python -m tests.fuzz --show`` prints), so
it stays the same whatever the generators become.  All guest-direction cases
run in one world (sim, ``pvplug backend``, the honest guest), all
backend-direction cases in another; each test then asserts the "must be" of
its own case.  Rerun one by hand: put its spec in a file and
``.venv/bin/python -m tests.fuzz --spec FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import campaign as C
from . import checks, report

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RING_KEYS = ("ring-ref", "event-channel", "evt-ring-ref", "evt-event-channel")
S16 = {"format": "S16_LE", "channels": 2, "rate": 48000, "buffer": 4096, "period": 1024}
U8_MONO = {"format": "U8", "channels": 1, "rate": 48000, "buffer": 4096, "period": 1024}


def _g(name: str, **kw: Any) -> dict[str, Any]:
    spec = {"dir": "guest", "seed": "regression", "index": name, "kind": "xs", "rng": 1,
            "handshake": {}, "ops": [], "end": "close"}
    spec.update(kw)
    return spec


def _b(name: str, driver: str, geometry: dict[str, Any], plan: dict[str, Any],
       frames: int = 4800, kill: str = "term") -> dict[str, Any]:
    return {"dir": "backend", "seed": "regression", "index": name, "driver": driver,
            "geometry": geometry, "frames": frames, "timeout": 1.0, "rng": 1, "query": False,
            "pause": False, "plan": {"rng": 1, **plan}, "kill_backend": kill}


_OPEN = {"op": "open", "format": 2, "channels": 2, "rate": 48000, "buffer_sz": 16384,
         "period_sz": 4096, "dir": "ok", "s": 0}

GUEST = {
    # Defect 1: str.isdigit() accepts U+00B2, int() raises ValueError, the
    # backend dies (server.py VsndDevice.connect) and closes every guest's device.
    **{f"{k}-superscript-two": _g(f"{k}-superscript-two", handshake={"keys": {f"0/0/{k}": "²"}})
       for k in RING_KEYS},
    "capture-evt-ring-ref-circled-one": _g("capture-evt-ring-ref-circled-one",
                                           handshake={"keys": {"0/1/evt-ring-ref": "①"}}),
    # Defect 4 (guest side): a frontend that died with garbage in its own
    # state node; a fresh frontend on that device cannot reset it.
    "own-garbage-state-left-behind": _g(
        "own-garbage-state-left-behind", kind="kill", end="abandon",
        ops=[_OPEN, {"op": "state", "value": "²", "s": 0}, {"op": "kill", "s": 0}]),
    # Defect 6: a one-frame period makes the backend wake (and notify) for
    # every frame: half a CPU for one stereo 48 kHz capture stream.
    "one-frame-period": _g("one-frame-period", kind="stress", ops=[
        {**_OPEN, "s": 1, "period_sz": 4}, {"op": "trigger", "type": 0, "s": 1},
        {"op": "sleep", "t": 1.0, "s": 1}, {"op": "trigger", "type": 2, "s": 1},
        {"op": "close", "s": 1}]),
    # ... and the same stream with a 1024-frame period, as a control.
    "period-1024-control": _g("period-1024-control", kind="stress", ops=[
        {**_OPEN, "s": 1}, {"op": "trigger", "type": 0, "s": 1},
        {"op": "sleep", "t": 1.0, "s": 1}, {"op": "trigger", "type": 2, "s": 1},
        {"op": "close", "s": 1}]),
}

BACKEND = {
    # Defect 2: capture CUR_POS far beyond anything: arecord reports an
    # overrun, prepares, and gets the same position again, forever.
    "arecord-absurd-capture-position": _b(
        "arecord-absurd-capture-position", "arecord", S16,
        {"pos": {"mode": "huge", "value": 2**63, "from": 0, "every": True}}),
    "harness-absurd-capture-position": _b(
        "harness-absurd-capture-position", "harness-cap", S16,
        {"pos": {"mode": "huge", "value": 2**63, "from": 0, "every": True}}),
    # Defect 3: with 1-byte frames the position in frames exceeds a C long;
    # embed.py's `out[0] = delay` raises OverflowError ("unexpected error").
    "arecord-u8-mono-delay-overflow": _b(
        "arecord-u8-mono-delay-overflow", "arecord", U8_MONO,
        {"pos": {"mode": "huge", "value": 2**64 - 1, "from": 0, "every": True}}),
    "harness-u8-mono-delay-overflow": _b(
        "harness-u8-mono-delay-overflow", "harness-cap", U8_MONO,
        {"pos": {"mode": "huge", "value": 2**64 - 1, "from": 0, "every": True}}),
    # Defect 7: a backend that answers every request but never reports a
    # position (or reports only 0, or only events of an unknown type): the
    # plugin's "no position report" timeout becomes an xrun, the client
    # prepares and restarts the same stall, a second later, forever.
    "arecord-silent-backend": _b(
        "arecord-silent-backend", "arecord", S16,
        {"pos": {"mode": "skip", "from": 0, "every": True}}),
    "aplay-silent-backend": _b(
        "aplay-silent-backend", "aplay", S16, {"pos": {"mode": "zero", "from": 0, "every": True}},
        frames=9600),
    "harness-capture-silent-backend": _b(
        "harness-capture-silent-backend", "harness-cap", S16,
        {"pos": {"mode": "badtype", "value": 1, "from": 0, "every": True}}),
    # Defect 8: event-ring producer index jumps (an overflowing ring): every
    # run ends in an xrun the plugin's model never saw (ioplug's POLLERR),
    # so the barren-xrun rule never counted them; the client loops forever.
    "harness-capture-event-ring-jump": _b(
        "harness-capture-event-ring-jump", "harness-cap",
        {"format": "S32_LE", "channels": 1, "rate": 48000, "buffer": 1536, "period": 512},
        {"pos": {"mode": "jump", "from": 0, "every": True, "value": 2**31}}, frames=1440),
    # Defect 9: every second READ refused with -EPIPE: the backend delivers a
    # period per run, the application gets none of it, and the rule counted
    # what the backend moved, not what reached the application.
    "harness-capture-every-other-read-overrun": _b(
        "harness-capture-every-other-read-overrun", "harness-cap",
        {"format": "S32_LE", "channels": 2, "rate": 44100, "buffer": 2048, "period": 1024},
        {"resp": [{"op": "READ", "nth": 2, "every": True, "do": "status", "value": -32}]},
        frames=2205),
    # Defect 10: the backend dies while aplay's stream has run dry: the
    # clock stops, nothing is predicted, the timer is disarmed and aplay
    # polls forever.
    "aplay-backend-killed-while-dry": _b(
        "aplay-backend-killed-while-dry", "aplay",
        {"format": "U8", "channels": 2, "rate": 48000, "buffer": 128, "period": 64},
        {"death": {"at": "running", "delay": 0.01, "how": "kill"},
         "pos": {"mode": "badid", "from": 1, "every": True}}, frames=14400, kill="kill"),
    # Defect 11 (campaign 3002:662): a backend that plays and reports but
    # never answers a WRITE: each WRITE timeout is an xrun, the stream moved,
    # so no give-up rule counted it, and aplay retried a second at a time.
    "aplay-write-answers-dropped": _b(
        "aplay-write-answers-dropped", "aplay",
        {"format": "S16_LE", "channels": 2, "rate": 48000, "buffer": 768, "period": 256},
        {"resp": [{"op": "WRITE", "nth": 0, "every": True, "do": "drop"}]}, frames=14400),
    # Defect 4: dom0 leaves garbage in the frontend's own state node; no
    # frontend can connect to that device again.
    "dom0-garbage-frontend-state": _b(
        "dom0-garbage-frontend-state", "api-play", S16,
        {"xs": [{"at": "exit", "delay": 0.0, "path": "fe:state", "value": "abc"}]}),
    "dom0-superscript-frontend-state": _b(
        "dom0-superscript-frontend-state", "api-cap", S16,
        {"xs": [{"at": "exit", "delay": 0.0, "path": "fe:state", "value": "²"}]}),
}


def _by_name(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["case"].split(":", 1)[1]: r for r in summary["results"]}


@pytest.fixture(scope="module")
def guest_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root: Path = tmp_path_factory.mktemp("regress-guest")
    s = C.run_direction("guest", list(GUEST.values()), root, log=None)
    print(report.table(s, None))
    print(report.seeds(s, "guest"))
    return s


@pytest.fixture(scope="module")
def backend_run(tmp_path_factory: pytest.TempPathFactory, plugin_lib: Path) -> dict[str, Any]:
    root: Path = tmp_path_factory.mktemp("regress-backend")
    s = C.run_direction("backend", list(BACKEND.values()), root, plugin_lib=plugin_lib, log=None)
    print(report.table(None, s))
    print(report.seeds(s, "backend"))
    return s


def _assert_case(summary: dict[str, Any], direction: str, name: str, *bad: str) -> None:
    r = _by_name(summary).get(name)
    if r is None:
        return  # clean (or only typed errors): not in the results
    one = {**summary, "results": [r]}
    checks.assert_none(one, direction, *bad)


def _assert_honest_undisturbed_by(summary: dict[str, Any], name: str) -> None:
    mine = [v for v in summary["disrupted"] if f"regression:{name}" in v["cases"]]
    assert not mine, f"honest takes disrupted during {name}: " + "; ".join(
        f"take {v['k']}: {'; '.join(v['why'])}" for v in mine)


@pytest.mark.parametrize("key", RING_KEYS)
def test_superscript_digit_in_ring_key_does_not_crash_backend(guest_run: dict[str, Any],
                                                              key: str) -> None:
    name = f"{key}-superscript-two"
    _assert_case(guest_run, "guest", name, C.CRASH, C.UNUSABLE)
    _assert_honest_undisturbed_by(guest_run, name)


def test_circled_digit_in_capture_ring_key_does_not_crash_backend(guest_run: dict[str, Any]
                                                                  ) -> None:
    _assert_case(guest_run, "guest", "capture-evt-ring-ref-circled-one", C.CRASH, C.UNUSABLE)
    _assert_honest_undisturbed_by(guest_run, "capture-evt-ring-ref-circled-one")


def test_fresh_frontend_resets_its_own_garbage_state(guest_run: dict[str, Any]) -> None:
    _assert_case(guest_run, "guest", "own-garbage-state-left-behind", C.UNUSABLE)


@pytest.mark.parametrize("name", ["one-frame-period", "period-1024-control"])
def test_small_periods_do_not_hog_the_backend(guest_run: dict[str, Any], name: str) -> None:
    _assert_case(guest_run, "guest", name, C.CPU, C.CRASH)
    _assert_honest_undisturbed_by(guest_run, name)


# Defect 5: the backend's RSS steps up by about 2 MB the first time a guest
# queues two 1 MB buffers (the playback copy, `BackendStream.queued`), and no
# more: glibc raises its mmap threshold when that block is freed, so later
# big blocks come from the heap, which keeps the freed memory.  Not a leak
# (objects, mappings and blocks in use stay flat; with MALLOC_MMAP_THRESHOLD_
# fixed the step is gone); it must stay flat after warm-up.
def _bigbuf(i: int) -> dict[str, Any]:
    s = 1 if i % 3 == 2 else 0
    ops = [{**_OPEN, "s": s, "buffer_sz": 1048576, "period_sz": 65536 if i % 2 else 4096}]
    if s == 0:
        ops += [{"op": "rw", "code": 3, "offset": 0, "length": 1048576, "fill": True, "s": 0}] * 2
    ops += [{"op": "trigger", "type": 0, "s": s}, {"op": "sleep", "t": 0.3, "s": s},
            {"op": "trigger", "type": 2, "s": s}, {"op": "close", "s": s}]
    return _g(f"bigbuf-{i}", kind="stress", ops=ops)


@pytest.fixture(scope="module")
def memory_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root: Path = tmp_path_factory.mktemp("regress-memory")
    s = C.run_direction("guest", [_bigbuf(i) for i in range(15)], root, log=None)
    print(report.table(s, None))
    return s


def test_backend_memory_flat_after_warm_up(memory_run: dict[str, Any]) -> None:
    rss = memory_run["rss"]
    assert rss and rss["cases"] == 15, f"the backend did not live through the cases: {rss}"
    checks.assert_rss_flat(memory_run, slack_kb=1024)
    assert rss["max_kb"] - rss["start_kb"] <= 8 * 1024, f"warm-up growth {rss}"


def test_arecord_ends_against_absurd_capture_positions(backend_run: dict[str, Any]) -> None:
    _assert_case(backend_run, "backend", "arecord-absurd-capture-position", C.HANG, C.RUNAWAY)


def test_capture_callbacks_end_against_absurd_positions(backend_run: dict[str, Any]) -> None:
    _assert_case(backend_run, "backend", "harness-absurd-capture-position", C.HANG, C.RUNAWAY)


def test_u8_mono_absurd_position_delay_is_typed_through_the_plugin(backend_run: dict[str, Any]
                                                                   ) -> None:
    _assert_case(backend_run, "backend", "arecord-u8-mono-delay-overflow", C.UNTYPED)


def test_u8_mono_absurd_position_delay_fits_a_c_long(backend_run: dict[str, Any]) -> None:
    _assert_case(backend_run, "backend", "harness-u8-mono-delay-overflow", C.UNTYPED)


@pytest.mark.parametrize("name", ["arecord-silent-backend", "aplay-silent-backend",
                                  "harness-capture-silent-backend",
                                  "harness-capture-event-ring-jump",
                                  "harness-capture-every-other-read-overrun",
                                  "aplay-backend-killed-while-dry"])
def test_clients_end_against_a_backend_that_never_reports_a_position(
        backend_run: dict[str, Any], name: str) -> None:
    _assert_case(backend_run, "backend", name, C.HANG, C.RUNAWAY)


def test_aplay_ends_against_a_backend_that_never_answers_a_write(
        backend_run: dict[str, Any]) -> None:
    _assert_case(backend_run, "backend", "aplay-write-answers-dropped", C.HANG, C.RUNAWAY)


@pytest.mark.parametrize("name", ["dom0-garbage-frontend-state",
                                  "dom0-superscript-frontend-state"])
def test_dom0_garbage_in_frontend_state_does_not_disable_the_device(
        backend_run: dict[str, Any], name: str) -> None:
    _assert_case(backend_run, "backend", name, C.UNUSABLE)
