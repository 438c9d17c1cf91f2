"""Parts one cog lends the others while it is loaded, held by the bot with their types.

A cog provides its part in ``cog_load`` and withdraws it in ``cog_unload``; a reader asks
``get()`` and handles ``None`` (that cog is not loaded) itself. Nothing is set on the bot by
name, so a type checker and grep can follow each part from the cog that owns it to its readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Generic, TypeVar

if TYPE_CHECKING:
    from storage import MessageBuffer

    from .jobs import ViewFactory

T = TypeVar("T")


class Provided(Generic[T]):
    """One part, provided by at most one cog at a time."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._part: T | None = None

    def get(self) -> T | None:
        """The part, or None while the cog that provides it is not loaded."""
        return self._part

    def provide(self, part: T) -> None:
        # Two providers at once would be two cogs doing one job: a loading bug, never a choice.
        if self._part is not None and self._part is not part:
            raise RuntimeError(f"{self.what} is already provided by another cog")
        self._part = part

    def withdraw(self, part: T) -> None:
        """Withdraw ``part``; a part provided since by someone else stays."""
        if self._part is part:
            self._part = None


@dataclass
class CogServices:
    """What cogs lend each other through the bot (``bot.services``)."""

    # cogs.history: batched message writes. Without it, reads and deletes go to the database directly.
    message_buffer: Provided["MessageBuffer"] = field(default_factory=lambda: Provided("the message buffer"))
    # cogs.summaries: the follow-up buttons under every summary. Without it, summaries have no buttons.
    summary_views: Provided["ViewFactory"] = field(default_factory=lambda: Provided("the summary buttons"))
    # cogs.digests: re-read the schedule now (cogs.history calls it after erasing a channel's or a server's
    # digests, so the scheduler never acts on rows that are being erased).
    digest_wake: Provided[Callable[[], None]] = field(default_factory=lambda: Provided("the digest schedule"))
