"""The toolstack role of the simulator: create domains and vsnd devices the
way ``xl create`` does from a ``vsnd = [...]`` domain config.

Node layout and permissions follow libxl (``libxl_device.c``,
``libxl_vsnd.c``; docs/protocol.md section 2.2): the frontend directory is
owned by the guest with read access for the backend, the backend directory
is owned by the backend domain with read access for the guest, both
``state`` nodes start at 1 (Initialising).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .xl import parse_xl_vsnd, xl_card_to_xenstore

# What `pvplug sim` serves when no vsnd config is given: one card, one pcm,
# one playback and one capture stream, with the float format in xl's own
# spelling so that the f32_le path is exercised.
DEFAULT_VSND: list[list[str]] = [[
    "card, short-name=pvplug, long-name=alsa-pvplug simulated card, "
    "sample-rates=8000;16000;22050;32000;44100;48000;96000, "
    "sample-formats=u8;s16_le;s24_le;s32_le;f32_le, channels-min=1, channels-max=8, "
    "buffer-size=1048576",
    "pcm, name=main",
    "stream, unique-id=pvplug-out, type=p",
    "stream, unique-id=pvplug-in, type=c",
]]


class PrivilegedStore(Protocol):
    """What the toolstack needs from xenstored: dom0 writes that fire watches."""

    def write(self, path: str, value: str) -> None: ...
    def mkdir(self, path: str) -> None: ...
    def set_perms(self, path: str, perms: list[tuple[int, str]]) -> None: ...


def create_domain(xs: PrivilegedStore, domid: int, name: str) -> None:
    dom = f"/local/domain/{domid}"
    xs.mkdir(dom)
    xs.set_perms(dom, [(0, "n"), (domid, "r")])
    xs.write(f"{dom}/domid", str(domid))
    xs.write(f"{dom}/name", name)
    for sub in ("device", "data"):
        xs.mkdir(f"{dom}/{sub}")
        xs.set_perms(f"{dom}/{sub}", [(domid, "n")])
    if domid == 0:
        xs.mkdir(f"{dom}/backend")


def create_vsnd(xs: PrivilegedStore, fe_domid: int, be_domid: int,
                spec: Sequence[Sequence[str]] | None = None) -> list[int]:
    """Create one vsnd device per card of ``spec`` (xl syntax); returns devids."""
    cards = parse_xl_vsnd([list(c) for c in (spec or DEFAULT_VSND)])
    devids = []
    for devid, card in enumerate(cards):
        fe = f"/local/domain/{fe_domid}/device/vsnd/{devid}"
        be = f"/local/domain/{be_domid}/backend/vsnd/{fe_domid}/{devid}"
        for path, owner, peer in ((fe, fe_domid, be_domid), (be, be_domid, fe_domid)):
            xs.mkdir(path)
            xs.set_perms(path, [(owner, "n"), (peer, "r")])
        # Backend first, then the frontend's link to it, as libxl does in one
        # transaction: a backend watching its directory finds `frontend` set.
        for key, value in (("frontend", fe), ("frontend-id", str(fe_domid)),
                           ("online", "1"), ("state", "1")):
            xs.write(f"{be}/{key}", value)
        for rel, value in sorted(xl_card_to_xenstore(card).items()):
            xs.write(f"{fe}/{rel}", value)
        for key, value in (("backend", be), ("backend-id", str(be_domid)), ("state", "1")):
            xs.write(f"{fe}/{key}", value)
        devids.append(devid)
    return devids
