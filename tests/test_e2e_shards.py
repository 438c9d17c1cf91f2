"""Bot processes sharing one PostgreSQL database, each running its own shards of the fake Discord.

Two real ``python -m bot run`` processes, one schema of the test PostgreSQL server: both serve their
own servers, every digest posts exactly once, and a delete seen by one process is gone for both. The
second test overlaps the shard sets (a rolling restart), so both processes think the same digest is
due: the claim in the database lets one post it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fakediscord import FakeDiscord, Member
from fakediscord.botprocess import BotProcess
from storage import digests, messages, open_database, settings
from storage.digests import DigestRecord
from test_e2e import TOKEN, Running, assert_no_pings, connect_timeout, conversation, start_bot

pytestmark = [pytest.mark.e2e, pytest.mark.embedded]

SHARDS = 2
POST_WINDOW_S = 20  # after a digest posted, how long the test watches for a second post
DIGESTS_DUE_AFTER_S = 45
DIGEST_TIMEOUT = 150


def _shard(guild_id: int) -> int:
    return (guild_id >> 22) % SHARDS


def _bot_posts(fake: FakeDiscord, channel_id: int) -> list:
    """The bot's own posts in a channel (digests), not its answers to commands."""
    return [m for m in fake.world.messages.get(channel_id, [])
            if m.author.id == fake.world.bot.id and getattr(m, "interaction_id", None) is None]


async def _digest(db, guild_id: int, source_id: int, target_id: int, owner_id: int, due: datetime) -> int:
    record = DigestRecord(guild_id=guild_id, source_id=source_id, target_id=target_id, owner_id=owner_id,
                          every="daily", at_time="09:00", timezone="UTC", length="short", style="bullets",
                          next_run_at=due, created_at=due - timedelta(hours=3))
    return await db.writing(digests.insert_digest, record)


def _processes(fake: FakeDiscord, tmp_path: Path, cache: Path, pg_url: str, shard_sets: list[str]) -> list[BotProcess]:
    # DEV_GUILD_ID empty: commands sync globally, as for a bot in many servers.
    return [start_bot(fake, tmp_path / f"p{i}", cache, f"p{i}", pg_url, SHARD_COUNT=str(SHARDS), SHARD_IDS=ids,
                      DEV_GUILD_ID="")
            for i, ids in enumerate(shard_sets)]


async def _start(fake: FakeDiscord, bots: list[BotProcess], cache: Path) -> None:
    for bot in bots:
        bot.log_path.parent.mkdir(parents=True, exist_ok=True)
        await bot.start()
    await bots[0].until(fake.wait_identified(timeout=connect_timeout(cache), count=len(bots)), what="IDENTIFY")
    await bots[0].until(fake.wait_for(lambda: bool(fake.world.global_commands), timeout=connect_timeout(cache),
                                      what="command sync"), what="command sync")


@asynccontextmanager
async def _running(fake: FakeDiscord, bots: list[BotProcess], cache: Path) -> AsyncIterator[None]:
    """The processes started and connected; at the end of a passing block each stops cleanly, having
    logged no error and pinged nobody. Whatever happens, they are killed and the fake closed."""
    try:
        await _start(fake, bots, cache)
        yield
        assert_no_pings(fake)
        for bot in bots:
            assert await bot.stop(timeout=20) == 0, bot.log_tail()
        for bot in bots:
            assert bot.logged_errors() == [], bot.log_tail()
        assert fake.errors == [], fake.errors
    finally:
        for bot in bots:
            await bot.kill()
        await fake.close()


async def _one_post_each(fake: FakeDiscord, bots: list[BotProcess], channel_ids: list[int], pg_url: str) -> None:
    for channel_id in channel_ids:
        try:
            await bots[0].until(fake.wait_for(lambda c=channel_id: bool(_bot_posts(fake, c)), timeout=DIGEST_TIMEOUT,
                                              what=f"the digest in {channel_id}"), what="a digest")
        except AssertionError as exc:
            async with open_database(pg_url) as db, db.read() as conn:
                rows = await conn.execute_fetchall("SELECT id, next_run_at, last_status, claimed_by FROM digests")
            raise AssertionError(f"{exc}\ndigests: {[tuple(r) for r in rows]}") from None
    await asyncio.sleep(POST_WINDOW_S)  # a second process posting the same digest would have done so by now
    for channel_id in channel_ids:
        assert len(_bot_posts(fake, channel_id)) == 1, [m.content[:80] for m in _bot_posts(fake, channel_id)]


