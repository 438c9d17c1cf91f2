"""/sync: owner-only, forces an application command sync (normal starts sync only when the tree changed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from core.checks import is_owner
from core.errors import UserFacingError
from core.mentions import NO_PINGS

if TYPE_CHECKING:
    from bot.client import RecapBot


class Admin(commands.Cog):
    def __init__(self, bot: "RecapBot") -> None:
        self.bot = bot

    @app_commands.command(name="sync")
    @app_commands.default_permissions(administrator=True)
    async def sync(self, interaction: discord.Interaction) -> None:
        """Owner only: sync the bot's slash commands with Discord now."""
        if not await is_owner(self.bot, interaction.user):
            raise UserFacingError("Only the bot's owner can sync commands.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        count = await self.bot.sync_commands(force=True)
        where = f"server {self.bot.settings.dev_guild_id}" if self.bot.settings.dev_guild_id else "every server (global)"
        await interaction.followup.send(f"Synced {count} commands to {where}.", ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: "RecapBot") -> None:
    await bot.add_cog(Admin(bot))
