"""The reference backend, unchanged, plus a log of the CUR_POS events it sends.

    python bench/backend_tap.py OUT.npy [pvplug CLI arguments: backend --sim-dir ...]

Wraps ``BackendStream._event`` (called once per CUR_POS) to remember, per
event, as CLOCK_MONOTONIC ns where a time: when it was sent; the position in
frames; when the backend's own clock reached that position (its anchor plus
frames / rate); and when that clock crossed the last period boundary before
it (the ideal send time: a late wake-up shows there, not in the former).
One list append per period; the log is written when the backend exits
(SIGTERM stops it cleanly).
"""

from __future__ import annotations

import sys
import time


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    import numpy as np

    from alsa_pvplug import cli
    from alsa_pvplug.backend import server

    log: list[tuple[int, int, int]] = []
    orig = server.BackendStream._event

    def _event(self: server.BackendStream, *args: float) -> None:
        t = time.monotonic_ns()
        info = self.info
        if info is not None:
            frames = self.done // info.frame_bytes
            rate = self._clock_rate() if hasattr(self, "_clock_rate") else info.rate
            ideal = self.anchor_t + (frames - self.anchor_frames) / rate
            cad = self._cadence() // info.frame_bytes
            edge = max(frames // cad * cad, self.anchor_frames)
            due = self.anchor_t + (edge - self.anchor_frames) / rate
            log.append((t, frames, int(ideal * 1e9), int(due * 1e9)))
        orig(self, *args)

    server.BackendStream._event = _event  # type: ignore[method-assign]
    try:
        return cli.main(argv)
    finally:
        np.save(out, np.array(log, dtype=np.int64).reshape(-1, 4))


if __name__ == "__main__":
    sys.exit(main())
