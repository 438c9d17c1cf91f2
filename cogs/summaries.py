"""Summary history (``/summaries``) and the follow-up buttons under every summary.

The buttons (Shorter, Longer, Regenerate, Action items) are ``DynamicItem``s
whose ``custom_id`` carries the summary id (``recap:shorter:<id>``), so they
work on any summary after a restart without remembering views. A press
re-reads the summary's own source messages from storage and goes through the
same checks, cooldown, server limit and executor as ``/summarize``.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from storage import SummaryRecord, summaries

from core.channel_names import summary_readers
from core.checks import can_read, require_readable
from core.cooldowns import summary_request
from core.followups import may_press, plan_followup
from core.errors import ChannelDisabled, NotReady, UserFacingError
from core.flow import acknowledge, load_settings, reply_would_leak, summarize_conversation
from core.jobs import Scope, SummaryJob, SummaryOutcome
from core.mentions import NO_PINGS
from core.reading import read_by_ids
from core.stored import StoredSummaryView
from core.render import ReplyContext, build_summary_messages, truncate
from core.replies import describe_error, send_error

if TYPE_CHECKING:
    from bot.client import RecapBot

log = logging.getLogger(__name__)

# action -> (label, style of the button)
ACTIONS: dict[str, tuple[str, discord.ButtonStyle]] = {
    "shorter": ("Shorter", discord.ButtonStyle.secondary),
    "longer": ("Longer", discord.ButtonStyle.secondary),
    "regenerate": ("Regenerate", discord.ButtonStyle.secondary),
    "actions": ("Action items", discord.ButtonStyle.primary),
}
PAGE_SIZE = 5
NO_HISTORY_ACCESS = "You can only see the summaries of a channel whose history you can read (and I can too)."
LEAK_NOTE = ("Sent only to you: some people who can see this channel can't read the one summarized "
             "(or I couldn't check everyone who can).")
GONE = ("That summary no longer exists: the messages it was built from were deleted, "
        "or it was erased. Run `/summarize` again for a fresh one.")


def _say_kwargs(text: str) -> dict[str, Any]:
    return dict(content=text, ephemeral=True, allowed_mentions=NO_PINGS)


async def say(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral answer, whether or not the interaction was already acknowledged."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(**_say_kwargs(text))
        else:
            await interaction.response.send_message(**_say_kwargs(text))
    except discord.HTTPException:
        log.warning("could not tell %s: %s", interaction.user, text)


# --- follow-up buttons ------------------------------------------------------------------------


class FollowUpButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"recap:(?P<action>shorter|longer|regenerate|actions):(?P<summary_id>[0-9]{1,19})",
):
    """One follow-up button; everything it needs is in its custom_id."""

    def __init__(self, action: str, summary_id: int) -> None:
        label, style = ACTIONS[action]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"recap:{action}:{summary_id}"))
        self.action = action
        self.summary_id = summary_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any
    ) -> "FollowUpButton":
        return cls(match["action"], int(match["summary_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await run_followup(interaction.client, interaction, self.action, self.summary_id)  # type: ignore[arg-type]


def followup_view(summary_id: int) -> discord.ui.View:
    """The persistent row of follow-up buttons for one summary."""
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(FollowUpButton(action, summary_id))
    return view


def view_for_outcome(outcome: SummaryOutcome) -> discord.ui.View | None:
    """What this cog provides as ``bot.services.summary_views``: every stored summary gets the buttons."""
    return followup_view(outcome.summary_id) if outcome.summary_id is not None else None


async def run_followup(bot: "RecapBot", interaction: discord.Interaction, action: str, summary_id: int) -> None:
    """A follow-up press, start to end; every expected failure becomes an ephemeral answer."""
    try:
        await _followup(bot, interaction, action, summary_id)
    except Exception as exc:  # view callbacks bypass the tree's handler: same ladder, same replies
        await send_error(interaction, describe_error(exc))


async def _followup(bot: "RecapBot", interaction: discord.Interaction, action: str, summary_id: int) -> None:
    guild, member = interaction.guild, interaction.user
    if guild is None or not isinstance(member, discord.Member):
        raise UserFacingError("These buttons work in servers only.")
    record = await bot.db.reading(summaries.get_summary, summary_id)
    if record is None or record.guild_id != guild.id or (record.private and record.requester_id != member.id):
        raise UserFacingError(GONE)  # someone else's private summary: as if it did not exist
    if not may_press(member, record):
        raise UserFacingError(
            f"Only <@{record.requester_id}>, who asked for this summary, or a server manager can use these "
            "buttons. Run `/summarize` to get your own."
        )
    plan = plan_followup(action, record, random.randrange(2**31))
    source = guild.get_channel_or_thread(record.channel_id)
    if source is None:
        raise UserFacingError(GONE)
    if not bot.executor.ready:
        raise NotReady("I'm still starting up (loading the model). Try again in a minute.")
    # Every refusal comes before the defer, so it is a clean ephemeral answer; access is checked first.
    await require_readable(member, guild.me, source)
    resolved = await load_settings(bot, source)
    if not resolved["enabled"]:
        raise ChannelDisabled("Summaries are turned off in that channel.")
    # The no-leak rule, now: the channel the button sits in (a digest's target, or where the summary was
    # posted) may have widened its audience since; a public answer would show the source to them. It runs
    # after the cooldown, as in /summarize: a member who must wait is told so without that work.
    private, notes = record.private, ()
    with summary_request(bot.cooldowns, bot.guild_slots, member.id, guild.id):
        if not private and await reply_would_leak(source, interaction.channel):
            private, notes = True, (LEAK_NOTE,)
        await acknowledge(interaction, ephemeral=private)
        readers = summary_readers(member, source, interaction.channel, private)
        conversation = await read_by_ids(bot, source, record.source_ids, readers)
        if not conversation.messages:
            raise UserFacingError(GONE)
        job = SummaryJob(source=source, scope=Scope(), length=plan.length, style=plan.style,
                         private=private, generation=plan.generation, notes=notes)
        await summarize_conversation(
            bot, interaction, conversation, job, resolved, private=private, view_factory=view_for_outcome
        )


# --- showing a stored summary ----------------------------------------------------------------


async def viewable(member: discord.Member, record: SummaryRecord | None) -> Any:
    """The summary's source channel if ``member`` may see this summary, else None."""
    if record is None or member.guild is None or record.guild_id != member.guild.id:
        return None
    if record.private and record.requester_id != member.id:
        return None
    channel = member.guild.get_channel_or_thread(record.channel_id)
    if channel is None or not await can_read_both(member, channel):
        return None
    return channel


