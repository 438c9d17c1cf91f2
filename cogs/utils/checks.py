"""Permission checks: who may read a channel, who may change settings, who owns the bot.

Checks on the source channel are done at run time for both the member and the
bot, because the channel to read is often not the one the command ran in.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import discord
from discord import app_commands

from .errors import AccessDenied, NO_ACCESS

T = TypeVar("T")

Readable = discord.TextChannel | discord.Thread | discord.VoiceChannel | discord.StageChannel


async def can_read(who: discord.Member, channel: Any) -> bool:
    """View Channel + Read Message History, and for a private thread: membership or Manage Threads."""
    if not isinstance(channel, (discord.TextChannel, discord.Thread, discord.VoiceChannel, discord.StageChannel)):
        return False
    perms = channel.permissions_for(who)
    if not (perms.view_channel and perms.read_message_history):
        return False
    if isinstance(channel, discord.Thread) and channel.type is discord.ChannelType.private_thread:
        if perms.manage_threads or channel.owner_id == who.id:
            return True
        if any(m.id == who.id for m in channel.members):  # Thread has no get_member
            return True
        try:
            await channel.fetch_member(who.id)
        except (discord.NotFound, discord.Forbidden):
            return False
    return True


async def require_readable(member: discord.Member, me: discord.Member, channel: Any) -> None:
    """Raise ``AccessDenied`` (one message for every cause) unless both the member and the bot can read."""
    if not await can_read(member, channel) or not await can_read(me, channel):
        raise AccessDenied(NO_ACCESS)


def manage_guild_only() -> Callable[[T], T]:
    """What Discord shows (default_permissions) and what is enforced (a runtime check), together."""

    def decorator(func: T) -> T:
        func = app_commands.default_permissions(manage_guild=True)(func)
        func = app_commands.guild_only()(func)
        return app_commands.checks.has_permissions(manage_guild=True)(func)

    return decorator


async def is_owner(bot: Any, user: discord.abc.User) -> bool:
    """``OWNER_IDS`` when set, otherwise the application's owner (or team members)."""
    owner_ids = getattr(bot.settings, "owner_ids", ())
    if owner_ids:
        return user.id in owner_ids
    return await bot.is_owner(user)
