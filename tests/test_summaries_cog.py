"""/summaries history and the follow-up buttons, through SimCord with a real bot, database and model."""

from __future__ import annotations

import asyncio

from datetime import datetime, timedelta, timezone

import discord
import pytest
import simcord

from bot.client import RecapBot
from engine.prompts import LENGTHS
from cogs.summaries import followup_view
from storage import SummaryRecord, open_database
from storage import summaries as summary_store

from simcord.backend.models.channel import Overwrite
from simcord.enums import OverwriteType

from core.errors import NO_ACCESS
from simcord_helpers import BOT_EXTENSIONS, World, declare_model_waits, recap_world, reply_text, until  # noqa: F401

EXTENSIONS = (*BOT_EXTENSIONS, "cogs.summaries")
UTC = timezone.utc


@pytest.fixture
def recap_options() -> dict:
    return {"extensions": EXTENSIONS}






def generation_idle(world: World):
    def check() -> bool:
        metrics = world.bot.executor.metrics()
        return metrics.get("queue_depth", 0) == 0 and metrics.get("in_flight", 0) == 0
    return check


async def summarize(world: World, who: simcord.MemberActor | None = None, **options) -> simcord.InteractionResult:
    await world.say(world.alice, "Let's plan the launch for Monday.", "Bob, can you draft the announcement?")
    await world.say(world.bob, "Sure, I'll have it ready by Friday.")
    declare_model_waits(world)
    result = await (who or world.alice).slash(world.channel, "summarize", **options)
    await until(world, lambda: result.response is not None and bool(result.response.embeds))
    return result


async def press(world: World, who: simcord.MemberActor, message, label: str) -> simcord.InteractionResult:
    """Click a follow-up button and wait until the new summary is stored."""
    before = len(await all_summaries(world))
    pressed = await who.click(message, label=label)

    async def done() -> bool:
        return len(await all_summaries(world)) > before

    await until(world, done)
    await until(world, lambda: pressed.response is not None and bool(pressed.response.embeds))
    return pressed


def custom_ids(message: simcord.ResponseMessage) -> list[str]:
    return [c.get("custom_id", "") for row in message.components for c in row.get("components", [])]


async def all_summaries(world: World) -> list[SummaryRecord]:
    return await world.db.reading(summary_store.list_summaries, world.channel.id, limit=100)


# --- follow-up buttons -----------------------------------------------------------------------


async def newest_summary(world: World) -> SummaryRecord:
    newest = max(await all_summaries(world), key=lambda r: r.id)
    record = await world.db.reading(summary_store.get_summary, newest.id)
    assert record is not None
    return record


async def test_requested_length_decides_max_new_tokens_after_admins_change_sampling(recap_world: World) -> None:
    w = recap_world
    # An admin changed a sampling knob (not max_new_tokens), and the channel's stored length is short.
    await w.admin.slash(w.channel, "settings set", scope="server", length="short", temperature=0.5)
    result = await summarize(w, length="long")
    made = await newest_summary(w)
    assert made.length == "long" and made.settings["max_new_tokens"] == LENGTHS["long"].max_new_tokens
    assert made.settings["temperature"] == 0.5  # the admin's setting still applies
    await press(w, w.alice, result.response.message, "Shorter")
    shorter = await newest_summary(w)
    assert shorter.length == "medium" and shorter.settings["max_new_tokens"] == LENGTHS["medium"].max_new_tokens
    # An explicit max_new_tokens set by an admin wins over every preset.
    await w.admin.slash(w.channel, "settings set", scope="server", max_new_tokens=48)
    await summarize(w, length="long")
    assert (await newest_summary(w)).settings["max_new_tokens"] == 48


async def test_every_summary_gets_persistent_buttons(recap_world: World) -> None:
    result = await summarize(recap_world)
    (record,) = await all_summaries(recap_world)
    assert custom_ids(result.response) == [f"recap:{a}:{record.id}" for a in ("shorter", "longer", "regenerate", "actions")]


async def test_shorter_by_the_requester(recap_world: World) -> None:
    result = await summarize(recap_world, length="medium")
    pressed = await press(recap_world, recap_world.alice, result.response.message, "Shorter")
    assert not pressed.ephemeral
    newest, original = await all_summaries(recap_world)
    assert (original.length, newest.length) == ("medium", "short")
    assert newest.source_ids == original.source_ids  # the same messages, re-read from storage
    assert newest.requester_id == recap_world.alice.id


async def test_action_items(recap_world: World) -> None:
    result = await summarize(recap_world, style="paragraph")
    await press(recap_world, recap_world.alice, result.response.message, "Action items")
    newest, _ = await all_summaries(recap_world)
    assert newest.style == "action_items"


