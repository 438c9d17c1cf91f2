"""/summarize and "Summarize from here" end to end: SimCord + real SQLite + real Executor (tiny model) + real Summarizer."""

from __future__ import annotations

import asyncio
import re

import discord
from simcord.enums import MessageType as SystemType
import pytest
from simcord_helpers import (  # noqa: F401
    World,
    recap_options,
    recap_world,
    reply_text,
    sent_allowed_mentions,
)

from engine.generation import GenerationRequest, GenerationSettings, Prompt
from core.errors import NO_ACCESS
from storage import messages, summaries

NO_PINGS = {"parse": []}


async def last_summary(w: World):
    rows = await w.db.reading(summaries.list_summaries, w.channel.id, limit=1)
    return await w.db.reading(summaries.get_summary, rows[0].id) if rows else None


def callback_types(w: World) -> list[int]:
    """The interaction response type of each interaction callback the bot sent (5: deferred)."""
    return [e.json["type"] for e in w.env.http_requests if e.method == "POST" and e.path.endswith("/callback")]


def summary_embeds(result) -> list[discord.Embed]:
    return [e for m in [result.response, *result.followups] if m is not None for e in m.embeds]


async def test_default_window_summarizes_recent_messages_and_stores_the_summary(recap_world: World) -> None:
    w = recap_world
    sent = await w.say(w.alice, "Shall we ship the release on Friday?", "I can write the notes.")
    sent += await w.say(w.bob, "Friday works, I'll tag it.")
    result = await w.alice.slash(w.channel, "summarize")
    assert callback_types(w)[-1] == 5 and not result.ephemeral  # deferred at once, then edited
    embeds = summary_embeds(result)
    assert embeds[0].title == "Summary of #general"
    fields = {f.name: f.value for e in embeds for f in e.fields}
    assert fields["Messages"] == "3"
    assert "alice" in fields["Participants"] and "bob" in fields["Participants"]
    assert embeds[-1].footer.text.startswith("Model: ")

    record = await last_summary(w)
    assert record is not None and record.requester_id == w.alice.id
    assert sorted(record.source_ids) == sorted(m.id for m in sent)  # not the bot's own "thinking" placeholder
    assert record.text and record.length == "medium" and record.style == "paragraph" and not record.private


async def test_messages_option_reads_the_latest_n(recap_world: World) -> None:
    w = recap_world
    sent = await w.say(w.alice, *(f"message number {i}" for i in range(8)))
    await w.alice.slash(w.channel, "summarize", messages=3)
    record = await last_summary(w)
    assert sorted(record.source_ids) == [m.id for m in sent[-3:]]


async def test_since_option_uses_the_time_window(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "old news from this morning")
    await w.env.advance_time(3 * 3600)
    recent = await w.say(w.bob, "fresh topic", "more on the fresh topic")
    await w.alice.slash(w.channel, "summarize", since="2h")
    record = await last_summary(w)
    assert sorted(record.source_ids) == [m.id for m in recent]


async def test_bad_since_explains_with_examples(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "hello")
    result = await w.alice.slash(w.channel, "summarize", since="last tuesday")
    assert result.ephemeral
    text = reply_text(result)
    assert "`30m`" in text and "`yesterday`" in text
    assert await last_summary(w) is None


async def test_conflicting_options_are_refused(recap_world: World) -> None:
    w = recap_world
    result = await w.alice.slash(w.channel, "summarize", messages=5, since="1h")
    assert result.ephemeral
    assert "only one of" in reply_text(result)


async def test_from_message_link_summarizes_from_there(recap_world: World) -> None:
    w = recap_world
    sent = await w.say(w.alice, "before", "start here", "after one", "after two")
    link = sent[1].jump_url
    await w.alice.slash(w.channel, "summarize", from_message=link)
    record = await last_summary(w)
    assert sorted(record.source_ids) == [m.id for m in sent[1:]]


async def test_from_message_elsewhere_or_unknown_gets_one_same_refusal(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "hello")
    other_server = await w.alice.slash(w.channel, "summarize", from_message="https://discord.com/channels/1234/5678/123456789012345678")
    unknown = await w.alice.slash(w.channel, "summarize", from_message="123456789012345678")
    assert reply_text(other_server) == NO_ACCESS and other_server.ephemeral  # refused before deferring
    assert NO_ACCESS in reply_text(unknown)  # checked with Discord after the defer: the same words


