"""Scheduled digests: what to summarize, where to post it, and when it runs next.

Schedule arithmetic (time zones, daylight saving) lives in ``cogs.digests.schedule``;
this module only stores its results. ``next_run_at`` is what the scheduler
sleeps on, so a restart resumes from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable


from .connection import Connection
from .convert import check_id, check_text, from_ms, opt_ms, to_ms, utc_now
from .errors import StorageError
from .leases import HOLDER

EVERY = ("daily", "weekly")
MAX_PER_GUILD = 25  # /digest set refuses more; each one is a background job
_AT_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_COLUMNS = (
    "id, guild_id, source_id, target_id, owner_id, every, at_time, timezone, weekday, length, style, "
    "created_at, next_run_at, last_run_at, last_status"
)


@dataclass(slots=True)
class DigestRecord:
    guild_id: int
    source_id: int
    target_id: int
    owner_id: int
    every: str  # daily | weekly
    at_time: str  # local HH:MM
    timezone: str  # IANA name
    length: str
    style: str
    next_run_at: datetime
    weekday: int | None = None  # 0 = Monday; weekly only
    created_at: datetime | None = None  # set to now on insert when None
    last_run_at: datetime | None = None
    last_status: str | None = None
    id: int | None = None  # set by insert_digest


def _validate(record: DigestRecord) -> None:
    for what in ("guild_id", "source_id", "target_id", "owner_id"):
        check_id(getattr(record, what), what)
    if record.every not in EVERY:
        raise StorageError(f"every must be one of: {', '.join(EVERY)}; got {record.every!r}.")
    if not isinstance(record.at_time, str) or not _AT_RE.match(record.at_time):
        raise StorageError(f"at_time must be HH:MM (00:00 to 23:59); got {record.at_time!r}.")
    if (record.every == "weekly") != (record.weekday is not None):
        raise StorageError("A weekly digest needs a weekday (0-6) and a daily one has none.")
    if record.weekday is not None and (type(record.weekday) is not int or not 0 <= record.weekday <= 6):
        raise StorageError(f"weekday must be 0 (Monday) to 6 (Sunday); got {record.weekday!r}.")
    check_text(record.timezone, "timezone", 64)
    check_text(record.length, "length", 32)
    check_text(record.style, "style", 32)
    to_ms(record.next_run_at, "next_run_at")


def _row(row: Iterable[Any]) -> DigestRecord:
    (id_, guild_id, source_id, target_id, owner_id, every, at_time, tz, weekday, length, style,
     created_at, next_run_at, last_run_at, last_status) = row
    return DigestRecord(
        id=id_, guild_id=guild_id, source_id=source_id, target_id=target_id, owner_id=owner_id,
        every=every, at_time=at_time, timezone=tz, weekday=weekday, length=length, style=style,
        created_at=from_ms(created_at), next_run_at=from_ms(next_run_at),  # type: ignore[arg-type]
        last_run_at=from_ms(last_run_at), last_status=last_status,
    )


async def insert_digest(conn: Connection, record: DigestRecord) -> int:
    """Store a new digest; returns its id. Refuses a server's ``MAX_PER_GUILD + 1``-th digest."""
    _validate(record)
    if await count_digests(conn, record.guild_id) >= MAX_PER_GUILD:
        raise StorageError(f"This server already has {MAX_PER_GUILD} digests, the most allowed. Remove one first.")
    if record.created_at is None:
        record.created_at = utc_now()
    rows = await conn.execute_fetchall(
        "INSERT INTO digests (guild_id, source_id, target_id, owner_id, every, at_time, timezone, weekday, "
        "length, style, created_at, next_run_at, last_run_at, last_status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "RETURNING id",
        (record.guild_id, record.source_id, record.target_id, record.owner_id, record.every, record.at_time,
         record.timezone, record.weekday, record.length, record.style, to_ms(record.created_at, "created_at"),
         to_ms(record.next_run_at, "next_run_at"), opt_ms(record.last_run_at, "last_run_at"), record.last_status),
    )
    record.id = int(list(rows)[0][0])
    return record.id


async def get_digest(conn: Connection, digest_id: int) -> DigestRecord | None:
    rows = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM digests WHERE id = ?", (digest_id,))
    return _row(rows[0]) if rows else None


async def list_digests(conn: Connection, guild_id: int) -> list[DigestRecord]:
    """A server's digests, oldest first (ids ascending)."""
    rows = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM digests WHERE guild_id = ? ORDER BY id", (guild_id,))
    return [_row(r) for r in rows]


