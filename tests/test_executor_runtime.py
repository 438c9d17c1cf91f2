"""The executor as the bot runs it: event-loop responsiveness, the Prometheus endpoint, the embedded model."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest

from engine.executor import start_metrics_server
from engine.generation import GenerationSettings
from engine.models import ModelBackend, load_backend
from test_executor_support import CHATS, Factory, executor, request, tiny_causal

__all__ = ["tiny_causal"]


class LoopTicker:
    """Sleeps 5 ms in a loop and records the worst overshoot: how long the event loop was unavailable."""

    def __init__(self) -> None:
        self.worst_s = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst_s = max(self.worst_s, time.perf_counter() - before - 0.005)
            self.ticks += 1

    def __enter__(self) -> "LoopTicker":
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_event_loop_keeps_running_while_the_model_works(tiny_causal_dir: Path) -> None:
    # Tokenizing a long prompt, batching and generating all happen while the ticker runs.
    # (Loading is left out: parsing a tokenizer file holds the GIL in Rust; it happens before the bot connects.)
    long_chat = "\n".join(f"user{i % 7}: message {i} about the release plan and the migration" for i in range(120))
    async with executor(lambda: load_backend(str(tiny_causal_dir), device="cpu"), max_batch_wait_ms=50) as ex:
        with LoopTicker() as ticker:
            results = await asyncio.gather(
                ex.submit(request(long_chat, max_new_tokens=24)),
                *(ex.submit(request(chat, max_new_tokens=24)) for chat in CHATS),
                *(ex.count_tokens(long_chat) for _ in range(3)),
            )
            results = results[: len(CHATS) + 1]
    assert all(r.new_tokens > 0 for r in results)
    assert ticker.ticks > 10
    assert ticker.worst_s < 0.100, f"event loop stalled for {ticker.worst_s * 1000:.0f} ms"


async def test_prometheus_endpoint_serves_executor_metrics(tiny_causal: ModelBackend) -> None:
    async with executor(Factory(tiny_causal), max_batch_wait_ms=200) as ex:
        await asyncio.gather(*(ex.submit(request(chat)) for chat in CHATS[:3]))
        server = start_metrics_server(ex, 0)
        try:
            assert server.host == "127.0.0.1"
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(server.url, timeout=10).read().decode())
        finally:
            server.close()
    assert "recap_executor_batches_total 1.0" in body
    assert 'recap_executor_batch_size_bucket{le="4.0"} 1.0' in body
    assert "recap_executor_completed_total 3.0" in body
    assert "recap_executor_ready 1.0" in body
    assert 'recap_executor_latency_seconds{quantile="0.95"}' in body


@pytest.fixture(scope="module")
def embedded(embedded_cache_dir: Path) -> ModelBackend:
    return load_backend("embedded", device="cpu", cache_dir=embedded_cache_dir)


@pytest.mark.embedded
async def test_embedded_model_batched_greedy_equals_unbatched(embedded: ModelBackend) -> None:
    settings = GenerationSettings(max_new_tokens=24)
    requests = [request(chat, settings=settings) for chat in CHATS[:4]]
    alone = [embedded.generate_batch([r.prompt], settings)[0] for r in requests]
    factory = Factory(embedded)
    async with executor(factory, max_batch_wait_ms=200) as ex:
        batched = await asyncio.gather(*(ex.submit(r) for r in requests))
    assert [r.batch_size for r in batched] == [4] * 4
    assert [r.text for r in batched] == [r.text for r in alone]
    assert all(r.text for r in batched)
