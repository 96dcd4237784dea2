"""Formerly the home of ``NativeIndexOps`` (now :mod:`.native_index`).

The old import path keeps working, lazily, so that importing this module
never loads the compiled ``_native``: ``tests/fuzz`` still imports it from
here (those files are being reorganised elsewhere; switch them to
``alsa_pvplug.transport.native_index`` and drop this alias then).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "NativeIndexOps":
        from .native_index import NativeIndexOps

        return NativeIndexOps
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
