"""In-process peers: a real ``Card`` and a real ``Backend`` joined through the
memory transport, the backend's loop in a daemon thread.  No subprocess, no
compiled code, no sockets.

Everything here is a fixture (the test modules import nothing from this
file): ``hv`` (the hypervisor with dom0, dom1 and one vsnd card),
``backend`` (starts a ``Backend`` thread; every one is stopped and closed in
teardown), ``card`` (opens a ``Card``; closed before the backends stop),
``recorder`` (a sink keeping what each OPEN played), ``signal`` (test audio)
and ``wait_for`` (a condition with a deadline).  No test may leave a backend
thread running (``no_thread_left``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from alsa_pvplug.backend.io import PatternSource
from alsa_pvplug.backend.limits import StreamLimits
from alsa_pvplug.backend.server import Backend, BackendOptions
from alsa_pvplug.backend.wavfile import WavInfo
from alsa_pvplug.frontend import Card
from alsa_pvplug.protocol.sndif import PcmFormat
from alsa_pvplug.sim.memory import MemoryHypervisor
from alsa_pvplug.sim.toolstack import create_domain, create_vsnd
from alsa_pvplug.transport.memory import MemoryTransport

BE_STATE = "/local/domain/0/backend/vsnd/1/0/state"
FE_STATE = "/local/domain/1/device/vsnd/0/state"
#: How long any wait in these tests may take before it fails the test.
DEADLINE = 3.0


def wait_until(cond: Callable[[], object], what: str, timeout: float = DEADLINE,
               poll: Callable[[float], None] | None = None) -> None:
    """Wait for ``cond()`` (``poll(dt)`` or a short sleep between looks);
    fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if poll is not None:
            poll(min(left, 0.02))
        else:
            time.sleep(min(left, 0.002))


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    """Every Backend thread a test started is gone when its fixtures are
    (autouse: set up first, so torn down after them)."""
    yield
    left = [t.name for t in threading.enumerate()
            if t.name in ("backend", "pvplug-xenbus") and t.is_alive()]
    assert not left, f"threads left running: {left}"


@pytest.fixture
def wait_for() -> Callable[..., None]:
    return wait_until


class Recorder:
    """A sink: ``takes[i]`` is what the i-th OPEN played, ``infos[i]`` its format."""

    def __init__(self) -> None:
        self.takes: list[bytearray] = []
        self.infos: list[WavInfo] = []
        self.closed = 0
        self._lock = threading.Lock()

    def open(self, info: WavInfo, label: str) -> _Take:
        with self._lock:
            self.takes.append(bytearray())
            self.infos.append(info)
            return _Take(self, self.takes[-1])

    def played(self) -> bytes:
        with self._lock:
            return bytes(self.takes[-1]) if self.takes else b""


class _Take:
    def __init__(self, rec: Recorder, buf: bytearray) -> None:
        self.rec, self.buf = rec, buf

    def write(self, data: bytes | memoryview) -> None:
        self.buf += data

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.rec.closed += 1


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make_signal(fmt: PcmFormat, channels: int, frames: int, seed: int = 1) -> bytes:
    """Noise over the format's whole range: any slip, swap or cut changes it."""
    rng = np.random.default_rng(seed)
    shape = (frames, channels)
    if fmt == PcmFormat.U8:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
    elif fmt == PcmFormat.S16_LE:
        a = rng.integers(-2**15, 2**15, shape, dtype="<i2")
    elif fmt in (PcmFormat.S24_LE, PcmFormat.S32_LE):
        bits = 23 if fmt == PcmFormat.S24_LE else 31
        a = rng.integers(-2**bits, 2**bits, shape, dtype="<i4")
    elif fmt == PcmFormat.FLOAT_LE:
        a = rng.uniform(-1, 1, shape).astype("<f4")
    else:
        raise ValueError(fmt)
    return a.tobytes()


@pytest.fixture
def signal() -> Callable[..., bytes]:
    return make_signal


@pytest.fixture
def hv() -> Iterator[MemoryHypervisor]:
    """dom0 (backend) and dom1 (guest) with the default vsnd card, as `pvplug sim`."""
    h = MemoryHypervisor()
    for domid in (0, 1):
        h.add_domain(domid)
        create_domain(h, domid, "Domain-0" if domid == 0 else f"guest{domid}")
    create_vsnd(h, 1, 0)
    yield h
    h.close()


class BackendThread:
    """A ``Backend`` on its own transport, ``run()`` in a daemon thread."""

    def __init__(self, hv: MemoryHypervisor, sink: Any, source: Any,
                 options: BackendOptions) -> None:
        self.transport = MemoryTransport(hv, 0)
        self.backend = Backend(self.transport, sink, source, options)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread()
        self.thaw()

    def thaw(self) -> None:
        """(Re)start serving: ``run()`` in a new thread."""
        assert not self._thread.is_alive()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="backend", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.backend.run(until=self._stop.is_set)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def freeze(self) -> None:
        """Stop serving, but leave everything mapped and Connected: a backend
        that no longer answers (until ``thaw()``).  ``close()`` finishes it off."""
        if self._thread.is_alive():
            self._stop.set()
            self.transport.xenstore.wake()  # select() returns, run() sees _stop
            self._thread.join(DEADLINE)
            assert not self._thread.is_alive(), "backend thread did not stop"
        if self.error is not None:
            raise AssertionError("the backend loop raised") from self.error

    def close(self) -> None:
        """Stop and close: devices go Closed, as when `pvplug backend` exits."""
        try:
            self.freeze()
        finally:
            self.backend.close()
            self.transport.close()

    def kill(self) -> None:
        """Stop as a process that dies does: no state written, and the
        hypervisor revokes its mappings and closes its ports."""
        try:
            self.freeze()
        finally:
            self.backend.mapper.close()
            self.backend.evtchn.close()
            self.transport.close()


@pytest.fixture
def backend(hv: MemoryHypervisor, recorder: Recorder) -> Iterator[Callable[..., BackendThread]]:
    """``backend(sink=recorder, source=PatternSource(), paced=False, **options)``:
    start one (unpaced by default, with unbounded rates then, as `pvplug
    backend --unpaced`; ``limits=`` etc. as ``BackendOptions``) and, unless
    ``ready=False``, wait until it offers InitWait."""
    started: list[BackendThread] = []

    def start(sink: Any = None, source: Any = None, *, paced: bool = False,
              ready: bool = True, **options: Any) -> BackendThread:
        if "limits" not in options and not paced:
            options["limits"] = StreamLimits(max_request_rate=1e9, max_event_rate=1e9)
        b = BackendThread(hv, recorder if sink is None else sink,
                          PatternSource() if source is None else source,
                          BackendOptions(paced=paced, **options))
        started.append(b)
        if ready:
            wait_until(lambda: hv.read(BE_STATE) == "2", "backend InitWait")
        return b

    yield start
    errors = []
    for b in started:
        try:
            b.close()
        except AssertionError as exc:
            errors.append(exc)
    assert not errors, errors


@pytest.fixture
def card(hv: MemoryHypervisor, backend: Callable[..., BackendThread]
         ) -> Iterator[Callable[..., Card]]:
    """``card(timeout=2.0)``: a Card of dom1's vsnd 0 on its own transport."""
    opened: list[tuple[Card, MemoryTransport]] = []

    def open_card(timeout: float = 2.0, devid: int = 0) -> Card:
        t = MemoryTransport(hv, 1)
        try:
            c = Card.open(t, devid, timeout=timeout)
        except BaseException:
            t.close()
            raise
        opened.append((c, t))
        return c

    yield open_card
    for c, t in opened:
        c.close()
        t.close()
