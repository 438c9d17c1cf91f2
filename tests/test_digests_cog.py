"""/digest commands and the digest scheduler, through SimCord with a real bot, database and model.

The scheduler's clock is SimCord's virtual clock (``SimClock``): ``env.advance_time`` moves
both the time stamped on new messages and the time the scheduler sleeps on.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import discord
import pytest
import simcord
from simcord.backend.models.channel import Overwrite
from simcord.enums import OverwriteType

from bot.client import RecapBot
from engine.prompts import LENGTHS
from cogs.digests.schedule import make_schedule, next_run
from storage import open_database
from storage import settings as settings_store
from storage import digests as store
from storage import summaries as summary_store
from storage.digests import DigestRecord

from simcord_helpers import World, allow_command, declare_model_waits, recap_world, until  # noqa: F401

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
HIDE = discord.PermissionOverwrite(view_channel=False)
SHOW = discord.PermissionOverwrite(view_channel=True, read_message_history=True)
VIEW = discord.Permissions(view_channel=True).value


@pytest.fixture
def recap_options() -> dict:
    # No history cog: its one-second flush loop would make advancing the clock by days or months
    # crawl. Digests then read Discord's history directly, which is the path after a restart anyway.
    return {"extensions": ("cogs.errors", "cogs.digests", "cogs.summaries")}






def generation_idle(world: World):
    def check() -> bool:
        metrics = world.bot.executor.metrics()
        return metrics.get("queue_depth", 0) == 0 and metrics.get("in_flight", 0) == 0
    return check


class SimClock:
    """SimCord's virtual time: ``now`` is the simulation's instant, sleeps end on ``advance_time``."""

    def __init__(self, env: simcord.Env) -> None:
        self.env = env

    def now(self) -> datetime:
        return self.env.now()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@pytest.fixture
async def world(recap_world: World) -> World:
    cog = recap_world.bot.get_cog("Digests")
    cog.clock = SimClock(recap_world.env)
    cog.wake()
    declare_model_waits(recap_world)
    await recap_world.env.settle()
    return recap_world


def cog(world: World):
    return world.bot.get_cog("Digests")


def text_of(result: simcord.InteractionResult) -> str:
    assert result.response is not None
    return result.response.content


async def advance_to(world: World, moment: datetime) -> None:
    seconds = (moment - world.env.now()).total_seconds()
    assert seconds >= 0
    await world.env.advance_time(seconds)


async def run_at(world: World, moment: datetime) -> None:
    """Advance to ``moment``, where a digest is due, and wait for that scheduler pass to finish."""
    before = cog(world).passes
    await advance_to(world, moment)
    await until(world, lambda: cog(world).passes > before)


async def add_digest(world: World, source, target, **changes) -> DigestRecord:
    """Store a digest as /digest set would (no slash round trip), and wake the scheduler."""
    now = world.env.now()
    schedule = make_schedule(changes.pop("every", "daily"), changes.pop("at", "09:00"),
                             changes.pop("tz", "UTC"), changes.pop("weekday", None), now)
    record = DigestRecord(
        guild_id=world.guild.id, source_id=source.id, target_id=target.id, owner_id=world.admin.id,
        every=schedule.every, at_time=schedule.at.strftime("%H:%M"), timezone=schedule.tz, weekday=schedule.weekday,
        length="short", style="bullets", next_run_at=next_run(schedule, now), created_at=now,
    )
    for key, value in changes.items():
        setattr(record, key, value)
    await world.db.writing(store.insert_digest, record)
    cog(world).wake()
    await world.env.settle()
    # The window starts after the creation instant; what is said from the next second on is in it.
    await world.env.advance_time(1)
    return record


def digest_posts(target: simcord.ChannelHandle) -> list[discord.Message]:
    return [m for m in target.history() if "digest** of" in m.content]


async def get(world: World, digest_id: int) -> DigestRecord:
    record = await world.db.reading(store.get_digest, digest_id)
    assert record is not None
    return record


# --- /digest set, list, remove --------------------------------------------------------------


async def test_set_creates_a_digest_and_list_shows_it(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    result = await world.admin.slash(world.channel, "digest set", source=world.channel, target=target,
                                     every="daily", at="08:30", timezone="europe/berlin")
    assert result.ephemeral
    assert "Digest #1 set" in text_of(result) and "Europe/Berlin" in text_of(result)
    record = await get(world, 1)
    assert (record.source_id, record.target_id, record.owner_id) == (world.channel.id, target.id, world.admin.id)
    assert record.next_run_at.astimezone(BERLIN).strftime("%H:%M") == "08:30"
    assert record.next_run_at > world.env.now()

    listed = await world.admin.slash(world.channel, "digest list")
    assert listed.ephemeral
    field = listed.response.embeds[0].fields[0]
    assert field.name == "#1" and "every day at 08:30 (Europe/Berlin)" in field.value


async def test_weekly_defaults_to_todays_weekday(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    await world.admin.slash(world.channel, "digest set", source=world.channel, target=target,
                            every="weekly", at="10:00", timezone="UTC")
    record = await get(world, 1)
    assert record.weekday == world.env.now().weekday()


async def test_set_rejects_bad_timezone_with_example(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    result = await world.admin.slash(world.channel, "digest set", source=world.channel, target=target,
                                     every="daily", at="08:30", timezone="Mars/Base")
    assert result.ephemeral and "Europe/Berlin" in text_of(result)
    assert await world.db.reading(store.count_digests) == 0


async def test_set_rejects_bad_time(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    result = await world.admin.slash(world.channel, "digest set", source=world.channel, target=target,
                                     every="daily", at="25:00", timezone="UTC")
    assert "00:00 to 23:59" in text_of(result)


async def test_set_needs_manage_server_at_runtime(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    # Discord hides the command from members without Manage Server; an admin may show it to anyone,
    # and the runtime check still holds, with the tree-wide handler's reply.
    allow_command(world, "digest", world.alice)
    result = await world.alice.slash(world.channel, "digest set", source=world.channel, target=target,
                                     every="daily", at="08:30", timezone="UTC")
    assert result.ephemeral and text_of(result) == "You need the Manage Server permission to use this."
    assert await world.db.reading(store.count_digests) == 0
    for command in ("digest list", "digest remove"):
        options = {"id": 1} if command == "digest remove" else {}
        refused = await world.alice.slash(world.channel, command, **options)
        assert refused.ephemeral and text_of(refused) == "You need the Manage Server permission to use this.", command


async def test_set_refuses_a_leaking_target_and_names_who(world: World) -> None:
    staff = world.guild.create_role("Staff")
    secret = world.guild.create_text_channel(
        "staff", overwrites={world.guild.default_role: HIDE, staff: SHOW, world.admin: SHOW, world.env.bot.user: SHOW}
    )
    result = await world.admin.slash(world.channel, "digest set", source=secret, target=world.channel,
                                     every="daily", at="08:30", timezone="UTC")
    text = text_of(result)
    assert result.ephemeral and "won't post" in text and "@everyone" in text
    assert await world.db.reading(store.count_digests) == 0


async def test_set_refuses_a_source_the_member_cannot_read(world: World) -> None:
    hidden = world.guild.create_text_channel("hidden", overwrites={world.admin: discord.PermissionOverwrite(read_message_history=False)})
    target = world.guild.create_text_channel("digests")
    result = await world.admin.slash(world.channel, "digest set", source=hidden, target=target,
                                     every="daily", at="08:30", timezone="UTC")
    assert "whose history you can read" in text_of(result)


async def test_remove_by_id_and_unknown_id(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    record = await add_digest(world, world.channel, target)
    choices = await world.admin.autocomplete(world.channel, "digest remove", "id", "")
    assert [c["value"] for c in choices] == [record.id]
    missing = await world.admin.slash(world.channel, "digest remove", id=999)
    assert "no digest #999" in text_of(missing)
    removed = await world.admin.slash(world.channel, "digest remove", id=record.id)
    assert f"Digest #{record.id} removed" in text_of(removed)
    assert await world.db.reading(store.count_digests) == 0


async def test_timezone_autocomplete(world: World) -> None:
    choices = await world.admin.autocomplete(world.channel, "digest set", "timezone", "berl")
    assert "Europe/Berlin" in [c["value"] for c in choices]


# --- the scheduler ---------------------------------------------------------------------------


async def test_due_digest_posts_a_summary_like_summarize(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    record = await add_digest(world, world.channel, target, at="09:00")
    await world.say(world.alice, "We should ship the release on Friday.", "I'll write the changelog.")
    await world.say(world.bob, "Tests are green, ready to go.")
    await run_at(world, record.next_run_at)
    posts = digest_posts(target)
    assert len(posts) == 1, (await get(world, record.id)).last_status
    post = posts[0]
    assert post.content.startswith("**Daily digest** of") and "3 messages" in post.content
    details = post.embeds[-1] if len(post.embeds) > 1 else post.embeds[0]
    all_fields = {f.name for e in post.embeds for f in e.fields}
    assert {"Participants", "Time range", "Messages"} <= all_fields
    assert details is not None
    stored = await get(world, record.id)
    assert stored.last_run_at == record.next_run_at and stored.next_run_at == record.next_run_at + timedelta(days=1)
    assert stored.last_status == "posted (3 messages)"
    # The summary is kept for /summaries and its buttons, requested by the digest's owner.
    kept = await world.db.reading(summary_store.list_summaries, world.channel.id)
    assert len(kept) == 1 and kept[0].requester_id == world.admin.id
    buttons = [c for row in target.history()[-1].components for c in row.children]
    assert any(getattr(b, "custom_id", "") == f"recap:shorter:{kept[0].id}" for b in buttons)


async def test_digest_runs_at_background_priority(world: World) -> None:
    seen: list[int] = []
    executor = world.bot.executor
    original = executor.submit  # already declared as an external wait by the fixture

    async def recording_submit(request):
        seen.append(request.priority)
        return await original(request)

    executor.submit = recording_submit
    target = world.guild.create_text_channel("digests")
    record = await add_digest(world, world.channel, target)
    await world.say(world.alice, "hello there", "what's up")
    await run_at(world, record.next_run_at)
    assert seen and set(seen) == {1}


async def test_digest_length_decides_max_new_tokens_after_admins_change_sampling(world: World) -> None:
    seen: list[int] = []
    executor = world.bot.executor
    original = executor.submit

    async def recording_submit(request):
        seen.append(request.settings.max_new_tokens)
        return await original(request)

    executor.submit = recording_submit
    await world.db.writing(settings_store.set_setting, world.guild.id, "temperature", 0.5)
    await world.db.writing(settings_store.set_setting, world.guild.id, "length", "long")
    target = world.guild.create_text_channel("digests")
    record = await add_digest(world, world.channel, target)  # length "short"
    await world.say(world.alice, "We should ship the release on Friday.", "I'll write the changelog.")
    await run_at(world, record.next_run_at)
    assert seen and set(seen) == {LENGTHS["short"].max_new_tokens}


async def test_empty_window_posts_nothing(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    record = await add_digest(world, world.channel, target)
    await advance_to(world, record.next_run_at)
    assert digest_posts(target) == []
    stored = await get(world, record.id)
    assert stored.last_status == "nothing new to summarize"
    assert stored.next_run_at == record.next_run_at + timedelta(days=1)


async def test_only_the_window_since_the_last_run_is_read(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    record = await add_digest(world, world.channel, target)
    await world.say(world.alice, "first day message one", "first day message two")
    await run_at(world, record.next_run_at)
    await world.say(world.bob, "second day only")
    await run_at(world, record.next_run_at + timedelta(days=1))
    posts = digest_posts(target)
    assert len(posts) == 2, (await get(world, record.id)).last_status
    assert "2 messages" in posts[0].content and "1 message," in posts[1].content


class SimClockBot(RecapBot):
    """A fresh bot instance whose digest scheduler uses SimCord's clock from its very first pass."""

    def __init__(self, env: simcord.Env, **kwargs) -> None:
        super().__init__(**kwargs)
        self.env = env

    async def setup_hook(self) -> None:
        await super().setup_hook()
        # The scheduler task waits for READY, which comes after setup_hook: no pass used the real clock.
        self.get_cog("Digests").clock = SimClock(self.env)