async def test_context_menu_summarize_from_here(recap_world: World) -> None:
    w = recap_world
    sent = await w.say(w.alice, "skip me", "from here on", "and this")
    result = await w.bob.context_menu(w.channel, "Summarize from here", sent[1])
    assert summary_embeds(result)
    record = await last_summary(w)
    assert sorted(record.source_ids) == [m.id for m in sent[1:]]


async def test_length_style_and_private_options(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "we need to fix the login bug", "bob will do it by monday")
    result = await w.alice.slash(w.channel, "summarize", length="short", style="bullets", private=True)
    assert result.ephemeral
    footer = summary_embeds(result)[-1].footer.text
    assert "short, bullets" in footer
    record = await last_summary(w)
    assert (record.length, record.style, record.private) == ("short", "bullets", True)


async def test_channel_option_and_member_without_access(recap_world: World) -> None:
    w = recap_world
    # Everyone sees #staff, but only the admin may read its history.
    staff = w.guild.create_text_channel(
        "staff", overwrites={w.guild.default_role: discord.PermissionOverwrite(read_message_history=False),
                             w.admin: discord.PermissionOverwrite(read_message_history=True),
                             w.guild.me: discord.PermissionOverwrite(read_message_history=True)},
    )
    await w.env.settle()
    [plan] = await w.say(w.admin, "staff only plans", channel=staff)
    refused = await w.alice.slash(w.channel, "summarize", channel=staff)
    assert refused.ephemeral and reply_text(refused) == NO_ACCESS

    # A link into a channel she cannot see at all gets the very same answer.
    hidden = w.guild.create_text_channel("hidden", overwrites={w.guild.default_role: discord.PermissionOverwrite(view_channel=False)})
    await w.env.settle()
    link = f"https://discord.com/channels/{w.guild.id}/{hidden.id}/{plan.id}"
    via_link = await w.alice.slash(w.channel, "summarize", from_message=link)
    assert via_link.ephemeral and reply_text(via_link) == NO_ACCESS

    ok = await w.admin.slash(w.channel, "summarize", channel=staff)
    assert summary_embeds(ok)[0].title == "Summary of #staff"
    # Alice can see #general but not read #staff: a public reply here would leak, so it goes to the admin alone.
    assert ok.ephemeral
    assert any("Sent only to you" in f.value for e in summary_embeds(ok) for f in e.fields)
    record = await w.db.reading(summaries.get_summary, (await w.db.reading(summaries.list_summaries, staff.id, limit=1))[0].id)
    assert record.source_ids == [plan.id]


async def test_bot_without_read_history_refuses(recap_world: World) -> None:
    w = recap_world
    blind = w.guild.create_text_channel("blind", overwrites={w.bot.user: discord.PermissionOverwrite(read_message_history=False)})
    await w.env.settle()
    await w.say(w.alice, "hi", channel=blind)
    result = await w.alice.slash(blind, "summarize")
    assert reply_text(result) == NO_ACCESS


async def test_thread_summary_reads_only_the_thread(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "main channel chatter")
    thread = w.env.backend.create_thread(w.channel.id, "release", w.alice.id)
    handle = next(t for t in w.channel.threads if t.id == thread.id)
    await w.env.settle()
    inside = [await w.alice.send(handle, "thread point one"), await w.bob.send(handle, "thread point two")]
    result = await w.alice.slash(handle, "summarize")
    assert summary_embeds(result)[0].title == "Summary of #release"
    rows = await w.db.reading(summaries.list_summaries, thread.id, limit=1)
    record = await w.db.reading(summaries.get_summary, rows[0].id)
    assert sorted(record.source_ids) == [m.id for m in inside]


