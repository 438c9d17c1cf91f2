"""Concurrent requests for the same thing share one run.

``SharedRuns.run(key, work, listener)`` starts ``work`` for the first caller with a
key and lets later callers with the same key wait for the same result. Each
caller's ``listener`` hears the run's progress (a late joiner first hears the
latest event). The work belongs to no single caller: one who is cancelled
leaves, and the work is cancelled only when nobody waits for it any more.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Generic, Hashable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Listener = Callable[[str, int, int], None]  # (stage, done, total), like the summarizer's progress


@dataclass(eq=False)
class _Run(Generic[T]):
    task: "asyncio.Task[T] | None" = None
    listeners: list[Listener] = field(default_factory=list)
    last: tuple[str, int, int] | None = None
    waiters: int = 0

    def broadcast(self, stage: str, done: int, total: int) -> None:
        self.last = (stage, done, total)
        for listener in list(self.listeners):
            try:
                listener(stage, done, total)
            except Exception:  # noqa: BLE001 - one waiter's display must not break the others
                log.exception("progress listener failed")


class SharedRuns:
    def __init__(self) -> None:
        self._runs: dict[Hashable, _Run[Any]] = {}
        self.joined = 0  # callers that got another caller's run (for /status and tests)

    def running(self) -> int:
        return len(self._runs)

    def waiting(self, key: Hashable) -> int:
        run = self._runs.get(key)
        return run.waiters if run is not None else 0

    async def run(self, key: Hashable, work: Callable[[Listener], Awaitable[T]], listener: Listener) -> tuple[T, bool]:
        """The result of the run for ``key`` (started here if none is running) and whether it was joined."""
        run = self._runs.get(key)
        joined = run is not None
        if run is None:
            run = _Run()
            self._runs[key] = run
            run.task = asyncio.get_running_loop().create_task(_call(work, run.broadcast))
            run.task.add_done_callback(lambda task, key=key, run=run: self._finished(key, run, task))
        else:
            self.joined += 1
            if run.last is not None:
                listener(*run.last)
        assert run.task is not None
        run.listeners.append(listener)
        run.waiters += 1
        try:
            return await asyncio.shield(run.task), joined
        finally:
            run.waiters -= 1
            run.listeners.remove(listener)
            if run.waiters == 0 and not run.task.done():
                run.task.cancel()  # the last waiter left: nobody wants the result
                if self._runs.get(key) is run:
                    del self._runs[key]

    def _finished(self, key: Hashable, run: _Run[Any], task: "asyncio.Task[Any]") -> None:
        if self._runs.get(key) is run:
            del self._runs[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have left before it ended


async def _call(work: Callable[[Listener], Awaitable[T]], listener: Listener) -> T:
    return await work(listener)
