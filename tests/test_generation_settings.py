"""GenerationSettings round-trips through a stored summary's dict, in one place."""

from __future__ import annotations

from core.stored import StoredSummaryView
from cogs.summaries import regenerate_settings
from engine.generation import GenerationSettings
from engine.prompts import generation_for
from storage import SummaryRecord


def record(settings: object, length: str = "short") -> SummaryRecord:
    return SummaryRecord(guild_id=1, channel_id=2, requester_id=3, text="t", length=length, style="paragraph",
                         settings=settings)  # type: ignore[arg-type]


def test_as_dict_and_from_dict_round_trip() -> None:
    made = generation_for("long", seed=7)
    assert GenerationSettings.from_dict(made.as_dict()) == made
    assert GenerationSettings.from_dict({**made.as_dict(), "added_later": 1}) == made  # unknown keys ignored


def test_nothing_usable_is_none() -> None:
    assert GenerationSettings.from_dict({}) is None
    assert GenerationSettings.from_dict(None) is None
    assert GenerationSettings.from_dict(["not", "a", "dict"]) is None
    assert GenerationSettings.from_dict({"temperature": 99.0}) is None  # out of range now
    assert GenerationSettings.from_dict({"temperature": "hot"}) is None


def test_the_stored_view_and_regenerate_read_it_the_same_way() -> None:
    made = generation_for("medium")
    assert StoredSummaryView.of(record(made.as_dict())).settings == made
    assert StoredSummaryView.of(record({"temperature": 99.0})).settings is None
    again = regenerate_settings(record(made.as_dict()), seed=5)
    assert again == made.with_(do_sample=True, seed=5)
    fallback = regenerate_settings(record({"temperature": 99.0}, length="short"), seed=5)
    assert fallback == generation_for("short").with_(do_sample=True, seed=5)
