"""Progress shown by editing the deferred reply, throttled so Discord's rate limits are never hit."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from typing import Callable

import discord

from .mentions import NO_PINGS

log = logging.getLogger(__name__)


class ProgressMessage:
    """Edits ``interaction``'s original response with status lines, at most one per ``min_interval`` s.

    Edits run in the background so reporting never slows the summary. Updates that arrive
    while an edit is in flight or too soon after the last one are coalesced: the newest one
    is sent as soon as the interval allows, so a waiting member's place in line never goes
    stale. ``finish()`` waits for the edit in flight so a late progress line cannot
    overwrite the final reply. One instance serves a whole command (reading, queueing,
    summarizing), so throttling spans all of it.
    """

    def __init__(self, interaction: discord.Interaction, min_interval: float = 1.5,
                 clock: Callable[[], float] | None = None) -> None:
        self._interaction = interaction
        self._interval = min_interval
        self._clock = clock or (lambda: time.monotonic())  # looked up per call: test clocks can replace it
        self._last: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wanted: str | None = None  # the newest line not yet sent
        # Updates may come from the executor's scheduler (queue positions); edits still run in
        # the command's context (logging, and test transports that are scoped to it).
        self._context = contextvars.copy_context()
        self._closed = False
        self.shown: list[str] = []  # every line actually sent, in order

    def update(self, text: str) -> None:
        if self._closed:
            return
        self._wanted = text
        self._kick()

    def _kick(self) -> None:
        """Send the newest line now if the throttle allows, else make sure it is sent when it does."""
        if self._closed or self._wanted is None or (self._task is not None and not self._task.done()):
            return  # a finishing edit kicks again
        if self.shown and self._wanted == self.shown[-1]:
            self._wanted = None
            return
        loop = asyncio.get_running_loop()
        now = self._clock()
        wait = 0.0 if self._last is None else self._interval - (now - self._last)
        if wait > 0:
            if self._timer is None:
                self._timer = loop.call_later(wait, self._on_timer, context=self._context.copy())
            return
        text, self._wanted = self._wanted, None
        self._last = now
        self._task = loop.create_task(self._edit(text), context=self._context.copy())
        self._task.add_done_callback(lambda _task: self._kick())

    def _on_timer(self) -> None:
        self._timer = None
        self._kick()

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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.settle()
