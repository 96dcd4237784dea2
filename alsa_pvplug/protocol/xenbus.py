"""XenbusState handshake of a vsnd device, as lookup tables.

Rule 1: pure.  The functions map (own state, peer state) to the action the
caller must take; they never read or write xenstore.
Rule 2: call the ``*_on_*`` function when the **peer's** state node changes
(re-read it on every watch event and compare with the last value you acted
on: watches fire once when set and may fire spuriously, Xen's docs/misc/xenstore.txt)
-- not after writing your own state.  That is how both real peers work
(Linux ``otherend_changed``, libxenbe ``backendStateChanged``/
``frontendStateChanged`` drop unchanged values), and the tables rely on it:
e.g. (frontend INITIALISED, backend INIT_WAIT) means "the backend came back
to InitWait" and answers REPUBLISH, which would loop if re-evaluated right
after our own PUBLISH.  The first observation after start-up counts as a
change; call the ``*_startup`` function before it.
Rule 3: an own state this side never holds is a local bug and raises
``LocalProtocolError``; a garbage state string from the peer raises
``RemoteProtocolError`` (``parse_state``).

Sources: docs/protocol.md sections 3 and 7.3; Linux ``sound/xen/
xen_snd_front.c`` ``sndback_changed``; xen-troops libxenbe
``FrontendHandlerBase.cpp``.
"""

from __future__ import annotations

import enum
from enum import IntEnum

from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "BackendAction",
    "FrontendAction",
    "XenbusState",
    "backend_on_frontend",
    "backend_startup",
    "frontend_on_backend",
    "frontend_startup",
    "parse_state",
]


class XenbusState(IntEnum):
    """``enum xenbus_state`` (xen/io/xenbus.h); xenstore holds the decimal."""

    UNKNOWN = 0
    INITIALISING = 1
    INIT_WAIT = 2
    INITIALISED = 3
    CONNECTED = 4
    CLOSING = 5
    CLOSED = 6
    RECONFIGURING = 7
    RECONFIGURED = 8


def parse_state(value: str | bytes | None) -> XenbusState:
    """Decode a ``state`` node.

    Parameters
    ----------
    value : str, bytes or None
        The node's contents; None when the node does not exist.

    Returns
    -------
    XenbusState
        UNKNOWN for a missing node (as ``xenbus_read_driver_state``).

    Raises
    ------
    RemoteProtocolError
        Not a decimal XenbusState 0..8; the message quotes the value (EIO).
    """
    if value is None:
        return XenbusState.UNKNOWN
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"xenbus state {value!r} is not ASCII") from None
    s = value.strip()
    # str.isdigit() accepts non-ASCII digits; insist on 0-9.
    if not s or not all("0" <= ch <= "9" for ch in s):
        raise RemoteProtocolError(f"xenbus state {value!r} is not a decimal number")
    try:
        return XenbusState(int(s))
    except ValueError:
        raise RemoteProtocolError(f"xenbus state {value!r} is not a XenbusState 0..8") from None


# ------------------------------------------------------------------------------
# Frontend
# ------------------------------------------------------------------------------


class FrontendAction(enum.Enum):
    """What the frontend does in reaction to the backend's state."""

    NONE = "none"
    """Steady, or (while we are CLOSING) the backend has let go: nothing to do."""
    PUBLISH = "publish"
    """Read the card config; for every stream allocate ring + event page and two
    unbound ports; write the four keys per stream in one transaction (retry on
    EAGAIN); then write fe state INITIALISED."""
    CONNECT = "connect"
    """The backend mapped our rings: write fe state CONNECTED."""
    RESET = "reset"
    """Drop everything (unshare pages, unbind ports; never reuse them) and write
    fe state INITIALISING; the backend will come back with InitWait."""
    REPUBLISH = "republish"
    """The backend went back to InitWait behind our back: drop everything and
    write INITIALISING (as RESET), then PUBLISH afresh, which writes
    INITIALISED (Linux ``sndback_changed`` InitWait case).  The intermediate
    INITIALISING lets a backend that compares values see a change."""
    WAIT = "wait"
    """Not our move yet: keep waiting for the backend's next state."""


_FA = FrontendAction
_S = XenbusState

