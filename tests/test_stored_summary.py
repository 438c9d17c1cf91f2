"""A summary round-trips through its stored record: the structure and the generation settings, each read in one place."""

from __future__ import annotations

from datetime import datetime, timezone

from core.stored import StoredSummaryView, structured_of
from core.followups import regenerate_settings
from engine.generation import GenerationSettings
from engine.prompts import generation_for
from engine.summarizer import Summary, Topic
from storage import SummaryRecord


def record(settings: object, length: str = "short") -> SummaryRecord:
    return SummaryRecord(guild_id=1, channel_id=2, requester_id=3, text="t", length=length, style="paragraph",
                         settings=settings)  # type: ignore[arg-type]


def test_as_dict_and_from_dict_round_trip() -> None:
    made = generation_for("long", seed=7)
    assert GenerationSettings.from_dict(made.as_dict()) == made
    assert GenerationSettings.from_dict({**made.as_dict(), "added_later": 1}) == made  # unknown keys ignored


def test_summaries_stored_with_the_old_field_name_keep_their_sampling() -> None:
    old = {"max_new_tokens": 72, "do_sample": True, "temperature": 0.5, "seed": 3}
    assert GenerationSettings.from_dict(old) == GenerationSettings(max_new_tokens=72, sampling=True, temperature=0.5, seed=3)


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
    assert again == made.with_(sampling=True, seed=5)
    fallback = regenerate_settings(record({"temperature": 99.0}, length="short"), seed=5)
    assert fallback == generation_for("short").with_(sampling=True, seed=5)


def test_what_is_stored_is_what_is_shown_again() -> None:
    start, end = datetime(2026, 1, 1, 9, tzinfo=timezone.utc), datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    summary = Summary(text="Ann fixed the build [1].", citations=[11, 12], topics=[Topic("build", 11)],
                      participants=["Ann", "Bo"], start=start, end=end, message_count=2, truncated=True,
                      source_ids=[11, 12], model="m", settings=generation_for("short"))
    stored = record(summary.settings.as_dict())
    stored.text = summary.text
    stored.structured = structured_of(summary, fingerprint="abc", reused_from=4)
    stored.source_ids, stored.start_at, stored.end_at = [11, 12], start, end
    view = StoredSummaryView.of(stored)
    assert (view.text, view.citations, view.participants, view.model, view.truncated) == (
        summary.text, [11, 12], ["Ann", "Bo"], "m", True)
    assert [(t.title, t.message_id) for t in view.topics] == [("build", 11)]
    assert (view.start, view.end, view.message_count, view.settings) == (start, end, 2, summary.settings)
    assert stored.structured["fingerprint"] == "abc" and stored.structured["reused_from"] == 4
