"""A busy bot, end to end through SimCord: members wait in line, the same window is summarized once,
a recent summary is reused only while its messages are unchanged and only for readers allowed to
see it, failures start no cooldown, and /status shows this server beside the whole bot.

The model is held at a gate (a threading.Event in front of the real tiny model's generate), so
"while the first summary runs" is a state the test controls, never a race.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import discord
import pytest
from simcord_helpers import (  # noqa: F401
    BOT_EXTENSIONS,
    World,
    declare_model_waits,
    recap_options,
    recap_world,
    reply_text,
    until,
)

from core.errors import NO_ACCESS
from storage import messages, summaries

WITH_BUTTONS = {"extensions": (*BOT_EXTENSIONS, "cogs.summaries")}


def gate_model(world: World) -> threading.Event:
    """Hold every generate call until the returned event is set (the model thread waits; the loop does not)."""
    backend = world.bot.executor.backend
    gate = threading.Event()
    original = backend.generate_batch

    def gated(*args: Any, **kwargs: Any) -> Any:
        if not gate.wait(timeout=120):
            raise AssertionError("the test never opened the model gate")
        return original(*args, **kwargs)

    backend.generate_batch = gated  # type: ignore[method-assign]
    return gate


def embeds_of(result: Any) -> list[discord.Embed]:
    return [e for m in [result.response, *result.followups] if m is not None for e in m.embeds]


def has_summary(result: Any) -> bool:
    return result.response is not None and any(e.title and e.title.startswith("Summary of") for e in embeds_of(result))


def progress_lines(world: World) -> list[str]:
    return [e.json.get("content") for e in world.env.http_requests
            if e.method == "PATCH" and e.path.endswith("/messages/@original") and e.json and e.json.get("content")]


async def all_records(world: World) -> list[summaries.SummaryRecord]:
    rows = await world.db.reading(summaries.list_summaries, world.channel.id, limit=100)
    return [await world.db.reading(summaries.get_summary, r.id) for r in rows]


def members(world: World, n: int) -> list[Any]:
    return [world.alice, world.bob] + [world.guild.add_member(world.env.create_user(f"member{i}")) for i in range(n - 2)]


async def chat(world: World) -> list[discord.Message]:
    sent = await world.say(world.alice, "Shall we ship the release on Friday?", "I can write the notes.")
    sent += await world.say(world.bob, "Friday works, I'll tag it.", "Then we need the changelog by Thursday.")
    sent += await world.say(world.alice, "I'll ask Dana to review it.")
    return sent


@pytest.mark.parametrize("recap_options", [{"executor_limits": {"max_batch_size": 1}}])
async def test_members_beyond_what_runs_wait_in_line_and_see_their_place(recap_world: World) -> None:
    w = recap_world
    await chat(w)
    declare_model_waits(w)
    gate = gate_model(w)
    people = members(w, 5)
    # Distinct windows (the newest 1..5 messages), so nothing is shared: five real jobs.
    results = [await who.slash(w.channel, "summarize", messages=i + 1) for i, who in enumerate(people)]
    await until(w, lambda: w.bot.executor.metrics()["queue_depth"] == 4)
    await w.env.advance_time(2)  # the throttle lets the newest progress line through
    await w.env.settle()
    assert any("You're number 4 in line" in line for line in progress_lines(w))
    assert not any(r.ephemeral for r in results)  # nobody was turned away
    gate.set()
    await until(w, lambda: all(has_summary(r) for r in results))
    records = await all_records(w)
    assert sorted(r.requester_id for r in records) == sorted(p.id for p in people)


async def test_the_same_window_asked_at_once_is_generated_once(recap_world: World) -> None:
    w = recap_world
    await chat(w)
    declare_model_waits(w)
    gate = gate_model(w)
    people = members(w, 4)
    results = [await who.slash(w.channel, "summarize") for who in people]
    await until(w, lambda: w.bot.executor.metrics()["pending"] >= 1)
    assert w.bot.shared_summaries.joined == 3
    gate.set()
    await until(w, lambda: all(has_summary(r) for r in results))
    assert w.bot.executor.metrics()["submitted"] == 1  # one generation for four members
    records = await all_records(w)
    assert sorted(r.requester_id for r in records) == sorted(p.id for p in people)  # each has their own
    assert len({r.text for r in records}) == 1
    assert not any("recent summary" in reply_text(r) for r in results)


async def test_a_private_request_never_shares_with_someone_else(recap_world: World) -> None:
    w = recap_world
    await chat(w)
    declare_model_waits(w)
    gate = gate_model(w)
    private = await w.alice.slash(w.channel, "summarize", private=True)
    public = await w.bob.slash(w.channel, "summarize")
    await until(w, lambda: w.bot.executor.metrics()["pending"] == 2)
    assert w.bot.shared_summaries.joined == 0
    gate.set()
    await until(w, lambda: has_summary(private) and has_summary(public))
    assert private.ephemeral and not public.ephemeral


@pytest.mark.parametrize("recap_options", [WITH_BUTTONS])
async def test_a_recent_summary_is_reused_with_a_regenerate_button(recap_world: World) -> None:
    w = recap_world
    await chat(w)
    declare_model_waits(w)
    first = await w.alice.slash(w.channel, "summarize")
    await until(w, lambda: has_summary(first))
    submitted = w.bot.executor.metrics()["submitted"]
    again = await w.bob.slash(w.channel, "summarize")
    await until(w, lambda: has_summary(again))
    assert w.bot.executor.metrics()["submitted"] == submitted  # no generation
    assert "A recent summary of exactly these messages" in reply_text(again)
    assert embeds_of(again)[0].description == embeds_of(first)[0].description
    records = await all_records(w)
    mine = next(r for r in records if r.requester_id == w.bob.id)
    original = next(r for r in records if r.requester_id == w.alice.id)
    assert mine.structured["reused_from"] == original.id and mine.source_ids == original.source_ids
    ids = [c.get("custom_id") for row in again.response.components for c in row.get("components", [])]
    assert f"recap:regenerate:{mine.id}" in ids  # Bob's own summary, so his buttons work
    regenerated = await w.bob.click(again.response, label="Regenerate")
    await until(w, lambda: regenerated.response is not None and bool(regenerated.response.embeds))
    assert w.bot.executor.metrics()["submitted"] > submitted  # Regenerate really generates
    assert "A recent summary" not in reply_text(regenerated)


async def test_an_edited_message_makes_the_stored_summary_stale(recap_world: World) -> None:
    w = recap_world
    sent = await chat(w)
    declare_model_waits(w)
    first = await w.alice.slash(w.channel, "summarize")
    await until(w, lambda: has_summary(first))
    await w.alice.edit(sent[0], "Shall we ship the release on Monday instead?")
    submitted = w.bot.executor.metrics()["submitted"]
    again = await w.bob.slash(w.channel, "summarize")
    await until(w, lambda: has_summary(again))
    assert w.bot.executor.metrics()["submitted"] > submitted
    assert "A recent summary" not in reply_text(again)


async def test_a_stored_edit_alone_makes_the_summary_stale(recap_world: World) -> None:
    """Even when the text read now matched, an edit stored after the summary was made rules it out."""
    w = recap_world
    sent = await chat(w)
    declare_model_waits(w)
    first = await w.alice.slash(w.channel, "summarize")
    await until(w, lambda: has_summary(first))
    (record,) = await all_records(w)
    stored = await w.db.reading(messages.get_message, sent[1].id)
    later = record.created_at + timedelta(seconds=1)
    await w.db.writing(messages.edit_message, sent[1].id, stored.content, later)
    assert await w.db.reading(summaries.reusable_summaries, w.channel.id, min(record.source_ids), max(record.source_ids),
                              since=record.created_at, visible_to=w.bob.id) == []


async def test_a_deleted_message_makes_the_stored_summary_stale(recap_world: World) -> None:
    w = recap_world
    sent = await chat(w)
    declare_model_waits(w)
    first = await w.alice.slash(w.channel, "summarize")
    await until(w, lambda: has_summary(first))
    await w.bob.delete(sent[-2])
    await until(w, lambda: w.bot.services.message_buffer.get() is not None)
    submitted = w.bot.executor.metrics()["submitted"]
    again = await w.bob.slash(w.channel, "summarize")
    await until(w, lambda: has_summary(again))
    assert w.bot.executor.metrics()["submitted"] > submitted
    assert "A recent summary" not in reply_text(again)


async def test_a_private_summary_is_reused_only_for_its_requester(recap_world: World) -> None:
    w = recap_world
    await chat(w)
    declare_model_waits(w)
    mine = await w.alice.slash(w.channel, "summarize", private=True)
    await until(w, lambda: has_summary(mine))
    submitted = w.bot.executor.metrics()["submitted"]
    bobs = await w.bob.slash(w.channel, "summarize", private=True)
    await until(w, lambda: has_summary(bobs))
    assert w.bot.executor.metrics()["submitted"] > submitted  # Alice's private summary is not Bob's to see
    assert "A recent summary" not in reply_text(bobs)
    submitted = w.bot.executor.metrics()["submitted"]
    again = await w.alice.slash(w.channel, "summarize", private=True)
    await until(w, lambda: has_summary(again))
    assert "A recent summary" in reply_text(again) and again.ephemeral
    assert w.bot.executor.metrics()["submitted"] == submitted


async def test_access_is_checked_before_any_reuse(recap_world: World) -> None:
    w = recap_world
    # Everyone sees #staff, but only the admin (and the bot) may read its history.
    staff = w.guild.create_text_channel(
        "staff", overwrites={w.guild.default_role: discord.PermissionOverwrite(read_message_history=False),
                             w.admin: discord.PermissionOverwrite(read_message_history=True),
                             w.guild.me: discord.PermissionOverwrite(read_message_history=True)})
    await w.env.settle()
    await w.say(w.admin, "staff only: the budget is cut", "and the launch moves", channel=staff)
    declare_model_waits(w)
    made = await w.admin.slash(staff, "summarize")
    await until(w, lambda: has_summary(made))
    assert not made.ephemeral  # a public summary of #staff exists, made minutes ago
    refused = await w.alice.slash(w.channel, "summarize", channel=staff)
    assert refused.ephemeral and reply_text(refused) == NO_ACCESS  # the same answer as for any channel
    from_there = await w.alice.slash(staff, "summarize")
    assert from_there.ephemeral and reply_text(from_there) == NO_ACCESS


@pytest.mark.parametrize("recap_options", [{"settings": {"user_cooldown_s": "60"},
                                             "executor_limits": {"max_queue": 1, "max_batch_size": 1}}])
async def test_a_refused_or_failed_request_starts_no_cooldown(recap_world: World) -> None:
    w = recap_world
    await chat(w)
    declare_model_waits(w)
    gate = gate_model(w)
    hog = await w.bob.slash(w.channel, "summarize", messages=2)  # holds the only place in the queue
    await until(w, lambda: w.bot.executor.metrics()["jobs"] == 1)
    refused = await w.alice.slash(w.channel, "summarize")
    await until(w, lambda: "busy" in reply_text(refused))
    assert "Try again in" in reply_text(refused)
    gate.set()
    await until(w, lambda: has_summary(hog))
    ok = await w.alice.slash(w.channel, "summarize")  # at once: the refusal started no cooldown
    await until(w, lambda: has_summary(ok))
    too_soon = await w.alice.slash(w.channel, "summarize")  # a summary made does start one
    assert too_soon.ephemeral and "too often" in reply_text(too_soon)


async def test_status_shows_this_server_beside_the_whole_bot(recap_world: World) -> None:
    w = recap_world
    await chat(w)
    declare_model_waits(w)
    done = await w.alice.slash(w.channel, "summarize")
    await until(w, lambda: has_summary(done))
    other = w.env.create_guild("Elsewhere")
    elsewhere = other.create_text_channel("lobby")
    stranger = other.add_member(w.env.create_user("stranger"))
    gate = gate_model(w)
    await stranger.send(elsewhere, "is anyone around?")
    waiting = await stranger.slash(elsewhere, "summarize")
    await until(w, lambda: w.bot.executor.metrics()["in_flight"] == 1)
    here = {f.name: f.value for f in (await w.alice.slash(w.channel, "status")).response.embeds[0].fields}
    assert here["Queue (this server)"] == "0 waiting, 0 running · 0 summaries in progress"
    assert here["Queue (whole bot)"] == "0 waiting, 1 running · 1 summary in progress"
    assert "tokens/s" in here["Batches (this server)"] and "1×1" in here["Batches (this server)"]
    there = {f.name: f.value for f in (await stranger.slash(elsewhere, "status")).response.embeds[0].fields}
    assert there["Queue (this server)"] == "0 waiting, 1 running · 1 summary in progress"
    assert there["Batches (this server)"] == "none yet"
    gate.set()
    await until(w, lambda: has_summary(waiting))
