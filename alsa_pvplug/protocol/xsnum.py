"""Numbers in xenstore values: the one strict parser.

Rule: every number a peer (or the toolstack) writes into xenstore is parsed
here: ASCII decimal digits only, inside a range the caller names.  Python's
``int()`` and ``str.isdigit()`` accept far more (``"²"``, ``"١٢"``,
``" +1_0 "``), and a value one accepts and the other refuses has crashed a
backend serving other guests.  Pure: no I/O.
"""

from __future__ import annotations

from ..errors import ConfigError

__all__ = ["DOMID_MAX", "U16_MAX", "U32_MAX", "is_decimal", "parse_uint"]

U16_MAX = 0xFFFF
#: the largest domid a domain can have (DOMID_FIRST_RESERVED - 1, xen.h)
DOMID_MAX = 0x7FEF
U32_MAX = 0xFFFF_FFFF
# Longer than any u64 in decimal: refused before int() does any work.
_MAX_DIGITS = 20


def is_decimal(value: str) -> bool:
    """True if ``value`` is one or more ASCII digits and nothing else."""
    return 0 < len(value) <= _MAX_DIGITS and all("0" <= ch <= "9" for ch in value)


def parse_uint(value: str | None, lo: int, hi: int, key: str) -> int:
    """``value`` as an integer in ``lo..hi``.

    Surrounding ASCII spaces are tolerated (xl and Linux write none, but
    hand-edited trees have them); nothing else is.

    Raises
    ------
    ConfigError
        Missing, not ASCII decimal, or out of range; ``key`` and the raw
        value are named (EINVAL).
    """
    if value is None:
        raise ConfigError(f"{key} is missing", key=key, value=None)
    s = value.strip(" ")
    if not is_decimal(s):
        raise ConfigError(f"{key}={value!r}: not a decimal number", key=key, value=value)
    n = int(s)
    if not lo <= n <= hi:
        raise ConfigError(f"{key}={value!r}: out of range {lo}..{hi}", key=key, value=value)
    return n
