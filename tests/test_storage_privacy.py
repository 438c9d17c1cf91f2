"""Opt-out, erasing a user, retention purge, erasing a server, and the stats for /status."""

from __future__ import annotations

from datetime import timedelta

from storage import erasure, guilds, messages, privacy, settings, summaries
from test_storage_helpers import CHANNEL, GUILD, OTHER_GUILD, T0, db, db_path, msg, summary  # noqa: F401


async def test_opt_out_and_back_in(db) -> None:
    assert await db.writing(privacy.opt_out, 7) is True
    assert await db.writing(privacy.opt_out, 7) is False
    assert await db.reading(privacy.is_opted_out, 7) is True
    assert await db.reading(privacy.opted_out_users) == {7}
    assert await db.reading(privacy.opted_out_users, [7, 8]) == {7}
    assert await db.writing(privacy.opt_in, 7) is True
    assert await db.writing(privacy.opt_in, 7) is False
    assert await db.reading(privacy.is_opted_out, 7) is False


async def test_opt_out_is_global_across_servers(db) -> None:
    await db.writing(privacy.opt_out, 7)
    written = await db.writing(messages.upsert_messages, [msg(1, author=7), msg(2, author=7, guild=OTHER_GUILD, channel=99)])
    assert written == 0


async def test_messages_are_stored_again_after_opt_in(db) -> None:
    await db.writing(privacy.opt_out, 7)
    await db.writing(privacy.opt_in, 7)
    assert await db.writing(messages.upsert_messages, [msg(1, author=7)]) == 1


async def test_forget_user_erases_their_messages_everywhere(db) -> None:
    await db.writing(
        messages.upsert_messages, [msg(1, author=7), msg(2, author=7, guild=OTHER_GUILD, channel=99), msg(3, author=8)]
    )
    result = await db.writing(erasure.erase_member, 7)
    assert result.messages == 2
    assert [m.id for m in await db.reading(messages.last_messages, CHANNEL, 10)] == [3]
    assert await db.reading(messages.count_messages) == 1


async def test_purge_uses_the_default_retention(db) -> None:
    await db.writing(messages.upsert_messages, [msg(1, at=T0), msg(2, at=T0 + timedelta(days=20))])
    result = await privacy.purge_expired(db, T0 + timedelta(days=31))
    assert (result.messages, result.guilds) == (1, 1)
    assert [m.id for m in await db.reading(messages.last_messages, CHANNEL, 10)] == [2]


async def test_purge_uses_each_servers_retention(db) -> None:
    await db.writing(settings.set_setting, GUILD, "retention_days", 5)
    await db.writing(settings.set_setting, OTHER_GUILD, "retention_days", 0)  # keep forever
    await db.writing(
        messages.upsert_messages,
        [msg(1, at=T0), msg(2, at=T0 + timedelta(days=9)), msg(3, guild=OTHER_GUILD, channel=99, at=T0)],
    )
    result = await privacy.purge_expired(db, T0 + timedelta(days=10))
    assert result.messages == 1
    assert await db.reading(messages.get_message, 1) is None
    assert await db.reading(messages.get_message, 3) is not None


async def test_purge_works_in_chunks(db) -> None:
    await db.writing(messages.upsert_messages, [msg(i, at=T0) for i in range(1, 26)])
    result = await privacy.purge_expired(db, T0 + timedelta(days=100), chunk=10)
    assert result.messages == 25 and await db.reading(messages.count_messages) == 0


async def test_purge_deletes_old_summaries_too(db) -> None:
    await db.writing(summaries.insert_summary, summary([], created_at=T0))
    keep = await db.writing(summaries.insert_summary, summary([], created_at=T0 + timedelta(days=40)))
    result = await privacy.purge_expired(db, T0 + timedelta(days=41))
    assert result.summaries == 1
    assert [s.id for s in await db.reading(summaries.list_summaries, CHANNEL)] == [keep]


async def test_purge_of_nothing_counts_nothing(db) -> None:
    result = await privacy.purge_expired(db, T0)
    assert (result.messages, result.summaries, result.guilds) == (0, 0, 0)


async def test_guild_stats_for_status(db) -> None:
    await db.writing(messages.upsert_messages, [msg(1), msg(2, channel=20), msg(3, guild=OTHER_GUILD, channel=99)])
    await db.writing(summaries.insert_summary, summary([1]))
    stats = await db.reading(guilds.guild_stats, GUILD)
    assert (stats.messages, stats.channels, stats.summaries) == (2, 2, 1)
    assert stats.oldest == msg(1).created_at and stats.newest == msg(2).created_at


async def test_database_stats(db) -> None:
    await db.writing(messages.upsert_messages, [msg(1), msg(2, channel=20), msg(3, guild=OTHER_GUILD, channel=99)])
    await db.writing(summaries.insert_summary, summary([1]))
    await db.writing(privacy.opt_out, 42)
    stats = await db.reading(guilds.database_stats)
    assert (stats.messages, stats.channels, stats.guilds, stats.summaries, stats.opted_out_users) == (3, 3, 2, 1, 1)
    assert stats.schema_version == db.schema_version


async def test_purge_deletes_old_summaries_in_chunks_too(db) -> None:
    for _ in range(25):
        await db.writing(summaries.insert_summary, summary([], created_at=T0))
    result = await privacy.purge_expired(db, T0 + timedelta(days=100), chunk=10)
    assert result.summaries == 25 and await db.reading(summaries.count_summaries) == 0
