"""/privacy optout, optin and forget: what is stored, and what is left in the database file."""

from __future__ import annotations

from simcord_helpers import World, database_bytes, recap_options, recap_world, reply_text  # noqa: F401

from storage import messages, privacy


async def flush(w: World) -> None:
    await w.message_buffer.flush()


async def test_optout_deletes_stored_messages_and_stops_storing(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "alice secret one", "alice secret two")
    await w.say(w.bob, "bob says hi")
    await flush(w)
    assert await w.db.reading(messages.count_messages, guild_id=w.guild.id) == 3

    result = await w.alice.slash(w.channel, "privacy optout")
    assert result.ephemeral
    assert "deleted 2 stored messages" in reply_text(result)
    assert await w.db.reading(privacy.is_opted_out, w.alice.id)

    await w.say(w.alice, "after opting out")
    await flush(w)
    rows = await w.db.reading(messages.last_messages, w.channel.id, 10)
    assert [r.content for r in rows] == ["bob says hi"]


async def test_optin_stores_again(recap_world: World) -> None:
    w = recap_world
    await w.alice.slash(w.channel, "privacy optout")
    result = await w.alice.slash(w.channel, "privacy optin")
    assert "opted in again" in reply_text(result) and result.ephemeral
    await w.say(w.alice, "back again")
    await flush(w)
    rows = await w.db.reading(messages.last_messages, w.channel.id, 10)
    assert [r.content for r in rows] == ["back again"]
    again = await w.alice.slash(w.channel, "privacy optin")
    assert "weren't opted out" in reply_text(again)


async def test_forget_leaves_no_trace_in_the_database_bytes(recap_world: World) -> None:
    w = recap_world
    marker = "zebra-quartz-7781"
    await w.say(w.alice, f"my {marker} text")
    await w.say(w.bob, "unrelated words")
    await flush(w)
    await w.db.checkpoint()
    assert marker.encode() in database_bytes(w)

    result = await w.alice.slash(w.channel, "privacy forget")
    assert result.ephemeral
    assert "deleted 1 stored message" in reply_text(result)
    assert marker.encode() not in database_bytes(w)
    rows = await w.db.reading(messages.last_messages, w.channel.id, 10)
    assert [r.content for r in rows] == ["unrelated words"]


async def test_forget_succeeds_when_the_checkpoint_must_wait_and_the_bytes_go_later(recap_world: World) -> None:
    w = recap_world
    marker = "otter-basalt-2290"
    await w.say(w.alice, f"my {marker} text")
    await flush(w)
    await w.db.checkpoint()
    async with w.db.read(snapshot=True) as reader:
        await reader.execute_fetchall("SELECT count(*) FROM messages")  # a busy reader: the checkpoint cannot finish
        result = await w.alice.slash(w.channel, "privacy forget")
        assert "deleted 1 stored message" in reply_text(result)
        assert w.bot.erasure.pending
    await w.env.advance_time(1.5)  # the history cog's loop retries the checkpoint
    assert not w.bot.erasure.pending
    assert marker.encode() not in database_bytes(w)
