"""Drive a ``PvPcm`` the way alsa-lib's ioplug does, without ALSA.

``IoplugHarness`` keeps ioplug's books (``appl_ptr`` and ``hw_ptr`` modulo the
boundary, the PCM state) and calls the plugin's callbacks in the order and
with the arguments alsa-lib 1.2.8 uses (see ``docs/design.md`` section 10):
``snd_pcm_hw_params`` is hw_params, the default sw_params, then prepare;
``writei``/``readi`` follow ``snd_pcm_write_areas``/``read_areas`` (hwsync,
avail_update, wait on the poll descriptors, transfer, auto-start); MMAP access
transfers at commit; ``drain`` hands over to the plugin's drain, then drops.
Only alsa-lib is replaced: the plugin talks to a real backend (the simulated
hypervisor or Xen).

Usage::

    from alsa_pvplug.glue.harness import IoplugHarness
    from alsa_pvplug.protocol.sndif import PcmFormat

    with IoplugHarness(transport="sim", sim_dir="/tmp/sim", domid=1) as h:
        h.hw_params(PcmFormat.S16_LE, channels=2, rate=48000, period=1024, buffer=4096)
        h.writei(samples)        # blocks like snd_pcm_writei, starts the stream
        h.drain()

    with IoplugHarness(opts, capture=True) as h:     # opts: a PluginOptions
        h.hw_params(PcmFormat.S16_LE, 2, 48000, 1024, 4096, boundary=4 * 4096)
        data = h.readi(4800)

Errors are what alsa-lib would report, as ``alsa_pvplug.errors`` exceptions:
``Xrun`` (-EPIPE), ``LocalProtocolError`` (-EBADFD), ``PvSndError`` with
``errno`` EAGAIN (nonblocking) or EIO, and ``WaitTimeout`` where alsa-lib
1.2.8 would wait forever.  Like alsa-lib, ``writei``/``readi`` return a short
count instead of raising once some frames went through.  Exceptions that are
not ``PvSndError`` propagate (a plugin bug), and a pointer outside
[0, boundary) or going backwards raises AssertionError.
"""

from __future__ import annotations

import enum
import errno
import math
import select
import time
from typing import Any

from ..errors import LocalProtocolError, PvSndError, Xrun
from ..protocol.sndif import PcmFormat, frame_bytes
from . import alsa
from .options import PluginOptions, parse_plugin_options
from .pcm import PvPcm

LONG_MAX = 2**63 - 1


class State(enum.IntEnum):
    """``snd_pcm_state_t`` (alsa/pcm.h): ioplug's state, not the plugin's."""

    OPEN = 0
    SETUP = 1
    PREPARED = 2
    RUNNING = 3
    XRUN = 4
    DRAINING = 5
    PAUSED = 6


RUNNABLE = (State.PREPARED, State.RUNNING, State.XRUN, State.DRAINING, State.PAUSED)


class WaitTimeout(PvSndError):
    """A blocking wait outlived ``wait_timeout`` (alsa-lib 1.2.8 would hang)."""

    errno = errno.ETIMEDOUT


def default_boundary(buffer: int) -> int:
    """alsa-lib's: the largest ``buffer * 2**n <= LONG_MAX - buffer``."""
    b = buffer
    while b * 2 <= LONG_MAX - buffer:
        b *= 2
    return b


