"""One friendly sentence for every error a command can end with, and how to send it.

``describe_error`` is the single ladder from exception type to reply; the tree
handler (cogs.errors) and view callbacks (follow-up buttons) both use it. An
unexpected error gets a short reference id, logged with its traceback, so the
member can report it without ever seeing the traceback.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

import discord
from discord import app_commands

from engine.generation import GenerationError, Overloaded
from storage import StorageError
from storage.errors import MigrationError, SchemaTooNew

from .errors import TryLater, UserFacingError
from .mentions import NO_PINGS
from .render import neutralize_mentions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorReply:
    text: str
    reference: str | None = None  # set for internal errors: also in the log, with the traceback


def _perm_names(perms: list[str]) -> str:
    return ", ".join(p.replace("_", " ").replace("guild", "server").title() for p in perms)


def _retry(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


def describe_error(error: BaseException) -> ErrorReply:
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, app_commands.TransformerError):
        return ErrorReply(f"`{_clip(str(error.value))}` is not a valid value for that option.")
    if isinstance(error, TryLater):
        return ErrorReply(error.message)
    if isinstance(error, UserFacingError):
        return ErrorReply(error.message)
    if isinstance(error, app_commands.MissingPermissions):
        return ErrorReply(f"You need the {_perm_names(error.missing_permissions)} permission to use this.")
    if isinstance(error, app_commands.BotMissingPermissions):
        return ErrorReply(f"I need the {_perm_names(error.missing_permissions)} permission here to do that.")
    if isinstance(error, app_commands.CommandOnCooldown):
        return ErrorReply(f"Slow down: try again in {_retry(error.retry_after)}.")
    if isinstance(error, app_commands.NoPrivateMessage):
        return ErrorReply("This command works in servers only.")
    if isinstance(error, app_commands.CheckFailure):
        return ErrorReply("You can't use this command here.")
    if isinstance(error, Overloaded):
        return ErrorReply(f"{error.user_message} Try again in {_retry(error.retry_after)}.")
    if isinstance(error, GenerationError):
        return ErrorReply(error.user_message)
    if isinstance(error, StorageError) and _meant_for_users(error):
        return ErrorReply(str(error))
    if isinstance(error, discord.Forbidden):
        return ErrorReply("Discord didn't let me do that here: I'm missing a permission in this channel.")
    reference = secrets.token_hex(4)
    log.error("internal error %s", reference, exc_info=(type(error), error, error.__traceback__))
    if isinstance(error, StorageError):
        return ErrorReply(f"My database couldn't do that just now. Try again in a moment; if it keeps happening, "
                          f"tell the bot's admin: reference `{reference}`.", reference)
    return ErrorReply(f"Something went wrong on my side. If it keeps happening, tell the bot's admin: reference `{reference}`.", reference)


def _meant_for_users(error: StorageError) -> bool:
    """Refusals (bad setting, digest limit) are; wrapped SQLite failures and schema problems carry internals."""
    return error.__cause__ is None and not isinstance(error, (MigrationError, SchemaTooNew))


def _clip(text: str, limit: int = 40) -> str:
    text = neutralize_mentions(text.replace("`", "'"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def send_error(interaction: discord.Interaction, reply: ErrorReply) -> None:
    """Ephemeral as the initial response; after a defer, the deferred reply itself becomes the error.

    After ``defer(thinking=True)`` Discord turns the first followup into the deferred
    message anyway (keeping its visibility), so editing it is the one reliable way to
    replace "thinking…" or a progress line. Commands run their checks before deferring,
    so most refusals take the ephemeral path.
    """
    text = reply.text
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)
            return
        try:
            await interaction.edit_original_response(content=f"⚠️ {text}", embeds=[], view=None, allowed_mentions=NO_PINGS)
        except discord.HTTPException:  # the original is gone: a new ephemeral message instead
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
    except discord.HTTPException as exc:  # the interaction expired: nothing left to tell
        log.info("could not deliver an error reply: %s", exc)
