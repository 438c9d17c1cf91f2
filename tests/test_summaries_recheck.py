"""``/summaries`` re-checks a summary's sources before showing it again, as the buttons do (issue 17):
a message deleted while the bot was offline sent no event, and its summary must not come back."""

from __future__ import annotations

from simcord_helpers import World, recap_world, reply_text  # noqa: F401
from test_offline_deletes import delete_silently, recap_options, restart  # noqa: F401

from storage import SummaryRecord, open_database, summaries


async def stored_summary_of(w: World, *lines: str) -> int:
    spoken = await w.say(w.alice, *lines)
    await w.message_buffer.flush()
    record = SummaryRecord(guild_id=w.guild.id, channel_id=w.channel.id, requester_id=w.alice.id,
                           text="Alice talks about the lantern plan.", length="medium", style="paragraph",
                           source_ids=[m.id for m in spoken])
    return await w.db.writing(summaries.insert_summary, record)


async def test_a_summary_of_messages_deleted_offline_is_not_shown_again(recap_world: World) -> None:
    w = recap_world
    summary_id = await stored_summary_of(w, "the lantern plan is secret", "tell nobody")
    gone = [m for m in w.channel.history() if m.author.id == w.alice.id][0]
    delete_silently(w, w.channel.id, gone.id)
    async with open_database(w.bot.settings.database_path) as db:
        await restart(w, db)
        listing = await w.alice.slash(w.channel, "summaries")
        assert [f.name for f in listing.response.embeds[0].fields] == [f"#{summary_id}"]  # listed from storage
        shown = await w.alice.select(listing.response.message, [str(summary_id)])
        assert shown.ephemeral and "no longer exists" in reply_text(shown)
        assert "lantern" not in reply_text(shown)
        assert await db.reading(summaries.get_summary, summary_id) is None  # erased with its source


async def test_a_summary_whose_sources_remain_is_shown_after_a_restart(recap_world: World) -> None:
    w = recap_world
    summary_id = await stored_summary_of(w, "the lantern plan is ready", "ship it on Monday")
    async with open_database(w.bot.settings.database_path) as db:
        await restart(w, db)
        listing = await w.alice.slash(w.channel, "summaries")
        shown = await w.alice.select(listing.response.message, [str(summary_id)])
        assert shown.ephemeral and "lantern plan" in reply_text(shown)
        assert f"Summary #{summary_id}" in reply_text(shown)
