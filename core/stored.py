"""A summary as stored (``storage.SummaryRecord.structured``), written and read back here only.

``structured_of`` writes what a summary's record keeps beside its text; ``StoredSummaryView.of`` reads
it back in the shape the renderer reads, to show the summary again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.generation import GenerationSettings
from engine.summarizer import Summary
from storage import SummaryRecord


def structured_of(summary: Summary, *, fingerprint: str | None = None, reused_from: int | None = None) -> dict[str, Any]:
    """The record's ``structured`` JSON for ``summary``: what ``StoredSummaryView.of`` reads back."""
    return {
        "citations": list(summary.citations),
        "topics": [{"title": t.title, "message_id": t.message_id} for t in summary.topics],
        "participants": list(summary.participants),
        "model": summary.model,
        "truncated": bool(summary.truncated),
        **({"fingerprint": fingerprint} if fingerprint else {}),
        **({"reused_from": reused_from} if reused_from is not None else {}),
    }


@dataclass
class _Topic:
    title: str
    message_id: int | None


@dataclass
class StoredSummaryView:
    """A ``SummaryRecord`` in the shape the renderer reads (``render.SummaryLike``)."""

    text: str
    citations: list[int]
    topics: list[_Topic]
    participants: list[str]
    start: datetime | None
    end: datetime | None
    message_count: int
    truncated: bool
    model: str
    settings: GenerationSettings | None
    source_ids: list[int]

    @classmethod
    def of(cls, record: SummaryRecord) -> "StoredSummaryView":
        data = record.structured or {}
        settings = GenerationSettings.from_dict(record.settings)
        return cls(
            text=record.text,
            citations=[int(c) for c in data.get("citations", []) if isinstance(c, int)],
            topics=[_Topic(str(t.get("title", "")), t.get("message_id")) for t in data.get("topics", []) if isinstance(t, dict)],
            participants=[str(p) for p in data.get("participants", [])],
            start=record.start_at,
            end=record.end_at,
            message_count=len(record.source_ids),
            truncated=bool(data.get("truncated", False)),
            model=str(data.get("model", "unknown model")),
            settings=settings,
            source_ids=list(record.source_ids),
        )
