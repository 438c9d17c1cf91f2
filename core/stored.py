"""A stored summary (``storage.SummaryRecord``) in the shape the renderer reads, to show it again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from engine.generation import GenerationSettings
from storage import SummaryRecord


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
