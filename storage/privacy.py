"""Per-user opt-out, erasing a user, and the retention purge."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Iterable


from .connection import Connection
from .convert import check_id, to_ms, utc_now
from .errors import InvalidSetting, StorageError
from .messages import delete_messages
from .settings import RETENTION_DAYS, SERVER, SPECS, parse_value

if TYPE_CHECKING:
    from .store import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeResult:
    messages: int
    summaries: int
    guilds: int  # servers that had anything purged


async def opt_out(conn: Connection, user_id: int, *, now: datetime | None = None) -> bool:
    """From now on the user's messages are never stored. True when they were not opted out before."""
    cur = await conn.execute(
        "INSERT INTO opt_outs (user_id, opted_out_at) VALUES (?, ?) ON CONFLICT (user_id) DO NOTHING",
        (check_id(user_id, "user id"), to_ms(now or utc_now(), "now")),
    )
    return cur.rowcount > 0


async def opt_in(conn: Connection, user_id: int) -> bool:
    cur = await conn.execute("DELETE FROM opt_outs WHERE user_id = ?", (check_id(user_id, "user id"),))
    return cur.rowcount > 0


async def is_opted_out(conn: Connection, user_id: int) -> bool:
    rows = await conn.execute_fetchall("SELECT 1 FROM opt_outs WHERE user_id = ?", (check_id(user_id, "user id"),))
    return bool(rows)


async def opted_out_users(conn: Connection, among: Iterable[int] | None = None) -> set[int]:
    """All opted-out user ids, or those of ``among`` that opted out."""
    if among is None:
        rows = await conn.execute_fetchall("SELECT user_id FROM opt_outs")
    else:
        ids = json.dumps([check_id(u, "user id") for u in among])
        rows = await conn.execute_fetchall("SELECT user_id FROM opt_outs WHERE user_id IN (SELECT value FROM json_each(?))", (ids,))
    return {r[0] for r in rows}


async def _retention_by_guild(conn: Connection) -> dict[int, int]:
    """Retention days of every server with stored messages or summaries (the default where unset)."""
    spec = SPECS[RETENTION_DAYS]  # registered by the application (bot/tunables.py)
    default = spec.default
    rows = await conn.execute_fetchall(
        "SELECT guild_id FROM (SELECT DISTINCT guild_id FROM messages UNION SELECT DISTINCT guild_id FROM summaries) AS g"
    )
    days = {r[0]: default for r in rows}
    stored = await conn.execute_fetchall(
        "SELECT guild_id, value FROM settings WHERE channel_id = ? AND name = 'retention_days'", (SERVER,)
    )
    for guild_id, raw in stored:
        if guild_id in days:
            try:
                days[guild_id] = parse_value(spec, json.loads(raw))
            except (InvalidSetting, ValueError):
                pass  # an unreadable value keeps the default
    return days


async def purge_expired(db: "Database", now: datetime | None = None, *, chunk: int = 500) -> PurgeResult:
    """Delete messages (and summaries) older than each server's ``retention_days``; 0 keeps forever.

    Works in chunks of ``chunk`` messages (then summaries), one write transaction each, so a large
    purge never holds the writer long enough to stall ingest (500 rows: a few ms each).
    """
    now = now or utc_now()
    to_ms(now, "now")  # refuses a naive datetime before anything is deleted
    async with db.read() as conn:
        retention = await _retention_by_guild(conn)
    total_messages = total_summaries = guilds = 0
    for guild_id, days in sorted(retention.items()):
        if days == 0:
            continue
        cutoff = to_ms(now - timedelta(days=days))
        purged_here = 0
        while True:
            async with db.write() as conn:
                ids = [r[0] for r in await conn.execute_fetchall(
                    "SELECT id FROM messages WHERE guild_id = ? AND created_at < ? LIMIT ?", (guild_id, cutoff, chunk)
                )]
                if ids:
                    result = await delete_messages(conn, ids)
                    total_messages += result.messages
                    total_summaries += result.summaries
                    purged_here += result.messages + result.summaries
            if len(ids) < chunk:
                break
        while True:  # old summaries of messages kept (or never stored), chunked the same way
            async with db.write() as conn:
                cur = await conn.execute(
                    "DELETE FROM summaries WHERE id IN "
                    "(SELECT id FROM summaries WHERE guild_id = ? AND created_at < ? LIMIT ?)",
                    (guild_id, cutoff, chunk),
                )
            total_summaries += cur.rowcount
            purged_here += cur.rowcount
            if cur.rowcount < chunk:
                break
        guilds += 1 if purged_here else 0
    if total_messages or total_summaries:
        try:
            await db.checkpoint()  # so the purged rows' old page images leave the WAL too
        except StorageError as exc:
            log.warning("Checkpoint after the retention purge did not finish: %s", exc)
    return PurgeResult(messages=total_messages, summaries=total_summaries, guilds=guilds)
