"""A backend that batches by itself (``parallel_rows`` > 1): the executor hands each request over as it
comes, up to that many at once, instead of one batch at a time. Against the fake OpenAI server (the
network edge), through the real executor and the real remote backend."""

from __future__ import annotations

import asyncio
from typing import Iterator

import pytest

from engine.executor import Executor
from engine.generation import EngineDead, GenerationRequest, GenerationSettings, Prompt
from engine.remote_backend import RemoteBackend, RemoteConfig, connect
from fake_openai import FakeOpenAI

pytestmark = pytest.mark.timeout(60)

SETTINGS = GenerationSettings(max_new_tokens=20)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def request(n: int, guild: str = "g1") -> GenerationRequest:
    return GenerationRequest(Prompt("Summarize the chat.", f"[1] Ann: item {n}\n[2] Bo: ok"), SETTINGS,
                             guild=guild, user=f"u{n}")


async def executor_on(server: FakeOpenAI, parallel: int) -> Executor:
    cfg = RemoteConfig(server.url, retries=0, timeout_s=30.0, parallel=parallel)
    executor = Executor(lambda: connect(cfg), max_batch_wait_ms=200, max_batch_size=8)
    await executor.start()
    return executor


async def test_a_slow_request_does_not_hold_back_the_ones_after_it(server: FakeOpenAI) -> None:
    server.faults = ["hang"]  # the first request does not answer until released
    executor = await executor_on(server, parallel=4)
    try:
        slow = asyncio.ensure_future(executor.submit(request(0)))
        await asyncio.sleep(0.3)  # it is on the server now
        quick = [await asyncio.wait_for(executor.submit(request(n)), 10) for n in range(1, 4)]
        assert all(r.text for r in quick) and not slow.done()
        server.release_hung()
        assert (await asyncio.wait_for(slow, 10)).text
        assert set(executor.metrics()["batch_sizes"]) == {1}  # every request went over alone
    finally:
        await executor.aclose()


async def test_never_more_rows_in_flight_than_the_backend_takes(server: FakeOpenAI) -> None:
    server.wait_for_concurrent = 3  # answers wait until 3 requests are in flight together
    executor = await executor_on(server, parallel=3)
    try:
        results = await asyncio.wait_for(asyncio.gather(*(executor.submit(request(n, f"g{n % 2}"))
                                                          for n in range(9))), 30)
        assert len(results) == 9 and all(r.text for r in results)
        assert server.max_in_flight == 3
        assert executor.metrics()["in_flight"] == 0
    finally:
        await executor.aclose()


async def test_requests_beyond_the_places_wait_in_the_fair_queue(server: FakeOpenAI) -> None:
    server.faults = ["hang"] * 3
    executor = await executor_on(server, parallel=3)
    try:
        asking = [asyncio.ensure_future(executor.submit(request(n, f"g{n % 3}"))) for n in range(9)]
        await asyncio.sleep(0.5)
        metrics = executor.metrics()
        assert (metrics["in_flight"], metrics["queue_depth"]) == (3, 6)  # the rest keep their place in line
        server.release_hung()
        assert all(r.text for r in await asyncio.wait_for(asyncio.gather(*asking), 30))
    finally:
        await executor.aclose()


async def test_one_batch_at_a_time_stays_the_rule_for_other_backends(server: FakeOpenAI) -> None:
    server.faults = ["hang"]
    executor = await executor_on(server, parallel=1)
    try:
        slow = asyncio.ensure_future(executor.submit(request(0)))
        await asyncio.sleep(0.5)  # its batch is running alone
        later = asyncio.ensure_future(executor.submit(request(1)))
        await asyncio.sleep(0.5)
        assert not later.done()  # waits for the running batch
        server.release_hung()
        await asyncio.wait_for(asyncio.gather(slow, later), 10)
    finally:
        await executor.aclose()


async def test_a_crash_seen_by_several_rows_restarts_the_engine_once(server: FakeOpenAI) -> None:
    loads: list[RemoteBackend] = []
    crash = {"on": False}

    class Crashing(RemoteBackend):
        def generate_batch(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            results = super().generate_batch(*args, **kwargs)
            if crash["on"]:
                raise RuntimeError("the engine process died")
            return results

    def factory() -> RemoteBackend:
        backend = Crashing(RemoteConfig(server.url, retries=0, timeout_s=30.0, parallel=4))
        backend.start()
        loads.append(backend)
        return backend

    executor = Executor(factory, max_batch_wait_ms=50)
    await executor.start()
    try:
        server.wait_for_concurrent = 3
        crash["on"] = True
        outcomes = await asyncio.wait_for(asyncio.gather(*(executor.submit(request(n)) for n in range(3)),
                                                         return_exceptions=True), 30)
        assert all(isinstance(o, EngineDead) for o in outcomes)
        crash["on"] = False
        server.wait_for_concurrent = 0
        assert (await asyncio.wait_for(executor.submit(request(9)), 30)).text
        assert len(loads) == 2 and executor.metrics()["restarts"] == 1
        assert executor.state == "ready"
    finally:
        await executor.aclose()


def test_overlapping_batches_count_their_time_once() -> None:
    from engine.executor_metrics import BatchRecord, busy_seconds

    def batch(start: float, end: float) -> BatchRecord:
        return BatchRecord(1, 10, end - start, ended_at=end)

    assert busy_seconds([batch(0, 2), batch(2, 5)]) == pytest.approx(5)  # one after another: the sum
    assert busy_seconds([batch(0, 4), batch(1, 3), batch(2, 6)]) == pytest.approx(6)  # side by side: once
    assert busy_seconds([batch(0, 1), batch(3, 4)]) == pytest.approx(2)  # idle time between is not busy
    assert busy_seconds([]) == 0
