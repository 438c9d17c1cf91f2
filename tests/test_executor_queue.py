"""The batcher's choice of rows: fair order first, then prompts of similar length."""

from __future__ import annotations

import asyncio

from engine.executor_queue import Entry, FairQueue
from engine.generation import GenerationRequest, Prompt


def entry(loop: asyncio.AbstractEventLoop, name: str, tokens: int, guild: str = "g") -> Entry:
    req = GenerationRequest(Prompt("s", name), guild=guild, user=name)
    return Entry(req, loop.create_future(), admitted_at=0.0, prompt_tokens=tokens)


async def test_similar_lengths_share_a_batch_when_more_wait_than_fit() -> None:
    loop = asyncio.get_running_loop()
    q = FairQueue()
    lengths = [100, 900, 110, 880, 95, 905, 105, 890]
    for i, n in enumerate(lengths):
        q.push(entry(loop, f"r{i}", n))
    first = q.take_batch(max_size=4, max_tokens=1_000_000, fits=lambda b, e: True)
    assert [e.prompt_tokens for e in first] == [100, 110, 95, 105]
    second = q.take_batch(max_size=4, max_tokens=1_000_000, fits=lambda b, e: True)
    assert [e.prompt_tokens for e in second] == [900, 880, 905, 890]


async def test_fifo_kept_when_everything_fits() -> None:
    loop = asyncio.get_running_loop()
    q = FairQueue()
    for i, n in enumerate([100, 900, 110]):
        q.push(entry(loop, f"r{i}", n))
    batch = q.take_batch(max_size=4, max_tokens=1_000_000, fits=lambda b, e: True)
    assert [e.request.user for e in batch] == ["r0", "r1", "r2"]