async def can_read_both(member: discord.Member, channel: Any) -> bool:
    """The member and the bot can both read the channel's history (the rule for every summary shown)."""
    me = member.guild.me
    return me is not None and await can_read(member, channel) and await can_read(me, channel)


async def show_summary(bot: "RecapBot", interaction: discord.Interaction, summary_id: int) -> None:
    """Send one stored summary again, ephemeral, with its follow-up buttons."""
    member = interaction.user
    assert isinstance(member, discord.Member)
    record = await bot.db.reading(summaries.get_summary, summary_id)
    channel = await viewable(member, record)
    if record is None or channel is None:
        await say(interaction, GONE)
        return
    # Re-read its sources as the buttons do: one deleted while I was offline is erased, and the summary with
    # it. That may ask Discord for history, so acknowledge first.
    await interaction.response.defer(ephemeral=True, thinking=True)
    await read_by_ids(bot, channel, record.source_ids)
    if await bot.db.reading(summaries.get_summary, summary_id) is None:
        await say(interaction, GONE)
        return
    ctx = ReplyContext(guild_id=record.guild_id, channel_id=record.channel_id, channel_name=channel.name,
                       length=record.length, style=record.style)
    batches = build_summary_messages(StoredSummaryView.of(record), ctx)
    header = f"Summary #{record.id}, asked for by <@{record.requester_id}> {discord.utils.format_dt(record.created_at, 'R')}" \
        if record.created_at else f"Summary #{record.id}"
    await interaction.edit_original_response(
        content=header, embeds=batches[0], view=followup_view(record.id), allowed_mentions=NO_PINGS
    )
    for batch in batches[1:]:
        await interaction.followup.send(embeds=batch, ephemeral=True, allowed_mentions=NO_PINGS)


def describe_record(record: SummaryRecord) -> str:
    when = discord.utils.format_dt(record.created_at, "R") if record.created_at else "earlier"
    if record.start_at and record.end_at:
        span = f"{discord.utils.format_dt(record.start_at, 'f')} → {discord.utils.format_dt(record.end_at, 't')}"
    else:
        span = "range unknown"
    flags = " · private" if record.private else ""
    return f"by <@{record.requester_id}> {when}\n{span} · {len(record.source_ids) or '?'} messages · {record.length}, " \
           f"{record.style.replace('_', ' ')}{flags}"