async def test_backfill_pages_through_history_and_stores_it(recap_world: World) -> None:
    w = recap_world
    # 250 messages the bot never saw live (sent while it was offline): only Discord's history has them.
    created = [w.env.backend.create_message(w.channel.id, w.alice.id, f"offline message {i}", broadcast=False) for i in range(250)]
    await w.env.advance_time(1)
    w.bot.coverage.connected(at=w.env.now())  # the bot reconnects: only what follows is seen live
    result = await w.alice.slash(w.channel, "summarize", messages=240)
    fields = {f.name: f.value for e in summary_embeds(result) for f in e.fields}
    assert fields["Messages"] == "240"
    pages = [e for e in w.env.http_requests if e.method == "GET" and e.path.endswith(f"/channels/{w.channel.id}/messages")]
    assert len(pages) >= 3  # 100 per page, newest first
    record = await last_summary(w)
    assert sorted(record.source_ids) == [m.id for m in created[-240:]]
    assert await w.db.reading(messages.count_messages, channel_id=w.channel.id) >= 240

    # The range is now covered: a second summary reads the database without fetching again.
    before = len(pages)
    await w.bob.slash(w.channel, "summarize", messages=200)
    pages = [e for e in w.env.http_requests if e.method == "GET" and e.path.endswith(f"/channels/{w.channel.id}/messages")]
    assert len(pages) == before


