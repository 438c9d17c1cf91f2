"""Erasure by scope: a server, a channel (with its threads) or a member, across every table at once.

Each function runs inside the caller's transaction (``db.writing`` or ``buffer.write_after_flush``,
which also catches messages still buffered), so a scope is erased whole or not at all. Call
``db.checkpoint()`` afterwards so the erased rows also leave the WAL file.

``ERASED_BY`` names, for every table that holds something about a server, channel or person, the
columns each scope erases it by; ``NOT_PERSONAL`` lists the other tables and why. A test checks that
the two together are exactly the schema's tables, so a new table cannot escape erasure silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


from .connection import Connection
from .convert import check_id
from .messages import delete_author_messages, delete_where

GUILD, CHANNEL, MEMBER = "guild", "channel", "member"

ERASED_BY: dict[str, dict[str, tuple[str, ...]]] = {
    "messages": {GUILD: ("guild_id",), CHANNEL: ("channel_id", "parent_id"), MEMBER: ("author_id",)},
    "message_authors": {GUILD: ("guild_id",), CHANNEL: ("channel_id",), MEMBER: ("author_id",)},
    "summaries": {GUILD: ("guild_id",), CHANNEL: ("channel_id",), MEMBER: ("requester_id",)},
    "settings": {GUILD: ("guild_id",), CHANNEL: ("channel_id",)},
    "digests": {GUILD: ("guild_id",), CHANNEL: ("source_id", "target_id"), MEMBER: ("owner_id",)},
}

NOT_PERSONAL: dict[str, str] = {
    "schema_migrations": "the schema versions applied",
    "sqlite_sequence": "SQLite's AUTOINCREMENT counters",
    "leases": "which bot process runs a periodic job (retention, the start-up sweep) until when",
    "summary_sources": "message ids of one summary: they go with it (ON DELETE CASCADE)",
    "opt_outs": "the member's own choice: kept through /privacy forget so nothing new is stored; /privacy optin removes it",
}


@dataclass(frozen=True)
class Erased:
    messages: int = 0
    summaries: int = 0  # built from erased messages, about an erased channel, or asked for by an erased member
    settings: int = 0
    digests: int = 0


async def _delete(conn: Connection, sql: str, args: tuple[object, ...]) -> int:
    cursor = await conn.execute(sql, args)
    return cursor.rowcount


async def erase_guild(conn: Connection, guild_id: int) -> Erased:
    """Everything stored for a server (the bot was removed): messages, summaries, settings, digests."""
    gid = check_id(guild_id, "guild id")
    deleted = await delete_where(conn, "guild_id = ?", (gid, gid), " OR guild_id = ?")
    settings = await _delete(conn, "DELETE FROM settings WHERE guild_id = ?", (gid,))
    await conn.execute("DELETE FROM message_authors WHERE guild_id = ?", (gid,))
    digests = await _delete(conn, "DELETE FROM digests WHERE guild_id = ?", (gid,))
    return Erased(deleted.messages, deleted.summaries, settings, digests)


async def erase_channel(conn: Connection, channel_id: int) -> Erased:
    """A deleted channel or thread, and every thread under it: messages, summaries, overrides, digests."""
    cid = check_id(channel_id, "channel id")
    threads = [row[0] for row in await conn.execute_fetchall(
        "SELECT DISTINCT channel_id FROM messages WHERE parent_id = ?", (cid,))]
    places = json.dumps([cid, *threads])
    in_places = "IN (SELECT value FROM json_each(?))"
    deleted = await delete_where(conn, f"(channel_id {in_places} OR parent_id = ?)", (places, cid, places),
                                 f" OR channel_id {in_places}")
    settings = await _delete(conn, f"DELETE FROM settings WHERE channel_id {in_places}", (places,))
    await conn.execute(f"DELETE FROM message_authors WHERE channel_id {in_places}", (places,))
    digests = await _delete(conn, f"DELETE FROM digests WHERE source_id {in_places} OR target_id {in_places}",
                            (places, places))
    return Erased(deleted.messages, deleted.summaries, settings, digests)


async def erase_member(conn: Connection, user_id: int) -> Erased:
    """A member who asked to be forgotten, in every server: their messages, the summaries built from
    them or asked for by them, and the digests they set up. Their opt-out, if any, stays."""
    uid = check_id(user_id, "user id")
    deleted = await delete_author_messages(conn, uid)
    requested = await _delete(conn, "DELETE FROM summaries WHERE requester_id = ?", (uid,))
    digests = await _delete(conn, "DELETE FROM digests WHERE owner_id = ?", (uid,))
    return Erased(deleted.messages, deleted.summaries + requested, 0, digests)
