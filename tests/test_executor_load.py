"""The executor under load: caps count units of work, a job's chunk requests are bounded, fair turns.

Scheduling tests drive ``FairQueue`` directly (deterministic); the admission tests use the
real executor with a stalled tiny model, waiting on its state, never on time.
"""

from __future__ import annotations

import asyncio

import pytest

from engine.executor_queue import Entry, FairQueue
from engine.generation import GenerationRequest, GenerationSettings, Overloaded, Prompt
from engine.models import ModelBackend
from test_executor_support import Factory, executor, request, tiny_causal, wait_until

__all__ = ["tiny_causal"]

ALWAYS = lambda batch, entry: True  # noqa: E731  (the model's context is not what these tests are about)


def _entry(guild: str, user: str, tokens: int, job: str | None = None, name: str = "") -> Entry:
    req = GenerationRequest(Prompt("s", name or f"{guild}/{user}"), GenerationSettings(max_new_tokens=8),
                            guild=guild, user=user, job=job)
    return Entry(req, asyncio.get_running_loop().create_future(), 0.0, prompt_tokens=tokens)


async def test_a_short_request_takes_turns_with_a_long_job_of_the_same_server() -> None:
    queue = FairQueue()
    chunks = [_entry("A", "long", 3000, job="big", name=f"chunk{i}") for i in range(8)]
    for chunk in chunks:
        queue.push(chunk)
    short = _entry("A", "short", 400, name="short")
    queue.push(short)
    # Round-robin over the server's units: the short request is second, not ninth.
    assert queue.order()[:3] == [chunks[0], short, chunks[1]]
    first = queue.take_batch(8, 1_000_000, ALWAYS)
    # The long chunks batch together; the short prompt never pays for their padding.
    assert short not in first and first[0] is chunks[0]
    second = queue.take_batch(8, 1_000_000, ALWAYS)
    assert second == [short]  # the very next batch, not after the whole job


async def test_short_requests_batch_together_between_a_long_jobs_batches() -> None:
    queue = FairQueue()
    for i in range(16):
        queue.push(_entry("A", "long", 3000, job="big", name=f"chunk{i}"))
    shorts = [_entry("A" if i % 2 else "B", f"u{i}", 300 + 10 * i, name=f"short{i}") for i in range(5)]
    for entry in shorts:
        queue.push(entry)
    batches = []
    while len(queue):
        batches.append([e.request.prompt.user for e in queue.take_batch(8, 1_000_000, ALWAYS)])
    # The shorts are all done within the first two batches, and together: one batch, not five.
    short_batches = [i for i, b in enumerate(batches) if any(n.startswith("short") for n in b)]
    assert short_batches == [1] or short_batches == [0]
    assert sorted(batches[short_batches[0]]) == sorted(e.request.prompt.user for e in shorts)


async def test_one_servers_burst_never_starves_another_servers_single_request() -> None:
    queue = FairQueue()
    burst = [_entry("A", f"member{i}", 200) for i in range(40)]
    for entry in burst[:30]:
        queue.push(entry)
    lone = _entry("B", "someone", 200)
    queue.push(lone)
    for entry in burst[30:]:
        queue.push(entry)
    assert lone in queue.take_batch(8, 1_000_000, ALWAYS)


async def test_a_jobs_chunk_requests_are_bounded_in_the_queue(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    async with executor(factory, max_batch_size=2, max_batch_wait_ms=0, max_job_requests=3) as ex:
        factory.current.stall()
        blocker = asyncio.create_task(ex.submit(request("blocker", guild="Z")))
        await factory.current.wait_entered()
        chunks = [asyncio.create_task(ex.submit(request(f"chunk {i}", guild="A", user="u", job="j"))) for i in range(10)]
        await wait_until(lambda: ex.metrics()["queue_depth"] == 3)
        for _ in range(20):  # the other seven wait outside the queue, however long we look
            await asyncio.sleep(0)
        assert ex.metrics()["queue_depth"] == 3 and ex.metrics()["pending"] == 11
        assert ex.metrics()["jobs"] == 2  # the job is one unit; the blocker another
        factory.current.release()
        results = await asyncio.gather(blocker, *chunks)
    assert all(r.new_tokens > 0 for r in results)
    assert max(len(users) for users, _ in factory.current.calls) <= 2


async def test_caps_count_jobs_not_chunk_requests(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    async with executor(factory, max_queue=2, max_batch_wait_ms=0) as ex:
        factory.current.stall()
        held = [asyncio.create_task(ex.submit(request(f"chunk {i}", guild="A", user="u1", job="j"))) for i in range(6)]
        await factory.current.wait_entered()
        held.append(asyncio.create_task(ex.submit(request("lone", guild="B", user="u2"))))
        await wait_until(lambda: ex.metrics()["pending"] == 7)
        with pytest.raises(Overloaded, match="queue is full"):  # two units: the job and the lone request
            await ex.submit(request("third unit", guild="C", user="u3"))
        held.append(asyncio.create_task(ex.submit(request("chunk 6", guild="A", user="u1", job="j"))))
        await wait_until(lambda: ex.metrics()["pending"] == 8)
        factory.current.release()
        assert len(await asyncio.gather(*held)) == 8


async def test_a_reservation_holds_one_place_for_every_stage_of_a_job(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    async with executor(factory, max_queue_per_user=1, max_batch_wait_ms=0) as ex:
        reservation = ex.reserve("A", "u1")
        with pytest.raises(Overloaded, match="you already have 1"):
            ex.reserve("A", "u1")
        with pytest.raises(Overloaded):
            await ex.submit(request("another summary", guild="A", user="u1"))
        # Stage after stage, the job's own requests are admitted: its place is held between them.
        for stage in range(3):
            result = await ex.submit(request(f"stage {stage}", guild="A", user="u1", job=reservation.job))
            assert result.new_tokens > 0
            assert ex.metrics()["jobs"] == 1
        reservation.release()
        reservation.release()  # twice is harmless
        assert ex.metrics()["jobs"] == 0
        assert (await ex.submit(request("next", guild="A", user="u1"))).new_tokens > 0


async def test_metrics_for_one_server_beside_the_whole_bot(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    async with executor(factory, max_batch_wait_ms=0) as ex:
        factory.current.stall()
        blocker = asyncio.create_task(ex.submit(request("blocker", guild="A")))
        await factory.current.wait_entered()
        queued = [asyncio.create_task(ex.submit(request(f"B{i}", guild="B", user=f"b{i}"))) for i in range(3)]
        await wait_until(lambda: ex.metrics()["queue_depth"] == 3)
        assert ex.metrics("B")["queue_depth"] == 3 and ex.metrics("B")["in_flight"] == 0
        assert ex.metrics("A")["in_flight"] == 1 and ex.metrics("A")["queue_depth"] == 0
        assert ex.metrics()["queue_depth"] == 3 and ex.metrics()["in_flight"] == 1
        factory.current.release()
        await asyncio.gather(blocker, *queued)
        b = ex.metrics("B")
        assert b["batch_sizes"] == {3: 1} and b["tokens_per_s"] > 0 and b["jobs"] == 0
        assert ex.metrics("nobody") == {"batches": 0, "batch_sizes": {}, "tokens_per_s": 0.0,
                                        "queue_depth": 0, "in_flight": 0, "jobs": 0}