# Own frontend state -> {backend state -> action}.  Rows cover the states a
# frontend holds: INITIALISING (nothing shared), INITIALISED (published),
# CONNECTED, CLOSING (we are shutting down and wait for the backend to
# release, as Linux xen_drv_remove), CLOSED (written by frontend_startup to
# kick a backend still attached to a dead previous owner).
_FRONTEND: dict[XenbusState, dict[XenbusState, FrontendAction]] = {
    _S.INITIALISING: {
        _S.UNKNOWN: _FA.WAIT,        # backend not created yet / gone
        _S.INITIALISING: _FA.WAIT,
        _S.INIT_WAIT: _FA.PUBLISH,
        _S.INITIALISED: _FA.WAIT,    # not a backend state in sndif; Linux ignores
        _S.CONNECTED: _FA.WAIT,      # stale: libxenbe sees our 1 and cycles 5->6->2
        _S.CLOSING: _FA.WAIT,        # snd_be writes 5/6 before InitWait (docs/protocol.md 3.8)
        _S.CLOSED: _FA.WAIT,
        _S.RECONFIGURING: _FA.WAIT,
        _S.RECONFIGURED: _FA.WAIT,
    },
    _S.INITIALISED: {
        _S.UNKNOWN: _FA.RESET,       # backend node removed
        _S.INITIALISING: _FA.RESET,  # backend restarted
        _S.INIT_WAIT: _FA.REPUBLISH,
        _S.INITIALISED: _FA.WAIT,
        _S.CONNECTED: _FA.CONNECT,
        _S.CLOSING: _FA.WAIT,        # Linux waits for Closed
        _S.CLOSED: _FA.RESET,        # e.g. the backend failed to map our rings
        _S.RECONFIGURING: _FA.WAIT,
        _S.RECONFIGURED: _FA.WAIT,
    },
    _S.CONNECTED: {
        _S.UNKNOWN: _FA.RESET,
        _S.INITIALISING: _FA.RESET,
        _S.INIT_WAIT: _FA.REPUBLISH,
        _S.INITIALISED: _FA.NONE,
        _S.CONNECTED: _FA.NONE,
        _S.CLOSING: _FA.WAIT,
        _S.CLOSED: _FA.RESET,
        _S.RECONFIGURING: _FA.NONE,
        _S.RECONFIGURED: _FA.NONE,
    },
    _S.CLOSING: {
        # NONE = the backend holds none of our pages any more: finish leaving.
        _S.UNKNOWN: _FA.NONE,
        _S.INITIALISING: _FA.NONE,
        _S.INIT_WAIT: _FA.NONE,      # what Linux xen_drv_remove polls for
        _S.INITIALISED: _FA.WAIT,
        _S.CONNECTED: _FA.WAIT,
        _S.CLOSING: _FA.WAIT,
        _S.CLOSED: _FA.NONE,
        _S.RECONFIGURING: _FA.WAIT,
        _S.RECONFIGURED: _FA.WAIT,
    },
    _S.CLOSED: {
        # We hold nothing.  Once the backend is not attached, say we are
        # back (1); if it already waits for us, publish straight away (a
        # write of 1 would not change its state, so nothing would follow).
        _S.UNKNOWN: _FA.RESET,
        _S.INITIALISING: _FA.RESET,
        _S.INIT_WAIT: _FA.PUBLISH,
        _S.INITIALISED: _FA.WAIT,
        _S.CONNECTED: _FA.WAIT,      # libxenbe releases on fe 5/6, ends in 2
        _S.CLOSING: _FA.WAIT,
        _S.CLOSED: _FA.RESET,
        _S.RECONFIGURING: _FA.WAIT,
        _S.RECONFIGURED: _FA.WAIT,
    },
}


def frontend_on_backend(fe: XenbusState, be: XenbusState) -> FrontendAction:
    """The frontend's reaction to a change of the backend state.

    Parameters
    ----------
    fe : XenbusState
        Our own current state (the last value we wrote).
    be : XenbusState
        The backend state just observed (changed since we last acted).

    Returns
    -------
    FrontendAction

    Raises
    ------
    LocalProtocolError
        ``fe`` is a state a frontend never holds (UNKNOWN, INIT_WAIT,
        RECONFIGURING, RECONFIGURED) (EBADFD).
    """
    try:
        row = _FRONTEND[XenbusState(fe)]
    except (KeyError, ValueError):
        raise LocalProtocolError(
            f"frontend state {fe!r} is not one a frontend holds") from None
    return row[XenbusState(be)]


def frontend_startup(fe: XenbusState) -> FrontendAction:
    """What a frontend process must do first, given the fe ``state`` it finds.

    Returns
    -------
    FrontendAction
        NONE for INITIALISING or UNKNOWN: nothing stale; take INITIALISING as
        own state and evaluate ``frontend_on_backend(INITIALISING, be)`` with
        the backend state read now (it counts as a change).
        RESET for anything else: a previous owner died without cleaning up,
        and its grants and ports died with it (never reuse them), while the
        backend may still map its pages.  The caller writes CLOSED, then
        INITIALISING (libxenbe releases on either while Connected and ends in
        InitWait), takes INITIALISING as own state and continues as above.
    """
    if fe in (XenbusState.UNKNOWN, XenbusState.INITIALISING):
        return FrontendAction.NONE
    return FrontendAction.RESET


