"""Erasing a server, a channel or a member reaches every table, and nothing else's rows.

The world: server 1000 with channel 10 and its thread 11; server 2000 with channel 20; member 77
(the one erased) posts, asks for summaries and owns digests in both servers; member 88 does too.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage import digests, erasure, messages, privacy, summaries
from storage.digests import DigestRecord
from test_storage_helpers import (  # noqa: F401  (fixtures)
    CHANNEL, GUILD, OTHER_GUILD, T0, THREAD, column_names, db, db_path, msg, summary, table_names,
)

MEMBER, OTHER_MEMBER = 77, 88
OTHER_SERVER_CHANNEL = 20


async def _world(db) -> None:
    await db.writing(messages.upsert_messages, [
        msg(1, author=MEMBER),
        msg(2, author=OTHER_MEMBER),
        msg(3, channel=THREAD, parent=CHANNEL, author=MEMBER),
        msg(4, channel=THREAD, parent=CHANNEL, author=OTHER_MEMBER),
        msg(5, guild=OTHER_GUILD, channel=OTHER_SERVER_CHANNEL, author=MEMBER),
        msg(6, guild=OTHER_GUILD, channel=OTHER_SERVER_CHANNEL, author=OTHER_MEMBER),
    ])
    for sources, channel, guild, requester in (
        ([2], CHANNEL, GUILD, OTHER_MEMBER),
        ([4], THREAD, GUILD, OTHER_MEMBER),
        ([6], OTHER_SERVER_CHANNEL, OTHER_GUILD, MEMBER),
        ([6], OTHER_SERVER_CHANNEL, OTHER_GUILD, OTHER_MEMBER),
    ):
        await db.writing(summaries.insert_summary, summary(sources, channel=channel, guild=guild, requester=requester))

    async def settings(conn) -> None:
        for guild, channel in ((GUILD, 0), (GUILD, CHANNEL), (GUILD, THREAD), (OTHER_GUILD, 0), (OTHER_GUILD, OTHER_SERVER_CHANNEL)):
            await conn.execute("INSERT INTO settings (guild_id, channel_id, name, value, updated_at) VALUES (?, ?, 'length', '\"short\"', 0)",
                               (guild, channel))

    await db.writing(settings)
    for guild, source, target, owner in (
        (GUILD, CHANNEL, CHANNEL, OTHER_MEMBER),
        (GUILD, THREAD, 30, OTHER_MEMBER),
        (GUILD, 30, CHANNEL, OTHER_MEMBER),
        (OTHER_GUILD, OTHER_SERVER_CHANNEL, OTHER_SERVER_CHANNEL, MEMBER),
        (OTHER_GUILD, OTHER_SERVER_CHANNEL, OTHER_SERVER_CHANNEL, OTHER_MEMBER),
    ):
        await db.writing(digests.insert_digest, DigestRecord(guild, source, target, owner, "daily", "09:00", "UTC", "short",
                                                             "paragraph", T0 + timedelta(days=1)))
    await db.writing(privacy.opt_out, MEMBER)


async def _count(db, table: str, column: str, values: tuple[int, ...]) -> int:
    marks = ", ".join("?" * len(values))
    rows = await db.reading(lambda conn: conn.execute_fetchall(f"SELECT count(*) FROM {table} WHERE {column} IN ({marks})", values))
    return rows[0][0]


async def _totals(db) -> dict[str, int]:
    return {table: (await db.reading(lambda conn, t=table: conn.execute_fetchall(f"SELECT count(*) FROM {t}")))[0][0]
            for table in erasure.ERASED_BY}


async def test_every_table_is_erased_by_scope_or_says_why_not(db) -> None:
    tables = await db.reading(table_names)
    # A new table must say how it is erased (sqlite_sequence is SQLite's own).
    assert tables - {"sqlite_sequence"} == (set(erasure.ERASED_BY) | set(erasure.NOT_PERSONAL)) - {"sqlite_sequence"}
    for table, scopes in erasure.ERASED_BY.items():
        columns = set(await db.reading(column_names, table))
        for scope, named in scopes.items():
            assert scope in (erasure.GUILD, erasure.CHANNEL, erasure.MEMBER)
            assert set(named) <= columns, (table, named)


@pytest.mark.parametrize("scope, erase, ids, kept", [
    (erasure.GUILD, erasure.erase_guild, (GUILD,), {("messages", "guild_id"): 2, ("digests", "guild_id"): 2}),
    (erasure.CHANNEL, erasure.erase_channel, (CHANNEL, THREAD),
     {("messages", "channel_id"): 2, ("digests", "source_id"): 2, ("settings", "channel_id"): 1}),
    (erasure.MEMBER, erasure.erase_member, (MEMBER,), {("messages", "author_id"): 3, ("digests", "owner_id"): 4}),
], ids=["guild", "channel", "member"])
async def test_an_erased_scope_leaves_no_row_in_any_table(db, scope, erase, ids, kept) -> None:
    await _world(db)
    before = await _totals(db)
    covered = [(t, c) for t, scopes in erasure.ERASED_BY.items() for c in scopes.get(scope, ())]
    for table, column in covered:
        assert await _count(db, table, column, ids) > 0, (table, column)  # the world has something to erase there

    erased = await db.writing(erase, ids[0])

    for table, column in covered:
        assert await _count(db, table, column, ids) == 0, (table, column)
    after = await _totals(db)
    assert all(after[t] > 0 for t in after), after  # the rest of the world is still there
    # The other server's, channel's or member's rows are untouched.
    other = {erasure.GUILD: OTHER_GUILD, erasure.CHANNEL: OTHER_SERVER_CHANNEL, erasure.MEMBER: OTHER_MEMBER}[scope]
    for (table, column), count in kept.items():
        assert await _count(db, table, column, (other,)) == count, (table, column)
    assert erased.messages == before["messages"] - after["messages"] > 0
    assert erased.digests == before["digests"] - after["digests"] > 0
    assert erased.settings == before["settings"] - after["settings"]
    # The member's opt-out outlives being forgotten: nothing new of theirs is stored.
    assert await db.reading(privacy.is_opted_out, MEMBER)


async def test_erasing_a_channel_takes_its_threads_digests_and_overrides(db) -> None:
    await _world(db)
    erased = await db.writing(erasure.erase_channel, CHANNEL)
    assert erased == erasure.Erased(messages=4, summaries=2, settings=2, digests=3)
    assert await db.reading(messages.get_message, 6) is not None


async def test_forgetting_a_member_takes_what_they_asked_for_and_set_up(db) -> None:
    await _world(db)
    erased = await db.writing(erasure.erase_member, MEMBER)
    # Messages 1, 3, 5; no summary was built from them, one was asked for by them; one digest is theirs.
    assert erased == erasure.Erased(messages=3, summaries=1, settings=0, digests=1)
    assert await _count(db, "summaries", "requester_id", (OTHER_MEMBER,)) == 3
