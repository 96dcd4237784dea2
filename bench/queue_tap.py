"""The reference backend, unchanged, plus a log of each stream's queue.

    python bench/queue_tap.py OUT.npy [pvplug CLI arguments: backend --sim-dir ...]

Like ``backend_tap.py`` it wraps ``BackendStream`` methods (one list append
each) and writes the log when the backend exits (SIGTERM stops it cleanly).
Rows of int64, ``COLUMNS``:

* ``t_ns``: CLOCK_MONOTONIC;
* ``kind``: OPEN, WRITE (after a WRITE was taken), EVENT (a CUR_POS sent),
  DRY (a running playback stream found no data left to play: an underrun
  at the "DAC", whatever the guest's pointer says), LOOP (the loopback
  source read from its FIFO);
* ``seg``: the stream's OPEN count (positions restart at every OPEN);
* ``capture``: 1 for a capture stream;
* ``written``: playback: frames the guest has written (a rewrite after a
  rewind lowers it); capture: frames the guest has read;
* ``played``: frames the backend's clock has played (captured) by ``t``,
  for playback never past ``written``: what a card's DAC has consumed;
* ``done``: frames played (recorded) so far in whole steps (the reports);
* ``fifo``: LOOP rows: frames waiting in the card's loopback FIFO;
* ``announced``: playback: ``written`` plus the WRITEs waiting in the
  stream's ring (sent by the guest, not taken yet: a paced backend with two
  cadences queued takes them at its next cadence, docs/design.md section 6).
  A thread looks at every ring each 0.5 ms and adds an ANNOUNCE row when the
  guest's ``req_prod`` moved.

The backend's queue at ``t`` is ``written - played`` (what it has taken);
everything the guest has handed it, ``announced - played``.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref

COLUMNS = ("t_ns", "kind", "seg", "capture", "written", "played", "done", "fifo", "announced")
OPEN, WRITE, EVENT, DRY, LOOP, ANNOUNCE = range(6)
PEEK_SECONDS = 0.0005


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    import numpy as np

    from alsa_pvplug import cli
    from alsa_pvplug.backend import io, server
    from alsa_pvplug.protocol import ring as R
    from alsa_pvplug.protocol import sndif

    log: list[tuple[int, ...]] = []
    segs: dict[int, int] = {}
    S = server.BackendStream
    streams: weakref.WeakSet[server.BackendStream] = weakref.WeakSet()

    def handed(self: server.BackendStream) -> tuple[int, int]:
        """(the guest's req_prod, the end of its WRITEs in octets: those
        handled, then the ones taken but not handled and those still in the
        ring, each placed as the backend will place it)."""
        ring = self.ring
        end = self.written
        if ring is None or not self.buffer_sz:
            return -1, end
        cons = ring.req_cons
        prod = ring._ops.load(R.REQ_PROD_OFF)
        reqs = list(self.pending)  # the first may be the one being handled
        for i in range(min((prod - cons) & 0xFFFFFFFF, R.RING_SIZE)):
            off = R.RING_HEADER + ((cons + i) % R.RING_SIZE) * R.SLOT_SIZE
            try:
                reqs.append(sndif.decode_request(bytes(ring._mv[off:off + R.SLOT_SIZE])))
            except Exception:  # noqa: BLE001 - a slot being written: the next look
                break
        for req in reqs:
            if isinstance(req, sndif.RwReq) and req.operation == sndif.Op.WRITE:
                pos = end - (end - req.offset) % self.buffer_sz  # _abs_write_pos
                end = max(end, pos + req.length)
        return prod, end

    def row(self: server.BackendStream, kind: int, fifo: int = 0) -> int:
        t = time.monotonic_ns()
        info = self.info
        if info is None:
            return -1
        fb = info.frame_bytes
        if self.cfg.is_capture:
            written = given = self.read_pos
            played = self.done
            prod = -1
        else:
            written = self.written
            played = min(self._target(t / 1e9), written) if self.running else self.done
            prod, given = handed(self)
        log.append((t, kind, segs.get(id(self), 0), int(self.cfg.is_capture), written // fb,
                    played // fb, self.done // fb, fifo, given // fb))
        return prod

    def peek() -> None:
        seen: dict[int, int] = {}
        while True:
            time.sleep(PEEK_SECONDS)
            for st in list(streams):
                if st.running and st.ring is not None and st.device is None \
                        and not st.cfg.is_capture:  # (a device is not for this thread)
                    if seen.get(id(st)) != st.ring._ops.load(R.REQ_PROD_OFF):
                        seen[id(st)] = row(st, ANNOUNCE)

    threading.Thread(target=peek, name="queue-tap-peek", daemon=True).start()

    orig_open, orig_write, orig_event, orig_step = S._open, S._write, S._event, S.step

    def _open(self: server.BackendStream, *args: object) -> None:
        orig_open(self, *args)
        segs[id(self)] = segs.get(id(self), 0) + 1
        streams.add(self)
        row(self, OPEN)

    def _write(self: server.BackendStream, *args: object) -> None:
        orig_write(self, *args)
        row(self, WRITE)

    def _event(self: server.BackendStream, *args: object, **kw: object) -> None:
        row(self, EVENT)
        orig_event(self, *args, **kw)

    def step(self: server.BackendStream, now: float) -> None:
        was_dry = self.dry
        orig_step(self, now)
        if self.running and self.dry and not was_dry and not self.cfg.is_capture:
            row(self, DRY)

    S._open, S._write, S._event, S.step = _open, _write, _event, step  # type: ignore[method-assign]

    orig_read = io._LoopEnd.read

    def read(self: io._LoopEnd, nbytes: int) -> bytes:
        fb = self.info.frame_bytes
        log.append((time.monotonic_ns(), LOOP, 0, 1, 0, 0, 0, len(self.fifo.data) // fb, 0))
        return orig_read(self, nbytes)

    io._LoopEnd.read = read  # type: ignore[method-assign]
    try:
        return cli.main(argv)
    finally:
        np.save(out, np.array(log, dtype=np.int64).reshape(-1, len(COLUMNS)))


# -- reading the log (for the bench/*.py commands) ------------------------------

def load(path: str) -> object:
    """The log as a structured array with the ``COLUMNS`` as fields."""
    import numpy as np

    raw = np.load(path)
    raw = raw[np.argsort(raw[:, 0], kind="stable")]  # two threads append
    return np.rec.fromarrays(raw.T, names=",".join(COLUMNS))


def playback(log: object, t0_ns: int = 0, t1_ns: int = 2**62) -> object:
    """The WRITE/EVENT/DRY rows of the playback stream's longest OPEN within
    [t0_ns, t1_ns]."""
    import numpy as np

    rows = log[(log.capture == 0) & (log.kind != OPEN) & (log.kind != LOOP)]
    rows = rows[(rows.t_ns >= t0_ns) & (rows.t_ns <= t1_ns)]
    if len(rows) == 0:
        return rows
    segs, counts = np.unique(rows.seg, return_counts=True)
    return rows[rows.seg == segs[np.argmax(counts)]]


def queue_frames(rows: object, t_ns: object, rate: float, column: str = "written") -> object:
    """The playback queue (``column`` - played: ``written``, what the backend
    took; ``announced``, what the guest handed it) at the instants ``t_ns``,
    from the last row before each: the DAC goes on at ``rate`` until the data
    ends.  NaN before the first row."""
    import numpy as np

    t_ns = np.asarray(t_ns, dtype=np.int64)
    k = np.searchsorted(rows.t_ns, t_ns, side="right") - 1
    ok = k >= 0
    k = np.clip(k, 0, None)
    played = rows.played[k] + (t_ns - rows.t_ns[k]) / 1e9 * rate
    have = rows[column][k]
    q = have - np.minimum(played, have)
    return np.where(ok, q, np.nan)


if __name__ == "__main__":
    sys.exit(main())