async def test_two_processes_on_their_own_shards_share_one_database(pg_url: str, tmp_path: Path,
                                                                    embedded_cache_dir: Path) -> None:
    fake = await FakeDiscord(token=TOKEN).start()
    world = fake.world
    home = world.guild_id
    other = world.add_guild("Second Server", "olga", shard=(1 - _shard(home), SHARDS))
    lounge = world.add_channel("lounge", guild_id=other.id)
    olga: Member = world.members[other.owner_id]
    start = datetime.now(timezone.utc) - timedelta(hours=2)
    lobby = world.add_channel("lobby")  # everyone reads it: a digest posted in it leaks nothing
    world.seed_conversation(lobby.id, conversation(world), start=start, spacing=timedelta(minutes=3))
    world.seed_conversation(lounge.id, [(olga, "The lounge sofa arrives on Friday; Olga will sign for it."),
                                        (olga, "Olga also booked the cleaners for Saturday morning."),
                                        (olga, "Olga asks everyone to clear the lounge tables by Friday noon.")],
                            start=start, spacing=timedelta(minutes=5))
    async with open_database(pg_url) as db:
        # Due once both processes are up and have answered the commands below (each scheduler reads
        # this at start and sleeps until then).
        due = datetime.now(timezone.utc) + timedelta(seconds=DIGESTS_DUE_AFTER_S)
        await _digest(db, home, lobby.id, lobby.id, world.owner_id, due)
        await _digest(db, other.id, lounge.id, lounge.id, olga.user.id, due)
    bots = _processes(fake, tmp_path, embedded_cache_dir, pg_url, [str(_shard(home)), str(_shard(other.id))])
    async with _running(fake, bots, embedded_cache_dir):
        # Each process serves its own server: the fake sends each server's events to its shard only.
        running = [Running(fake, bot, []) for bot in bots]
        for run, invoker, channel, value in ((running[0], world.moderator, world.general, "long"),
                                             (running[1], olga, lounge, "short")):
            record = await fake.slash("settings set", {"length": value}, invoker=invoker, channel=channel)
            await run.bot.until(fake.wait_for(lambda r=record: bool(r.texts()), timeout=60, what="settings reply"),
                                what="settings reply")
            assert value in "\n".join(record.texts()).lower(), record.texts()
        # Every digest posts once, in its own server, though both processes are up when they come due.
        await _one_post_each(fake, bots, [lobby.id, lounge.id], pg_url)
        # A message one process stores, and then sees deleted, is gone from the database both read.
        posted = await fake.post_message(lounge, olga, "A secret about the sofa delivery code.")
        async with open_database(pg_url) as db:
            await bots[1].until(_until(lambda: db.reading(messages.get_message, posted.id), present=True),
                                what="the message stored")
            world.remove_message(posted.id)
            await fake.gateway.dispatch("MESSAGE_DELETE", {"id": str(posted.id), "channel_id": str(lounge.id),
                                                           "guild_id": str(other.id)})
            await bots[1].until(_until(lambda: db.reading(messages.get_message, posted.id), present=False),
                                what="the message erased")
        # Both servers' settings live in the one database, each written by its own process.
        async with open_database(pg_url) as db:
            assert (await db.reading(settings.get_settings, home))["length"] == "long"
            assert (await db.reading(settings.get_settings, other.id))["length"] == "short"


async def _until(read, *, present: bool, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await read() is not None) != present:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the message is {'missing' if present else 'still stored'} after {timeout}s")
        await asyncio.sleep(0.2)


async def test_a_digest_both_processes_think_is_due_posts_once(pg_url: str, tmp_path: Path,
                                                              embedded_cache_dir: Path) -> None:
    fake = await FakeDiscord(token=TOKEN).start()
    world = fake.world
    home = world.guild_id
    lobby = world.add_channel("lobby")  # everyone reads it: a digest posted in it leaks nothing
    world.seed_conversation(lobby.id, conversation(world), start=datetime.now(timezone.utc) - timedelta(hours=2),
                            spacing=timedelta(minutes=3))
    async with open_database(pg_url) as db:
        digest_id = await _digest(db, home, lobby.id, lobby.id, world.owner_id,
                                  datetime.now(timezone.utc) + timedelta(seconds=DIGESTS_DUE_AFTER_S))
    # A rolling restart: the new process already runs every shard while the old one still runs the first.
    bots = _processes(fake, tmp_path, embedded_cache_dir, pg_url, [str(_shard(home)), "0,1"])
    async with _running(fake, bots, embedded_cache_dir):
        await _one_post_each(fake, bots, [lobby.id], pg_url)
        async with open_database(pg_url) as db:
            record = await db.reading(digests.get_digest, digest_id)
            assert record is not None and record.last_status is not None and record.last_status.startswith("posted")
            assert record.next_run_at > datetime.now(timezone.utc)
