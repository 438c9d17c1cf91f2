"""Message history: upserts, queries, counts, bad input, opted-out authors."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from storage import StorageError, StoredAttachment, messages, privacy
from test_storage_helpers import CHANNEL, GUILD, OTHER_CHANNEL, OTHER_GUILD, T0, THREAD, db, db_path, msg  # noqa: F401


async def _store(db, *msgs) -> int:
    return await db.writing(messages.upsert_messages, list(msgs))


async def test_stored_message_round_trips_every_field(db) -> None:
    original = replace(
        msg(7, parent=CHANNEL, channel=THREAD, attachments=[StoredAttachment("notes.txt", 12, "text/plain", "hello there!")]),
        edited_at=T0 + timedelta(hours=1),
        reply_to=3,
        is_bot=True,
    )
    assert await _store(db, original) == 1
    assert await db.reading(messages.get_message, 7) == original


async def test_unknown_id_reads_as_none(db) -> None:
    assert await db.reading(messages.get_message, 12345) is None


async def test_upsert_of_known_id_is_an_edit(db) -> None:
    await _store(db, msg(1, content="before"))
    edited = replace(msg(1, content="after"), edited_at=T0 + timedelta(days=1))
    await _store(db, edited)
    stored = await db.reading(messages.get_message, 1)
    assert stored.content == "after" and stored.edited_at == edited.edited_at
    assert await db.reading(messages.count_messages) == 1


async def test_edit_message_changes_a_stored_message_only(db) -> None:
    await _store(db, msg(1))
    when = T0 + timedelta(days=2)
    assert await db.writing(messages.edit_message, 1, "fixed", when) is True
    assert await db.writing(messages.edit_message, 99, "nothing", when) is False
    stored = await db.reading(messages.get_message, 1)
    assert (stored.content, stored.edited_at) == ("fixed", when)
    assert await db.reading(messages.get_message, 99) is None


async def test_last_messages_are_the_newest_oldest_first(db) -> None:
    await _store(db, *[msg(i) for i in range(1, 11)], msg(50, channel=OTHER_CHANNEL))
    got = await db.reading(messages.last_messages, CHANNEL, 3)
    assert [m.id for m in got] == [8, 9, 10]


async def test_messages_since_a_time(db) -> None:
    await _store(db, *[msg(i) for i in range(1, 11)])
    got = await db.reading(messages.messages_since, CHANNEL, T0 + timedelta(minutes=7))
    assert [m.id for m in got] == [7, 8, 9, 10]
    limited = await db.reading(messages.messages_since, CHANNEL, T0, limit=2)
    assert [m.id for m in limited] == [9, 10]


async def test_messages_after_an_id(db) -> None:
    await _store(db, *[msg(i) for i in range(1, 11)])
    assert [m.id for m in await db.reading(messages.messages_after, CHANNEL, 8)] == [9, 10]


async def test_messages_between_two_ids_inclusive_either_order(db) -> None:
    await _store(db, *[msg(i) for i in range(1, 11)])
    assert [m.id for m in await db.reading(messages.messages_between, CHANNEL, 6, 3)] == [3, 4, 5, 6]


async def test_queries_leave_out_excluded_authors(db) -> None:
    await _store(db, *[msg(i, author=500 + i % 2) for i in range(1, 7)])
    got = await db.reading(messages.last_messages, CHANNEL, 10, exclude_authors={501})
    assert [m.id for m in got] == [2, 4, 6]


async def test_counts_per_channel_guild_and_total(db) -> None:
    await _store(
        db, msg(1), msg(2), msg(3, channel=OTHER_CHANNEL), msg(4, channel=99, guild=OTHER_GUILD)
    )
    assert await db.reading(messages.count_messages) == 4
    assert await db.reading(messages.count_messages, guild_id=GUILD) == 3
    assert await db.reading(messages.count_messages, channel_id=CHANNEL) == 2
    assert await db.reading(messages.channel_message_counts, GUILD) == {CHANNEL: 2, OTHER_CHANNEL: 1}


async def test_thread_messages_keep_their_parent(db) -> None:
    await _store(db, msg(1), msg(2, channel=THREAD, parent=CHANNEL))
    thread = await db.reading(messages.last_messages, THREAD, 10)
    assert [(m.id, m.parent_id) for m in thread] == [(2, CHANNEL)]
    assert [m.id for m in await db.reading(messages.last_messages, CHANNEL, 10)] == [1]


async def test_opted_out_authors_are_never_stored(db) -> None:
    await db.writing(privacy.opt_out, 666)
    written = await _store(db, msg(1), msg(2, author=666), msg(3))
    assert written == 2
    assert await db.reading(messages.get_message, 2) is None


async def test_opt_out_and_insert_in_one_transaction(db) -> None:
    async with db.write() as conn:
        await privacy.opt_out(conn, 666)
        assert await messages.upsert_messages(conn, [msg(1, author=666)]) == 0
    assert await db.reading(messages.count_messages) == 0


@pytest.mark.parametrize(
    "text",
    [
        "lone surrogate \ud800 and \udfff",
        "pair of lone surrogates \ud83d\ude00",
        "NUL \x00 inside \x00",
        "emoji 😀👩‍👩‍👧 and flags 🇺🇦",
        "RTL שלום עולם مرحبا \u202e reversed",
        "",
        "x" * 1_000_000,
    ],
    ids=["surrogate", "surrogate-pair", "nul", "emoji", "rtl", "empty", "huge-at-limit"],
)
async def test_odd_text_round_trips_exactly(db, text: str) -> None:
    attachment = StoredAttachment("f\ud800.txt", 3, "text/plain", text[:1000])
    await _store(db, replace(msg(1, content=text, attachments=[attachment]), author_name=text[:100]))
    stored = await db.reading(messages.get_message, 1)
    assert stored.content == text and stored.author_name == text[:100]
    assert stored.attachments == [attachment]
    assert (await db.reading(messages.last_messages, CHANNEL, 1))[0].content == text


async def test_content_over_the_limit_is_refused_clearly(db) -> None:
    with pytest.raises(StorageError, match=r"Message 1: content is 1,000,001 characters long; the most stored is 1,000,000"):
        await _store(db, msg(1, content="x" * 1_000_001))


async def test_a_bad_message_in_a_batch_writes_nothing(db) -> None:
    with pytest.raises(StorageError):
        await _store(db, msg(1), msg(2), replace(msg(3), content=b"bytes"))
    assert await db.reading(messages.count_messages) == 0


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"created_at": datetime(2025, 1, 1)}, "timezone-aware"),
        ({"id": 0}, "out of range"),
        ({"id": 2**63}, "out of range"),
        ({"channel_id": "10"}, "whole number"),
        ({"author_id": True}, "whole number"),
        ({"content": None}, "must be text"),
        ({"attachments": [StoredAttachment("a", -1)]}, "size"),
    ],
)
async def test_invalid_fields_are_refused_with_a_reason(db, bad: dict, match: str) -> None:
    with pytest.raises(StorageError, match=match):
        await _store(db, replace(msg(1), **bad))


async def test_negative_limit_is_refused(db) -> None:
    with pytest.raises(StorageError, match="limit"):
        await db.reading(messages.last_messages, CHANNEL, -1)