@pytest.mark.parametrize("recap_options", [{"settings": {"attachment_max_bytes": "1000"}}])
async def test_attachments_text_binary_and_oversized(recap_world: World) -> None:
    w = recap_world
    await w.alice.send(w.channel, "notes attached", attachments=[("notes.txt", "the plan: ship friday".encode())])
    await w.alice.send(w.channel, "a dump", attachments=[("dump.log", b"\x00\x01binary\x00" * 10)])
    await w.alice.send(w.channel, "huge log", attachments=[("huge.log", b"x" * 5_000_000)])
    await w.alice.send(w.channel, "a picture", attachments=[("cat.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)])
    result = await w.alice.slash(w.channel, "summarize")
    rows = await w.db.reading(messages.last_messages, w.channel.id, 10)
    texts = {a.filename: a.text for r in rows for a in r.attachments}
    assert texts == {"notes.txt": "the plan: ship friday", "dump.log": None, "huge.log": None, "cat.png": None}
    notes = {f.name: f.value for e in summary_embeds(result) for f in e.fields}["Notes"]
    assert "dump.log" in notes and "huge.log" in notes and "cat.png" not in notes


async def test_own_system_and_opted_out_messages_are_left_out(recap_world: World) -> None:
    w = recap_world
    await w.bob.slash(w.channel, "privacy optout")
    await w.say(w.bob, "bob is opted out")
    kept = await w.say(w.alice, "alice talks")
    w.guild.create_system_message(w.channel, SystemType.NEW_MEMBER, author=w.alice)
    await w.alice.slash(w.channel, "status")
    await w.alice.slash(w.channel, "summarize")
    first = await last_summary(w)
    assert first.source_ids == [kept[0].id]
    # The previous summary (a bot message) is not read either.
    more = await w.say(w.alice, "another line")
    await w.alice.slash(w.channel, "summarize")
    rows = await w.db.reading(summaries.list_summaries, w.channel.id, limit=1)
    second = await w.db.reading(summaries.get_summary, rows[0].id)
    assert sorted(second.source_ids) == [kept[0].id, more[0].id]


async def test_empty_channel_says_nothing_to_summarize(recap_world: World) -> None:
    w = recap_world
    result = await w.alice.slash(w.channel, "summarize")
    assert "no messages to summarize" in reply_text(result)  # the "thinking" reply became the error


async def test_disabled_channel_refuses(recap_world: World) -> None:
    w = recap_world
    await w.admin.slash(w.channel, "settings set", scope="channel", enabled=False)
    result = await w.alice.slash(w.channel, "summarize")
    assert result.ephemeral and "turned off" in reply_text(result)


@pytest.mark.parametrize("recap_options", [{"settings": {"user_cooldown_s": "60"}}])
async def test_cooldown_says_when_to_retry(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "something to summarize")
    await w.alice.slash(w.channel, "summarize")
    again = await w.alice.slash(w.channel, "summarize")
    # From the first request's start: the progress throttle may have let a second or two of (virtual) time pass.
    assert again.ephemeral and re.search(r"Try again in (5[5-9]|60) s", reply_text(again))
    other = await w.bob.slash(w.channel, "summarize")  # per member, not global
    assert summary_embeds(other)
    await w.env.advance_time(61)
    later = await w.alice.slash(w.channel, "summarize")
    assert summary_embeds(later)


@pytest.mark.parametrize("recap_options", [{"executor_limits": {"max_queue": 1, "max_batch_size": 1}}])
async def test_overloaded_executor_replies_with_a_retry_hint(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "please summarize this")
    # Someone else's long generation holds the only queue slot.
    hog = asyncio.create_task(
        w.bot.executor.submit(GenerationRequest(Prompt("s", "x " * 50), GenerationSettings(max_new_tokens=1000), guild="other"))
    )
    await asyncio.sleep(0)  # submit() admits the request before its first await
    assert w.bot.executor.metrics()["pending"] == 1
    result = await w.alice.slash(w.channel, "summarize")
    text = reply_text(result)
    assert "busy" in text and "Try again in" in text
    hog.cancel()
    await asyncio.gather(hog, return_exceptions=True)


@pytest.mark.parametrize("recap_options", [{"start_executor": False}])
async def test_still_starting_is_answered_at_once(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "hello")
    result = await w.alice.slash(w.channel, "summarize")
    assert result.ephemeral and callback_types(w)[-1] == 4  # answered directly, no "thinking"
    assert "still starting" in reply_text(result)


async def test_discord_failure_becomes_an_internal_error_with_a_reference(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "hello")
    w.bot.coverage.reset()  # force a history fetch, which Discord fails
    w.env.inject_error("GET", f"/channels/{w.channel.id}/messages", status=500)
    result = await w.alice.slash(w.channel, "summarize")
    text = reply_text(result)
    assert "reference `" in text and "Traceback" not in text


async def test_no_payload_can_ping(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "@everyone look <@&123>", "@here too")
    await w.alice.slash(w.channel, "summarize")
    await w.alice.slash(w.channel, "summarize", since="nonsense")
    mentions = sent_allowed_mentions(w)
    assert mentions and all(m == NO_PINGS for m in mentions)
    for e in w.env.http_requests:
        body = str(e.json or "")
        assert "@everyone" not in body and "@here" not in body


async def test_progress_edits_the_deferred_reply_before_the_summary(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "first point", "second point")
    await w.alice.slash(w.channel, "summarize")
    edits = [e.json for e in w.env.http_requests if e.method == "PATCH" and e.path.endswith("/messages/@original")]
    progress = [e.get("content") for e in edits if e.get("content")]
    assert progress and progress[0].startswith(("Reading", "Summarizing"))
    assert edits[-1].get("embeds") and not edits[-1].get("content")  # the last edit is the summary itself


async def test_max_messages_caps_the_window_and_says_so(recap_world: World) -> None:
    w = recap_world
    await w.admin.slash(w.channel, "settings set", max_messages=5)
    sent = await w.say(w.alice, *(f"line {i}" for i in range(8)))
    result = await w.alice.slash(w.channel, "summarize", since="1d")
    record = await last_summary(w)
    assert sorted(record.source_ids) == [m.id for m in sent[-5:]]
    notes = {f.name: f.value for e in summary_embeds(result) for f in e.fields}["Notes"]
    assert "Only the latest 5 messages" in notes


async def test_channel_option_only_offers_readable_channel_types(recap_world: World) -> None:
    command = recap_world.env.backend.find_command("summarize", recap_world.guild.id)
    option = next(o for o in command["options"] if o["name"] == "channel")
    assert sorted(option["channel_types"]) == sorted([0, 5, 2, 13, 11, 12, 10])  # no categories, forums or DMs
    names = {o["name"] for o in command["options"]}
    assert names == {"messages", "since", "from_message", "channel", "length", "style", "private"}


async def test_a_disabled_channel_she_cannot_read_gets_the_same_refusal_as_any_other(recap_world: World) -> None:
    w = recap_world
    admin_only = {w.admin: discord.PermissionOverwrite(view_channel=True, read_message_history=True)}
    hidden = w.guild.create_text_channel(
        "hidden", overwrites={w.guild.default_role: discord.PermissionOverwrite(view_channel=False), **admin_only})
    staff = w.guild.create_text_channel(
        "staff", overwrites={w.guild.default_role: discord.PermissionOverwrite(read_message_history=False), **admin_only})
    await w.env.settle()
    [secret] = await w.say(w.admin, "secret plans", channel=hidden)
    await w.say(w.admin, "staff plans", channel=staff)
    for channel in (hidden, staff):
        await w.admin.slash(w.channel, "settings set", scope="channel", channel=channel, enabled=False)
    # "Turned off in this channel" would tell her about a channel she cannot read (or even see).
    by_link = await w.alice.slash(w.channel, "summarize", from_message=secret.jump_url)
    by_option = await w.alice.slash(w.channel, "summarize", channel=staff)
    assert reply_text(by_link) == NO_ACCESS and reply_text(by_option) == NO_ACCESS


async def test_out_of_range_message_ids_get_a_friendly_answer(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "hello")
    huge = str(2**64 - 1)  # 20 digits: looks like an id, but is no snowflake (Discord answers 400)
    for value in (huge, f"https://discord.com/channels/{w.guild.id}/{huge}/{huge}",
                  f"https://discord.com/channels/{w.guild.id}/{w.channel.id}/{'9' * 40}", "²" * 18):
        result = await w.alice.slash(w.channel, "summarize", from_message=value)
        assert result.ephemeral and "message link" in reply_text(result)
        assert "reference `" not in reply_text(result)
    assert not any(huge in e.path for e in w.env.http_requests)  # refused before asking Discord

    # Whatever else Discord refuses about the id reads like any unknown message, never as an internal error.
    w.env.inject_error("GET", f"/channels/{w.channel.id}/messages/*", status=400, code=50035, message="Invalid Form Body")
    refused = await w.alice.slash(w.channel, "summarize", from_message="123456789012345678")
    assert NO_ACCESS in reply_text(refused) and "reference `" not in reply_text(refused)
    assert await last_summary(w) is None


@pytest.mark.parametrize("recap_options", [{"settings": {"attachment_max_bytes": "5000000"}}])
async def test_a_text_attachment_larger_than_storage_keeps_is_named_not_read(recap_world: World) -> None:
    w = recap_world
    big = b"log line\n" * 150_000  # 1.35 MB of text: within ATTACHMENT_MAX_BYTES, beyond what storage keeps
    await w.alice.send(w.channel, "the whole server log", attachments=[("server.log", big)])
    await w.say(w.alice, "see the log above")
    result = await w.alice.slash(w.channel, "summarize")
    notes = {f.name: f.value for e in summary_embeds(result) for f in e.fields}.get("Notes", "")
    assert "server.log" in notes
    rows = await w.db.reading(messages.last_messages, w.channel.id, 10)
    assert {a.filename: a.text for r in rows for a in r.attachments} == {"server.log": None}


async def test_summary_of_a_channel_with_the_same_readers_stays_public(recap_world: World) -> None:
    w = recap_world
    lounge = w.guild.create_text_channel("lounge")
    await w.env.settle()
    await w.say(w.alice, "lunch at noon?", channel=lounge)
    await w.say(w.admin, "yes, tacos", channel=lounge)
    result = await w.alice.slash(w.channel, "summarize", channel=lounge)
    assert summary_embeds(result)[0].title == "Summary of #lounge"
    assert not result.ephemeral


async def test_channel_mentions_name_only_channels_every_reader_can_see(recap_world: World) -> None:
    w = recap_world
    admin_only = {w.admin: discord.PermissionOverwrite(view_channel=True, read_message_history=True)}
    hidden = w.guild.create_text_channel(
        "launch-codes", overwrites={w.guild.default_role: discord.PermissionOverwrite(view_channel=False), **admin_only})
    lounge = w.guild.create_text_channel("lounge")
    await w.env.settle()
    await w.say(w.alice, f"The release plan moved into <#{hidden.id}> yesterday, everyone should read it carefully.",
                f"Lunch plans for the release party are in <#{lounge.id}> today, bring snacks please.")

    public = reply_text(await w.alice.slash(w.channel, "summarize", style="key_messages", length="long"))
    assert "#hidden-channel" in public and "launch-codes" not in public
    assert "#lounge" in public  # a channel everyone can see keeps its name

    # The admin sees the channel, but a public reply is read by everyone in #general: still hidden.
    admin_public = reply_text(await w.admin.slash(w.channel, "summarize", style="key_messages", length="long"))
    assert "launch-codes" not in admin_public and "#hidden-channel" in admin_public
    # A private reply is read by the admin alone, who can see it: named.
    admin_private = reply_text(await w.admin.slash(w.channel, "summarize", style="key_messages", length="long", private=True))
    assert "#launch-codes" in admin_private
