"""Conversions between API values and SQLite values, with the checks that keep bad input out.

Timestamps: aware UTC ``datetime`` <-> integer milliseconds.
Text: SQLite stores UTF-8, which cannot hold a lone surrogate such as ``'\\ud800'``. Such a
string is stored as a BLOB of its ``surrogatepass`` encoding and decoded back on read, so every
Python ``str`` round-trips exactly (NUL bytes, emoji, RTL text included).
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


def text_in(value: str) -> str | bytes:
    """The SQLite value for ``value``: the string itself, or bytes when it holds lone surrogates."""
    if value.isascii() or _SURROGATE.search(value) is None:
        return value
    return value.encode("utf-8", "surrogatepass")


def text_out(value: str | bytes | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return bytes(value).decode("utf-8", "surrogatepass")
