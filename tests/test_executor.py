"""The executor with real tiny models: batching, equivalence, settings groups, fairness, queue limits."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

import pytest

from bot.config import Config
from bot.services import build_executor
from engine.executor import Executor
from engine.executor_batching import ACCELERATOR_BATCH_TOKENS, CPU_BATCH_TOKENS, batch_tokens_for, queue_eta
from engine.executor_queue import Entry, FairQueue
from engine.generation import (
    ExecutorClosed,
    GenerationRequest,
    GenerationSettings,
    InvalidRequest,
    Overloaded,
    QueueStatus,
    RequestTimeout,
)
from engine.models import ModelBackend
from test_executor_support import CHATS, Factory, executor, request, tiny_causal, tiny_seq2seq, wait_until

__all__ = ["tiny_causal", "tiny_seq2seq"]  # fixtures used by name below


async def test_concurrent_requests_run_as_one_batch(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    async with executor(factory, max_batch_wait_ms=200) as ex:
        results = await asyncio.gather(*(ex.submit(request(chat)) for chat in CHATS))
        metrics = ex.metrics()
    assert len(factory.current.calls) == 1
    assert [r.batch_size for r in results] == [len(CHATS)] * len(CHATS)
    assert metrics["batch_sizes"] == {len(CHATS): 1}
    assert metrics["completed"] == len(CHATS) and metrics["batches"] == 1
    assert metrics["tokens_per_s"] > 0 and metrics["p50_s"] is not None


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
async def test_batched_greedy_equals_unbatched(kind: str, tiny_causal: ModelBackend, tiny_seq2seq: ModelBackend) -> None:
    base = tiny_causal if kind == "causal" else tiny_seq2seq
    requests = [request(chat, max_new_tokens=12) for chat in CHATS]
    async with executor(Factory(base), max_batch_size=1) as ex:
        alone = [await ex.submit(r) for r in requests]
    async with executor(Factory(base), max_batch_wait_ms=200) as ex:
        batched = await asyncio.gather(*(ex.submit(r) for r in requests))
    assert all(r.batch_size == 1 for r in alone) and all(r.batch_size == len(CHATS) for r in batched)
    assert [(r.text, r.new_tokens, r.finished) for r in batched] == [(r.text, r.new_tokens, r.finished) for r in alone]
    assert len({r.text for r in alone}) == len(CHATS)  # distinct outputs: the comparison is not vacuous


async def test_rows_with_different_lengths_share_a_batch_and_stop_at_their_own(tiny_causal: ModelBackend) -> None:
    lengths = [3, 17, 9, 1, 12]
    requests = [request(chat, max_new_tokens=n) for chat, n in zip(CHATS, lengths)]
    factory = Factory(tiny_causal)
    async with executor(factory, max_batch_wait_ms=200) as ex:
        batched = await asyncio.gather(*(ex.submit(r) for r in requests))
    alone = [tiny_causal.generate_batch([r.prompt], r.settings)[0] for r in requests]
    assert len(factory.current.calls) == 1
    assert factory.current.calls[0][1].max_new_tokens == max(lengths)
    assert [r.new_tokens for r in batched] == lengths
    assert [r.text for r in batched] == [r.text for r in alone]


async def test_different_settings_never_share_a_generate_call(tiny_causal: ModelBackend) -> None:
    greedy = GenerationSettings(max_new_tokens=6)
    stricter = GenerationSettings(max_new_tokens=6, repetition_penalty=1.5)
    sampled = GenerationSettings(max_new_tokens=6, sampling=True, temperature=0.8, seed=7)
    plan = [("g1", greedy), ("s1", sampled), ("r1", stricter), ("g2", greedy), ("s2", sampled), ("r2", stricter)]
    factory = Factory(tiny_causal)
    async with executor(factory, max_batch_wait_ms=200) as ex:
        await asyncio.gather(*(ex.submit(request(name, settings=s)) for name, s in plan))
    wanted = dict(plan)
    calls = factory.current.calls
    assert sorted(sorted(users) for users, _ in calls) == [["g1", "g2"], ["r1", "r2"], ["s1", "s2"]]
    for users, settings in calls:
        assert all(wanted[u] == settings for u in users)  # each row got exactly its own settings


async def test_invalid_requests_are_rejected_before_the_model(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    forged = GenerationSettings()
    object.__setattr__(forged, "max_new_tokens", 0)
    async with executor(factory) as ex:
        with pytest.raises(InvalidRequest, match="empty"):
            await ex.submit(request("   \n "))
        with pytest.raises(InvalidRequest, match="does not fit"):
            await ex.submit(request("word " * 2100))
        with pytest.raises(InvalidRequest, match="max_new_tokens"):
            await ex.submit(request("hi", settings=forged))
        with pytest.raises(InvalidRequest, match="timeout"):
            await ex.submit(request("hi", timeout=-1))
        with pytest.raises(InvalidRequest, match="Prompt"):
            await ex.submit(GenerationRequest("just a string"))  # type: ignore[arg-type]
        assert ex.metrics()["invalid"] == 5 and ex.metrics()["pending"] == 0
        assert (await ex.submit(request("Ann: hi"))).new_tokens > 0  # still serving
    assert len(factory.current.calls) == 1


async def test_seq2seq_answer_longer_than_decoder_positions_is_rejected(tiny_seq2seq: ModelBackend) -> None:
    async with executor(Factory(tiny_seq2seq)) as ex:
        with pytest.raises(InvalidRequest, match="longer than this model can write"):
            await ex.submit(request("Ann: hi", max_new_tokens=tiny_seq2seq.context_window))


async def test_full_queue_is_refused_at_once_with_a_retry_hint(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    async with executor(factory, max_queue=3, max_batch_size=1, max_batch_wait_ms=0) as ex:
        factory.current.stall()
        admitted = [asyncio.create_task(ex.submit(request(c, guild=str(i)))) for i, c in enumerate(CHATS[:3])]
        await factory.current.wait_entered()
        started = time.perf_counter()
        with pytest.raises(Overloaded) as refused:
            await ex.submit(request("one too many", guild="other"))
        assert time.perf_counter() - started < 0.1
        assert refused.value.retry_after >= 1.0 and "full" in str(refused.value)
        factory.current.release()
        assert all(r.new_tokens > 0 for r in await asyncio.gather(*admitted))
        assert ex.metrics()["rejected"] == 1


async def test_guild_and_user_caps_count_a_job_once(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    async with executor(factory, max_queue_per_guild=3, max_queue_per_user=2, max_batch_wait_ms=0) as ex:
        factory.current.stall()
        held = [asyncio.create_task(ex.submit(request(f"chunk {i}", guild="A", user="u1", job="j1"))) for i in range(6)]
        held.append(asyncio.create_task(ex.submit(request("u1 elsewhere", guild="B", user="u1"))))
        held.append(asyncio.create_task(ex.submit(request("u2 in A", guild="A", user="u2"))))
        held.append(asyncio.create_task(ex.submit(request("u3 in A", guild="A", user="u3"))))
        await factory.current.wait_entered()
        await wait_until(lambda: ex.metrics()["pending"] == 9)
        with pytest.raises(Overloaded, match="you already"):
            await ex.submit(request("u1 third unit", guild="C", user="u1"))
        with pytest.raises(Overloaded, match="server"):
            await ex.submit(request("u4 in A", guild="A", user="u4"))
        held.append(asyncio.create_task(ex.submit(request("another server", guild="D", user="u9"))))
        held.append(asyncio.create_task(ex.submit(request("chunk 6", guild="A", user="u1", job="j1"))))  # same job: no new unit
        await wait_until(lambda: ex.metrics()["pending"] == 11)
        factory.current.release()
        assert len(await asyncio.gather(*held)) == 11
        assert ex.metrics()["rejected"] == 2


async def test_a_busy_guild_does_not_hold_back_another(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    async with executor(factory, max_batch_size=4, max_batch_wait_ms=0, max_job_requests=32) as ex:
        factory.current.stall()
        blocker = asyncio.create_task(ex.submit(request("blocker", guild="Z")))
        await factory.current.wait_entered()
        chunks = [asyncio.create_task(ex.submit(request(f"A{i}", guild="A", job="long"))) for i in range(20)]
        await wait_until(lambda: ex.metrics()["queue_depth"] == 20)
        lone = asyncio.create_task(ex.submit(request("B0", guild="B")))
        await wait_until(lambda: ex.metrics()["queue_depth"] == 21)
        factory.current.release()
        await asyncio.gather(blocker, lone, *chunks)
    batches = [users for users, _ in factory.current.calls]
    assert batches[1] == ["A0", "B0", "A1", "A2"]  # B's request is in the very next batch
    assert [u for b in batches[2:] for u in b] == [f"A{i}" for i in range(3, 20)]  # the job's chunks batch together
    assert all(len(b) == 4 for b in batches[2:-1])


async def test_interactive_work_runs_before_digests(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    async with executor(factory, max_batch_wait_ms=0) as ex:
        factory.current.stall()
        blocker = asyncio.create_task(ex.submit(request("blocker")))
        await factory.current.wait_entered()
        digest = asyncio.create_task(ex.submit(request("digest", guild="X", priority=1)))
        await wait_until(lambda: ex.metrics()["queue_depth"] == 1)
        interactive = asyncio.create_task(ex.submit(request("interactive", guild="Y", priority=0)))
        await wait_until(lambda: ex.metrics()["queue_depth"] == 2)
        factory.current.release()
        await asyncio.gather(blocker, digest, interactive)
    assert [users for users, _ in factory.current.calls] == [["blocker"], ["interactive"], ["digest"]]


async def test_queue_positions_are_reported_on_the_loop(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    seen: dict[str, list[QueueStatus]] = {"a": [], "b": [], "c": []}
    threads: set[int] = set()

    def recorder(name: str):
        def on_queue(status: QueueStatus) -> None:
            threads.add(threading.get_ident())
            seen[name].append(status)

        return on_queue

    async with executor(factory, max_batch_size=1, max_batch_wait_ms=0) as ex:
        await ex.submit(request("warm-up: gives the executor a throughput figure for its ETA"))
        factory.current.stall()
        blocker = asyncio.create_task(ex.submit(request("blocker")))
        await factory.current.wait_entered()
        tasks = []
        for name in seen:
            tasks.append(asyncio.create_task(ex.submit(request(name, guild="G", on_queue=recorder(name)))))
            await wait_until(lambda: len(seen[name]) == 1)
        factory.current.release()
        await asyncio.gather(blocker, *tasks)
    assert threads == {threading.get_ident()}
    assert [s.position for s in seen["a"]] == [1]
    assert [s.position for s in seen["b"]] == [2, 1]
    assert [s.position for s in seen["c"]] == [3, 2, 1]
    assert all(s.eta_s is not None and s.eta_s > 0 for s in seen["c"])


def test_queue_eta_is_never_zero_for_a_queued_request() -> None:
    # A tiny model on a fast machine serves a request in a few ms; plain rounding reported "0.0 s".
    fast = [queue_eta(0.0, 0.004, position) for position in (1, 2, 3)]
    assert all(eta > 0 for eta in fast) and fast == sorted(fast)
    assert queue_eta(0.0, 0.3, 1) == 0.3  # exact tenths are not pushed up by float error
    assert queue_eta(1.25, 0.5, 2) == 2.3  # rounded up, never promising less than the estimate


async def test_timeout_fails_the_request_and_frees_its_place(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    async with executor(factory, max_batch_wait_ms=0) as ex:
        factory.current.stall()
        blocker = asyncio.create_task(ex.submit(request("blocker")))
        await factory.current.wait_entered()
        with pytest.raises(RequestTimeout):
            await ex.submit(request("too slow", timeout=0.2))
        assert ex.metrics()["queue_depth"] == 0 and ex.metrics()["timeouts"] == 1
        factory.current.release()
        await blocker
        await ex.submit(request("after"))
    assert ["too slow"] not in [users for users, _ in factory.current.calls]


async def test_default_timeout_applies(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    async with executor(factory, request_timeout_s=0.2, max_batch_wait_ms=0) as ex:
        factory.current.stall()
        with pytest.raises(RequestTimeout):
            await ex.submit(request("stalled in generate"))
        factory.current.release()


async def test_cancelled_caller_leaves_the_queue(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    async with executor(factory, max_batch_wait_ms=0) as ex:
        factory.current.stall()
        blocker = asyncio.create_task(ex.submit(request("blocker")))
        await factory.current.wait_entered()
        leaver = asyncio.create_task(ex.submit(request("leaver")))
        stayer = asyncio.create_task(ex.submit(request("stayer")))
        await wait_until(lambda: ex.metrics()["queue_depth"] == 2)
        leaver.cancel()
        await asyncio.gather(leaver, return_exceptions=True)
        assert ex.metrics()["queue_depth"] == 1 and ex.metrics()["cancellations"] == 1
        factory.current.release()
        await asyncio.gather(blocker, stayer)
    assert [users for users, _ in factory.current.calls] == [["blocker"], ["stayer"]]


async def test_cancelled_caller_row_stops_inside_a_running_batch(tiny_causal: ModelBackend) -> None:
    long_run = GenerationSettings(max_new_tokens=120)
    quitter, keeper = request(CHATS[1], settings=long_run), request(CHATS[3], settings=long_run)
    alone = tiny_causal.generate_batch([quitter.prompt], long_run)[0]
    assert alone.new_tokens == 120  # left alone, this row would run to its limit
    factory = Factory(tiny_causal)
    async with executor(factory, max_batch_wait_ms=200) as ex:
        factory.current.stall()
        quitting = asyncio.create_task(ex.submit(quitter))
        keeping = asyncio.create_task(ex.submit(keeper))
        await factory.current.wait_entered()
        quitting.cancel()
        await asyncio.gather(quitting, return_exceptions=True)
        factory.current.release()
        kept = await keeping
    rows = factory.current.results[0]
    assert len(rows) == 2 and rows[0].new_tokens < 120
    assert kept.text == tiny_causal.generate_batch([keeper.prompt], long_run)[0].text


async def test_count_tokens_runs_off_the_loop(tiny_causal: ModelBackend) -> None:
    async with executor(Factory(tiny_causal)) as ex:
        assert await ex.count_tokens("hello world") == tiny_causal.count_tokens("hello world")
        assert ex.backend.context_window == tiny_causal.context_window


async def test_not_started_and_closed_executors_refuse_politely(tiny_causal: ModelBackend) -> None:
    ex = executor(Factory(tiny_causal))
    assert not ex.ready
    with pytest.raises(ExecutorClosed, match="not started"):
        await ex.submit(request("hi"))
    await ex.start()
    assert ex.ready
    await ex.aclose()
    assert not ex.ready
    with pytest.raises(ExecutorClosed):
        await ex.submit(request("hi"))


async def test_build_executor_uses_model_and_limits(tiny_causal_dir: Path, tmp_path: Path) -> None:
    settings = Config.from_env(
        {}, model=str(tiny_causal_dir), device="cpu", model_cache_dir=str(tmp_path), max_batch_size="3", max_queue="5",
    )
    async with build_executor(settings) as ex:
        assert ex.max_batch_size == 3 and ex.max_queue == 5
        assert ex.max_batch_tokens == CPU_BATCH_TOKENS  # MAX_BATCH_TOKENS=0: by device
        result = await ex.submit(request("Ann: hi"))
        assert ex.metrics()["device"] == "cpu" and ex.metrics()["dtype"] == "float32"
    assert result.new_tokens > 0
    async with build_executor(dataclasses.replace(settings, max_batch_tokens=10_000)) as ex:
        assert ex.max_batch_tokens == 10_000  # an admin's value is kept


def test_batch_tokens_by_device() -> None:
    assert batch_tokens_for("cpu") == CPU_BATCH_TOKENS < batch_tokens_for("cuda:0") == ACCELERATOR_BATCH_TOKENS
    assert batch_tokens_for("remote http://127.0.0.1:8000") == ACCELERATOR_BATCH_TOKENS  # the server batches


async def test_async_queue_callbacks_are_awaited(tiny_causal: ModelBackend) -> None:
    factory = Factory(tiny_causal)
    seen: list[int] = []

    async def on_queue(status: QueueStatus) -> None:
        seen.append(status.position)

    async with executor(factory, max_batch_wait_ms=0) as ex:
        factory.current.stall()
        blocker = asyncio.create_task(ex.submit(request("blocker")))
        await factory.current.wait_entered()
        waiting = asyncio.create_task(ex.submit(request("waiting", on_queue=on_queue)))
        await wait_until(lambda: seen == [1])
        factory.current.release()
        await asyncio.gather(blocker, waiting)


def _entry(guild: str, tokens: int, priority: int = 0, settings: GenerationSettings | None = None) -> Entry:
    req = request(guild, guild=guild, priority=priority, settings=settings or GenerationSettings(max_new_tokens=8))
    return Entry(req, asyncio.get_running_loop().create_future(), 0.0, prompt_tokens=tokens)


async def test_a_short_summary_never_shares_a_batch_with_a_long_jobs_parts() -> None:
    queue = FairQueue()
    part, short, other_part, mid = _entry("A", 3250), _entry("B", 700), _entry("A", 3100), _entry("C", 1000)
    for entry in (part, short, other_part, mid):
        queue.push(entry)
    everything_fits = lambda batch, e: True  # noqa: E731
    assert queue.take_batch(8, 1_000_000, everything_fits) == [part, other_part]  # padded to 3,250: shorts stay out
    assert queue.take_batch(8, 1_000_000, everything_fits) == [short, mid]  # similar lengths still share


def _job_part(guild: str, job: str, tokens: int) -> Entry:
    req = request(job, guild=guild, settings=GenerationSettings(max_new_tokens=8))
    req.job = job
    return Entry(req, asyncio.get_running_loop().create_future(), 0.0, prompt_tokens=tokens)


async def test_a_newcomer_runs_before_the_next_part_of_the_job_that_just_ran() -> None:
    queue = FairQueue()
    parts = [_job_part("A", "long", 3000) for _ in range(3)]
    for part in parts:
        queue.push(part)
    one_at_a_time = lambda batch, e: False  # noqa: E731
    assert queue.take_batch(8, 4096, one_at_a_time) == [parts[0]]  # part 1 runs ...
    other_server, same_server = _entry("B", 700), _entry("A", 700)
    queue.push(other_server)  # ... while a short request from another server and one from A arrive
    queue.push(same_server)
    assert queue.take_batch(8, 4096, one_at_a_time) == [other_server]  # not behind part 2
    assert queue.take_batch(8, 4096, one_at_a_time) == [same_server]  # A's own short one, before part 2 too
    assert queue.take_batch(8, 4096, one_at_a_time) == [parts[1]]


async def test_fair_queue_orders_by_priority_then_round_robin_and_respects_the_token_budget() -> None:
    queue = FairQueue()
    a1, a2, a3, b1, c1 = _entry("A", 100), _entry("A", 100), _entry("A", 100), _entry("B", 100), _entry("C", 100)
    digest = _entry("D", 10, priority=1)
    sampled = _entry("E", 10, settings=GenerationSettings(max_new_tokens=8, sampling=True))
    for entry in (a1, a2, a3, digest, b1, sampled, c1):
        queue.push(entry)
    assert queue.order() == [a1, b1, sampled, c1, a2, a3, digest]
    # Budget 300 padded tokens: three rows of 100; the sampled one never joins a greedy batch.
    assert queue.take_batch(8, 300, lambda batch, e: True) == [a1, b1, c1]
    assert queue.order() == [sampled, a2, a3, digest]  # A, B and C went to the back of the turn order
    assert queue.take_batch(8, 10_000, lambda batch, e: True) == [sampled]
    assert queue.take_batch(8, 10_000, lambda batch, e: True) == [a2, a3]
    assert queue.take_batch(8, 10_000, lambda batch, e: True) == [digest]
    assert len(queue) == 0 and queue.take_batch(8, 10_000, lambda batch, e: True) == []
