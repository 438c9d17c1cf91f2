"""The retention loop: expired messages and summaries are deleted, everything else is kept."""

from __future__ import annotations

from datetime import timedelta

import pytest
from simcord_helpers import BOT_EXTENSIONS, World, recap_world, until  # noqa: F401

from storage import StoredMessage, SummaryRecord, messages, settings, summaries
from storage.convert import utc_now


@pytest.fixture
def recap_options() -> dict:
    return {"extensions": (*BOT_EXTENSIONS, "cogs.retention")}


def stored(w: World, mid: int, days_old: float, text: str) -> StoredMessage:
    return StoredMessage(mid, w.guild.id, w.channel.id, w.alice.id, "alice", text, utc_now() - timedelta(days=days_old))


async def test_the_loop_deletes_expired_rows_and_keeps_the_rest(recap_world: World) -> None:
    w = recap_world
    cog = w.bot.get_cog("Retention")
    cog.purger.cancel()  # the first round already ran on an empty database; run it again below
    await until(w, lambda: not cog.purger.is_running())
    await w.db.writing(settings.set_setting, w.guild.id, "retention_days", 7)
    await w.db.writing(messages.upsert_messages, [stored(w, 11, 30, "expired words"), stored(w, 12, 1, "fresh words")])
    await w.db.writing(summaries.insert_summary, SummaryRecord(
        guild_id=w.guild.id, channel_id=w.channel.id, requester_id=w.alice.id, text="of the old one",
        length="short", style="bullets", source_ids=[11]))
    kept = await w.db.writing(summaries.insert_summary, SummaryRecord(
        guild_id=w.guild.id, channel_id=w.channel.id, requester_id=w.alice.id, text="of the new one",
        length="short", style="bullets", source_ids=[12]))
    cog.last_result = None
    cog.purger.start()
    await until(w, lambda: cog.last_result is not None)
    assert (cog.last_result.messages, cog.last_result.summaries) == (1, 1)
    assert [m.id for m in await w.db.reading(messages.last_messages, w.channel.id, 10)] == [12]
    assert [s.id for s in await w.db.reading(summaries.list_summaries, w.channel.id)] == [kept]


async def test_unloading_the_cog_stops_the_loop(recap_world: World) -> None:
    w = recap_world
    cog = w.bot.get_cog("Retention")
    assert cog.purger.is_running()
    await w.bot.unload_extension("cogs.retention")
    await until(w, lambda: not cog.purger.is_running())
