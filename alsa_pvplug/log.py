"""Loggers that import :mod:`logging` only when a message is due.

The plugin's first ``snd_pcm_open`` in a C host starts our interpreter, and
importing logging (with the traceback, string and weakref modules it pulls
in) was about 4 ms of that open, while a stream that plays well logs
nothing.  So until something in the process has imported logging, a message
below the plugin's level (``use_stderr``; WARNING, logging's own default, before
it) is dropped here; the first message at or above it imports logging and
applies the plugin's configuration.  From then on,
or wherever logging was imported already (a Python host, the CLI, the tests),
every call goes to the real logger, whose levels and handlers decide.
"""

from __future__ import annotations

import sys
from typing import Any

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR,
          "critical": CRITICAL}
PACKAGE = "alsa_pvplug"

_stderr_level: int | None = None  # use_stderr's, applied at the first real logger
_handler: Any = None


def _configure() -> None:
    global _handler
    if _stderr_level is None:
        return
    import logging

    pkg = logging.getLogger(PACKAGE)
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter("pvplug: %(levelname)s: %(message)s"))
        pkg.addHandler(_handler)
        pkg.propagate = False
    pkg.setLevel(_stderr_level)


def use_stderr(level: str) -> None:
    """Our messages go to stderr, prefixed, at ``level`` (a name of LEVELS);
    the host's own logging configuration, if any, is left alone."""
    global _stderr_level
    _stderr_level = LEVELS[level.lower()]
    if "logging" in sys.modules:
        _configure()


class LazyLogger:
    """The part of :class:`logging.Logger` we use, importing it when needed."""

    __slots__ = ("name", "_real")

    def __init__(self, name: str) -> None:
        self.name = name
        self._real: Any = None

    def _log(self, level: int, method: str, msg: str, args: tuple[Any, ...],
             kw: dict[str, Any]) -> None:
        if self._real is None:
            # Unset, a logger has the root's level: logging's default WARNING.
            if level < (_stderr_level or WARNING) and "logging" not in sys.modules:
                return
            import logging

            _configure()
            self._real = logging.getLogger(self.name)
        kw.setdefault("stacklevel", 3)  # the caller's line, not ours
        getattr(self._real, method)(msg, *args, **kw)

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log(DEBUG, "debug", msg, args, kw)

    def info(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log(INFO, "info", msg, args, kw)

    def warning(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log(WARNING, "warning", msg, args, kw)

    def error(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log(ERROR, "error", msg, args, kw)

    def exception(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log(ERROR, "exception", msg, args, kw)


def get_logger(name: str) -> LazyLogger:
    return LazyLogger(name)
