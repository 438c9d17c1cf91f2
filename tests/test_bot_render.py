"""Message splitting at each Discord limit, mention neutralising, and option parsing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import discord
import pytest

from core import render
from core.errors import AccessDenied, BadOption
from core.options import parse_message_ref, parse_since
from core.render import ReplyContext, build_summary_messages, neutralize_mentions, pack_embeds, split_text

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


@dataclass
class Topic:
    title: str
    message_id: int | None


@dataclass
class FakeSummary:
    """The Summary fields the renderer reads (render is pure; the real Summary is used in the bot tests)."""

    text: str
    citations: list[int] = field(default_factory=list)
    topics: list[Any] = field(default_factory=list)
    participants: list[str] = field(default_factory=list)
    start: datetime | None = T0
    end: datetime | None = T0 + timedelta(hours=1)
    message_count: int = 10
    truncated: bool = False
    model: str = "tiny"
    settings: Any = None


CTX = ReplyContext(guild_id=1, channel_id=2, channel_name="general", length="medium", style="paragraph")


def all_limits_hold(messages: list[list[discord.Embed]]) -> None:
    for embeds in messages:
        assert 1 <= len(embeds) <= render.EMBEDS_PER_MESSAGE
        assert sum(len(e) for e in embeds) <= render.EMBED_TOTAL_LIMIT
        for e in embeds:
            assert len(e.title or "") <= render.TITLE_LIMIT
            assert len(e.description or "") <= render.DESCRIPTION_LIMIT
            assert len(e.fields) <= render.FIELDS_PER_EMBED
            for f in e.fields:
                assert len(f.name) <= render.FIELD_NAME_LIMIT
                assert 0 < len(f.value) <= render.FIELD_VALUE_LIMIT
            assert len(e.footer.text or "") <= render.FOOTER_LIMIT


def test_split_text_prefers_paragraphs_and_keeps_every_word() -> None:
    text = ("word " * 300 + "\n\n") * 5
    chunks = split_text(text, 1000)
    assert all(len(c) <= 1000 for c in chunks)
    assert " ".join(chunks).split() == text.split()


def test_split_text_hard_cuts_a_word_longer_than_the_limit() -> None:
    chunks = split_text("x" * 2500, 1000)
    assert [len(c) for c in chunks] == [1000, 1000, 500]


def test_short_summary_is_one_message_with_links() -> None:
    summary = FakeSummary("We agreed to ship on Friday [1].", citations=[111], topics=[Topic("Release", 222)], participants=["alice", "bob"])
    messages = build_summary_messages(summary, CTX)
    assert len(messages) == 1
    all_limits_hold(messages)
    fields = {f.name: f.value for e in messages[0] for f in e.fields}
    assert "https://discord.com/channels/1/2/111" in fields["Sources"]
    assert "https://discord.com/channels/1/2/222" in fields["Topics"]
    assert fields["Participants"] == "alice, bob"
    assert messages[0][-1].footer.text.startswith("Model: tiny")


def test_description_limit_splits_into_several_embeds() -> None:
    messages = build_summary_messages(FakeSummary("sentence. " * 1000), CTX)  # 10,000 chars
    all_limits_hold(messages)
    descriptions = [e.description for batch in messages for e in batch if e.description]
    assert len(descriptions) == 3
    assert messages[0][0].title == "Summary of #general"


def test_total_per_message_limit_moves_embeds_to_followups() -> None:
    messages = build_summary_messages(FakeSummary("y " * 20000), CTX)  # 40,000 chars
    all_limits_hold(messages)
    assert len(messages) > 1


def test_field_value_and_field_count_limits() -> None:
    topics = [Topic(f"Topic number {i} " + "z" * 150, 10_000 + i) for i in range(400)]
    summary = FakeSummary("short", topics=topics, citations=list(range(10**17, 10**17 + 300)), participants=[f"user{i}" for i in range(500)])
    messages = build_summary_messages(summary, CTX)
    all_limits_hold(messages)
    topic_values = [f.value for b in messages for e in b for f in e.fields if f.name.startswith("Topics")]
    assert sum(v.count("https://discord.com/channels/1/2/") for v in topic_values) == 400


def test_title_is_cut_to_256() -> None:
    ctx = ReplyContext(guild_id=1, channel_id=2, channel_name="c" * 400, length="short", style="bullets")
    messages = build_summary_messages(FakeSummary("hi"), ctx)
    all_limits_hold(messages)
    assert len(messages[0][0].title) == 256


def test_ten_embeds_per_message() -> None:
    embeds = [discord.Embed(description="a") for _ in range(23)]
    assert [len(m) for m in pack_embeds(embeds)] == [10, 10, 3]


def test_notes_for_cap_truncation_and_skipped_files() -> None:
    ctx = ReplyContext(1, 2, "general", "short", "bullets", capped_at=500, skipped_files=("big.log",))
    messages = build_summary_messages(FakeSummary("hi", truncated=True), ctx)
    notes = [f.value for b in messages for e in b for f in e.fields if f.name == "Notes"][0]
    assert "latest 500 messages" in notes and "oldest part was cut" in notes and "big.log" in notes


def test_mass_role_and_user_mentions_are_neutralised() -> None:
    text = neutralize_mentions("hey @everyone and @here, ping <@&123>, <@456> and <@!789>")
    assert "@everyone" not in text and "@here" not in text and "<@&123>" not in text
    assert "<@456>" not in text and "<@!789>" not in text  # copied elsewhere, they would ping
    assert "456" in text and "789" in text  # broken, not removed
    summary = FakeSummary("@everyone meeting now", participants=["@here"])
    embeds = [e for b in build_summary_messages(summary, CTX) for e in b]
    assert all("@everyone" not in (e.description or "") for e in embeds)
    assert all("@here" not in f.value for e in embeds for f in e.fields)


@pytest.mark.parametrize(
    "text, hours",
    [("30m", 0.5), ("2h", 2), ("1d", 24), ("1w", 168), (" 2H ", 2)],
)
def test_parse_since(text: str, hours: float) -> None:
    window = parse_since(text, T0)
    assert window.after == T0 - timedelta(hours=hours) and window.before is None


def test_parse_since_yesterday_is_the_previous_utc_day() -> None:
    window = parse_since("yesterday", T0)
    assert window.after == datetime(2026, 11, 27, tzinfo=timezone.utc)
    assert window.before == datetime(2026, 11, 28, tzinfo=timezone.utc)


@pytest.mark.parametrize("bad", ["", "soon", "5", "0h", "999w", "-1h", "2 hours"])
def test_parse_since_rejects_with_examples(bad: str) -> None:
    with pytest.raises(BadOption) as info:
        parse_since(bad, T0)
    assert "`30m`" in info.value.message


def test_parse_message_ref() -> None:
    assert parse_message_ref("123456789012345678", 1).channel_id is None
    ref = parse_message_ref("https://discord.com/channels/1/22/123456789012345678", 1)
    assert (ref.channel_id, ref.message_id) == (22, 123456789012345678)
    assert parse_message_ref("https://ptb.discord.com/channels/1/22/33", 1).message_id == 33
    with pytest.raises(AccessDenied):
        parse_message_ref("https://discord.com/channels/999/22/33", 1)
    with pytest.raises(BadOption):
        parse_message_ref("not a link", 1)


def test_thread_names_and_file_names_cannot_ping() -> None:
    ctx = ReplyContext(guild_id=1, channel_id=2, channel_name="@everyone party", length="medium", style="paragraph",
                       skipped_files=("@here <@&5>.log",))
    embeds = [e for b in build_summary_messages(FakeSummary("hi"), ctx) for e in b]
    shown = " ".join([e.title or "" for e in embeds] + [f.value for e in embeds for f in e.fields])
    assert "@everyone" not in shown and "@here" not in shown and "<@&5>" not in shown


def test_a_fallback_summary_says_so_above_its_text_even_when_shown_again_from_storage() -> None:
    from engine.summarizer import FALLBACK_MODEL, FALLBACK_NOTE

    fresh = FakeSummary("Ann asks about lunch.", model=FALLBACK_MODEL)
    fresh.fallback = "its output was repetition twice"  # type: ignore[attr-defined]
    stored = FakeSummary("Ann asks about lunch.", model=FALLBACK_MODEL)  # a stored record keeps the model label
    model_made = FakeSummary("Ann and Bo plan lunch.")
    for summary in (fresh, stored):
        description = build_summary_messages(summary, CTX)[0][0].description or ""
        assert description.startswith(f"*{FALLBACK_NOTE}*") and "Ann asks about lunch." in description
    assert FALLBACK_NOTE not in (build_summary_messages(model_made, CTX)[0][0].description or "")
