"""Per-member cooldown, and a count of each server's summaries in progress.

The cooldown answers with how long to wait. Capacity is not decided here: a
busy server's members wait in the executor's queue, which refuses (with a
retry hint) only when it is really full. ``summary_request`` holds both for one
request, as /summarize and the follow-up buttons do.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from .errors import TryLater


@dataclass(eq=False)
class CooldownTicket:
    """One request's claim on its member's cooldown. ``release()`` when no summary was made."""

    owner: "UserCooldown"
    user_id: int
    at: float
    released: bool = False

    def release(self) -> None:
        """Undo this request's cooldown (it failed, timed out or was refused); later requests keep theirs."""
        if not self.released:
            self.released = True
            self.owner._drop(self)


class UserCooldown:
    """At most one summary per ``seconds`` per member (keyed by user id).

    Each request holds a ticket from ``hit``; a request that made no summary releases its own
    ticket, which never clears the cooldown another, later request of the same member started.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] | None = None) -> None:
        self.seconds = seconds
        self._clock = clock or (lambda: time.monotonic())  # looked up per call: test clocks can replace it
        self._tickets: dict[int, list[CooldownTicket]] = {}

    def retry_after(self, user_id: int) -> float:
        tickets = self._tickets.get(user_id)
        if not tickets:
            return 0.0
        last = max(t.at for t in tickets)
        return max(0.0, self.seconds - (self._clock() - last))

    def hit(self, user_id: int) -> CooldownTicket:
        """Start a request: its ticket, or ``TryLater`` when the member is still cooling down."""
        wait = self.retry_after(user_id)
        if wait > 0:
            raise TryLater(f"You're summarizing too often. Try again in {wait:.0f} s.", wait)
        now = self._clock()
        ticket = CooldownTicket(self, user_id, now)
        # Only tickets still inside the cooldown matter; older ones are forgotten here.
        live = [t for t in self._tickets.get(user_id, []) if now - t.at < self.seconds]
        self._tickets[user_id] = live + [ticket]
        if len(self._tickets) > 10_000:  # forget members whose cooldown ended so the dict stays small
            self._tickets = {k: v for k, v in self._tickets.items() if any(now - t.at < self.seconds for t in v)}
        return ticket

    def reset(self, user_id: int) -> None:
        """Forget the member's cooldown entirely (an admin action; requests use their ticket)."""
        self._tickets.pop(user_id, None)

    def _drop(self, ticket: CooldownTicket) -> None:
        tickets = self._tickets.get(ticket.user_id)
        if tickets and ticket in tickets:
            tickets.remove(ticket)
            if not tickets:
                del self._tickets[ticket.user_id]


class GuildActivity:
    """How many summaries each server has in progress (reading, waiting or generating), for ``/status``.

    It refuses nothing: members beyond what runs now wait in the executor's queue.
    """

    def __init__(self) -> None:
        self._running: Counter[int] = Counter()

    def running(self, guild_id: int) -> int:
        return self._running.get(guild_id, 0)

    def total(self) -> int:
        return sum(self._running.values())

    @contextmanager
    def slot(self, guild_id: int) -> Iterator[None]:
        self._running[guild_id] += 1
        try:
            yield
        finally:
            self._running[guild_id] -= 1
            if self._running[guild_id] <= 0:
                del self._running[guild_id]


@contextmanager
def summary_request(cooldowns: UserCooldown, activity: GuildActivity, user_id: int, guild_id: int) -> Iterator[None]:
    """One summary request, start to end: the member's cooldown starts, the server counts it as in progress.

    Raises ``TryLater`` at once (nothing counted) while the member is cooling down. A request that ends
    in any exception, cancellation included, made no summary: its cooldown is given back.
    """
    ticket = cooldowns.hit(user_id)
    try:
        with activity.slot(guild_id):
            yield
    except BaseException:
        ticket.release()  # failed, refused, timed out or cancelled: no cooldown
        raise
