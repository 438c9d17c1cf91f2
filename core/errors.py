"""Errors that carry a message meant for the member who ran the command.

Raised anywhere in a command (or a helper it calls); the tree-wide handler in
``cogs.errors`` turns each into one ephemeral reply. They subclass
``AppCommandError`` so discord.py routes them to ``tree.on_error`` unchanged.
"""

from __future__ import annotations

from discord import app_commands


class UserFacingError(app_commands.AppCommandError):
    """The text is shown to the member as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AccessDenied(UserFacingError):
    """The member (or the bot) may not read the source. Says nothing about the channel's content."""


class BadOption(UserFacingError):
    """An option value is malformed or options conflict."""


class ChannelDisabled(UserFacingError):
    """Summaries are turned off for this channel or server."""


class NotReady(UserFacingError):
    """The model is still loading."""


class TryLater(UserFacingError):
    """A per-member cooldown or the server's concurrency limit; ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# One sentence, reused wherever a source may not be read: never reveal whether it exists.
NO_ACCESS = "I can't summarize that: either it doesn't exist, or you (or I) can't read its history."