# ------------------------------------------------------------------------------
# Backend
# ------------------------------------------------------------------------------


class BackendAction(enum.Enum):
    """What the backend does in reaction to the frontend's state."""

    NONE = "none"
    """Nothing to do."""
    INIT_WAIT = "init-wait"
    """Write be state INIT_WAIT."""
    CONNECT = "connect"
    """Read type, unique-id and the four ring keys of every stream, map the
    rings, bind the ports, write be CONNECTED.  On any failure release what was
    mapped and write CLOSING then CLOSED (libxenbe ``onError``)."""
    RELEASE = "release"
    """The frontend left or restarted: unmap, unbind, then write CLOSING,
    CLOSED, INIT_WAIT (libxenbe ``close(XenbusStateInitWait)``)."""


_BA = BackendAction

_NONE_ROW = {st: _BA.NONE for st in XenbusState}

# Own backend state -> {frontend state -> action}; libxenbe
# FrontendHandlerBase::onState* unless noted.
_BACKEND: dict[XenbusState, dict[XenbusState, BackendAction]] = {
    # Not CONNECT on a Connected frontend (libxenbe does): while we are not
    # connected, that frontend talks to the rings of a backend that died and
    # republishes once it sees our InitWait.  Mapping those rings raced its
    # unsharing (seen in tests/sim/test_e2e_sim.py's backend restart).
    _S.INITIALISING: _NONE_ROW | {
        _S.INITIALISING: _BA.INIT_WAIT,
        _S.INITIALISED: _BA.CONNECT,
    },
    _S.INIT_WAIT: _NONE_ROW | {
        _S.INITIALISED: _BA.CONNECT,
    },
    _S.CONNECTED: _NONE_ROW | {
        # libxenbe ignores a vanished fe state node; we release: the frontend
        # domain or device is gone and its pages should be let go.
        _S.UNKNOWN: _BA.RELEASE,
        _S.INITIALISING: _BA.RELEASE,  # "Frontend restarted"
        _S.CLOSING: _BA.RELEASE,
        _S.CLOSED: _BA.RELEASE,
    },
    # Transient while the caller runs RELEASE or a failed CONNECT.
    _S.CLOSING: dict(_NONE_ROW),
    _S.CLOSED: _NONE_ROW | {
        _S.INITIALISING: _BA.INIT_WAIT,
    },
}


def backend_on_frontend(be: XenbusState, fe: XenbusState) -> BackendAction:
    """The backend's reaction to a change of the frontend state.

    Parameters
    ----------
    be : XenbusState
        Our own current state (the last value we wrote).
    fe : XenbusState
        The frontend state just observed (changed since we last acted).

    Returns
    -------
    BackendAction

    Raises
    ------
    LocalProtocolError
        ``be`` is a state this backend never holds (UNKNOWN, INITIALISED,
        RECONFIGURING, RECONFIGURED); use ``backend_startup`` for a state
        found in xenstore (EBADFD).
    """
    try:
        row = _BACKEND[XenbusState(be)]
    except (KeyError, ValueError):
        raise LocalProtocolError(
            f"backend state {be!r} is not one this backend holds") from None
    return row[XenbusState(fe)]


def backend_startup(be: XenbusState, fe: XenbusState) -> BackendAction:
    """What a backend process does first, given the states it finds.

    A new process maps nothing, whatever ``be`` claims, so it must not stay
    Connected/Initialised.  Two cases:

    - fe INITIALISED: the frontend published rings for this backend domain
      (grants and ports belong to the domain, not to the dead process) and
      waits.  CONNECT to them now, from whatever ``be`` says.  Writing
      InitWait instead would make it republish and rewrite INITIALISED, a
      value this process has already seen, so a value-comparing watch could
      miss it and both sides would wait forever.
    - anything else: INIT_WAIT.  A Connected frontend (4 -> REPUBLISH) or an
      Initialising one (PUBLISH) then publishes fresh rings; a Closing one
      finishes leaving.

    Returns
    -------
    BackendAction
        CONNECT or INIT_WAIT.  After performing it the caller holds the state
        it wrote and reacts to further frontend changes with
        ``backend_on_frontend``.
    """
    if XenbusState(fe) is XenbusState.INITIALISED:
        return BackendAction.CONNECT
    return BackendAction.INIT_WAIT
