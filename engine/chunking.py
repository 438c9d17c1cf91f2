"""Token-aware cutting of a transcript: the input budget, and chunks at message boundaries.

Counts come from the model's own tokenizer (through the executor), one count
per rendered line, so a chunk is a run of whole messages whose tokens fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Span:
    """Lines ``start`` (inclusive) to ``stop`` (exclusive) of a sequence, with their token total."""

    start: int
    stop: int
    tokens: int


def newest_within_budget(token_counts: Sequence[int], budget: int) -> int:
    """Index of the first line kept when only the newest lines that fit ``budget`` are read.

    The newest line is always kept, even alone over the budget (lines are size-capped).
    """
    total = 0
    for i in range(len(token_counts) - 1, -1, -1):
        total += token_counts[i]
        if total > budget and i < len(token_counts) - 1:
            return i + 1
    return 0


def split_spans(token_counts: Sequence[int], limit: int) -> list[Span]:
    """Consecutive spans of whole lines, each at most ``limit`` tokens, sized evenly.

    Packing toward an even target (total / number of chunks) avoids a tiny last
    chunk. A single line over ``limit`` forms its own span; the caller trims it.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    if not token_counts:
        return []
    spans: list[Span] = []
    start, size = 0, 0
    remaining = sum(token_counts)
    target = _even_target(remaining, limit)
    for i, count in enumerate(token_counts):
        # Cut before this line when it would overflow the limit, or land further past the
        # even target than stopping short of it does.
        past_target = size + count - target > target - size
        if size and (size + count > limit or past_target):
            spans.append(Span(start, i, size))
            remaining -= size
            target = _even_target(remaining, limit)
            start, size = i, 0
        size += count
    spans.append(Span(start, len(token_counts), size))
    return spans


def _even_target(remaining: int, limit: int) -> float:
    return remaining / max(1, math.ceil(remaining / limit))


def group_for_combine(token_counts: Sequence[int], limit: int) -> list[Span]:
    """Greedy groups of consecutive notes under ``limit``; every group holds at least one note."""
    spans: list[Span] = []
    start, size = 0, 0
    for i, count in enumerate(token_counts):
        if size and size + count > limit:
            spans.append(Span(start, i, size))
            start, size = i, 0
        size += count
    if token_counts:
        spans.append(Span(start, len(token_counts), size))
    return spans
