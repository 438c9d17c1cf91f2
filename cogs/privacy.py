"""/privacy optout | optin | forget. Opt-out is global: one person, every server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from core.mentions import NO_PINGS
from storage import messages, privacy
from storage.erasure import erase_member

if TYPE_CHECKING:
    from bot.client import RecapBot

T = TypeVar("T")


async def _opt_out_and_erase(conn: Any, user_id: int) -> int:
    await privacy.opt_out(conn, user_id)
    return (await messages.delete_author_messages(conn, user_id)).messages


class Privacy(commands.GroupCog, group_name="privacy", group_description="Control what Recap keeps about you"):
    def __init__(self, bot: "RecapBot") -> None:
        self.bot = bot
        super().__init__()

    async def _erase(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a delete after flushing buffered messages (so none escape), then purge old pages from the WAL."""
        buffer = self.bot.services.message_buffer.get()  # None: the history cog is not loaded, nothing is buffered
        result = await (buffer.write_after_flush(fn, *args) if buffer is not None else self.bot.db.writing(fn, *args))
        # The delete is committed: a checkpoint that cannot finish now (a busy reader) is retried by
        # the history cog's loop, and is no reason to tell the member it failed.
        await self.bot.erasure.now()
        return result

    @app_commands.command(name="optout")
    async def optout(self, interaction: discord.Interaction) -> None:
        """Stop Recap from storing or summarizing your messages, and delete what it stored."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        deleted = await self._erase(_opt_out_and_erase, interaction.user.id)
        await interaction.followup.send(
            f"You're opted out: your messages are no longer stored or summarized, in any server. "
            f"I deleted {deleted:,} stored message{'s' if deleted != 1 else ''} of yours. Use `/privacy optin` to undo.",
            ephemeral=True,
            allowed_mentions=NO_PINGS,
        )

    @app_commands.command(name="optin")
    async def optin(self, interaction: discord.Interaction) -> None:
        """Let Recap store and summarize your messages again."""
        was_out = await self.bot.db.writing(privacy.opt_in, interaction.user.id)
        text = (
            "You're opted in again: your new messages can be stored and summarized."
            if was_out
            else "You weren't opted out: your messages can already be summarized."
        )
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)

    @app_commands.command(name="forget")
    async def forget(self, interaction: discord.Interaction) -> None:
        """Delete everything Recap stored about you, in every server, and summaries built from it."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        result = await self._erase(erase_member, interaction.user.id)  # messages, summaries, digests: one transaction
        removed_digests = result.digests
        digest_note = (
            f" I also removed {removed_digests} scheduled digest{'s' if removed_digests != 1 else ''} you had set up."
            if removed_digests
            else ""
        )
        await interaction.followup.send(
            f"Done: deleted {result.messages:,} stored message{'s' if result.messages != 1 else ''} and "
            f"{result.summaries:,} summar{'ies' if result.summaries != 1 else 'y'} built from or requested by you, in every server."
            f"{digest_note} New messages may be stored again; use `/privacy optout` to stop that.",
            ephemeral=True,
            allowed_mentions=NO_PINGS,
        )


async def setup(bot: "RecapBot") -> None:
    await bot.add_cog(Privacy(bot))
