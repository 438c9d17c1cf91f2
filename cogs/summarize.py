"""/summarize and the "Summarize from here" message context menu."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import discord
from discord import app_commands
from discord.ext import commands

from core.errors import AccessDenied, BadOption, NO_ACCESS, UserFacingError
from core.flow import run_summary
from core.jobs import SummaryJob
from core.server_settings import load_settings
from core.options import SourceChannel, choices_of, parse_message_ref, parse_since
from core.jobs import Scope
from engine.prompts import LENGTH, STYLE

if TYPE_CHECKING:
    from bot.client import RecapBot

MAX_MESSAGES_OPTION = 5000  # the option's range; the server's max_messages setting caps it further
READABLE = (discord.TextChannel, discord.Thread, discord.VoiceChannel, discord.StageChannel)


async def resolve_source(bot: "RecapBot", interaction: discord.Interaction, channel_id: int | None) -> Any:
    """The channel or thread to read: ``channel_id``'s, else where the command ran (a thread or forum post itself).

    Anything outside this server, or that I can't see, gets the same refusal as an unreadable channel.
    """
    guild = interaction.guild
    if guild is None:
        raise UserFacingError("Summaries work in servers only.")
    if channel_id is None:
        channel_id = interaction.channel_id
    source = guild.get_channel_or_thread(channel_id) if channel_id else None
    if source is None and channel_id:
        try:
            source = await bot.fetch_channel(channel_id)  # e.g. an archived thread, not cached
        except (discord.NotFound, discord.Forbidden, discord.InvalidData):
            raise AccessDenied(NO_ACCESS) from None
    if source is None or getattr(source, "guild", None) is None or source.guild.id != guild.id:
        raise AccessDenied(NO_ACCESS)
    if not isinstance(source, READABLE):
        member = interaction.user
        if not isinstance(member, discord.Member) or not source.permissions_for(member).view_channel:
            raise AccessDenied(NO_ACCESS)  # never confirm that a hidden channel exists
        raise BadOption("I can only summarize text channels, voice channel chats, threads and forum posts.")
    return source


class Summarize(commands.Cog):
    def __init__(self, bot: "RecapBot") -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Summarize from here", callback=self.summarize_from_here)
        self.menu.guild_only = True

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="summarize")
    @app_commands.guild_only()
    @app_commands.describe(
        messages="How many of the latest messages to read",
        since="How far back: 30m, 2h, 1d, 1w or yesterday",
        from_message="A message link or id: summarize from that message to now",
        channel="The channel or thread to summarize (default: this one)",
        length="How long the summary should be",
        style="How the summary is laid out (key_messages: the key messages quoted in the third person, no model writing)",
        private="Only you see the summary",
    )
    @app_commands.choices(length=choices_of(LENGTH), style=choices_of(STYLE))
    async def summarize(
        self,
        interaction: discord.Interaction,
        messages: Optional[app_commands.Range[int, 1, MAX_MESSAGES_OPTION]] = None,
        since: Optional[str] = None,
        from_message: Optional[str] = None,
        channel: Optional[app_commands.Transform[Any, SourceChannel]] = None,
        length: Optional[str] = None,
        style: Optional[str] = None,
        private: Optional[bool] = None,
    ) -> None:
        """Summarize the conversation in this channel or thread."""
        given = [name for name, value in (("messages", messages), ("since", since), ("from_message", from_message)) if value is not None]
        if len(given) > 1:
            raise BadOption(f"Use only one of `messages`, `since` or `from_message` (you gave {', '.join(f'`{g}`' for g in given)}).")
        source = await resolve_source(self.bot, interaction, channel.id if channel is not None else None)
        if since is not None:
            window = parse_since(since, discord.utils.utcnow())
            scope = Scope(after=window.after, before=window.before)
        elif from_message is not None:
            ref = parse_message_ref(from_message, interaction.guild_id)
            if ref.channel_id is not None and channel is None:
                # A link names its own channel: summarize there (after the same access checks).
                source = await resolve_source(self.bot, interaction, ref.channel_id)
            elif ref.channel_id is not None and ref.channel_id != source.id:
                raise BadOption("That message link is from another channel than `channel`.")
            scope = Scope(from_id=ref.message_id)
        elif messages is not None:
            scope = Scope(last=messages)
        else:
            scope = Scope(last=await self.default_window(source))
        await run_summary(self.bot, interaction, SummaryJob(source, scope, length, style, private))

    async def default_window(self, source: Any) -> int:
        return int((await load_settings(self.bot, source))["default_window"])

    async def summarize_from_here(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Summarize from the chosen message to now."""
        source = await resolve_source(self.bot, interaction, None)
        await run_summary(self.bot, interaction, SummaryJob(source, Scope(from_id=message.id)))


async def setup(bot: "RecapBot") -> None:
    await bot.add_cog(Summarize(bot))