async def restart(world: World, db) -> None:
    """A new bot instance on its own connection to the same database file."""
    old = world.bot
    fresh = SimClockBot(world.env, settings=old.settings, db=db, executor=old.executor,
                        summarizer=old.summarizer, extensions=old.extension_names)
    await world.env.restart_bot(fresh)
    world.bot = fresh


async def test_downtime_runs_a_missed_digest_once(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    record = await add_digest(world, world.channel, target)
    await world.say(world.alice, "long before: beyond the catch-up window")
    # The bot is down (its scheduler stopped) across four scheduled runs, then a new instance starts.
    await world.bot.unload_extension("cogs.digests")
    await world.env.advance_time(timedelta(days=3).total_seconds())
    await world.say(world.bob, "said while the bot was down")
    await world.env.advance_time(timedelta(days=1, hours=2).total_seconds())
    assert digest_posts(target) == []
    async with open_database(world.bot.settings.database_path) as db:
        await restart(world, db)
        await until(world, lambda: len(digest_posts(target)) >= 1)
        await world.env.advance_time(60)
        posts = digest_posts(target)
        assert len(posts) == 1  # once, not once per missed day
        # At most three days back (CATCH_UP_PERIODS), so only the message from the outage.
        assert "1 message," in posts[0].content
        stored = await get(world, record.id)
        assert stored.last_status == "posted (1 message)"
        assert world.env.now() < stored.next_run_at < world.env.now() + timedelta(days=1)


async def test_schedule_survives_a_restart_from_the_database(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    record = await add_digest(world, world.channel, target)
    async with open_database(world.bot.settings.database_path) as db:
        await restart(world, db)
        await world.say(world.alice, "after restart")
        await run_at(world, record.next_run_at)
        assert len(digest_posts(target)) == 1


async def test_spring_forward_runs_once_at_shifted_time(world: World) -> None:
    # Europe/Berlin, 2026-03-29: 02:00 -> 03:00, so 02:30 does not exist that day.
    target = world.guild.create_text_channel("digests")
    await advance_to(world, datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    record = await add_digest(world, world.channel, target, at="02:30", tz="Europe/Berlin")
    assert record.next_run_at == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST
    await world.say(world.alice, "saturday chatter")
    await advance_to(world, datetime(2026, 3, 29, 1, 29, tzinfo=UTC))
    assert digest_posts(target) == []
    await run_at(world, datetime(2026, 3, 29, 1, 30, tzinfo=UTC))
    assert len(digest_posts(target)) == 1
    await world.say(world.alice, "sunday chatter")
    await run_at(world, datetime(2026, 3, 30, 0, 31, tzinfo=UTC))  # 02:31 CEST on Monday
    assert len(digest_posts(target)) == 2
    stored = await get(world, record.id)
    assert stored.next_run_at == datetime(2026, 3, 31, 0, 30, tzinfo=UTC)


async def test_fall_back_runs_once(world: World) -> None:
    # Australia/Sydney, 2026-04-05: 03:00 AEDT -> 02:00 AEST, so 02:30 happens twice that day.
    # (A southern zone keeps the virtual clock's trip from 2026-01-01 short.)
    target = world.guild.create_text_channel("digests")
    await advance_to(world, datetime(2026, 4, 4, 0, 0, tzinfo=UTC))  # 11:00 on Saturday in Sydney
    record = await add_digest(world, world.channel, target, at="02:30", tz="Australia/Sydney")
    first = datetime(2026, 4, 4, 15, 30, tzinfo=UTC)  # 02:30 AEDT (+11), the first of the two
    assert record.next_run_at == first
    await world.say(world.alice, "saturday chatter")
    await run_at(world, first)
    assert len(digest_posts(target)) == 1
    await world.say(world.alice, "between the two half past twos")
    await advance_to(world, datetime(2026, 4, 4, 16, 45, tzinfo=UTC))  # past the second 02:30 (AEST, +10)
    assert len(digest_posts(target)) == 1
    stored = await get(world, record.id)
    assert stored.next_run_at == datetime(2026, 4, 5, 16, 30, tzinfo=UTC)  # 02:30 AEST on Monday


async def test_permission_change_between_runs_skips_and_tells_the_owner(world: World) -> None:
    staff = world.guild.create_role("Staff")
    me = world.env.bot.user
    # The owner can read the source, as /digest set requires (a run checks that too).
    secret = world.guild.create_text_channel("staff", overwrites={world.guild.default_role: HIDE, staff: SHOW, me: SHOW,
                                                                  world.admin: SHOW})
    target = world.guild.create_text_channel("staff-digest", overwrites={world.guild.default_role: HIDE, staff: SHOW, me: SHOW})
    record = await add_digest(world, secret, target)
    # Someone opens the target to everyone after the digest was set up.
    world.env.backend.delete_overwrite(target.id, world.guild.id)
    await world.env.settle()
    await advance_to(world, record.next_run_at)
    assert digest_posts(target) == []
    stored = await get(world, record.id)
    assert stored.last_status.startswith("skipped:") and "@everyone" in stored.last_status
    assert stored.next_run_at == record.next_run_at + timedelta(days=1)
    assert stored.last_run_at is None  # the window is kept for when it is fixed
    dm = world.admin.user.dm_channel.last_message
    assert dm is not None and f"Digest #{record.id} was skipped" in dm.content


async def test_owner_with_closed_dms_is_told_in_the_target_without_details(world: World) -> None:
    staff = world.guild.create_role("Staff")
    me = world.env.bot.user
    # The owner can read the source, as /digest set requires (a run checks that too).
    secret = world.guild.create_text_channel("staff", overwrites={world.guild.default_role: HIDE, staff: SHOW, me: SHOW,
                                                                  world.admin: SHOW})
    target = world.guild.create_text_channel("staff-digest", overwrites={world.guild.default_role: HIDE, staff: SHOW, me: SHOW})
    record = await add_digest(world, secret, target)
    world.env.backend.delete_overwrite(target.id, world.guild.id)  # the target is opened to everyone
    world.env.inject_error("POST", "/channels/*/messages", status=403, code=50007,
                           message="Cannot send messages to this user", times=1)  # the DM is refused
    await world.env.settle()
    await run_at(world, record.next_run_at)
    notice = target.last_message
    assert notice is not None and f"digest #{record.id} was skipped" in notice.content
    assert "staff" not in notice.content.replace("staff-digest", "") and "@everyone" not in notice.content


async def test_bot_losing_send_permission_skips(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    record = await add_digest(world, world.channel, target)
    me = world.env.bot.user.id
    world.env.backend.set_overwrite(
        target.id, Overwrite(target_id=me, type=OverwriteType.MEMBER, allow=0,
                             deny=discord.Permissions(send_messages=True).value)
    )
    await world.say(world.alice, "anyone there?")
    await advance_to(world, record.next_run_at)
    stored = await get(world, record.id)
    assert "can't post" in stored.last_status
    assert world.admin.user.dm_channel.last_message is not None


# The history cog erases a deleted channel whole (storage.erasure), its digests included.
@pytest.mark.parametrize("recap_options", [{"extensions": ("cogs.errors", "cogs.history", "cogs.digests", "cogs.summaries")}])
async def test_deleting_the_source_channel_removes_its_digests(world: World) -> None:
    source = world.guild.create_text_channel("temp")
    target = world.guild.create_text_channel("digests")
    await add_digest(world, source, target)
    await world.env.bot.get_channel(source.id).delete()
    await world.env.settle()
    assert await world.db.reading(store.count_digests) == 0


# settle_timeout below the one-minute retry: SimCord treats a sleep shorter than it as work to wait for.
@pytest.mark.parametrize("recap_options", [{"extensions": ("cogs.errors", "cogs.digests", "cogs.summaries"),
                                            "start_executor": False, "settle_timeout": 20.0}])
async def test_a_digest_due_while_the_model_loads_waits_for_it(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    record = await add_digest(world, world.channel, target)
    await world.say(world.alice, "morning everyone", "standup in five")
    await run_at(world, record.next_run_at)
    stored = await get(world, record.id)
    assert stored.last_status == "waiting: the model is still loading"
    assert stored.next_run_at == record.next_run_at + timedelta(minutes=1)
    await world.bot.executor.start()
    await run_at(world, stored.next_run_at)
    posts = digest_posts(target)
    assert len(posts) == 1 and "2 messages" in posts[0].content


async def test_owner_losing_read_access_skips_every_later_run(world: World) -> None:
    staff = world.guild.create_role("Staff")
    me = world.env.bot.user
    source = world.guild.create_text_channel("staff", overwrites={world.guild.default_role: HIDE, staff: SHOW,
                                                                  world.admin: SHOW, me: SHOW})
    target = world.guild.create_text_channel("staff-digest", overwrites={world.guild.default_role: HIDE, staff: SHOW,
                                                                         world.admin: SHOW, me: SHOW})
    record = await add_digest(world, source, target)
    # The owner loses the source and the target alike, so nobody who sees the target is exposed;
    # the digest must still stop: it reads the source on the owner's behalf.
    world.env.backend.set_overwrite(source.id, Overwrite(target_id=world.admin.id, type=OverwriteType.MEMBER, allow=0, deny=VIEW))
    world.env.backend.set_overwrite(target.id, Overwrite(target_id=world.admin.id, type=OverwriteType.MEMBER, allow=0, deny=VIEW))
    await world.env.settle()
    await world.say(world.bob, "staff only news")  # said elsewhere; the window of the source is empty anyway
    await run_at(world, record.next_run_at)
    stored = await get(world, record.id)
    assert stored.last_status.startswith("skipped:") and "set it up" in stored.last_status
    assert digest_posts(target) == []


async def test_owner_who_left_the_server_gets_no_more_digests_posted(world: World) -> None:
    target = world.guild.create_text_channel("digests")
    record = await add_digest(world, world.channel, target)
    world.guild.remove_member(world.admin)
    await world.env.settle()
    await world.say(world.alice, "news after the owner left")
    await run_at(world, record.next_run_at)
    assert digest_posts(target) == []
    assert (await get(world, record.id)).last_status.startswith("skipped:")


async def test_digest_id_autocomplete_names_no_channel_the_member_cannot_see(world: World) -> None:
    hidden = world.guild.create_text_channel("secret-plans", overwrites={world.guild.default_role: HIDE,
                                                                         world.env.bot.user: SHOW})
    target = world.guild.create_text_channel("digests")
    await add_digest(world, hidden, target)
    choices = await world.admin.autocomplete(world.channel, "digest remove", "id", "")
    assert len(choices) == 1 and "secret-plans" not in choices[0]["name"]
    allow_command(world, "digest", world.alice)  # shown to her by an admin: autocomplete still lists nothing
    from_member = await world.alice.autocomplete(world.channel, "digest remove", "id", "")
    assert from_member == []  # no Manage Server: no list at all


async def test_a_process_runs_only_the_digests_of_its_own_shards(world: World) -> None:
    """With several bot processes, each runs the digests of the servers on its shards and leaves the rest."""
    own_shard = (world.guild.id >> 22) % 2
    world.bot.shard_scope = lambda: (2, (own_shard,))  # as if SHARD_COUNT=2, SHARD_IDS=<this server's shard>
    target = world.guild.create_text_channel("digests")
    mine = await add_digest(world, world.channel, target)
    foreign_guild = ((world.guild.id >> 22) + 1) << 22  # the next shard: another process's server
    foreign = await add_digest(world, world.channel, target, guild_id=foreign_guild)
    await run_at(world, mine.next_run_at)
    assert (await get(world, mine.id)).last_status == "nothing new to summarize"
    untouched = await get(world, foreign.id)
    assert untouched.last_status is None and untouched.next_run_at == foreign.next_run_at  # not "no longer in that server"
