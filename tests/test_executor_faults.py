"""Faults: worker crashes and restarts, out-of-memory splitting, shutdown with work in flight."""

from __future__ import annotations

import asyncio
import threading
from typing import Sequence

import pytest

from engine.generation import EngineDead, ExecutorClosed, GenerationSettings, OutOfMemory, Prompt, RequestTimeout
from engine.models import ModelBackend
from test_executor_support import CHATS, Factory, executor, request, tiny_causal, wait_until

__all__ = ["tiny_causal"]


class FailOnce:
    """A generate hook that raises ``error`` the first time only."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.fired = False

    def __call__(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> None:
        if not self.fired:
            self.fired = True
            raise self.error


def model_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "recap-model" and t.is_alive()]


@pytest.mark.parametrize("error", [RuntimeError("CUDA error: device-side assert triggered"), SystemExit(3)], ids=["exception", "thread-death"])
async def test_crash_fails_every_waiter_and_restarts_the_worker(tiny_causal: ModelBackend, error: BaseException) -> None:
    factory = Factory(tiny_causal, hook=FailOnce(error))
    async with executor(factory, max_batch_size=2, max_batch_wait_ms=200) as ex:
        outcomes = await asyncio.gather(*(ex.submit(request(chat)) for chat in CHATS[:4]), return_exceptions=True)
        assert all(isinstance(o, EngineDead) for o in outcomes), outcomes  # the crashed batch and the queued ones
        await wait_until(lambda: ex.ready)
        after = await ex.submit(request("Ann: still there?"))
        metrics = ex.metrics()
        await wait_until(lambda: len(model_threads()) == 1)  # the crashed thread has ended
    assert after.new_tokens > 0
    assert len(factory.made) == 2 and factory.made[0].model is None  # the old backend's model was released
    assert metrics["restarts"] == 1 and metrics["engine_errors"] == 1


async def test_engine_that_cannot_reload_refuses_with_engine_dead(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal, hook=FailOnce(RuntimeError("driver lost")), fail_on={2})
    async with executor(factory) as ex:
        with pytest.raises(EngineDead):
            await ex.submit(request("Ann: hi"))
        await wait_until(lambda: ex.state == "dead")
        assert not ex.ready and len(factory.made) == 2
        with pytest.raises(EngineDead, match="could not be reloaded"):
            await ex.submit(request("Ann: hello?"))


async def test_out_of_memory_batch_is_split_until_it_fits(tiny_causal: ModelBackend) -> None:
    def only_one_fits(prompts: Sequence[Prompt], settings: GenerationSettings) -> None:
        if len(prompts) > 1:
            raise MemoryError("simulated: no room for a batch")

    factory = Factory(tiny_causal, hook=only_one_fits)
    requests = [request(chat) for chat in CHATS[:4]]
    async with executor(factory, max_batch_wait_ms=200) as ex:
        results = await asyncio.gather(*(ex.submit(r) for r in requests))
        metrics = ex.metrics()
    assert [len(users) for users, _ in factory.current.calls] == [4, 2, 1, 1, 2, 1, 1]
    assert [r.text for r in results] == [tiny_causal.generate_batch([r.prompt], r.settings)[0].text for r in requests]
    assert metrics["oom"] == 0 and metrics["restarts"] == 0


async def test_request_that_does_not_fit_even_alone_gets_out_of_memory(tiny_causal: ModelBackend) -> None:
    def huge_never_fits(prompts: Sequence[Prompt], settings: GenerationSettings) -> None:
        if any("HUGE" in p.user for p in prompts):
            raise MemoryError("simulated: too large")

    factory = Factory(tiny_causal, hook=huge_never_fits)
    async with executor(factory, max_batch_wait_ms=200) as ex:
        outcomes = await asyncio.gather(
            ex.submit(request(CHATS[0])), ex.submit(request("HUGE conversation")), ex.submit(request(CHATS[1])),
            return_exceptions=True,
        )
        assert ex.metrics()["oom"] == 1 and ex.ready
    assert isinstance(outcomes[1], OutOfMemory)
    assert outcomes[0].new_tokens > 0 and outcomes[2].new_tokens > 0  # type: ignore[union-attr]


async def test_close_fails_queued_and_running_requests_and_frees_the_model(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    ex = executor(factory, max_batch_size=1, max_batch_wait_ms=0)
    await ex.start()
    factory.current.stall()
    running = asyncio.create_task(ex.submit(request("running", max_new_tokens=200)))
    await factory.current.wait_entered()
    queued = [asyncio.create_task(ex.submit(request(f"queued {i}"))) for i in range(2)]
    await wait_until(lambda: ex.metrics()["queue_depth"] == 2)
    closing = asyncio.create_task(ex.aclose())
    outcomes = await asyncio.gather(running, *queued, return_exceptions=True)
    assert all(isinstance(o, ExecutorClosed) for o in outcomes), outcomes
    factory.current.release()  # the worker finishes its step, sees every row cancelled, frees the model
    await closing
    await ex.aclose()  # twice is fine
    await wait_until(lambda: not model_threads())
    assert factory.current.model is None
    assert len(factory.current.results[0]) == 1 and factory.current.results[0][0].new_tokens < 200
    with pytest.raises(ExecutorClosed):
        await ex.submit(request("late"))


async def test_close_right_after_a_deadline_passes_in_the_queue_never_hangs(tiny_causal: ModelBackend) -> None:
    # The request's deadline passes while the scheduler waits for company for it; the caller leaves
    # (waking the scheduler) and closes the executor in the same loop step. On Python 3.11,
    # asyncio.wait_for swallowed the cancel that raced that wake-up and aclose() waited forever.
    ex = executor(Factory(tiny_causal), max_batch_size=8, max_batch_wait_ms=60_000)
    await ex.start()
    with pytest.raises(RequestTimeout):
        await ex.submit(request("Ann: lunch?", timeout=0.5))
    async with asyncio.timeout(20):
        await ex.aclose()
    assert ex.state == "closed"


async def test_a_deadline_passing_at_the_jobs_gate_leaks_no_place(tiny_causal: ModelBackend) -> None:
    # A job keeps one request in the queue at a time; the next waits at its gate, and its deadline passes
    # there. The place it never took must not be lost: the job's later requests still run.
    factory = Factory(tiny_causal)
    async with executor(factory, max_job_requests=1, max_batch_wait_ms=0) as ex:
        with ex.reserve("g", "u") as job:
            factory.current.stall()
            first = asyncio.create_task(ex.submit(request("Ann: first", guild="g", user="u", job=job.job)))
            await factory.current.wait_entered()
            with pytest.raises(RequestTimeout):
                await ex.submit(request("Ann: second", guild="g", user="u", job=job.job, timeout=0.3))
            factory.current.release()
            assert (await first).new_tokens > 0
            async with asyncio.timeout(30):
                third = await ex.submit(request("Ann: third", guild="g", user="u", job=job.job))
        assert third.new_tokens > 0
        assert ex.metrics()["pending"] == 0 and ex.metrics()["jobs"] == 0
