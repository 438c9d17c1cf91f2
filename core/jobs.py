"""What a summary request is and what it produced: the shapes the flow, the cogs and the bot share.

A leaf module (discord and the engine's types only), so anything in the core can name them
without an import circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import discord

from engine.generation import GenerationSettings

MAX_ID = 2**63 - 1  # the largest snowflake


@dataclass(frozen=True)
class Scope:
    """Which messages to read. At most one of ``last``/``after``/``from_id`` narrows it; none: the newest."""

    last: int | None = None  # the newest N messages
    after: datetime | None = None  # exclusive, aware UTC
    before: datetime | None = None  # exclusive, aware UTC
    from_id: int | None = None  # this message and everything after it

    def id_bounds(self) -> tuple[int, int]:
        """(lower, upper): message ids strictly between them are in scope."""
        lower, upper = 0, MAX_ID
        if self.after is not None:
            lower = discord.utils.time_snowflake(self.after, high=True)
        if self.from_id is not None:
            lower = max(lower, self.from_id - 1)
        if self.before is not None:
            upper = discord.utils.time_snowflake(self.before, high=False)
        return lower, upper


@dataclass
class SummaryJob:
    """One request: the channel or thread to read, which messages, and how to summarize them."""

    source: Any  # discord.TextChannel | discord.Thread | VoiceChannel
    scope: Scope
    length: str | None = None  # None: the channel's setting
    style: str | None = None
    private: bool | None = None
    generation: GenerationSettings | None = None  # overrides the channel's settings (follow-up Regenerate)
    notes: tuple[str, ...] = ()  # shown under the summary (e.g. why it was sent privately)


@dataclass
class SummaryOutcome:
    summary: Any  # engine.summarizer.Summary
    summary_id: int | None  # None if storing it failed (the reply was still sent)
    job: SummaryJob
    length: str
    style: str
    private: bool
    messages: list[discord.Message | discord.InteractionMessage]  # the reply, first message first


ViewFactory = Callable[[SummaryOutcome], "discord.ui.View | None"]
