"""Several bot processes share one database, each running its own shards (SHARD_COUNT / SHARD_IDS):
the start-up sweep of vanished servers must leave the servers of the other processes' shards alone."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from simcord_helpers import BOT_EXTENSIONS, World, recap_world, until  # noqa: F401

from bot.client import RecapBot
from storage import StoredMessage, messages, open_database, settings
from storage.convert import utc_now

TIME_LIMIT_S = 180
# pytest-timeout bounds setup and test; asyncio.timeout bounds the test body where that plugin is missing.
pytestmark = pytest.mark.timeout(TIME_LIMIT_S)


@pytest.fixture
def recap_options() -> dict:
    return {"settings": {"shard_count": "2"}}  # at first, one process runs both shards


def shard_of(guild_id: int) -> int:
    return (guild_id >> 22) % 2  # Discord's rule for SHARD_COUNT=2


def vanished_guild_on(shard: int) -> int:
    """A server with stored data that Discord no longer has (the bot left it while offline)."""
    return ((4_000_000 + shard) << 22) + 1


async def start_process(w: World, db, shard: int) -> RecapBot:
    """A bot process running only ``shard`` (SHARD_IDS), on its own connection to the shared database file."""
    await w.env.advance_time(1)
    process_settings = dataclasses.replace(w.bot.settings, shard_ids=(shard,))
    bot = RecapBot(settings=process_settings, db=db, executor=w.bot.executor, summarizer=w.bot.summarizer,
                   extensions=BOT_EXTENSIONS)
    await w.env.restart_bot(bot)
    cog = bot.get_cog("History")
    await until(w, lambda: cog._sweep is not None and cog._sweep.done())
    return bot


async def stored_in(db, guild_id: int) -> tuple[int, dict]:
    return await db.reading(messages.count_messages, guild_id=guild_id), await db.reading(settings.list_overrides, guild_id)


async def test_a_process_sweeps_only_the_servers_of_its_own_shards(recap_world: World) -> None:
    async with asyncio.timeout(TIME_LIMIT_S):
        w = recap_world
        first = shard_of(w.guild.id)
        second = 1 - first
        elsewhere = w.env.create_guild("Elsewhere", shard_id=second)
        carol = elsewhere.add_member(w.env.create_user("carol"))
        await w.env.settle()
        await w.say(w.alice, "a line on the first shard")
        await carol.send(elsewhere.create_text_channel("general"), "a line on the second shard")
        await w.message_buffer.flush()
        for guild_id in (w.guild.id, elsewhere.id):
            await w.db.writing(settings.set_setting, guild_id, "length", "short")
        for shard in (first, second):
            left = StoredMessage(9_000 + shard, vanished_guild_on(shard), 9_100, w.alice.id, "alice", "words", utc_now())
            await w.db.writing(messages.upsert_messages, [left])
        kept = (1, {0: {"length": "short"}})
        assert await stored_in(w.db, elsewhere.id) == kept

        path = w.bot.settings.database_path
        async with open_database(path) as db_first, open_database(path) as db_second:
            await start_process(w, db_first, first)
            assert await stored_in(db_first, elsewhere.id) == kept  # another process's server: not this one's to erase
            assert await db_first.reading(messages.count_messages, guild_id=vanished_guild_on(second)) == 1
            assert await db_first.reading(messages.count_messages, guild_id=vanished_guild_on(first)) == 0  # still swept

            await start_process(w, db_second, second)  # the second process starts: the first one's data stays
            assert await stored_in(db_second, w.guild.id) == kept
            assert await stored_in(db_second, elsewhere.id) == kept
            assert await db_second.reading(messages.count_messages, guild_id=vanished_guild_on(second)) == 0
