"""Batch forming: how many tokens a batch may hold, which rows fit together, how long a lone request
waits for company, and the queue's time estimates.

The executor's scheduler calls these; the queue itself (fair order, same-settings groups) is
``executor_queue.FairQueue``.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Iterable, Sequence

from .backend import Backend
from .executor_queue import Entry, FairQueue

# Batch token budget when none is given, by device. On a CPU the prompt pass costs the same batched or
# not, so batching long prompts (a long channel's parts, ~3,000 tokens each) buys nothing and holds
# everyone else for minutes (5 parts: 231 s measured); 4,096 keeps one such part per batch while
# short prompts still batch. A GPU or a model server batches long prompts well.
CPU_BATCH_TOKENS = 4096
ACCELERATOR_BATCH_TOKENS = 16384
VALIDATION_WAIT_S = 0.25  # most a batch waits for requests admitted with it that are still being tokenized
MIN_ETA_S = 0.1  # a queued request always has some wait ahead of it, however fast recent batches were


def batch_tokens_for(device: str) -> int:
    return CPU_BATCH_TOKENS if device == "cpu" else ACCELERATOR_BATCH_TOKENS


def fits_context(backend: Backend | None, batch: Sequence[Entry], candidate: Entry) -> bool:
    """The rows all generate to the batch's longest max_new_tokens: keep every row within the context."""
    if backend is None or backend.is_encoder_decoder:
        return True
    longest_prompt = max(max(e.prompt_tokens for e in batch), candidate.prompt_tokens)
    longest_answer = max(max(e.max_new_tokens for e in batch), candidate.max_new_tokens)
    return longest_prompt + longest_answer <= backend.context_window


async def wait_for_company(queue: FairQueue, pending: Iterable[Entry], wakeup: asyncio.Event,
                           max_batch_size: int, max_wait_s: float) -> None:
    """Give a lone request up to ``max_wait_s`` to find company (counted from when it was queued).

    Requests already admitted but still being tokenized are waited for past that, up to
    VALIDATION_WAIT_S: they arrived together with the head and belong in its batch.
    """
    order = queue.order()
    if not order or max_wait_s <= 0:
        return
    deadline = order[0].enqueued_at + max_wait_s
    hard_deadline = order[0].enqueued_at + max(max_wait_s, VALIDATION_WAIT_S)
    while len(queue) < max_batch_size:
        now = time.perf_counter()
        # Past its unit's gate and being tokenized (requests waiting at a gate are not coming soon).
        validating = any(not e.enqueued_at and not e.future.done() and e.gate is not None for e in pending)
        left = (hard_deadline if validating else deadline) - now
        if left <= 0:
            return
        wakeup.clear()
        try:
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that lands as the wakeup fires,
            # and aclose() then waited forever for a scheduler that had gone back to sleep.
            async with asyncio.timeout(left):
                await wakeup.wait()
        except TimeoutError:
            return


def queue_eta(remaining_s: float, per_request_s: float, position: int) -> float:
    """Seconds until a queued request at ``position`` (1-based) is served, rounded up to 0.1 s.

    Plain rounding turned a fast model's estimate (a few ms per request) into 0.0, an ETA that says
    "no wait" to someone who is in fact queued.
    """
    seconds = remaining_s + per_request_s * position
    return max(MIN_ETA_S, math.ceil(round(seconds * 10, 6)) / 10)  # round first: 0.3 * 10 is 3.0000000000000004