class IoplugHarness:
    """One open PCM as ioplug sees it.  Pointers are modulo ``boundary``;
    ``appl_frames``/``hw_frames`` count the same moves unwrapped since prepare."""

    def __init__(self, options: PluginOptions | None = None, *, capture: bool = False,
                 nonblock: bool = False, wait_timeout: float = 2.0, **kw: object) -> None:
        if options is None:
            options = parse_plugin_options([(k, str(v)) for k, v in kw.items()])
        elif kw:
            raise TypeError("pass PluginOptions or keyword options, not both")
        self.capture, self.nonblock, self.wait_timeout = capture, nonblock, wait_timeout
        self.pcm = PvPcm(options, capture=capture, nonblock=nonblock)
        self.fds = self.pcm.poll_fds()  # the C shim takes them once, at open
        self.state = State.OPEN
        self.access = alsa.ACCESS_RW_INTERLEAVED
        self.rate = self.period = self.buffer = self.frame_bytes = 0
        self.boundary = self.avail_min = self.start_threshold = self.stop_threshold = 0
        self.appl = self.hw = self.appl_frames = self.hw_frames = self._last_hw = 0
        self.ring = bytearray()   # the mmap'ed ring (MMAP access only)
        self.last_error: PvSndError | None = None  # what a callback's -errno was
        self._closed = False

    # -- setup -----------------------------------------------------------------
    def hw_params(self, fmt: PcmFormat | int, channels: int, rate: int, period: int,
                  buffer: int, access: int = alsa.ACCESS_RW_INTERLEAVED,
                  boundary: int | None = None) -> None:
        """snd_pcm_hw_params: hw_free if set up, the callback, alsa-lib's default
        sw_params (avail_min = period, start 1, stop = buffer), then prepare.
        ``boundary`` replaces alsa-lib's huge one (a multiple of ``buffer``)."""
        self._need("hw_params", State.OPEN, State.SETUP, State.PREPARED)
        if boundary is not None and (boundary % buffer or boundary < 2 * buffer):
            raise ValueError(f"boundary {boundary} must be a multiple >= 2 of buffer {buffer}")
        self.hw_free()
        self.pcm.hw_params(access, int(fmt), channels, rate, period, buffer)
        self.access, self.rate, self.period, self.buffer = access, rate, period, buffer
        self.frame_bytes = frame_bytes(PcmFormat(int(fmt)), channels)
        self.boundary = boundary or default_boundary(buffer)
        mmap = access == alsa.ACCESS_MMAP_INTERLEAVED
        self.ring = bytearray(buffer * self.frame_bytes if mmap else 0)
        self.state = State.SETUP
        self.sw_params(avail_min=period, start_threshold=1, stop_threshold=buffer)
        self.prepare()

    def sw_params(self, avail_min: int | None = None, start_threshold: int | None = None,
                  stop_threshold: int | None = None) -> None:
        """snd_pcm_sw_params; None keeps a value.  ``self.boundary`` is fixed."""
        if self.state == State.OPEN:
            raise LocalProtocolError("sw_params before hw_params")
        new = (self.avail_min if avail_min is None else avail_min,
               self.start_threshold if start_threshold is None else start_threshold,
               self.stop_threshold if stop_threshold is None else stop_threshold)
        self.pcm.sw_params(*new, self.boundary)
        self.avail_min, self.start_threshold, self.stop_threshold = new

    def prepare(self) -> None:
        if self.state == State.OPEN:
            raise LocalProtocolError("prepare before hw_params")
        self.appl = self.hw = self.appl_frames = self.hw_frames = self._last_hw = 0
        self.last_error = None
        self.pcm.prepare()
        self.state = State.PREPARED

    def start(self) -> None:
        self._need("start", State.PREPARED)
        self.pcm.start(self.appl)
        self.state = State.RUNNING

    # -- pointers ----------------------------------------------------------------
    def _hw_ptr_update(self) -> None:
        """snd_pcm_ioplug_hw_ptr_update (BOUNDARY_WA): called in every state."""
        try:
            hw = self.pcm.pointer(self.appl)
        except PvSndError as exc:
            self.last_error = exc
            if self.state == State.DRAINING:
                self._drop()
            else:
                self.state = State.XRUN
            return
        if not 0 <= hw < self.boundary:
            raise AssertionError(f"pointer {hw} outside [0, boundary {self.boundary})")
        delta = (hw - self._last_hw) % self.boundary
        if delta > self.boundary // 2:
            raise AssertionError(f"pointer went backwards: {self._last_hw} -> {hw}")
        self.hw = (self.hw + delta) % self.boundary
        self.hw_frames += delta
        self._last_hw = hw
        if self.state == State.DRAINING and self.mmap_avail() >= self.buffer:
            self._drop()

    def mmap_avail(self) -> int:
        """snd_pcm_mmap_avail: from the pointers as they are (no callback)."""
        avail = self.hw - self.appl + (0 if self.capture else self.buffer)
        if avail < 0:
            avail += self.boundary
        elif avail >= self.boundary:
            avail -= self.boundary
        return avail

    def hwsync(self) -> None:
        """snd_pcm_hwsync: the pointer callback; Xrun if the PCM is (now) in XRUN."""
        self._hw_ptr_update()
        if self.state == State.XRUN:
            raise self._state_error("pointer")

    def avail_update(self) -> int:
        """snd_pcm_avail_update: hwsync, then avail."""
        self.hwsync()
        return self.mmap_avail()

    def delay(self) -> int:
        self._need("delay", *RUNNABLE)
        return self.pcm.delay(self.appl)

    def _move_appl(self, frames: int) -> None:
        self.appl = (self.appl + frames) % self.boundary
        self.appl_frames += frames

    def rewind(self, frames: int) -> int:
        """snd_pcm_rewind, clamped to snd_pcm_rewindable (hw_avail) as careful
        applications do; call avail_update first, as they must."""
        self._need("rewind", *RUNNABLE)
        n = max(0, min(frames, self.buffer - self.mmap_avail()))
        self._move_appl(-n)
        return n

    def forward(self, frames: int) -> int:
        """snd_pcm_forward, clamped to snd_pcm_forwardable (avail)."""
        self._need("forward", *RUNNABLE)
        n = max(0, min(frames, self.mmap_avail()))
        self._move_appl(n)
        return n

    # -- data --------------------------------------------------------------------
    def _transfer(self, buf: memoryview, frames: int) -> int:
        got = self.pcm.transfer(self.appl, buf, frames)
        if not 0 <= got <= frames:
            raise AssertionError(f"transfer of {frames} frames returned {got}")
        self._move_appl(got)
        return got

    def mmap_commit(self, data: Any) -> int:
        """MMAP playback as snd_pcm_mmap_write_areas does it: mmap_begin (at most
        avail, contiguous), copy into the ring, commit (ioplug transfers the
        ring there).  Uses avail as it is: call avail_update first."""
        if self.capture or self.access != alsa.ACCESS_MMAP_INTERLEAVED:
            raise LocalProtocolError("mmap_commit needs MMAP access on playback")
        fb, raw = self.frame_bytes, memoryview(data).cast("B")
        done, size = 0, len(raw) // fb
        while done < size:
            off = self.appl % self.buffer
            n = min(size - done, self.mmap_avail(), self.buffer - off)
            if n <= 0:
                break
            self.ring[off * fb:(off + n) * fb] = raw[done * fb:(done + n) * fb]
            got = self._transfer(memoryview(self.ring)[off * fb:(off + n) * fb], n)
            done += got
            if got < n:
                break
        return done

    def writei(self, data: Any) -> int:
        """snd_pcm_writei (RW) or snd_pcm_mmap_writei (MMAP): the frames written."""
        if self.capture:
            raise LocalProtocolError("writei on a capture PCM")
        fb, raw = self.frame_bytes, memoryview(data).cast("B")
        if not fb or len(raw) % fb:
            raise ValueError(f"{len(raw)} bytes is not whole {fb}-byte frames")
        size, done = len(raw) // fb, 0
        try:
            while done < size:
                state = self.state
                if state == State.RUNNING:
                    self.hwsync()
                elif state not in (State.PREPARED, State.PAUSED):
                    raise self._state_error("writei")
                avail = self.avail_update()
                if state == State.RUNNING and size - done > avail and avail < self.avail_min:
                    self._block("writei")
                    continue
                n = min(size - done, avail)
                if n <= 0:
                    break
                piece = raw[done * fb:(done + n) * fb]
                if self.access == alsa.ACCESS_MMAP_INTERLEAVED:
                    n = self.mmap_commit(piece)
                else:
                    n = self._transfer(piece, n)
                if state == State.PREPARED and self.state == State.PREPARED and \
                        self.buffer - avail + n >= self.start_threshold:
                    self.start()
                done += n
        except PvSndError as exc:
            # alsa-lib, too, forgets it after a short count; a state error
            # keeps the callback error behind it (the backend's reason)
            if exc.__cause__ is None or exc.__cause__ is not self.last_error:
                self.last_error = exc
            if not done:
                raise
        return done

    def readi(self, frames: int) -> bytes:
        """snd_pcm_readi (RW) or snd_pcm_mmap_readi (MMAP, transfer at
        mmap_begin): blocks for ``frames`` frames; starts a PREPARED stream."""
        if not self.capture:
            raise LocalProtocolError("readi on a playback PCM")
        fb, out, done = self.frame_bytes, bytearray(frames * self.frame_bytes), 0
        view = memoryview(out)
        try:
            while done < frames:
                state = self.state
                if state == State.PREPARED:
                    self.start()
                elif state == State.RUNNING:
                    self.hwsync()
                elif state not in (State.DRAINING, State.PAUSED):
                    raise self._state_error("readi")
                avail = self.avail_update()
                if avail == 0:
                    if state == State.DRAINING:
                        break
                    self._block("readi")
                    continue
                n = min(frames - done, avail)
                if self.access == alsa.ACCESS_MMAP_INTERLEAVED:
                    off = self.appl % self.buffer
                    n = min(n, self.buffer - off)
                    ring = memoryview(self.ring)[off * fb:(off + n) * fb]
                    self.pcm.transfer(self.appl, ring, n)  # result ignored unless < 0
                    view[done * fb:(done + n) * fb] = ring
                    self._move_appl(n)
                else:
                    n = self._transfer(view[done * fb:(done + n) * fb], n)
                done += n
        except PvSndError as exc:
            self.last_error = exc
            if not done:
                raise
        return bytes(out[:done * fb])

    # -- waiting -----------------------------------------------------------------
    def poll_revents(self, fired: bool = True) -> int:
        """The poll_revents callback; an error is POLLERR, as in the C shim.
        ``fired``: a descriptor other than the timer woke the poller."""
        try:
            revents = self.pcm.poll_revents(self.appl, fired)
        except PvSndError as exc:
            self.last_error = exc
            revents = alsa.POLLERR
        if revents & alsa.POLLERR and self.state == State.RUNNING:
            self.state = State.XRUN  # the C shim's snd_pcm_ioplug_set_state
        return revents

    def poll(self, timeout: float) -> int:
        """One poll() on the descriptors (events POLLIN), then poll_revents if
        any fired; 0 when poll timed out."""
        p = select.poll()
        for fd in self.fds:
            p.register(fd, select.POLLIN)
        ready = p.poll(math.ceil(max(0.0, timeout) * 1000))
        if not ready:
            return 0
        return self.poll_revents(any(fd != self.fds[0] for fd, _ in ready))

    def wait(self, timeout: float | None = None) -> None:
        """snd_pcm_wait: returns at once if avail >= avail_min (not draining)."""
        if self.state != State.DRAINING and self.mmap_avail() >= self.avail_min:
            if self.state == State.XRUN:
                raise self._state_error("wait")
            return
        self._wait_nocheck(timeout)

    def _wait_nocheck(self, timeout: float | None = None) -> None:
        timeout = self.wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"not ready within {timeout:g} s "
                                  f"(state {self.state.name}, avail {self.mmap_avail()})")
            revents = self.poll(left)
            if revents & (alsa.POLLERR | select.POLLNVAL):
                raise self._state_error("poll (POLLERR)", errno.EIO)
            if revents & (alsa.POLLIN | alsa.POLLOUT):
                return

    def _block(self, what: str) -> None:
        if self.nonblock:
            raise PvSndError(f"{what}: would block", code=errno.EAGAIN)
        self._wait_nocheck()

    # -- stopping ------------------------------------------------------------------
    def drain(self) -> None:
        """snd_pcm_drain with a drain callback: DRAINING, the callback, drop."""
        self._need("drain", *RUNNABLE)
        if self.state == State.RUNNING or (self.state == State.PREPARED and not self.capture):
            self.state = State.DRAINING
        if self.state == State.DRAINING:
            self.pcm.drain(self.appl, self.nonblock)
        if self.state != State.SETUP:
            self._drop()

    def drop(self) -> None:
        self._need("drop", State.SETUP, *RUNNABLE)
        if self.state != State.SETUP:
            self._drop()

    def _drop(self) -> None:
        try:
            self.pcm.stop()
        except PvSndError as exc:  # ioplug ignores what stop returns
            self.last_error = exc
        self.state = State.SETUP

    def pause(self, enable: bool) -> None:
        self._need("pause", State.RUNNING if enable else State.PAUSED)
        self.pcm.pause(enable)
        self.state = State.PAUSED if enable else State.RUNNING

    def hw_free(self) -> None:
        """snd_pcm_hw_free (a no-op before hw_params)."""
        if self.state != State.OPEN:
            self.pcm.hw_free()
            self.state = State.OPEN

    def close(self) -> None:
        """snd_pcm_close: drop, hw_free, close."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.state not in (State.OPEN, State.SETUP):
                self._drop()
            self.hw_free()
        finally:
            self.pcm.close()

    def __enter__(self) -> IoplugHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------
    def _need(self, what: str, *states: State) -> None:
        if self.state not in states:
            raise self._state_error(what)

    def _state_error(self, what: str, default: int = errno.EBADFD) -> PvSndError:
        """pcm_state_to_error, chained to the callback error behind it."""
        if self.state == State.XRUN:
            err: PvSndError = Xrun(f"{what}: the PCM is in XRUN")
        elif default == errno.EBADFD:
            err = LocalProtocolError(f"{what} in state {self.state.name}")
        else:
            err = PvSndError(f"{what} in state {self.state.name}", code=default)
        err.__cause__ = self.last_error
        return err
