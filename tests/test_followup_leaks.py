"""Follow-up buttons apply the no-leak rule at click time, like /summarize and digests do."""

from __future__ import annotations

import discord
import pytest
from simcord_helpers import BOT_EXTENSIONS, World, declare_model_waits, recap_world, reply_text, until  # noqa: F401

from cogs.summaries import followup_view
from storage import SummaryRecord, summaries

HIDE = discord.PermissionOverwrite(view_channel=False)
SHOW = discord.PermissionOverwrite(view_channel=True, read_message_history=True)


@pytest.fixture
def recap_options() -> dict:
    return {"extensions": (*BOT_EXTENSIONS, "cogs.summaries")}


async def press_on_a_summary_of_a_private_channel(w: World, posted_in) -> tuple[object, list[SummaryRecord]]:
    """Alice's public summary of #staff (only she and the bot read it) sits in ``posted_in``; she presses Action items."""
    staff = w.guild.create_text_channel("staff", overwrites={w.guild.default_role: HIDE, w.alice: SHOW, w.guild.me: SHOW})
    await w.env.settle()
    spoken = await w.say(w.alice, "the budget is tight this quarter", "we postpone the offsite", channel=staff)
    await w.message_buffer.flush()
    record = SummaryRecord(guild_id=w.guild.id, channel_id=staff.id, requester_id=w.alice.id, text="Budget talk.",
                           length="medium", style="paragraph", source_ids=[m.id for m in spoken])
    summary_id = await w.db.writing(summaries.insert_summary, record)
    message = await w.env.bot.get_channel(posted_in.id).send("Summary", view=followup_view(summary_id))
    await w.env.settle()
    declare_model_waits(w)
    pressed = await w.alice.click(message, label="Action items")

    async def stored_twice() -> bool:
        return await w.db.reading(summaries.count_summaries, channel_id=staff.id) == 2

    await until(w, stored_twice)
    await until(w, lambda: pressed.response is not None and bool(pressed.response.embeds))
    return pressed, await w.db.reading(summaries.list_summaries, staff.id, limit=5)


async def test_a_press_in_a_channel_that_others_can_see_answers_privately(recap_world: World) -> None:
    w = recap_world
    pressed, (newest, _) = await press_on_a_summary_of_a_private_channel(w, w.channel)  # #general: everyone
    assert pressed.ephemeral
    assert "Sent only to you" in reply_text(pressed)
    assert newest.private and newest.style == "action_items"


async def test_a_press_where_only_readers_of_the_source_look_stays_public(recap_world: World) -> None:
    w = recap_world
    inner = w.guild.create_text_channel("inner", overwrites={w.guild.default_role: HIDE, w.alice: SHOW, w.guild.me: SHOW})
    await w.env.settle()
    pressed, (newest, _) = await press_on_a_summary_of_a_private_channel(w, inner)
    assert not pressed.ephemeral and not newest.private
