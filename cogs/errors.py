"""Tree-wide error handler: every app command error becomes one clear, ephemeral reply."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from core.replies import describe_error, send_error

log = logging.getLogger(__name__)


class Errors(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self._previous = bot.tree.on_error

    async def cog_load(self) -> None:
        self.bot.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]

    async def cog_unload(self) -> None:
        self.bot.tree.on_error = self._previous  # type: ignore[method-assign]

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        reply = describe_error(error)
        if reply.reference is None:
            name = interaction.command.qualified_name if interaction.command else "?"
            log.info("/%s by %s: %s", name, interaction.user.id, reply.text)
        await send_error(interaction, reply)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Errors(bot))
