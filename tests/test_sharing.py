"""SharedRuns: concurrent callers with one key get one run; a caller who leaves does not cancel it for the others."""

from __future__ import annotations

import asyncio

import pytest

from core.sharing import SharedRuns


class Work:
    """A run the test finishes by hand; counts how often it was started and whether it was cancelled."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = False
        self.release = asyncio.Event()
        self.running = asyncio.Event()

    async def __call__(self, report) -> str:
        self.started += 1
        report("queued", 3, 20)
        self.running.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        report("summarizing", 1, 1)
        return "the summary"


async def test_concurrent_callers_share_one_run_and_each_hears_its_progress() -> None:
    runs, work = SharedRuns(), Work()
    heard: dict[str, list[tuple[str, int, int]]] = {"a": [], "b": []}
    first = asyncio.create_task(runs.run("k", work, lambda *e: heard["a"].append(e)))
    await work.running.wait()
    second = asyncio.create_task(runs.run("k", work, lambda *e: heard["b"].append(e)))
    await asyncio.sleep(0)
    assert runs.waiting("k") == 2
    work.release.set()
    assert await first == ("the summary", False)
    assert await second == ("the summary", True)
    assert work.started == 1 and runs.joined == 1 and runs.running() == 0
    assert heard["a"] == [("queued", 3, 20), ("summarizing", 1, 1)]
    assert heard["b"] == [("queued", 3, 20), ("summarizing", 1, 1)]  # the late joiner hears the latest first


async def test_a_cancelled_waiter_does_not_cancel_the_work_others_wait_for() -> None:
    runs, work = SharedRuns(), Work()
    leaver = asyncio.create_task(runs.run("k", work, lambda *e: None))
    await work.running.wait()
    stayer = asyncio.create_task(runs.run("k", work, lambda *e: None))
    await asyncio.sleep(0)
    leaver.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaver
    assert not work.cancelled and runs.waiting("k") == 1
    work.release.set()
    assert (await stayer)[0] == "the summary"


async def test_the_work_is_cancelled_when_nobody_waits_any_more() -> None:
    runs, work = SharedRuns(), Work()
    only = asyncio.create_task(runs.run("k", work, lambda *e: None))
    await work.running.wait()
    only.cancel()
    with pytest.raises(asyncio.CancelledError):
        await only
    await asyncio.sleep(0)
    assert work.cancelled and runs.running() == 0
    again = Work()
    again.release.set()
    assert await runs.run("k", again, lambda *e: None) == ("the summary", False)  # a fresh run, not the dead one


async def test_different_keys_never_share_and_a_failure_reaches_every_waiter() -> None:
    runs = SharedRuns()
    gate = asyncio.Event()

    async def failing(report) -> str:
        await gate.wait()
        raise RuntimeError("the model broke")

    one = asyncio.create_task(runs.run("k", failing, lambda *e: None))
    two = asyncio.create_task(runs.run("k", failing, lambda *e: None))
    other = Work()
    other.release.set()
    assert (await runs.run("other", other, lambda *e: None))[1] is False
    await asyncio.sleep(0)
    gate.set()
    for task in (one, two):
        with pytest.raises(RuntimeError, match="the model broke"):
            await task
