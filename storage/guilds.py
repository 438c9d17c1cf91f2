"""Server-level operations: erase a server's data, and the counts behind /status and `db stats`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


from .connection import Connection
from .convert import check_id, from_ms
from .migrations import current_version


@dataclass(frozen=True)
class GuildStats:
    messages: int
    channels: int
    summaries: int
    oldest: datetime | None
    newest: datetime | None


@dataclass(frozen=True)
class DatabaseStats:
    schema_version: int
    messages: int
    channels: int
    guilds: int
    summaries: int
    opted_out_users: int


async def stored_guild_ids(conn: Connection) -> set[int]:
    """Every server anything is stored for (messages, summaries, settings, digests)."""
    rows = await conn.execute_fetchall(
        "SELECT DISTINCT guild_id FROM messages UNION SELECT guild_id FROM summaries "
        "UNION SELECT guild_id FROM settings UNION SELECT guild_id FROM digests"
    )
    return {r[0] for r in rows}


async def stored_channel_ids(conn: Connection, guild_id: int) -> set[int]:
    """Every channel or thread of a server with stored messages, summaries or setting overrides."""
    gid = check_id(guild_id, "guild id")
    rows = await conn.execute_fetchall(
        "SELECT DISTINCT channel_id FROM messages WHERE guild_id = ? "
        "UNION SELECT channel_id FROM summaries WHERE guild_id = ? "
        "UNION SELECT channel_id FROM settings WHERE guild_id = ? AND channel_id != 0",
        (gid, gid, gid),
    )
    return {r[0] for r in rows}


async def guild_stats(conn: Connection, guild_id: int) -> GuildStats:
    gid = check_id(guild_id, "guild id")
    rows = await conn.execute_fetchall(
        "SELECT count(*), count(DISTINCT channel_id), min(created_at), max(created_at) FROM messages WHERE guild_id = ?",
        (gid,),
    )
    messages, channels, oldest, newest = rows[0]
    summaries = await conn.execute_fetchall("SELECT count(*) FROM summaries WHERE guild_id = ?", (gid,))
    return GuildStats(messages, channels, summaries[0][0], from_ms(oldest), from_ms(newest))


async def database_stats(conn: Connection) -> DatabaseStats:
    counts = await conn.execute_fetchall(
        "SELECT (SELECT count(*) FROM messages), "
        "(SELECT count(*) FROM (SELECT DISTINCT channel_id FROM messages) AS c), "
        "(SELECT count(*) FROM (SELECT DISTINCT guild_id FROM messages UNION SELECT guild_id FROM summaries "
        "UNION SELECT guild_id FROM settings) AS g), "
        "(SELECT count(*) FROM summaries), (SELECT count(*) FROM opt_outs)"
    )
    messages, channels, guilds, summaries, opted_out = counts[0]
    return DatabaseStats(await current_version(conn), messages, channels, guilds, summaries, opted_out)
