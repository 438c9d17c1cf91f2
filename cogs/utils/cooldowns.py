"""Per-member cooldown and per-server concurrency limit for summaries.

Both answer with how long to wait instead of queueing: a member who is told
"try again in 12 s" is better served than one whose command hangs.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from .errors import TryLater


class UserCooldown:
    """At most one summary per ``seconds`` per member (keyed by user id)."""

    def __init__(self, seconds: float, clock: Callable[[], float] | None = None) -> None:
        self.seconds = seconds
        self._clock = clock or (lambda: time.monotonic())  # looked up per call: test clocks can replace it
        self._last: dict[int, float] = {}

    def retry_after(self, user_id: int) -> float:
        last = self._last.get(user_id)
        if last is None:
            return 0.0
        return max(0.0, self.seconds - (self._clock() - last))

    def hit(self, user_id: int) -> None:
        """Record a use, or raise ``TryLater`` when the member is still cooling down."""
        wait = self.retry_after(user_id)
        if wait > 0:
            raise TryLater(f"You're summarizing too often. Try again in {wait:.0f} s.", wait)
        now = self._clock()
        self._last[user_id] = now
        # Forget members whose cooldown ended so the dict does not grow forever.
        if len(self._last) > 10_000:
            self._last = {k: v for k, v in self._last.items() if now - v < self.seconds}

    def reset(self, user_id: int) -> None:
        self._last.pop(user_id, None)


class GuildSlots:
    """At most ``limit`` summaries running at once per server."""

    def __init__(self, limit: int, retry_hint_s: float = 30.0) -> None:
        self.limit = limit
        self.retry_hint_s = retry_hint_s
        self._running: dict[int, int] = {}

    def running(self, guild_id: int) -> int:
        return self._running.get(guild_id, 0)

    @contextmanager
    def slot(self, guild_id: int) -> Iterator[None]:
        if self.running(guild_id) >= self.limit:
            raise TryLater(
                f"This server already has {self.limit} summaries running. Try again in about {self.retry_hint_s:.0f} s.",
                self.retry_hint_s,
            )
        self._running[guild_id] = self.running(guild_id) + 1
        try:
            yield
        finally:
            left = self._running[guild_id] - 1
            if left:
                self._running[guild_id] = left
            else:
                del self._running[guild_id]
