"""When a stream stops trying: a backend that keeps failing ends in an error.

An ALSA client answers an xrun or a timeout with prepare and start, and a
sound server does so forever.  Against a backend that never moves the stream,
or keeps sending impossible positions, that is an endless loop inside the
host application; these rules turn the n-th failure in a row into an error
from prepare that clients pass on instead of retrying (-EIO, -ETIMEDOUT).

Pure: the frontend feeds it what happened and asks it at every prepare.
"""

from __future__ import annotations

from ..errors import BackendTimeout, RemoteProtocolError

#: impossible position reports a stream survives (each an xrun); one more and
#: prepare fails with -EIO
MAX_VIOLATIONS = 3
#: timeouts (no answer, no position) in a row without the stream moving; one
#: more and prepare fails with -ETIMEDOUT instead of starting the stall again
MAX_TIMEOUTS = 2
#: WRITEs/READs left unanswered in a row (a backend may play or report while
#: it never answers its data requests); one more and prepare fails with
#: -ETIMEDOUT: each costs the client a timeout and an xrun
MAX_UNANSWERED_DATA = 2
#: xruns in a row, each after less than a period of data (a backend that
#: overruns or underruns the stream whatever the client does); one more and
#: prepare fails with -EIO
MAX_BARREN_XRUNS = 8


class GiveUp:
    """The record of one user of a stream (reset by ``__init__`` on claim)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.timeouts = 0
        self.unanswered_data = 0
        self.barren = 0
        self.moved = 0     # the furthest data position seen since prepare
        self.consumed = 0  # how far the data reached the other end since prepare

    def progress(self, *, moved: int, consumed: int) -> None:
        """Where the data is now, frames since OPEN: ``moved`` by the backend
        (played, or captured and read), ``consumed`` at its destination (the
        speaker, or the capture application)."""
        if moved > self.moved:
            self.moved = moved
            self.timeouts = 0
        self.consumed = max(self.consumed, consumed)

    def timed_out(self) -> None:
        """A request or the position went unanswered for the timeout."""
        self.timeouts += 1

    def data_unanswered(self) -> None:
        """A WRITE or READ went unanswered for the timeout (movement does not
        forgive this one: only an answer to a data request does)."""
        self.unanswered_data += 1

    def data_answered(self) -> None:
        self.unanswered_data = 0

    def before_prepare(self, *, violations: int, after_xrun: bool, period: int,
                       timeout: float) -> None:
        """Raise if the stream is not worth starting again; else forget the
        run that ended.  ``violations``: impossible reports since OPEN."""
        if violations >= MAX_VIOLATIONS:
            raise RemoteProtocolError(
                f"{self.name}: the backend keeps breaking the protocol "
                f"({violations} impossible position reports); giving up")
        barren = after_xrun and self.consumed < period
        self.barren = self.barren + 1 if barren else 0
        if self.barren > MAX_BARREN_XRUNS:
            raise RemoteProtocolError(
                f"{self.name}: {self.barren} xruns in a row, each after less than a period "
                "of data: the backend does not keep the stream going; giving up")
        if self.unanswered_data >= MAX_UNANSWERED_DATA:
            raise BackendTimeout(f"{self.name}: the backend left {self.unanswered_data} data "
                                 "requests in a row unanswered; giving up", timeout)
        if self.timeouts >= MAX_TIMEOUTS:
            raise BackendTimeout(f"{self.name}: the backend stalled {self.timeouts} times "
                                 "in a row; giving up", timeout)
        self.moved = self.consumed = 0
