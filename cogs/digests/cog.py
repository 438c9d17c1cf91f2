"""Scheduled digests: ``/digest set|list|remove`` and the scheduler that posts them.

The scheduler sleeps until the earliest ``next_run_at`` in the database and is
woken early when digests change; there is no polling. Each run re-checks that
the bot can still read the source and post in the target and that nobody who
can see the target is unable to read the source (the no-leak rule), before
generating and again right before posting. A run that cannot go ahead is
skipped and its owner is told why.

Digest summaries go through the executor at background priority (1), so
interactive ``/summarize`` requests run first.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal

import discord
from discord import app_commands
from discord.ext import commands

from engine.generation import GenerationError, Overloaded
from .schedule import (
    Clock,
    RunPlan,
    Schedule,
    ScheduleError,
    SystemClock,
    make_schedule,
    next_run,
    parse_at,
    plan_run,
)
from engine.prompts import LENGTH, STYLE
from engine.summarizer import SummaryOptions
from storage import digests as store
from storage.digests import DigestRecord
from storage.errors import StorageError

from core.channel_names import Readers
from core.checks import can_read, manage_guild_only, manages_guild
from core.options import choices_of
from core.flow import generation_settings, load_settings, store_summary
from core.jobs import SummaryJob, SummaryOutcome
from core.mentions import NO_PINGS
from core.jobs import Scope
from core.reading import read_conversation
from core.render import ReplyContext, build_summary_messages
from core.replies import describe_error
from core.visibility import bot_access, describe_leaks, find_leaks, resolve_member

if TYPE_CHECKING:
    from bot.client import RecapBot

log = logging.getLogger(__name__)

# A run refused by a busy executor is retried this soon (within its window).
BUSY_RETRY = timedelta(minutes=10)
# With no digests at all the loop still looks again this often (wake() normally comes first).
IDLE_SLEEP = timedelta(hours=6)
STARTUP_RETRY = timedelta(minutes=1)
# A run is claimed in the database for this long: processes sharing it never both post one digest,
# and the run of a process that died mid-way is retried once the claim lapses.
CLAIM_FOR = timedelta(minutes=30)
MIN_SLEEP_S = 1.0
# Digests run side by side at most this many at once (they still queue behind interactive work).
MAX_PARALLEL_RUNS = 4

WeekdayChoice = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

SourceChannel = discord.TextChannel | discord.Thread | discord.VoiceChannel


def schedule_of(record: DigestRecord) -> Schedule:
    return Schedule(record.every, parse_at(record.at_time), record.timezone, record.weekday)  # type: ignore[arg-type]


def _messages(count: int) -> str:
    return f"{count:,} message" + ("" if count == 1 else "s")


def _fmt(moment: datetime | None, style: str = "f") -> str:
    return discord.utils.format_dt(moment, style) if moment else "never"


@manage_guild_only()
class DigestsCog(commands.GroupCog, name="Digests", group_name="digest",
                 group_description="Scheduled summaries of a channel, posted in another channel"):
    """Schedules digests and runs them."""

    def __init__(self, bot: "RecapBot", clock: Clock | None = None) -> None:
        self.bot = bot
        self.clock: Clock = clock or SystemClock()
        self._task: asyncio.Task[None] | None = None
        self._nap: asyncio.Task[None] | None = None  # the current sleep; cancelled to wake early
        self._changed = False  # set by wake(): re-read the table before sleeping again
        self._runs = asyncio.Semaphore(MAX_PARALLEL_RUNS)
        self.passes = 0  # scheduler passes done (tests and /status can watch it move)
        super().__init__()

    # --- lifecycle -------------------------------------------------------------------------

    async def cog_load(self) -> None:
        self._task = asyncio.create_task(self._scheduler(), name="digest-scheduler")
        self.bot.services.digest_wake.provide(self.wake)

    async def cog_unload(self) -> None:
        self.bot.services.digest_wake.withdraw(self.wake)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def wake(self) -> None:
        """Digests changed: recompute the earliest run now instead of at the old wake-up time."""
        self._changed = True
        if self._nap is not None:
            self._nap.cancel()

    async def _scheduler(self) -> None:
        await self.bot.wait_until_ready()
        while True:
            self._changed = False  # before reading, so a change made during this pass is not lost
            try:
                now = self.clock.now()
                shards = self.bot.shard_scope()  # other bot processes run the other shards' digests
                due = await self.bot.db.reading(store.due_digests, now, shards=shards)
                if due:
                    await asyncio.gather(*(self._run_guarded(record, now) for record in due))
                wake_at = await self.bot.db.reading(store.earliest_next_run, shards=shards)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database failing must not kill the scheduler; try again a little later.
                log.exception("digest scheduler pass failed")
                wake_at = self.clock.now() + BUSY_RETRY
            self.passes += 1
            await self._sleep_until(wake_at)

    async def _sleep_until(self, wake_at: datetime | None) -> None:
        """Sleep until ``wake_at`` (None: no digests, sleep long) unless ``wake()`` interrupts."""
        if self._changed:
            return
        seconds = IDLE_SLEEP.total_seconds() if wake_at is None else (wake_at - self.clock.now()).total_seconds()
        # A digest still due after its pass (its database write failed) must not spin the loop.
        seconds = max(seconds, MIN_SLEEP_S)
        self._nap = asyncio.create_task(self.clock.sleep(seconds), name="digest-scheduler-sleep")
        try:
            await asyncio.wait([self._nap])
        finally:
            self._nap.cancel()
            self._nap = None

    async def _run_guarded(self, record: DigestRecord, now: datetime) -> None:
        async with self._runs:
            try:
                claimed = await self.bot.db.writing(store.claim_digest, record.id, due_at=record.next_run_at,
                                                    now=now, until=now + CLAIM_FOR)
            except StorageError:
                log.warning("digest %s: could not claim its run; the next pass tries again", record.id)
                return
            if not claimed:  # another bot process sharing the database runs it
                log.debug("digest %s is being run by another process", record.id)
                return
            try:
                await self.run_digest(record, now)
            except asyncio.CancelledError:
                # Shutting down mid-run: hand the run back at once, not when the claim lapses.
                await asyncio.shield(self._unclaim(record))
                raise
            except Exception:
                log.exception("digest %s failed", record.id)
                # Never leave a failed digest due: that would spin the loop. Keep its window for next time.
                await self.bot.db.writing(
                    store.reschedule, record.id, next_run(schedule_of(record), now), "failed: internal error"
                )

    async def _unclaim(self, record: DigestRecord) -> None:
        try:
            await self.bot.db.writing(store.release_digest, record.id)
        except Exception:  # the claim lapses by itself
            log.warning("digest %s: could not hand its run back", record.id)

    # --- one run ---------------------------------------------------------------------------

    async def run_digest(self, record: DigestRecord, now: datetime) -> str:
        """Run one due digest at ``now``; returns the status stored for it."""
        assert record.id is not None and record.created_at is not None
        plan = plan_run(schedule_of(record), record.next_run_at, record.last_run_at, record.created_at, now)
        if not self.bot.executor.ready:
            # Right after a start the model may still be loading: try again soon, keeping the window.
            await self.bot.db.writing(store.reschedule, record.id, min(now + STARTUP_RETRY, plan.next_run_at),
                                      "waiting: the model is still loading")
            return "waiting"
        problem, source, target = await self._check_run(record)
        if problem is not None:
            return await self._skip(record, plan, target, problem)
        assert source is not None and target is not None
        resolved = await load_settings(self.bot, source)
        if not resolved["enabled"]:
            status = f"skipped: summaries are turned off in {source.mention}"  # a mention: shown per viewer
            await self.bot.db.writing(store.reschedule, record.id, plan.next_run_at, status)
            return status
        try:
            posted = await post_digest(self.bot, record, source, target, plan, resolved,
                                       recheck=functools.partial(self._check_run, record))
        except DigestSkipped as skipped:  # access or overwrites changed while the summary was generated
            return await self._skip(record, plan, target, skipped.problem)
        except Overloaded:
            retry_at = min(now + BUSY_RETRY, plan.next_run_at)
            await self.bot.db.writing(store.reschedule, record.id, retry_at, "waiting: the summarizer was busy")
            return "waiting"
        except GenerationError as exc:
            status = f"failed: {exc.user_message}"
            await self.bot.db.writing(store.reschedule, record.id, plan.next_run_at, status)
            await self._tell_owner(record, target, f"Digest #{record.id} could not be made: {exc.user_message}")
            return status
        status = f"posted ({_messages(posted)})" if posted else "nothing new to summarize"
        await self.bot.db.writing(
            store.record_run, record.id, ran_until=plan.window_end, next_run_at=plan.next_run_at, status=status
        )
        return status

    async def _skip(self, record: DigestRecord, plan: RunPlan, target: Any, problem: str) -> str:
        """Skip this run, keeping its window for the next, and tell the owner why; returns the stored status."""
        status = f"skipped: {problem}"
        await self.bot.db.writing(store.reschedule, record.id, plan.next_run_at, status)
        await self._tell_owner(record, target, f"Digest #{record.id} was skipped: {problem}")
        return status

    async def _check_run(self, record: DigestRecord) -> tuple[str | None, Any, Any]:
        """(why it cannot run, source, target); the first is None when all is well."""
        guild = self.bot.get_guild(record.guild_id)
        if guild is None:
            return "I'm no longer in that server (or it is unavailable).", None, None
        source = guild.get_channel_or_thread(record.source_id) or await _fetch_channel(guild, record.source_id)
        target = guild.get_channel(record.target_id)
        if source is None or not isinstance(target, discord.TextChannel):
            return "its source or target channel no longer exists.", source, target
        # The digest reads the source for its owner: they must still be able to, every run.
        owner = await resolve_member(guild, record.owner_id)
        if owner is None or not await can_read(owner, source):
            return f"the member who set it up can no longer read the history of {source.mention}.", source, target
        access = await bot_access(guild.me, source, target)
        if not access.can_read_source:
            return f"I can't read the history of {source.mention}.", source, target
        if not access.can_post_target:
            return f"I can't post embeds in {target.mention}.", source, target
        leaks = await find_leaks(source, target)
        if leaks:
            return (
                f"{describe_leaks(leaks)} can see {target.mention} but can't read {source.mention}, "
                "so posting there would leak it.",
                source,
                target,
            )
        return None, source, target

    async def _tell_owner(self, record: DigestRecord, target: Any, text: str) -> None:
        """DM the owner; when DMs are closed, say it in the target if the bot may post there."""
        text += "\nFix it, or remove the digest with `/digest remove`."
        try:
            user = self.bot.get_user(record.owner_id) or await self.bot.fetch_user(record.owner_id)
            await user.send(text)
            return
        except (discord.Forbidden, discord.NotFound, discord.HTTPException):
            pass
        if isinstance(target, discord.TextChannel) and target.guild.me is not None:
            perms = target.permissions_for(target.guild.me)
            if perms.view_channel and perms.send_messages:
                # Everyone in the target reads this, so it names no source and no reason (that could leak).
                # The owner is named with a mention that does not ping: the bot never pings anyone.
                notice = (f"<@{record.owner_id}>: digest #{record.id} was skipped and I couldn't DM you. "
                          "See `/digest list` for why.")
                try:
                    await target.send(notice, allowed_mentions=NO_PINGS)
                    return
                except discord.HTTPException:
                    pass
        log.warning("could not tell the owner of digest %s: %s", record.id, text)

    # --- commands --------------------------------------------------------------------------

    @app_commands.command(name="set")
    @app_commands.describe(
        source="The channel or thread to summarize",
        target="The channel to post the digest in",
        every="How often",
        at="Local time of day, 24-hour HH:MM (e.g. 08:30)",
        timezone="IANA time zone, e.g. Europe/Berlin or America/New_York",
        length="Summary length",
        style="Summary format",
        weekday="Weekly only: the day to post (default: today's weekday)",
    )
    @app_commands.choices(length=choices_of(LENGTH), style=choices_of(STYLE))
    async def digest_set(
        self,
        interaction: discord.Interaction,
        source: SourceChannel,
        target: discord.TextChannel,
        every: Literal["daily", "weekly"],
        at: str,
        timezone: str,
        length: str = LENGTH.default,
        style: str = "bullets",  # a digest reads best as a list
        weekday: WeekdayChoice | None = None,
    ) -> None:
        """Post a summary of a channel on a schedule."""
        member, guild = interaction.user, interaction.guild
        assert isinstance(member, discord.Member) and guild is not None
        now = self.clock.now()
        try:
            schedule = make_schedule(every, at, timezone, weekday, now)
        except ScheduleError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        # The leak check may fetch members from Discord: acknowledge first, answer by editing.
        await interaction.response.defer(ephemeral=True, thinking=True)
        problem = await setup_problem(member, guild.me, source, target)
        if problem is not None:
            await interaction.edit_original_response(content=problem)
            return
        record = DigestRecord(
            guild_id=guild.id, source_id=source.id, target_id=target.id, owner_id=member.id,
            every=schedule.every, at_time=schedule.at.strftime("%H:%M"), timezone=schedule.tz,
            weekday=schedule.weekday, length=length, style=style,
            next_run_at=next_run(schedule, now), created_at=now,
        )
        try:
            digest_id = await self.bot.db.writing(store.insert_digest, record)
        except StorageError as exc:
            await interaction.edit_original_response(content=describe_error(exc).text)  # no database internals
            return
        self.wake()
        await interaction.edit_original_response(
            content=f"Digest #{digest_id} set: a {length} {style.replace('_', ' ')} summary of {source.mention} "
            f"in {target.mention}, {schedule.describe()}. First run {_fmt(record.next_run_at)} "
            f"({_fmt(record.next_run_at, 'R')}). Days with no messages post nothing."
        )

    @app_commands.command(name="list")
    async def digest_list(self, interaction: discord.Interaction) -> None:
        """Show this server's digests."""
        assert interaction.guild is not None
        records = await self.bot.db.reading(store.list_digests, interaction.guild.id)
        if not records:
            await interaction.response.send_message("This server has no digests. Add one with `/digest set`.", ephemeral=True)
            return
        embed = discord.Embed(title="Digests", colour=discord.Colour.blurple())
        for record in records[:25]:
            embed.add_field(name=f"#{record.id}", value=_describe(record), inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="remove")
    @app_commands.describe(digest_id="The digest's number, from /digest list")
    @app_commands.rename(digest_id="id")
    async def digest_remove(self, interaction: discord.Interaction, digest_id: int) -> None:
        """Stop a digest."""
        assert interaction.guild is not None
        if not 0 < digest_id < 2**63 or not await self.bot.db.writing(store.delete_digest, digest_id, interaction.guild.id):
            await interaction.response.send_message(
                f"This server has no digest #{digest_id}. See `/digest list` for the numbers.", ephemeral=True
            )
            return
        self.wake()
        await interaction.response.send_message(f"Digest #{digest_id} removed.", ephemeral=True)

    @digest_remove.autocomplete("digest_id")
    async def _digest_id_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[int]]:
        # Autocomplete skips the command's checks: the Manage Server rule is applied here too.
        member = interaction.user
        if not manages_guild(interaction) or not isinstance(member, discord.Member):
            return []
        records = await self.bot.db.reading(store.list_digests, interaction.guild.id)
        choices = []
        for record in records:
            label = f"#{record.id}: {_channel_name(member, record.source_id)} → " \
                    f"{_channel_name(member, record.target_id)}, {schedule_of(record).describe()}"
            if current.strip().lstrip("#") in str(record.id) or current.lower() in label.lower():
                choices.append(app_commands.Choice(name=label[:100], value=record.id))
        return choices[:25]

    @digest_set.autocomplete("timezone")
    async def _timezone_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=name, value=name) for name in _timezones_matching(current)]

    # --- keeping the table in step with Discord -------------------------------------------

    # A deleted channel's or a left server's digests are erased with the rest of its data by the history
    # cog (storage.erasure), which then calls ``wake`` through ``bot.services.digest_wake``.


