"""Discord snowflake ids: the creation time lives in the top bits, so ids sort by time."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

DISCORD_EPOCH_MS = 1_420_070_400_000

# A process-wide counter keeps ids made in the same millisecond distinct and increasing.
_increment = itertools.count()


def snowflake_at(when: datetime) -> int:
    """A fresh id whose timestamp is ``when`` (an aware datetime)."""
    ms = int(when.timestamp() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (next(_increment) & 0xFFF)


def new_snowflake() -> int:
    return snowflake_at(datetime.now(timezone.utc))


def snowflake_time(snowflake: int) -> datetime:
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, tz=timezone.utc)


def iso(when: datetime) -> str:
    """Discord's timestamp format: ISO 8601 with microseconds and an explicit offset."""
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")