async def test_regenerate_samples_with_a_new_seed(recap_world: World) -> None:
    result = await summarize(recap_world)
    await press(recap_world, recap_world.alice, result.response.message, "Regenerate")
    newest, original = await all_summaries(recap_world)
    assert original.settings.get("sampling") in (None, False)
    assert newest.settings["sampling"] is True and isinstance(newest.settings["seed"], int)
    assert newest.length == original.length and newest.style == original.style


async def test_a_server_manager_may_press(recap_world: World) -> None:
    result = await summarize(recap_world)
    pressed = await press(recap_world, recap_world.admin, result.response.message, "Action items")
    assert not pressed.ephemeral
    newest, _ = await all_summaries(recap_world)
    assert newest.requester_id == recap_world.admin.id and newest.style == "action_items"


async def test_buttons_work_after_a_restart(recap_world: World) -> None:
    world = recap_world
    result = await summarize(world)
    message = result.response.message
    # A new bot instance, with its own connection to the same database file.
    async with open_database(world.bot.settings.database_path) as db:
        fresh = RecapBot(settings=world.bot.settings, db=db, executor=world.bot.executor,
                         summarizer=world.bot.summarizer, extensions=EXTENSIONS)
        await world.env.restart_bot(fresh)  # the shared executor keeps its declared waits
        pressed = await press(world, world.alice, message, "Shorter")
        assert not pressed.ephemeral
        rows = await db.reading(summary_store.list_summaries, world.channel.id, limit=10)
        assert [r.length for r in rows][:1] == ["short"] and len(rows) == 2


async def posted_summary(world: World, length: str = "medium", private: bool = False) -> tuple[int, discord.Message]:
    """A stored summary of alice's real (stored) messages, posted with its buttons, without the model."""
    spoken = await world.say(world.alice, "Let's plan the launch for Monday.", "Who drafts the announcement?")
    record = SummaryRecord(
        guild_id=world.guild.id, channel_id=world.channel.id, requester_id=world.alice.id, text="Launch planning.",
        length=length, style="paragraph", source_ids=[m.id for m in spoken], private=private,
    )
    summary_id = await world.db.writing(summary_store.insert_summary, record)
    channel = world.env.bot.get_channel(world.channel.id)
    message = await channel.send("Summary", view=followup_view(summary_id))
    await world.env.settle()
    return summary_id, message


async def test_wrong_user_gets_an_ephemeral_explanation(recap_world: World) -> None:
    _, message = await posted_summary(recap_world)
    pressed = await recap_world.bob.click(message, label="Shorter")
    assert pressed.ephemeral and "who asked for this summary" in reply_text(pressed)
    assert len(await all_summaries(recap_world)) == 1


async def test_longer_at_the_longest_length_explains(recap_world: World) -> None:
    _, message = await posted_summary(recap_world, length="long")
    pressed = await recap_world.alice.click(message, label="Longer")
    assert pressed.ephemeral and "already the longest" in reply_text(pressed)
    assert len(await all_summaries(recap_world)) == 1


async def test_shorter_at_the_shortest_length_explains(recap_world: World) -> None:
    _, message = await posted_summary(recap_world, length="short")
    pressed = await recap_world.alice.click(message, label="Shorter")
    assert pressed.ephemeral and "already the shortest" in reply_text(pressed)


async def test_press_on_a_summary_whose_source_was_deleted(recap_world: World) -> None:
    world = recap_world
    _, message = await posted_summary(world)
    spoken = [m for m in world.channel.history() if m.author.id == world.alice.id]
    await world.alice.delete(spoken[0])
    assert await all_summaries(world) == []  # storage drops summaries built from a deleted message
    pressed = await world.alice.click(message, label="Shorter")
    assert pressed.ephemeral and "no longer exists" in reply_text(pressed)


# --- /summaries ------------------------------------------------------------------------------


async def stored(world: World, count: int, **changes) -> list[int]:
    ids = []
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(count):
        record = SummaryRecord(
            guild_id=world.guild.id, channel_id=world.channel.id, requester_id=world.alice.id,
            text=f"Summary number {i}", length="short", style="bullets", source_ids=[1000 + i],
            start_at=base, end_at=base + timedelta(hours=1), created_at=base + timedelta(minutes=i),
            structured={"participants": ["alice"], "topics": [], "citations": [], "model": "tiny"},
        )
        for key, value in changes.items():
            setattr(record, key, value)
        ids.append(await world.db.writing(summary_store.insert_summary, record))
    return ids


