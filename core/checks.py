"""Permission checks: who may read a channel, who may change settings, who owns the bot.

Checks on the source channel are done at run time for both the member and the
bot, because the channel to read is often not the one the command ran in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from .errors import AccessDenied, NO_ACCESS

if TYPE_CHECKING:
    from .app import App

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


def manages_guild(interaction: discord.Interaction) -> bool:
    """Manage Server, as Discord resolved it for this interaction's member; False outside a server."""
    return interaction.guild is not None and interaction.permissions.manage_guild


def require_manage_guild(interaction: discord.Interaction) -> bool:
    """The runtime Manage Server rule; its refusals are the tree-wide error handler's usual replies."""
    if interaction.guild is None:
        raise app_commands.NoPrivateMessage()
    if not manages_guild(interaction):
        raise app_commands.MissingPermissions(["manage_guild"])
    return True


def manage_guild_only() -> Callable[[T], T]:
    """Manage Server only: what Discord shows (default_permissions) and what is enforced, together.

    ``default_permissions`` only hides a command, and a server admin can show it to anyone, so the
    rule is also checked at run time. Decorates a command function, or a ``GroupCog`` class: discord.py
    has no class-level checks, so there the rule runs first in the cog's ``interaction_check``, which
    discord.py calls for every app command the cog holds.
    """

    def decorator(target: T) -> T:
        target = app_commands.default_permissions(manage_guild=True)(target)
        target = app_commands.guild_only()(target)
        if isinstance(target, type):
            _check_in_interaction_check(target)
            return target
        return app_commands.check(require_manage_guild)(target)

    return decorator


def _check_in_interaction_check(cog: type) -> None:
    if not issubclass(cog, commands.GroupCog):
        # A plain Cog's Group attributes ignore the class's default_permissions: Discord would show them.
        raise TypeError(f"manage_guild_only() decorates commands and GroupCogs, not {cog.__name__}")
    own = cog.interaction_check

    async def interaction_check(self: Any, interaction: discord.Interaction) -> bool:
        return require_manage_guild(interaction) and bool(await discord.utils.maybe_coroutine(own, self, interaction))

    interaction_check.__doc__ = own.__doc__
    cog.interaction_check = interaction_check  # type: ignore[method-assign]


async def is_owner(bot: "App", user: discord.abc.User) -> bool:
    """``OWNER_IDS`` when set, otherwise the application's owner (or team members)."""
    owner_ids = bot.settings.owner_ids
    if owner_ids:
        return user.id in owner_ids
    return await bot.is_owner(user)
