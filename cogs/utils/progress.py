"""Progress shown by editing the deferred reply, throttled so Discord's rate limits are never hit."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import discord

log = logging.getLogger(__name__)
NO_PINGS = discord.AllowedMentions.none()


class ProgressMessage:
    """Edits ``interaction``'s original response with status lines, at most one per ``min_interval`` s.

    Updates that arrive too soon are dropped (a newer one follows), and edits run
    in the background so reporting never slows the summary. ``finish()`` waits for
    the edit in flight so a late progress line cannot overwrite the final reply.
    One instance serves a whole command (reading, then summarizing), so throttling spans both.
    """

    def __init__(self, interaction: discord.Interaction, min_interval: float = 1.5,
                 clock: Callable[[], float] | None = None) -> None:
        self._interaction = interaction
        self._interval = min_interval
        self._clock = clock or (lambda: time.monotonic())  # looked up per call: test clocks can replace it
        self._last: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.shown: list[str] = []  # every line actually sent, in order

    def update(self, text: str) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return
        self._last = now
        self._task = asyncio.get_running_loop().create_task(self._edit(text))

    async def _edit(self, text: str) -> None:
        try:
            await self._interaction.edit_original_response(content=text, allowed_mentions=NO_PINGS)
            self.shown.append(text)
        except discord.HTTPException as exc:  # progress is best effort; the final reply reports errors
            log.debug("progress edit failed: %s", exc)

    async def settle(self) -> None:
        """Wait for the edit in flight, if any."""
        if self._task is not None:
            await self._task

    async def finish(self) -> None:
        """No more progress lines: the next edit of the reply is the result (or the error)."""
        self._closed = True
        await self.settle()