async def test_summaries_lists_and_pages(recap_world: World) -> None:
    ids = await stored(recap_world, 7)
    result = await recap_world.bob.slash(recap_world.channel, "summaries")
    assert result.ephemeral
    embed = result.response.embeds[0]
    assert [f.name for f in embed.fields] == [f"#{i}" for i in reversed(ids[-5:])]
    assert "by <@" in embed.fields[0].value and "messages" in embed.fields[0].value
    page2 = await recap_world.bob.click(result.response.message, label="Next")
    shown = page2.response.embeds[0] if page2.response else None
    assert shown is not None and [f.name for f in shown.fields] == [f"#{i}" for i in reversed(ids[:2])]
    back = await recap_world.bob.click(page2.response.message, label="Previous")
    assert [f.name for f in back.response.embeds[0].fields][0] == f"#{ids[-1]}"


async def test_selecting_a_summary_shows_it_again(recap_world: World) -> None:
    (summary_id,) = await stored(recap_world, 1)
    listing = await recap_world.bob.slash(recap_world.channel, "summaries")
    shown = await recap_world.bob.select(listing.response.message, [str(summary_id)])
    assert shown.ephemeral
    assert shown.response.embeds[0].description == "Summary number 0"
    assert f"recap:shorter:{summary_id}" in custom_ids(shown.response)


async def test_private_summaries_are_listed_only_to_their_requester(recap_world: World) -> None:
    await stored(recap_world, 1, private=True, text="alice's private one")
    for_bob = await recap_world.bob.slash(recap_world.channel, "summaries")
    assert for_bob.response.embeds[0].fields == []
    for_alice = await recap_world.alice.slash(recap_world.channel, "summaries")
    assert len(for_alice.response.embeds[0].fields) == 1


async def test_summaries_needs_read_access(recap_world: World) -> None:
    world = recap_world
    locked = world.guild.create_text_channel(
        "locked", overwrites={world.bob: discord.PermissionOverwrite(read_message_history=False)}
    )
    result = await world.bob.slash(locked, "summaries")
    assert result.ephemeral and "whose history you can read" in reply_text(result)


@pytest.mark.parametrize("recap_options", [{"extensions": EXTENSIONS, "settings": {"user_cooldown_s": "600"}}])
async def test_presses_share_the_summarize_cooldown(recap_world: World) -> None:
    result = await summarize(recap_world)
    pressed = await recap_world.alice.click(result.response.message, label="Shorter")
    assert pressed.ephemeral and "too often" in reply_text(pressed)
    assert len(await all_summaries(recap_world)) == 1


def deny_history(world: World, channel, who_id: int) -> None:
    deny = discord.Permissions(read_message_history=True).value
    world.env.backend.set_overwrite(channel.id, Overwrite(target_id=who_id, type=OverwriteType.MEMBER, allow=0, deny=deny))


async def test_a_private_summary_is_its_requesters_alone_even_for_a_manager(recap_world: World) -> None:
    # Buttons of a private summary are only ever shown to its requester; a press by anyone else
    # (a forged or leaked custom_id) learns nothing, not even who asked for it.
    _, message = await posted_summary(recap_world, private=True)
    pressed = await recap_world.admin.click(message, label="Action items")
    text = reply_text(pressed)
    assert pressed.ephemeral and "no longer exists" in text and str(recap_world.alice.id) not in text
    assert len(await all_summaries(recap_world)) == 1


async def test_a_press_checks_access_before_saying_the_channel_is_turned_off(recap_world: World) -> None:
    world = recap_world
    _, message = await posted_summary(world)
    await world.admin.slash(world.channel, "settings set", scope="channel", enabled=False)
    deny_history(world, world.channel, world.alice.id)
    await world.env.settle()
    pressed = await world.alice.click(message, label="Shorter")
    assert pressed.ephemeral and reply_text(pressed) == NO_ACCESS


async def test_summaries_needs_the_bot_to_read_the_channel_too(recap_world: World) -> None:
    world = recap_world
    await stored(world, 1)
    deny_history(world, world.channel, world.env.bot.user.id)
    await world.env.settle()
    result = await world.bob.slash(world.channel, "summaries")
    assert result.ephemeral and "whose history you can read" in reply_text(result)
    assert "Summary number 0" not in reply_text(result)


async def test_turning_a_page_rechecks_access(recap_world: World) -> None:
    world = recap_world
    await stored(world, 7)
    listing = await world.bob.slash(world.channel, "summaries")
    deny_history(world, world.channel, world.bob.id)  # bob loses access while the list is open
    await world.env.settle()
    page2 = await world.bob.click(listing.response.message, label="Next")
    assert page2.ephemeral and "whose history you can read" in reply_text(page2)
    assert "Summary number" not in reply_text(page2)
