"""Budget cuts and chunk spans at message boundaries."""

from __future__ import annotations

import pytest

from engine.chunking import Span, group_for_combine, newest_within_budget, split_spans


def test_budget_keeps_the_newest_lines_that_fit():
    assert newest_within_budget([10, 10, 10, 10], 100) == 0
    assert newest_within_budget([10, 10, 10, 10], 25) == 2
    assert newest_within_budget([10, 10, 10, 10], 30) == 1


def test_budget_always_keeps_the_newest_line():
    assert newest_within_budget([5, 500], 100) == 1


def test_spans_cover_every_line_once_in_order_and_respect_the_limit():
    counts = [7, 30, 12, 5, 40, 22, 9, 18, 3, 25, 11]
    spans = split_spans(counts, 60)
    assert spans[0].start == 0 and spans[-1].stop == len(counts)
    assert all(a.stop == b.start for a, b in zip(spans, spans[1:]))
    assert all(s.tokens <= 60 for s in spans)
    assert sum(s.tokens for s in spans) == sum(counts)
    assert all(s.tokens == sum(counts[s.start:s.stop]) for s in spans)


def test_spans_are_balanced_instead_of_leaving_a_tiny_tail():
    spans = split_spans([10] * 11, 100)  # 110 tokens: greedy would give 100 + 10
    assert len(spans) == 2
    assert min(s.tokens for s in spans) >= 40


def test_a_line_over_the_limit_gets_its_own_span():
    spans = split_spans([10, 500, 10], 100)
    assert Span(1, 2, 500) in spans
    assert len(spans) == 3


def test_single_span_when_everything_fits():
    assert split_spans([10, 20], 100) == [Span(0, 2, 30)]
    assert split_spans([], 100) == []
    with pytest.raises(ValueError):
        split_spans([1], 0)


def test_combine_groups_are_greedy_and_consecutive():
    assert group_for_combine([40, 40, 40, 40, 40], 100) == [Span(0, 2, 80), Span(2, 4, 80), Span(4, 5, 40)]
    assert group_for_combine([150, 10], 100) == [Span(0, 1, 150), Span(1, 2, 10)]
