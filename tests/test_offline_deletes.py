"""Deleted while the bot was offline: messages, channels and servers that sent no event are erased
the next time the bot reads that range from Discord, or at start-up."""

from __future__ import annotations


import pytest
from simcord_helpers import BOT_EXTENSIONS, World, database_bytes, declare_model_waits, recap_world, reply_text, until  # noqa: F401

from bot.client import RecapBot
from storage import StoredMessage, SummaryRecord, messages, open_database, settings, summaries
from storage.convert import utc_now

EXTENSIONS = (*BOT_EXTENSIONS, "cogs.summaries")


@pytest.fixture
def recap_options() -> dict:
    return {"extensions": EXTENSIONS}


def delete_silently(w: World, channel_id: int, *message_ids: int) -> None:
    """Gone from Discord with no gateway event: what happens while the bot is offline."""
    for mid in message_ids:
        del w.env.backend.messages[channel_id][mid]


async def restart(w: World, db) -> RecapBot:
    await w.env.advance_time(1)  # the bot is offline for a while: what follows its start is a later time
    fresh = RecapBot(settings=w.bot.settings, db=db, executor=w.bot.executor, summarizer=w.bot.summarizer,
                     extensions=EXTENSIONS)
    await w.env.restart_bot(fresh)
    return fresh


def file_bytes(w: World) -> bytes:
    return database_bytes(w)


async def test_messages_deleted_offline_are_erased_when_the_range_is_read_again(recap_world: World) -> None:
    w = recap_world
    secret = "lantern-cobalt-9034"
    gone = await w.say(w.alice, f"first {secret} line", f"second {secret} line")
    await w.say(w.bob, "a line that stays, about the launch plan")
    declare_model_waits(w)
    first = await w.alice.slash(w.channel, "summarize")
    await until(w, lambda: first.response is not None and bool(first.response.embeds))
    assert await w.db.reading(summaries.count_summaries, channel_id=w.channel.id) == 1
    await w.db.checkpoint()
    assert secret.encode() in file_bytes(w)

    delete_silently(w, w.channel.id, *(m.id for m in gone))
    async with open_database(w.bot.settings.database_path) as db:
        fresh = await restart(w, db)
        await until(w, lambda: fresh.get_cog("History")._sweep is not None and fresh.get_cog("History")._sweep.done())
        again = await w.bob.slash(w.channel, "summarize")
        await until(w, lambda: again.response is not None and bool(again.response.embeds))
        rows = await db.reading(messages.last_messages, w.channel.id, 10)
        assert [r.content for r in rows] == ["a line that stays, about the launch plan"]
        # The first summary was built from the deleted messages: it is erased with them.
        remaining = await db.reading(summaries.list_summaries, w.channel.id, limit=10)
        assert [r.requester_id for r in remaining] == [w.bob.id]
        await w.env.advance_time(1.5)  # the history cog's loop checkpoints after the erasure
        assert not fresh.erasure.pending
        assert secret.encode() not in file_bytes(w)


async def test_a_button_after_a_restart_rechecks_messages_deleted_offline(recap_world: World) -> None:
    w = recap_world
    secret = "walnut-signal-5521"
    spoken = await w.say(w.alice, f"only {secret} here", "and a second line")
    record = SummaryRecord(guild_id=w.guild.id, channel_id=w.channel.id, requester_id=w.alice.id, text="x",
                           length="medium", style="paragraph", source_ids=[spoken[0].id])
    await w.message_buffer.flush()
    summary_id = await w.db.writing(summaries.insert_summary, record)
    from cogs.summaries import followup_view

    message = await w.env.bot.get_channel(w.channel.id).send("Summary", view=followup_view(summary_id))
    await w.env.settle()
    delete_silently(w, w.channel.id, spoken[0].id)
    async with open_database(w.bot.settings.database_path) as db:
        await restart(w, db)
        pressed = await w.alice.click(message, label="Shorter")
        await until(w, lambda: pressed.response is not None or bool(pressed.followups))
        assert "no longer exists" in reply_text(pressed)  # after the defer: in place of "thinking"
        assert await db.reading(messages.get_message, spoken[0].id) is None
        assert await db.reading(summaries.get_summary, summary_id) is None


async def test_start_up_erases_servers_left_and_channels_deleted_while_offline(recap_world: World) -> None:
    w = recap_world
    now = utc_now()
    left_guild, vanished_channel = 7_000_000_000_000_001, 7_000_000_000_000_002
    await w.db.writing(messages.upsert_messages, [
        StoredMessage(9_100, left_guild, 9_200, w.alice.id, "alice", "words from a server I left", now),
        StoredMessage(9_101, w.guild.id, vanished_channel, w.alice.id, "alice", "words from a deleted channel", now),
        StoredMessage(9_102, w.guild.id, w.channel.id, w.alice.id, "alice", "words that stay", now),
    ])
    await w.db.writing(settings.set_setting, left_guild, "length", "short")
    async with open_database(w.bot.settings.database_path) as db:
        fresh = await restart(w, db)
        cog = fresh.get_cog("History")
        await until(w, lambda: cog._sweep is not None and cog._sweep.done())
        assert await db.reading(messages.count_messages, guild_id=left_guild) == 0
        assert await db.reading(settings.list_overrides, left_guild) == {}
        assert await db.reading(messages.count_messages, channel_id=vanished_channel) == 0
        assert [m.content for m in await db.reading(messages.last_messages, w.channel.id, 10)] == ["words that stay"]