class HistoryPager(discord.ui.View):
    """Pages through one channel's summaries; Previous/Next and a menu to open one."""

    def __init__(self, bot: "RecapBot", member: discord.Member, channel: Any) -> None:
        super().__init__(timeout=600)
        self.bot = bot
        self.member = member
        self.channel = channel
        self.page = 0
        self.records: list[SummaryRecord] = []
        self.has_next = False

    async def load(self) -> None:
        rows = await self.bot.db.reading(
            summaries.list_summaries, self.channel.id, visible_to=self.member.id,
            limit=PAGE_SIZE + 1, offset=self.page * PAGE_SIZE,
        )
        self.has_next = len(rows) > PAGE_SIZE
        self.records = rows[:PAGE_SIZE]
        # list_summaries leaves source_ids out; the message count is worth one small query per row.
        for record in self.records:
            full = await self.bot.db.reading(summaries.get_summary, record.id)
            if full is not None:
                record.source_ids = full.source_ids
        self._refresh_items()

    def _refresh_items(self) -> None:
        self.previous.disabled = self.page == 0
        self.next.disabled = not self.has_next
        self.pick.options = [
            discord.SelectOption(
                label=truncate(f"#{r.id} · {r.length}, {r.style.replace('_', ' ')}", 100),
                value=str(r.id),
                description=truncate(r.text.replace("\n", " "), 100) or None,
            )
            for r in self.records
        ] or [discord.SelectOption(label="No summaries", value="0")]
        self.pick.disabled = not self.records

    def embed(self) -> discord.Embed:
        embed = discord.Embed(title=f"Summaries of #{self.channel.name}", colour=discord.Colour.blurple())
        if not self.records:
            embed.description = "No summaries here yet. Use `/summarize` to make one." if self.page == 0 else "No more summaries."
        for record in self.records:
            embed.add_field(name=f"#{record.id}", value=describe_record(record), inline=False)
        embed.set_footer(text=f"Page {self.page + 1} · choose one below to see it again")
        return embed

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.member.id:
            await say(interaction, "This list belongs to someone else. Run `/summaries` for your own.")
            return False
        # Permissions may have changed since the list was opened (it lives for 10 minutes).
        if not isinstance(interaction.user, discord.Member) or not await can_read_both(interaction.user, self.channel):
            await say(interaction, NO_HISTORY_ACCESS)
            return False
        return True

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]) -> None:
        await send_error(interaction, describe_error(error))

    async def _turn(self, interaction: discord.Interaction, delta: int) -> None:
        self.page = max(0, self.page + delta)
        await self.load()
        await interaction.response.edit_message(embed=self.embed(), view=self)

    @discord.ui.button(label="Previous", style=discord.ButtonStyle.secondary, row=1)
    async def previous(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._turn(interaction, -1)

    @discord.ui.button(label="Next", style=discord.ButtonStyle.secondary, row=1)
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._turn(interaction, 1)

    @discord.ui.select(placeholder="Show a summary again…", row=0)
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        await show_summary(self.bot, interaction, int(select.values[0]))


class SummariesCog(commands.Cog, name="Summaries"):
    """``/summaries`` and the follow-up buttons."""

    def __init__(self, bot: "RecapBot") -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        # Registered once per process: presses on any summary, even from before a restart, land here.
        self.bot.add_dynamic_items(FollowUpButton)
        self.bot.services.summary_views.provide(view_for_outcome)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(FollowUpButton)
        self.bot.services.summary_views.withdraw(view_for_outcome)

    @app_commands.command(name="summaries")
    @app_commands.guild_only()
    async def summaries_command(self, interaction: discord.Interaction) -> None:
        """Recent summaries of this channel; pick one to see it again."""
        member, channel = interaction.user, interaction.channel
        if not isinstance(member, discord.Member) or channel is None:
            await say(interaction, "Summary history works in server channels only.")
            return
        if not await can_read_both(member, channel):
            await say(interaction, NO_HISTORY_ACCESS)
            return
        pager = HistoryPager(self.bot, member, channel)
        await pager.load()
        await interaction.response.send_message(embed=pager.embed(), view=pager, ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: "RecapBot") -> None:
    await bot.add_cog(SummariesCog(bot))
