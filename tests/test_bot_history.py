"""History listeners: new, edited, deleted and bulk-deleted messages; thread, channel and server removal."""

from __future__ import annotations

import discord
from simcord.enums import MessageType as SystemType
from simcord_helpers import World, database_bytes, recap_options, recap_world  # noqa: F401

from datetime import datetime, timedelta, timezone

from storage import digests, messages, settings as store
from storage.digests import DigestRecord


async def add_digest(w: World, source_id: int, target_id: int) -> int:
    return await w.db.writing(digests.insert_digest, DigestRecord(
        w.guild.id, source_id, target_id, w.admin.id, "daily", "09:00", "UTC", "short", "paragraph",
        datetime.now(timezone.utc) + timedelta(days=1)))


async def stored(w: World, channel_id: int) -> list[str]:
    await w.message_buffer.flush()
    return [m.content for m in await w.db.reading(messages.last_messages, channel_id, 1000)]


async def test_new_messages_are_stored_with_author_and_thread_parent(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "first", "second")
    assert await stored(w, w.channel.id) == ["first", "second"]
    row = (await w.db.reading(messages.last_messages, w.channel.id, 1))[0]
    assert row.author_name == "alice" and row.guild_id == w.guild.id and row.parent_id is None

    thread = w.env.backend.create_thread(w.channel.id, "side", w.alice.id)
    handle = next(t for t in w.channel.threads if t.id == thread.id)
    await w.alice.send(handle, "in thread")
    assert await stored(w, thread.id) == ["in thread"]
    rows = await w.db.reading(messages.last_messages, thread.id, 10)
    assert [r.content for r in rows] == ["in thread"] and rows[0].parent_id == w.channel.id


async def test_own_and_system_messages_are_not_stored(recap_world: World) -> None:
    w = recap_world
    await w.alice.slash(w.channel, "status")
    w.guild.create_system_message(w.channel, SystemType.NEW_MEMBER, author=w.alice)
    await w.env.settle()
    assert await stored(w, w.channel.id) == []


async def test_edit_updates_the_stored_copy(recap_world: World) -> None:
    w = recap_world
    [msg] = await w.say(w.alice, "draft")
    await w.alice.edit(msg, "final wording")
    assert await stored(w, w.channel.id) == ["final wording"]
    row = await w.db.reading(messages.get_message, msg.id)
    assert row is not None and row.edited_at is not None


async def test_delete_and_bulk_delete(recap_world: World) -> None:
    w = recap_world
    sent = await w.say(w.alice, "one walrus-ember-301", "two", "three", "four")
    await w.message_buffer.flush()
    await w.db.checkpoint()
    assert b"walrus-ember-301" in database_bytes(w)
    await w.alice.delete(sent[0])
    assert await stored(w, w.channel.id) == ["two", "three", "four"]
    await w.env.advance_time(1.5)  # the flush loop checkpoints after a delete
    assert b"walrus-ember-301" not in database_bytes(w)
    w.env.backend.bulk_delete_messages(w.channel.id, [sent[1].id, sent[2].id])  # a moderator's purge
    await w.env.settle()
    assert await stored(w, w.channel.id) == ["four"]


async def test_disabled_channel_is_not_recorded(recap_world: World) -> None:
    w = recap_world
    await w.admin.slash(w.channel, "settings set", scope="channel", enabled=False)
    await w.say(w.alice, "not recorded")
    assert await stored(w, w.channel.id) == []


async def test_thread_deletion_removes_its_history(recap_world: World) -> None:
    w = recap_world
    thread = w.env.backend.create_thread(w.channel.id, "side", w.alice.id)
    handle = next(t for t in w.channel.threads if t.id == thread.id)
    await w.alice.send(handle, "thread words")
    assert await stored(w, thread.id) == ["thread words"]
    w.env.backend.delete_channel(thread.id)
    await w.env.settle()
    assert await stored(w, thread.id) == []


async def test_channel_deletion_removes_its_history(recap_world: World) -> None:
    w = recap_world
    other = w.guild.create_text_channel("other")
    await w.env.settle()
    await w.say(w.alice, "gone soon", channel=other)
    await w.say(w.alice, "stays")
    assert await stored(w, other.id) == ["gone soon"]
    reads_it, posts_to_it, unrelated = (await add_digest(w, other.id, w.channel.id), await add_digest(w, w.channel.id, other.id),
                                        await add_digest(w, w.channel.id, w.channel.id))
    w.env.backend.delete_channel(other.id)
    await w.env.settle()
    assert await stored(w, other.id) == []
    assert await stored(w, w.channel.id) == ["stays"]
    assert [d.id for d in await w.db.reading(digests.list_digests, w.guild.id)] == [unrelated]
    assert reads_it != posts_to_it


async def test_removed_from_server_deletes_all_its_data(recap_world: World) -> None:
    w = recap_world
    marker = "kiwi-orbit-5512"
    await w.say(w.alice, f"remember {marker}")
    await w.admin.slash(w.channel, "settings set", length="short")
    await stored(w, w.channel.id)
    await add_digest(w, w.channel.id, w.channel.id)
    w.env.backend.remove_guild(w.guild.id)  # the bot was kicked: GUILD_DELETE
    await w.env.settle()
    assert await w.db.reading(messages.count_messages, guild_id=w.guild.id) == 0
    assert await w.db.reading(digests.count_digests, w.guild.id) == 0
    assert (await w.db.reading(store.list_overrides, w.guild.id)) == {}
    assert marker.encode() not in database_bytes(w)