async def count_digests(conn: Connection, guild_id: int | None = None) -> int:
    if guild_id is None:
        rows = await conn.execute_fetchall("SELECT count(*) FROM digests")
    else:
        rows = await conn.execute_fetchall("SELECT count(*) FROM digests WHERE guild_id = ?", (guild_id,))
    return int(rows[0][0])


Shards = tuple[int, tuple[int, ...]]  # (shard count, the shards one bot process runs)


def _on_shards(shards: Shards | None) -> tuple[str, tuple[int, ...]]:
    """SQL keeping the digests of servers on ``shards`` (Discord puts a server on shard (id >> 22) % count)."""
    if shards is None:
        return "", ()
    count, ids = shards
    return f" AND ((guild_id >> 22) % ?) IN ({','.join('?' * len(ids))})", (count, *ids)


async def due_digests(conn: Connection, now: datetime, limit: int = 50,
                      shards: Shards | None = None) -> list[DigestRecord]:
    """Digests whose ``next_run_at`` is at or before ``now`` and that no process has claimed, earliest
    first; only those on ``shards`` if given."""
    clause, params = _on_shards(shards)
    now_ms = to_ms(now, "now")
    rows = await conn.execute_fetchall(
        f"SELECT {_COLUMNS} FROM digests WHERE next_run_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?)"
        f"{clause} ORDER BY next_run_at, id LIMIT ?",
        (now_ms, now_ms, *params, limit),
    )
    return [_row(r) for r in rows]


async def earliest_next_run(conn: Connection, shards: Shards | None = None) -> datetime | None:
    """When the scheduler must next wake; None when there are no digests (on ``shards``, if given).
    A digest another process has claimed counts from the end of its claim."""
    clause, params = _on_shards(shards)
    rows = await conn.execute_fetchall(
        "SELECT min(CASE WHEN claimed_until > next_run_at THEN claimed_until ELSE next_run_at END) "
        f"FROM digests WHERE TRUE{clause}", params)
    return from_ms(rows[0][0]) if rows and rows[0][0] is not None else None


async def claim_digest(conn: Connection, digest_id: int, *, due_at: datetime, now: datetime, until: datetime,
                       holder: str = HOLDER) -> bool:
    """Claim one due run for this process: True for exactly one of several processes asking at once.

    ``due_at`` is the ``next_run_at`` the caller saw: a run another process already finished has moved
    it, so the claim fails. A claim lapses at ``until`` (the process died mid-run: another retries it);
    ``record_run`` and ``reschedule`` end it.
    """
    cursor = await conn.execute(
        "UPDATE digests SET claimed_by = ?, claimed_until = ? "
        "WHERE id = ? AND next_run_at = ? AND (claimed_until IS NULL OR claimed_until <= ?)",
        (holder, to_ms(until, "until"), digest_id, to_ms(due_at, "due_at"), to_ms(now, "now")),
    )
    return cursor.rowcount > 0


async def release_digest(conn: Connection, digest_id: int, *, holder: str = HOLDER) -> bool:
    """End this process's claim without running (it is shutting down): the run is due again at once."""
    cursor = await conn.execute(
        "UPDATE digests SET claimed_by = NULL, claimed_until = NULL WHERE id = ? AND claimed_by = ?", (digest_id, holder))
    return cursor.rowcount > 0


async def record_run(conn: Connection, digest_id: int, *, ran_until: datetime,
                     next_run_at: datetime, status: str) -> bool:
    """After a run (posted, empty or skipped): move the window and the schedule forward in one write."""
    cursor = await conn.execute(
        "UPDATE digests SET last_run_at = ?, next_run_at = ?, last_status = ?, claimed_by = NULL, claimed_until = NULL "
        "WHERE id = ?",
        (to_ms(ran_until, "ran_until"), to_ms(next_run_at, "next_run_at"), check_text(status, "status", 500), digest_id),
    )
    return cursor.rowcount > 0


async def reschedule(conn: Connection, digest_id: int, next_run_at: datetime,
                     status: str | None = None) -> bool:
    """Move only the next run (a failed run that will be retried keeps its window)."""
    cursor = await conn.execute(
        "UPDATE digests SET next_run_at = ?, last_status = coalesce(?, last_status), claimed_by = NULL, "
        "claimed_until = NULL WHERE id = ?",
        (to_ms(next_run_at, "next_run_at"), status, digest_id),
    )
    return cursor.rowcount > 0


async def delete_digest(conn: Connection, digest_id: int, guild_id: int) -> bool:
    """Remove one digest of this server (an id from another server is not found)."""
    cursor = await conn.execute("DELETE FROM digests WHERE id = ? AND guild_id = ?", (digest_id, guild_id))
    return cursor.rowcount > 0
