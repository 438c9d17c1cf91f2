"""Conversions between API values and stored values, with the checks that keep bad input out.

Timestamps: aware UTC ``datetime`` <-> integer milliseconds.
Text: both stores keep UTF-8, which cannot hold a lone surrogate such as ``'\\ud800'``, and
PostgreSQL's text cannot hold NUL either. Such a string is stored as ``\\x01`` followed by its
``unicode_escape`` form (ASCII; unlike JSON, it never pairs two lone surrogates into one character),
and so is any string that itself starts with ``\\x01``; reads undo it, so every Python ``str``
round-trips exactly on both stores (NUL, emoji, RTL text included). Rows written by older
versions as BLOBs of the ``surrogatepass`` encoding still read back.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import StorageError

MAX_ID = 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MS = timedelta(milliseconds=1)
_SURROGATE = re.compile("[\ud800-\udfff]")


def to_ms(value: datetime, what: str = "time") -> int:
    if not isinstance(value, datetime):
        raise StorageError(f"{what} must be a datetime, not {type(value).__name__}.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise StorageError(f"{what} must be timezone-aware (UTC); got a naive datetime {value.isoformat()}.")
    # Exact integer arithmetic: float timestamps can round 0.123 s down to 122 ms.
    return (value - EPOCH) // ONE_MS


def opt_ms(value: datetime | None, what: str = "time") -> int | None:
    return None if value is None else to_ms(value, what)


def from_ms(value: int | None) -> datetime | None:
    if value is None:
        return None
    return EPOCH + value * ONE_MS


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def check_id(value: Any, what: str = "id") -> int:
    # bool is an int subclass; True is never a Discord id.
    if type(value) is not int:
        if isinstance(value, int) and not isinstance(value, bool):
            value = int(value)
        else:
            raise StorageError(f"{what} must be a whole number, not {type(value).__name__}.")
    if not 0 < value <= MAX_ID:
        raise StorageError(f"{what} {value} is out of range (allowed: 1 to {MAX_ID}).")
    return value


def opt_id(value: Any, what: str = "id") -> int | None:
    return None if value is None else check_id(value, what)


def check_text(value: Any, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise StorageError(f"{what} must be text, not {type(value).__name__}.")
    if len(value) > max_chars:
        raise StorageError(f"{what} is {len(value):,} characters long; the most stored is {max_chars:,}.")
    return value


ESCAPED = "\x01"  # marks a stored string kept in its escaped form (see the module docstring)


def text_in(value: str) -> str:
    """The stored form of ``value``: the string itself, or its escaped form when a store
    could not hold it (lone surrogates, NUL) or when it starts with the escape mark."""
    if "\x00" not in value and not value.startswith(ESCAPED) and (value.isascii() or _SURROGATE.search(value) is None):
        return value
    return ESCAPED + value.encode("unicode_escape").decode("ascii")


def text_out(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value.startswith(ESCAPED):
            try:
                return value[1:].encode("ascii").decode("unicode_escape")
            except (UnicodeError, ValueError):
                return value  # written raw by an older version
        return value
    return bytes(value).decode("utf-8", "surrogatepass")  # an older version's BLOB
