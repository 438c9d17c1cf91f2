"""Buffered ingest: batching, timing, shutdown, and edits/deletes of buffered messages."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from storage import MessageBuffer, StorageError, erasure, messages, privacy, summaries
from storage.connection import is_postgres
from test_storage_helpers import CHANNEL, T0, db, db_path, msg, sqlite_db, summary  # noqa: F401


async def _count(db) -> int:
    return await db.reading(messages.count_messages)


async def _commits_during(db, work) -> int:
    """How many COMMITs the writer connection runs while ``work()`` runs."""
    seen: list[str] = []
    async with db.write() as conn:
        writer = conn
    await writer.set_trace_callback(seen.append)
    try:
        await work()
    finally:
        await writer.set_trace_callback(None)
    return sum(1 for s in seen if s.strip().upper() == "COMMIT")


async def test_each_full_batch_is_one_transaction(sqlite_db) -> None:
    db = sqlite_db  # counts COMMITs through SQLite's statement trace
    buffer = MessageBuffer(db, max_batch=100, max_delay_s=60)

    async def work() -> None:
        await buffer.add_many([msg(i) for i in range(1, 201)])
        await buffer.flush()

    assert await _commits_during(db, work) == 2
    assert await _count(db) == 200


async def test_a_full_batch_is_written_without_waiting_for_the_timer(db) -> None:
    buffer = MessageBuffer(db, max_batch=100, max_delay_s=60)
    await buffer.add_many([msg(i) for i in range(1, 251)])
    for _ in range(100):  # the second batch is written in the background
        if await _count(db) == 200:
            break
        await asyncio.sleep(0.01)
    assert await _count(db) == 200 and len(buffer) == 50
    await buffer.aclose()
    assert await _count(db) == 250


async def test_flush_writes_batches_of_max_batch(sqlite_db) -> None:
    db = sqlite_db  # counts COMMITs through SQLite's statement trace
    buffer = MessageBuffer(db, max_batch=1000, max_delay_s=60)
    buffer.max_batch = 10_000  # fill past the usual size without an automatic flush
    await buffer.add_many([msg(i) for i in range(1, 2501)])
    buffer.max_batch = 1000

    async def work() -> None:
        assert await buffer.flush() == 2500

    assert await _commits_during(db, work) == 3


async def test_background_task_flushes_after_the_delay(db) -> None:
    buffer = MessageBuffer(db, max_batch=500, max_delay_s=0.05)
    await buffer.start()
    try:
        await buffer.add(msg(1))
        assert await _count(db) == 0
        for _ in range(100):
            await asyncio.sleep(0.02)
            if await _count(db) == 1:
                break
        assert await _count(db) == 1 and len(buffer) == 0
    finally:
        await buffer.aclose()


async def test_aclose_writes_everything_buffered(db) -> None:
    buffer = MessageBuffer(db, max_batch=500, max_delay_s=60)
    await buffer.start()
    await buffer.add_many([msg(i) for i in range(1, 301)])
    await buffer.aclose()
    assert await _count(db) == 300
    with pytest.raises(StorageError, match="closed"):
        await buffer.add(msg(999))


async def test_a_second_add_of_a_buffered_id_replaces_it(db) -> None:
    buffer = MessageBuffer(db, max_batch=500, max_delay_s=60)
    await buffer.add(msg(1, content="first"))
    await buffer.add(msg(1, content="second"))
    assert len(buffer) == 1
    await buffer.flush()
    assert (await db.reading(messages.get_message, 1)).content == "second"


async def test_edit_of_a_buffered_message_edits_the_buffered_copy(db) -> None:
    buffer = MessageBuffer(db, max_batch=500, max_delay_s=60)
    await buffer.add(msg(1, content="typo"))
    when = T0 + timedelta(days=1)
    assert await buffer.edit(1, "fixed", when) is True
    await buffer.flush()
    stored = await db.reading(messages.get_message, 1)
    assert (stored.content, stored.edited_at) == ("fixed", when)


async def test_edit_of_a_flushed_message_edits_the_stored_one(db) -> None:
    buffer = MessageBuffer(db, max_batch=500, max_delay_s=60)
    await buffer.add(msg(1, content="typo"))
    await buffer.flush()
    assert await buffer.edit(1, "fixed", T0 + timedelta(days=1)) is True
    assert await buffer.edit(2, "unknown", T0) is False
    assert (await db.reading(messages.get_message, 1)).content == "fixed"


async def test_delete_of_a_buffered_message_never_reaches_the_database(db) -> None:
    buffer = MessageBuffer(db, max_batch=500, max_delay_s=60)
    await buffer.add_many([msg(1), msg(2)])
    result = await buffer.delete([1])
    assert result.messages == 1
    await buffer.flush()
    assert await db.reading(messages.get_message, 1) is None
    assert await db.reading(messages.get_message, 2) is not None


async def test_delete_of_a_flushed_message_deletes_it_and_its_summaries(db) -> None:
    buffer = MessageBuffer(db, max_batch=500, max_delay_s=60)
    await buffer.add(msg(1))
    await buffer.flush()
    await db.writing(summaries.insert_summary, summary([1]))
    result = await buffer.delete(1)
    assert (result.messages, result.summaries) == (1, 1)


async def test_write_after_flush_sees_buffered_messages(db) -> None:
    buffer = MessageBuffer(db, max_batch=500, max_delay_s=60)
    await buffer.add_many([msg(1, author=7), msg(2, author=8)])
    result = await buffer.write_after_flush(erasure.erase_member, 7)
    assert result.messages == 1 and len(buffer) == 0
    assert [m.id for m in await db.reading(messages.last_messages, CHANNEL, 10)] == [2]


async def test_opted_out_authors_are_dropped_at_flush(db) -> None:
    buffer = MessageBuffer(db, max_batch=500, max_delay_s=60)
    await buffer.add_many([msg(1, author=7), msg(2, author=8)])
    await db.writing(privacy.opt_out, 7)
    assert await buffer.flush() == 1
    assert await db.reading(messages.get_message, 1) is None


async def test_invalid_message_is_refused_at_add(db) -> None:
    buffer = MessageBuffer(db, max_batch=500, max_delay_s=60)
    with pytest.raises(StorageError, match="timezone-aware"):
        await buffer.add(replace(msg(1), created_at=T0.replace(tzinfo=None)))
    with pytest.raises(StorageError):
        await buffer.add_many([msg(2), replace(msg(3), content=None)])
    assert len(buffer) == 0


async def test_a_failed_flush_keeps_the_messages(db) -> None:
    buffer = MessageBuffer(db, max_batch=500, max_delay_s=60)
    await buffer.add_many([msg(1), msg(2)])
    async with db.write() as conn:
        if is_postgres(conn):
            await conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                               "$$ BEGIN RAISE EXCEPTION 'disk says no'; END $$")
            await conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse()")
        else:
            await conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    with pytest.raises(Exception, match="disk says no"):
        await buffer.flush()
    assert len(buffer) == 2
    async with db.write() as conn:
        await conn.execute("DROP TRIGGER refuse ON messages" if is_postgres(conn) else "DROP TRIGGER refuse")
    assert await buffer.flush() == 2


async def test_delete_racing_a_background_batch_wins(db) -> None:
    buffer = MessageBuffer(db, max_batch=50, max_delay_s=60)
    await buffer.add_many([msg(i) for i in range(1, 51)])  # a full batch: written in the background
    await buffer.delete([7])
    await buffer.flush()
    assert await db.reading(messages.get_message, 7) is None
    assert await _count(db) == 49


async def test_edit_racing_a_background_batch_wins(db) -> None:
    buffer = MessageBuffer(db, max_batch=50, max_delay_s=60)
    await buffer.add_many([msg(i, content="old") for i in range(1, 51)])
    assert await buffer.edit(7, "new", T0 + timedelta(days=1)) is True
    await buffer.flush()
    assert (await db.reading(messages.get_message, 7)).content == "new"