def window_scope(plan: RunPlan) -> Scope:
    """Messages in [window_start, window_end): each run starts where the last one stopped, to the millisecond.

    ``Scope.after`` excludes its whole millisecond, so it is set one millisecond early; ``before``
    excludes the end's millisecond, which the next run then includes.
    """
    return Scope(after=plan.window_start - timedelta(milliseconds=1), before=plan.window_end)


class DigestSkipped(Exception):
    """Found just before posting: the digest may no longer be posted (``problem`` says why, for its owner)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


Recheck = Callable[[], Awaitable[tuple[str | None, Any, Any]]]  # DigestsCog._check_run for one digest


async def post_digest(bot: "RecapBot", record: DigestRecord, source: Any, target: discord.TextChannel,
                      plan: RunPlan, resolved: Any, recheck: Recheck) -> int:
    """Summarize the window and post it in ``target``; returns the messages read (0: nothing posted).

    ``recheck`` repeats the run's checks (``DigestsCog._check_run``) right before posting: generating
    can take minutes, and the bot's access or the target's audience may change meanwhile.
    """
    conversation = await read_conversation(bot, source, window_scope(plan), int(resolved["max_messages"]),
                                           readers=Readers(audiences=(source, target)))
    if not conversation.messages:
        return 0
    summary = await bot.summarizer.summarize(
        conversation.messages,
        SummaryOptions(length=record.length, style=record.style, generation=generation_settings(resolved, record.length)),
        guild=str(record.guild_id),
        user=str(record.owner_id),
        priority=1,  # background: interactive /summarize requests go first
    )
    summary_id = await store_summary(bot, record.owner_id, conversation, summary, record.length, record.style, False)
    ctx = ReplyContext(
        guild_id=record.guild_id, channel_id=source.id, channel_name=source.name, length=record.length,
        style=record.style, capped_at=conversation.capped_at, skipped_files=tuple(conversation.skipped_files),
    )
    view = None
    factory = bot.services.summary_views.get()  # None: cogs.summaries is not loaded, no buttons
    if factory is not None and summary_id is not None:
        job = SummaryJob(source=source, scope=window_scope(plan),
                         length=record.length, style=record.style, private=False)
        view = factory(SummaryOutcome(summary, summary_id, job, record.length, record.style, False, []))
    kind = "Daily" if record.every == "daily" else "Weekly"
    header = (f"**{kind} digest** of {source.mention}: {_messages(len(conversation.messages))}, "
              f"{_fmt(plan.window_start)} → {_fmt(plan.window_end)}")
    batches = build_summary_messages(summary, ctx)
    problem, _, _ = await recheck()
    if problem is not None:
        raise DigestSkipped(problem)  # the summary stays stored: only readers of the source can list it
    for index, batch in enumerate(batches):
        last = index == len(batches) - 1
        kwargs: dict[str, Any] = dict(embeds=batch, allowed_mentions=NO_PINGS)
        if index == 0:
            kwargs["content"] = header
        if last and view is not None:
            kwargs["view"] = view  # the buttons sit under the end of the summary
        await target.send(**kwargs)
    return len(conversation.messages)


async def setup_problem(member: discord.Member, me: discord.Member, source: Any, target: Any) -> str | None:
    """Why this digest may not be set up (one sentence for the member), or None."""
    # The person setting it up must be able to read the source, or a digest would show it to them.
    if not await can_read(member, source):
        return "You can only set up a digest of a channel whose history you can read."
    access = await bot_access(me, source, target)
    if not access.can_read_source:
        return f"I can't read the history of {source.mention}. Give me View Channel and Read Message History there."
    if not access.can_post_target:
        return f"I can't post in {target.mention}. Give me View Channel, Send Messages and Embed Links there."
    leaks = await find_leaks(source, target)
    if leaks:
        return (
            f"I won't post a digest of {source.mention} in {target.mention}: {describe_leaks(leaks)} "
            f"can see {target.mention} but can't read {source.mention}. "
            "Pick a target that only people who can read the source can see."
        )
    return None


async def _fetch_channel(guild: discord.Guild, channel_id: int) -> Any:
    """An archived thread is not cached; ask Discord once."""
    try:
        return await guild.fetch_channel(channel_id)
    except (discord.NotFound, discord.Forbidden, discord.HTTPException):
        return None


def _channel_name(member: discord.Member, channel_id: int) -> str:
    """Plain text (autocomplete renders no mentions), so a channel the member can't see stays unnamed."""
    channel = member.guild.get_channel_or_thread(channel_id)
    if channel is None:
        return f"#deleted-{channel_id}"
    return f"#{channel.name}" if channel.permissions_for(member).view_channel else "#(a channel you can't see)"


def _describe(record: DigestRecord) -> str:
    lines = [
        f"<#{record.source_id}> → <#{record.target_id}>, {schedule_of(record).describe()}",
        f"{record.length}, {record.style.replace('_', ' ')} · set up by <@{record.owner_id}>",
        f"Next: {_fmt(record.next_run_at)} ({_fmt(record.next_run_at, 'R')}) · last: {_fmt(record.last_run_at)}",
    ]
    if record.last_status:
        lines.append(f"Last result: {record.last_status}")
    return "\n".join(lines)[:1024]


_ZONES: list[str] | None = None


def _timezones_matching(current: str) -> list[str]:
    global _ZONES
    if _ZONES is None:
        from zoneinfo import available_timezones

        _ZONES = sorted(z for z in available_timezones() if "/" in z or z == "UTC")
    needle = current.strip().lower().replace(" ", "_")
    starts = [z for z in _ZONES if z.lower().startswith(needle) or z.lower().split("/")[-1].startswith(needle)]
    contains = [z for z in _ZONES if needle in z.lower() and z not in starts]
    return (starts + contains)[:25]


async def setup(bot: "RecapBot") -> None:
    await bot.add_cog(DigestsCog(bot))
