"""Deletes and opt-outs that race a summary or a backfill stay done."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import pytest
from simcord_helpers import World, declare_model_waits, recap_options, recap_world, reply_text, until  # noqa: F401

from storage import MessageBuffer, SourcesGone, StoredMessage, SummaryRecord, messages, open_database, privacy, summaries

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def msg(mid: int, channel: int = 20, guild: int = 10, text: str = "hello") -> StoredMessage:
    return StoredMessage(mid, guild, channel, 5, "alice", text, T0)


async def test_a_fetched_page_does_not_bring_back_a_message_deleted_meanwhile(tmp_path: Path) -> None:
    async with open_database(tmp_path / "db.sqlite3") as db:
        buffer = MessageBuffer(db)
        page = [msg(1), msg(2)]  # fetched from Discord ...
        await buffer.delete(1)  # ... a delete event is handled ...
        assert await buffer.write_fetched(page) == 1  # ... then the page is written
        assert [m.id for m in await db.reading(messages.last_messages, 20, 10)] == [2]


async def test_a_fetched_page_of_a_deleted_channel_is_not_written(tmp_path: Path) -> None:
    async with open_database(tmp_path / "db.sqlite3") as db:
        buffer = MessageBuffer(db)
        buffer.forget_places([20])
        assert await buffer.write_fetched([msg(1), msg(2, channel=21)]) == 1
        assert await db.reading(messages.count_messages, channel_id=20) == 0


async def test_reconcile_erases_only_unreturned_ids_inside_the_range(tmp_path: Path) -> None:
    async with open_database(tmp_path / "db.sqlite3") as db:
        buffer = MessageBuffer(db)
        await db.writing(messages.upsert_messages, [msg(i) for i in (1, 5, 6, 9)] + [msg(7, channel=21)])
        await db.writing(summaries.insert_summary, SummaryRecord(10, 20, 5, "of six", "short", "bullets", source_ids=[6]))
        result = await buffer.reconcile(20, 4, 8, present={5})
        assert (result.messages, result.summaries) == (1, 1)  # 6 only: 1 and 9 are outside, 7 is another channel
        assert [m.id for m in await db.reading(messages.last_messages, 20, 10)] == [1, 5, 9]
        assert buffer.is_deleted(6)


async def test_a_summary_whose_source_is_gone_is_not_stored(tmp_path: Path) -> None:
    async with open_database(tmp_path / "db.sqlite3") as db:
        await db.writing(messages.upsert_messages, [msg(1), msg(2)])
        record = SummaryRecord(10, 20, 5, "text", "short", "bullets", source_ids=[1, 2])
        await db.writing(messages.delete_messages, [2])
        with pytest.raises(SourcesGone):
            await db.writing(summaries.insert_summary, record, require_sources=True)
        assert await db.reading(summaries.count_summaries) == 0


def hold_generation_until(world: World, action) -> None:
    """Run ``action()`` when the first generation request arrives, before the model answers."""
    submit = world.bot.executor.submit
    done = {"ran": False}

    async def submit_after_action(request):
        if not done["ran"]:
            done["ran"] = True
            await action()
        return await submit(request)

    submit_after_action.declared = True  # type: ignore[attr-defined]
    world.bot.executor.submit = submit_after_action


async def test_a_message_deleted_while_its_summary_generates_leaves_no_summary(recap_world: World) -> None:
    w = recap_world
    sent = await w.say(w.alice, "we ship the release on friday", "marker-falcon-7781 is the codename")
    await w.say(w.bob, "sounds good, I will write the notes")
    declare_model_waits(w)

    async def delete_second() -> None:
        w.env.backend.delete_message(w.channel.id, sent[1].id)  # Discord announces MESSAGE_DELETE
        while await w.db.reading(messages.get_message, sent[1].id) is not None:
            await asyncio.sleep(0.01)  # until the history cog has handled it

    hold_generation_until(w, delete_second)
    result = await w.alice.slash(w.channel, "summarize")
    await until(w, lambda: result.response is not None and ("dropped" in reply_text(result) or bool(result.response.embeds)))
    assert "deleted" in reply_text(result) and "dropped" in reply_text(result)
    assert not result.response.embeds
    assert await w.db.reading(summaries.count_summaries) == 0


async def test_an_opt_out_while_a_summary_generates_leaves_no_summary(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "we ship the release on friday", "alice wants this forgotten")
    await w.say(w.bob, "sounds good, I will write the notes")
    declare_model_waits(w)

    async def opt_out_alice() -> None:  # what /privacy optout does
        async def erase(conn, user_id):
            await privacy.opt_out(conn, user_id)
            await messages.delete_author_messages(conn, user_id)

        await w.message_buffer.write_after_flush(erase, w.alice.id)

    hold_generation_until(w, opt_out_alice)
    result = await w.bob.slash(w.channel, "summarize")
    await until(w, lambda: result.response is not None and "dropped" in reply_text(result))
    assert await w.db.reading(summaries.count_summaries) == 0
