"""The executor's queue: who runs next, and which requests share a batch.

Order: lower ``priority`` first (0 interactive, 1 digests); within a priority,
round-robin over guilds, one request per guild per round; within a guild,
round-robin over its units of work (a map-reduce job's chunks are one unit, a
lone request is its own), first come first served within a unit. A guild with
twenty queued chunks therefore holds one place per round, not twenty places
ahead of everyone else, and within that guild a short request takes turns with
a long job's chunks instead of waiting for all of them.

A batch only takes rows whose prompt lengths are comparable (``comparable``):
left padding makes every row as long as the longest, so a short request batched
with long chunks would run as slowly as they do.

Only the scheduler task touches the queue, on the event loop; no locking.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .generation import GenerationRequest, GenerationResult

_seq = itertools.count()
# How many batches' worth of queued requests the batcher looks at when matching prompt lengths.
LENGTH_LOOKAHEAD = 4
# Rows share a batch when the longer prompt is at most this many times the shorter plus a margin.
# Twice plus 1,024 keeps a short summary's prompt (~700 tokens) out of a long channel's parts (~3,250):
# at 4x + 512 it was padded to a part's length and ran 231 s instead of 12 (measured, bench/load.py),
# while short prompts of 100 to 1,000 tokens still share a batch (their answers, not prompts, dominate).
LENGTH_RATIO = 2
LENGTH_MARGIN = 1024


def comparable(a: int, b: int) -> bool:
    """Whether prompts of ``a`` and ``b`` tokens may share a batch without the shorter paying much for padding."""
    return max(a, b) <= LENGTH_RATIO * min(a, b) + LENGTH_MARGIN


@dataclass(eq=False)
class Entry:
    """One admitted request: its own future, and a flag the worker thread reads to drop its row."""

    request: GenerationRequest
    future: asyncio.Future[GenerationResult]
    admitted_at: float
    prompt_tokens: int = 0
    enqueued_at: float = 0.0
    cancelled: bool = False  # set on the loop, read by the worker thread between decoding steps
    position: int | None = None  # last queue position reported to on_queue
    gate: asyncio.Semaphore | None = None  # the unit's gate this entry passed (released with the entry)
    seq: int = field(default_factory=lambda: next(_seq))

    @property
    def group_key(self) -> tuple[Any, ...]:
        return self.request.settings.group_key()

    @property
    def max_new_tokens(self) -> int:
        return self.request.settings.max_new_tokens

    @property
    def unit(self) -> str:
        """What per-guild and per-user caps count: a whole map-reduce job is one unit of work."""
        return job_unit(self.request) or f"req:{self.seq}"


def job_unit(request: GenerationRequest) -> str | None:
    return f"job:{request.guild}:{request.user}:{request.job}" if request.job else None


# fits(batch_so_far, candidate) -> whether candidate may join; the executor knows the model's limits.
FitsFn = Callable[[list[Entry], Entry], bool]


class FairQueue:
    """Queued entries by priority, then round-robin over guilds, then over each guild's units of work."""

    def __init__(self) -> None:
        # priority -> guild -> unit -> entries; each OrderedDict's order is the turn order.
        self._levels: dict[int, OrderedDict[str, OrderedDict[str, deque[Entry]]]] = {}
        self._size = 0
        # priority -> guild -> units that ran in the last batch taken at that level
        self._just_served: dict[int, dict[str, list[str]]] = {}

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.order())

    def push(self, entry: Entry) -> None:
        priority, guild, unit = entry.request.priority, entry.request.guild, entry.unit
        guilds = self._levels.setdefault(priority, OrderedDict())
        new_guild = guild not in guilds
        units = guilds.setdefault(guild, OrderedDict())
        new_unit = unit not in units
        units.setdefault(unit, deque()).append(entry)
        self._size += 1
        # A newcomer takes its turn before whoever ran last, not a round after them: a short request
        # arriving while a long job's part runs goes next, not behind that job's following part.
        recent = self._just_served.get(priority, {})
        if new_guild:
            for other in recent:
                if other != guild and other in guilds:
                    guilds.move_to_end(other)
        if new_unit:
            for other in recent.get(guild, ()):
                if other != unit and other in units:
                    units.move_to_end(other)

    def remove(self, entry: Entry) -> bool:
        guilds = self._levels.get(entry.request.priority)
        units = guilds.get(entry.request.guild) if guilds is not None else None
        entries = units.get(entry.unit) if units is not None else None
        if entries is None or entry not in entries:
            return False
        entries.remove(entry)
        self._size -= 1
        self._prune(entry.request.priority, entry.request.guild, entry.unit)
        return True

    def drain(self) -> list[Entry]:
        """Remove and return everything (shutdown, crash)."""
        everything = self.order()
        self._levels.clear()
        self._size = 0
        return everything

    def order(self) -> list[Entry]:
        """Every queued entry in the order it would run if nothing else arrived."""
        out: list[Entry] = []
        for priority in sorted(self._levels):
            queues = [_interleave(list(units.values())) for units in self._levels[priority].values()]
            out.extend(_interleave(queues))
        return out

    def take_batch(self, max_size: int, max_tokens: int, fits: FitsFn) -> list[Entry]:
        """Remove and return the next batch: the head entry and those that may share its generate call.

        Members share the head's priority and settings group and have a comparable prompt length;
        padded prompt tokens (longest prompt times rows) stay within ``max_tokens`` (the head alone always runs).
        """
        order = self.order()
        if not order:
            return []
        head = order[0]
        batch = [head]
        longest = head.prompt_tokens
        eligible = [
            e for e in order[1:]
            if e.request.priority == head.request.priority and e.group_key == head.group_key
            and comparable(e.prompt_tokens, head.prompt_tokens)
        ]
        # Left padding makes every row as long as the longest prompt, so when more requests
        # wait than fit, the batch takes those closest in length to the head (the head always
        # runs first; the lookahead bounds how far a later request can move ahead).
        lookahead = eligible[: max_size * LENGTH_LOOKAHEAD]
        if len(lookahead) >= max_size:
            # Lengths within a bucket count as equal, so similar prompts keep their fair order.
            bucket = max(32, head.prompt_tokens // 4)
            lookahead.sort(key=lambda e: abs(e.prompt_tokens - head.prompt_tokens) // bucket)
        for entry in lookahead:
            if len(batch) >= max_size:
                break
            if max(longest, entry.prompt_tokens) * (len(batch) + 1) > max_tokens or not fits(batch, entry):
                continue
            batch.append(entry)
            longest = max(longest, entry.prompt_tokens)
        served: dict[str, list[str]] = {}
        for entry in batch:
            self.remove(entry)
            units = served.setdefault(entry.request.guild, [])
            if entry.unit not in units:
                units.append(entry.unit)
        # Guilds that just ran go to the back of their level's turn order, and so do their units within them.
        guilds = self._levels.get(head.request.priority)
        if guilds is not None:
            for guild, units_served in served.items():
                if guild in guilds:
                    guilds.move_to_end(guild)
                    for unit in units_served:
                        if unit in guilds[guild]:
                            guilds[guild].move_to_end(unit)
        self._just_served[head.request.priority] = served
        return batch

    def _prune(self, priority: int, guild: str, unit: str) -> None:
        guilds = self._levels[priority]
        units = guilds[guild]
        if not units[unit]:
            del units[unit]
        if not units:
            del guilds[guild]
        if not guilds:
            del self._levels[priority]


def _interleave(queues: list[Any]) -> list[Entry]:
    """One from each queue per round, in the queues' turn order."""
    out: list[Entry] = []
    for rank in range(max((len(q) for q in queues), default=0)):
        out.extend(q[rank] for q in queues if rank < len(q))
    return out
