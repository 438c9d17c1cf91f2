"""A shard that re-identifies (a new gateway session, not a resume) missed the events of its gap: the stored
history of its servers is no longer trusted, while the other shards' servers stay covered."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from simcord_helpers import World, recap_world  # noqa: F401

from core.coverage import Coverage
from core.jobs import Scope
from core.reading import read_conversation
from storage import messages

TIME_LIMIT_S = 180
# pytest-timeout bounds setup and test; asyncio.timeout bounds the test body where that plugin is missing.
pytestmark = pytest.mark.timeout(TIME_LIMIT_S)


@pytest.fixture
def recap_options() -> dict:
    return {"settings": {"shard_count": "2"}}  # one process runs both shards


async def test_a_shard_with_a_new_session_reads_its_servers_again(recap_world: World) -> None:
    async with asyncio.timeout(TIME_LIMIT_S):
        w = recap_world
        shard = (w.guild.id >> 22) % 2
        elsewhere = w.env.create_guild("Elsewhere", shard_id=1 - shard)
        other_channel = elsewhere.create_text_channel("general")
        carol = elsewhere.add_member(w.env.create_user("carol"))
        await w.env.settle()
        secret = "quartz-meridian-4471"
        gone = (await w.say(w.alice, f"deleted during the gap {secret}"))[0]
        await carol.send(other_channel, "a line on the other shard")
        await w.message_buffer.flush()
        coverage = w.bot.coverage
        assert coverage.covered_after(w.channel.id, guild_id=w.guild.id) < gone.id  # seen live
        other_before = coverage.covered_after(other_channel.id, guild_id=elsewhere.id)

        # The shard drops and re-identifies; Discord deletes the message meanwhile, sending no event to it.
        session = w.bot.get_shard(shard)
        await session.disconnect()
        del w.env.backend.messages[w.channel.id][gone.id]
        await w.env.advance_time(1)
        ready = asyncio.ensure_future(w.bot.wait_for("shard_ready", check=lambda shard_id: shard_id == shard))
        await session.reconnect()
        await ready  # discord.py waits for the shard's servers first (not bot work SimCord settles)
        await w.env.settle()

        assert coverage.covered_after(w.channel.id, guild_id=w.guild.id) > gone.id  # no longer trusted
        assert coverage.covered_after(other_channel.id, guild_id=elsewhere.id) == other_before  # still covered
        conversation = await read_conversation(w.bot, w.bot.get_channel(w.channel.id), Scope(), 50)
        assert all(secret not in m.text for m in conversation.messages)
        assert await w.db.reading(messages.get_message, gone.id) is None  # re-read from Discord: erased


def test_a_shard_session_drops_only_its_own_servers_backfills() -> None:
    on_0, on_1 = 4 << 22, 7 << 22  # Discord puts a server on shard (id >> 22) % count
    coverage = Coverage()
    coverage.shard_connected(0, 2)  # at start-up shards are ready before the bot: nothing is trusted yet
    assert coverage.covered_after(10, guild_id=on_0) is None
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    coverage.connected(at=start)
    since = coverage.covered_after(10, guild_id=on_0)
    coverage.extend(10, 5, guild_id=on_0)
    coverage.extend(11, 6, guild_id=on_1)
    coverage.shard_connected(0, 2, at=start + timedelta(minutes=5))
    assert coverage.covered_after(10, guild_id=on_0) > since  # its backfill predates the gap too
    assert coverage.covered_after(11, guild_id=on_1) == 6
    coverage.connected(at=start + timedelta(minutes=9))  # a whole new session: one start for every shard
    assert coverage.covered_after(10, guild_id=on_0) == coverage.covered_after(11, guild_id=on_1)
