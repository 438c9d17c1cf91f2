"""Summaries: storage, listing, and deletion whenever a source message is deleted (every path)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage import StorageError, erasure, messages, privacy, settings, summaries
from test_storage_helpers import CHANNEL, GUILD, OTHER_CHANNEL, OTHER_GUILD, T0, THREAD, db, db_path, msg, summary  # noqa: F401


async def _summary_ids(db) -> set[int]:
    async with db.read() as conn:
        return {r[0] for r in await conn.execute_fetchall("SELECT id FROM summaries")}


async def _orphan_sources(db) -> int:
    async with db.read() as conn:
        rows = await conn.execute_fetchall(
            "SELECT count(*) FROM summary_sources s LEFT JOIN summaries m ON m.id = s.summary_id WHERE m.id IS NULL"
        )
    return rows[0][0]


async def test_summary_round_trips_with_its_sources(db) -> None:
    record = summary(
        [3, 1, 2],
        settings={"temperature": 0.7, "sampling": False},
        structured={"citations": [1, 3], "topics": [{"title": "Ünïcode \ud800", "message_id": 2}], "participants": ["a"]},
        private=True,
        start_id=1,
        end_id=3,
        start_at=T0,
        end_at=T0 + timedelta(minutes=3),
        text="Summary with emoji 😀 and RTL שלום",
    )
    sid = await db.writing(summaries.insert_summary, record)
    assert record.id == sid and record.created_at is not None
    stored = await db.reading(summaries.get_summary, sid)
    assert stored == replace_sources(record, [1, 2, 3])


def replace_sources(record, ids):
    from dataclasses import replace

    return replace(record, source_ids=ids)


async def test_list_is_newest_first_with_paging(db) -> None:
    for i in range(5):
        await db.writing(summaries.insert_summary, summary([i + 1], created_at=T0 + timedelta(hours=i), text=f"s{i}"))
    await db.writing(summaries.insert_summary, summary([9], channel=OTHER_CHANNEL))
    page1 = await db.reading(summaries.list_summaries, CHANNEL, limit=2)
    page2 = await db.reading(summaries.list_summaries, CHANNEL, limit=2, offset=2)
    assert [s.text for s in page1 + page2] == ["s4", "s3", "s2", "s1"]
    assert await db.reading(summaries.count_summaries, channel_id=CHANNEL) == 5


async def test_list_filters_by_requester_and_hides_others_private(db) -> None:
    await db.writing(summaries.insert_summary, summary([1], requester=1, text="public by 1"))
    await db.writing(summaries.insert_summary, summary([2], requester=2, text="private by 2", private=True))
    await db.writing(summaries.insert_summary, summary([3], requester=1, text="private by 1", private=True))
    mine = await db.reading(summaries.list_summaries, CHANNEL, requester_id=1)
    assert {s.text for s in mine} == {"public by 1", "private by 1"}
    seen_by_1 = await db.reading(summaries.list_summaries, CHANNEL, visible_to=1)
    assert {s.text for s in seen_by_1} == {"public by 1", "private by 1"}
    assert await db.reading(summaries.count_summaries, requester_id=2) == 1


async def test_delete_summary_removes_its_source_rows(db) -> None:
    sid = await db.writing(summaries.insert_summary, summary([1, 2]))
    assert await db.writing(summaries.delete_summary, sid) is True
    assert await db.writing(summaries.delete_summary, sid) is False
    assert await _orphan_sources(db) == 0
    async with db.read() as conn:
        assert (await conn.execute_fetchall("SELECT count(*) FROM summary_sources"))[0][0] == 0


async def test_unserializable_structured_data_is_refused(db) -> None:
    with pytest.raises(StorageError, match="JSON"):
        await db.writing(summaries.insert_summary, summary([1], structured={"x": object()}))


# --- every delete path removes the summaries built from the deleted messages ---------------


async def _setup(db) -> tuple[int, int, int]:
    """Messages 1-2 (CHANNEL, author 500), 3 (thread, author 501), 4 (other guild); one summary each."""
    await db.writing(
        messages.upsert_messages,
        [msg(1), msg(2), msg(3, channel=THREAD, parent=CHANNEL, author=501), msg(4, guild=OTHER_GUILD, channel=99, author=502)],
    )
    a = await db.writing(summaries.insert_summary, summary([1, 2]))
    b = await db.writing(summaries.insert_summary, summary([3], channel=THREAD))
    c = await db.writing(summaries.insert_summary, summary([4], guild=OTHER_GUILD, channel=99))
    return a, b, c


async def test_delete_by_id_deletes_its_summaries(db) -> None:
    a, b, c = await _setup(db)
    result = await db.writing(messages.delete_messages, 2)
    assert (result.messages, result.summaries) == (1, 1)
    assert await _summary_ids(db) == {b, c} and await _orphan_sources(db) == 0


async def test_bulk_delete_deletes_their_summaries(db) -> None:
    a, b, c = await _setup(db)
    result = await db.writing(messages.delete_messages, [1, 3, 777])
    assert (result.messages, result.summaries) == (2, 2)
    assert await _summary_ids(db) == {c}


async def test_delete_of_a_never_stored_source_deletes_the_summary(db) -> None:
    sid = await db.writing(summaries.insert_summary, summary([123456]))
    result = await db.writing(messages.delete_messages, [123456])
    assert (result.messages, result.summaries) == (0, 1)
    assert sid not in await _summary_ids(db)


async def test_erasing_a_thread_deletes_its_summaries_and_overrides(db) -> None:
    a, b, c = await _setup(db)
    await db.writing(settings.set_setting, GUILD, "length", "long", THREAD)
    result = await db.writing(erasure.erase_channel, THREAD)
    assert (result.messages, result.summaries, result.settings) == (1, 1, 1)
    assert await _summary_ids(db) == {a, c}
    assert (await db.reading(settings.get_setting, GUILD, "length", THREAD)).source == "default"
    assert await db.reading(messages.count_messages, channel_id=CHANNEL) == 2


async def test_erasing_a_channel_takes_its_threads(db) -> None:
    a, b, c = await _setup(db)
    await db.writing(settings.set_setting, GUILD, "length", "long", CHANNEL)
    result = await db.writing(erasure.erase_channel, CHANNEL)
    assert (result.messages, result.summaries, result.settings) == (3, 2, 1)
    assert await _summary_ids(db) == {c}
    assert (await db.reading(settings.get_setting, GUILD, "length", CHANNEL)).source == "default"


async def test_delete_by_author_deletes_their_summaries(db) -> None:
    a, b, c = await _setup(db)
    result = await db.writing(messages.delete_author_messages, 501)
    assert (result.messages, result.summaries) == (1, 1)
    assert await _summary_ids(db) == {a, c}


async def test_delete_by_author_within_one_guild(db) -> None:
    await db.writing(messages.upsert_messages, [msg(1), msg(2, guild=OTHER_GUILD, channel=99)])
    result = await db.writing(messages.delete_author_messages, 500, guild_id=OTHER_GUILD)
    assert result.messages == 1 and await db.reading(messages.get_message, 1) is not None


async def test_delete_guild_deletes_messages_summaries_settings(db) -> None:
    a, b, c = await _setup(db)
    await db.writing(settings.set_setting, GUILD, "style", "bullets")
    extra = await db.writing(summaries.insert_summary, summary([], text="no stored sources"))
    result = await db.writing(erasure.erase_guild, GUILD)
    assert (result.messages, result.summaries, result.settings) == (3, 3, 1)
    assert await _summary_ids(db) == {c} and extra not in await _summary_ids(db)
    assert await db.reading(messages.count_messages) == 1


async def test_forget_user_deletes_their_summaries_and_requests(db) -> None:
    a, b, c = await _setup(db)
    requested = await db.writing(summaries.insert_summary, summary([4], guild=OTHER_GUILD, channel=99, requester=500))
    result = await db.writing(erasure.erase_member, 500)
    assert (result.messages, result.summaries) == (2, 2)
    assert await _summary_ids(db) == {b, c} and requested not in await _summary_ids(db)


async def test_retention_purge_deletes_their_summaries(db) -> None:
    a, b, c = await _setup(db)  # messages from T0 + minutes
    result = await privacy.purge_expired(db, T0 + timedelta(days=31))
    assert result.messages == 4 and await _summary_ids(db) == set()
    assert await _orphan_sources(db) == 0


async def test_trigger_covers_a_raw_delete(db) -> None:
    a, b, c = await _setup(db)
    async with db.write() as conn:
        await conn.execute("DELETE FROM messages WHERE id = 1")
    assert await _summary_ids(db) == {b, c}
