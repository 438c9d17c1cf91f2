"""Admission: the shape check, and the caps that refuse work at once instead of queueing it.

Caps count units of work (``executor_queue.job_unit``): a map-reduce job's requests are one unit, and
a ``JobReservation`` holds a unit for a whole job so its later stages are never refused half-way.
A unit keeps at most ``max_job_requests`` requests in the queue at once (its gate); the rest wait
outside it. Nothing here waits for room: a full cap is a refusal, and the executor turns it into
``Overloaded`` with a retry hint.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Literal

from .executor_queue import Entry
from .generation import GenerationRequest, GenerationSettings, InvalidRequest, Prompt

Scope = Literal["queue", "guild", "user"]  # which cap is full


def check_shape(request: GenerationRequest) -> None:
    """Raise ``InvalidRequest`` for anything but a well-formed request (types re-checked: frozen is not forged-proof)."""
    if not isinstance(request, GenerationRequest):
        raise InvalidRequest(f"expected a GenerationRequest, got {type(request).__name__}")
    prompt, settings = request.prompt, request.settings
    if not isinstance(prompt, Prompt) or not isinstance(prompt.system, str) or not isinstance(prompt.user, str):
        raise InvalidRequest("the prompt must be a Prompt with text parts")
    if not prompt.user.strip():
        raise InvalidRequest("there is nothing to summarize (the prompt is empty)")
    if not isinstance(settings, GenerationSettings):
        raise InvalidRequest(f"expected GenerationSettings, got {type(settings).__name__}")
    GenerationSettings(**settings.as_dict())  # re-validates ranges: a frozen dataclass can still be forged
    if request.timeout is not None and not (isinstance(request.timeout, (int, float)) and request.timeout > 0):
        raise InvalidRequest(f"timeout={request.timeout!r} must be a positive number of seconds")
    if not isinstance(request.priority, int) or isinstance(request.priority, bool):
        raise InvalidRequest(f"priority={request.priority!r} must be a whole number")


class Caps:
    """Units of work held in all, per guild and per user, and each unit's gate into the queue."""

    def __init__(self, max_queue: int, max_per_guild: int, max_per_user: int, max_job_requests: int) -> None:
        self.max_queue = max_queue
        self.max_per_guild = max_per_guild
        self.max_per_user = max_per_user
        self.max_job_requests = max_job_requests
        self._guild_units: Counter[str] = Counter()
        self._user_units: Counter[str] = Counter()
        self._unit_entries: Counter[str] = Counter()  # unit -> pending entries and reservations (a job counts once)
        self._unit_gates: dict[str, asyncio.Semaphore] = {}  # unit -> its share of queue places

    @property
    def jobs(self) -> int:
        return len(self._unit_entries)

    def guild_jobs(self, guild: str) -> int:
        return self._guild_units.get(guild, 0)

    def full(self, unit: str, guild: str, user: str) -> Scope | None:
        """Which cap refuses a new unit of work, or None (a unit already held is never refused)."""
        if self._unit_entries[unit] > 0:
            return None
        if len(self._unit_entries) >= self.max_queue:
            return "queue"
        if self._guild_units[guild] >= self.max_per_guild:
            return "guild"
        if self._user_units[user] >= self.max_per_user:
            return "user"
        return None

    def hold(self, unit: str, guild: str, user: str) -> None:
        if self._unit_entries[unit] == 0:
            self._guild_units[guild] += 1
            self._user_units[user] += 1
            self._unit_gates[unit] = asyncio.Semaphore(self.max_job_requests)
        self._unit_entries[unit] += 1

    def unhold(self, unit: str, guild: str, user: str) -> None:
        self._unit_entries[unit] -= 1
        if self._unit_entries[unit] <= 0:
            del self._unit_entries[unit]
            self._unit_gates.pop(unit, None)
            _decrement(self._guild_units, guild)
            _decrement(self._user_units, user)

    async def pass_gate(self, entry: Entry) -> None:
        """Wait until the entry's unit has fewer than ``max_job_requests`` requests in the queue."""
        gate = self._unit_gates.get(entry.unit)
        if gate is not None:
            await gate.acquire()
            entry.gate = gate


class JobReservation:
    """One held unit of the caps; requests with ``job=self.job`` belong to it. ``release()`` when the job ends."""

    def __init__(self, caps: Caps, unit: str, guild: str, user: str, job: str) -> None:
        self._caps = caps
        self._unit, self.guild, self.user, self.job = unit, guild, user, job
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._caps.unhold(self._unit, self.guild, self.user)

    def __enter__(self) -> "JobReservation":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
