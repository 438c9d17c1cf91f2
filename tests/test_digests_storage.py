"""storage.digests on both stores (a real SQLite file and a real PostgreSQL schema), migrated from scratch."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from storage import digests, erasure, open_database
from storage.digests import DigestRecord
from storage.errors import StorageError
from test_storage_helpers import column_names, db, db_path, db_target  # noqa: F401  (fixtures)

UTC = timezone.utc
T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)


def record(**changes) -> DigestRecord:
    values = dict(guild_id=1, source_id=10, target_id=20, owner_id=100, every="daily", at_time="08:00",
                  timezone="UTC", length="medium", style="bullets", next_run_at=T0)
    values.update(changes)
    return DigestRecord(**values)


async def test_migration_creates_exact_columns(db) -> None:
    assert await db.reading(column_names, "digests") == [
        "id", "guild_id", "source_id", "target_id", "owner_id", "every", "at_time", "timezone", "weekday",
        "length", "style", "created_at", "next_run_at", "last_run_at", "last_status", "claimed_by", "claimed_until",
    ]


async def test_insert_and_get_round_trip(db) -> None:
    created = datetime(2024, 5, 31, 12, 0, tzinfo=UTC)
    new_id = await db.writing(digests.insert_digest, record(every="weekly", weekday=4, created_at=created))
    got = await db.reading(digests.get_digest, new_id)
    assert got is not None
    assert (got.id, got.every, got.weekday, got.at_time, got.next_run_at, got.created_at) == (
        new_id, "weekly", 4, "08:00", T0, created)
    assert got.last_run_at is None and got.last_status is None


async def test_created_at_defaults_to_now(db) -> None:
    new_id = await db.writing(digests.insert_digest, record())
    got = await db.reading(digests.get_digest, new_id)
    assert got.created_at is not None
    assert abs((datetime.now(UTC) - got.created_at).total_seconds()) < 60


@pytest.mark.parametrize("changes, match", [
    (dict(every="hourly"), "daily, weekly"),
    (dict(at_time="8:00"), "HH:MM"),
    (dict(at_time="24:00"), "HH:MM"),
    (dict(every="weekly"), "weekday"),
    (dict(weekday=2), "weekday"),
    (dict(every="weekly", weekday=7), "weekday"),
    (dict(source_id=0), "source_id"),
    (dict(next_run_at=datetime(2024, 1, 1)), "naive"),
])
async def test_invalid_records_are_refused(db, changes, match) -> None:
    with pytest.raises(StorageError, match=match):
        await db.writing(digests.insert_digest, record(**changes))
    assert await db.reading(digests.count_digests) == 0


async def test_per_guild_limit(db) -> None:
    for _ in range(digests.MAX_PER_GUILD):
        await db.writing(digests.insert_digest, record())
    with pytest.raises(StorageError, match="Remove one first"):
        await db.writing(digests.insert_digest, record())
    await db.writing(digests.insert_digest, record(guild_id=2))  # another server is unaffected


async def test_due_and_earliest(db) -> None:
    assert await db.reading(digests.earliest_next_run) is None
    late = await db.writing(digests.insert_digest, record(next_run_at=T0 + timedelta(hours=2)))
    early = await db.writing(digests.insert_digest, record(next_run_at=T0))
    assert await db.reading(digests.earliest_next_run) == T0
    assert [d.id for d in await db.reading(digests.due_digests, T0 - timedelta(seconds=1))] == []
    assert [d.id for d in await db.reading(digests.due_digests, T0)] == [early]
    assert [d.id for d in await db.reading(digests.due_digests, T0 + timedelta(days=1))] == [early, late]


async def test_due_and_earliest_only_on_this_process_shards(db) -> None:
    on_0, on_1 = 4 << 22, (7 << 22) + 12345  # Discord puts a server on shard (id >> 22) % count
    mine = await db.writing(digests.insert_digest, record(guild_id=on_1, next_run_at=T0 + timedelta(hours=1)))
    await db.writing(digests.insert_digest, record(guild_id=on_0, next_run_at=T0))
    later = T0 + timedelta(days=1)
    assert [d.id for d in await db.reading(digests.due_digests, later, shards=(2, (1,)))] == [mine]
    assert await db.reading(digests.earliest_next_run, shards=(2, (1,))) == T0 + timedelta(hours=1)
    assert len(await db.reading(digests.due_digests, later, shards=(2, (0, 1)))) == 2
    assert len(await db.reading(digests.due_digests, later, shards=(1, (0,)))) == 2
    assert await db.reading(digests.earliest_next_run, shards=(3, (2,))) is None


async def test_record_run_moves_window_and_schedule(db) -> None:
    new_id = await db.writing(digests.insert_digest, record())
    assert await db.writing(digests.record_run, new_id, ran_until=T0, next_run_at=T0 + timedelta(days=1), status="posted")
    got = await db.reading(digests.get_digest, new_id)
    assert (got.last_run_at, got.next_run_at, got.last_status) == (T0, T0 + timedelta(days=1), "posted")
    assert not await db.writing(digests.record_run, 999, ran_until=T0, next_run_at=T0, status="x")


async def test_reschedule_keeps_window(db) -> None:
    new_id = await db.writing(digests.insert_digest, record(last_run_at=T0 - timedelta(days=1)))
    await db.writing(digests.reschedule, new_id, T0 + timedelta(days=1), "skipped: no access")
    got = await db.reading(digests.get_digest, new_id)
    assert got.last_run_at == T0 - timedelta(days=1)
    assert got.last_status == "skipped: no access"


async def test_delete_is_scoped_to_guild(db) -> None:
    new_id = await db.writing(digests.insert_digest, record())
    assert not await db.writing(digests.delete_digest, new_id, 2)
    assert await db.writing(digests.delete_digest, new_id, 1)
    assert await db.reading(digests.get_digest, new_id) is None


async def test_ids_are_not_reused(db) -> None:
    first = await db.writing(digests.insert_digest, record())
    await db.writing(digests.delete_digest, first, 1)
    assert await db.writing(digests.insert_digest, record()) == first + 1


async def test_bulk_deletes(db) -> None:
    await db.writing(digests.insert_digest, record(source_id=10, target_id=20))
    await db.writing(digests.insert_digest, record(source_id=30, target_id=10))
    await db.writing(digests.insert_digest, record(source_id=40, target_id=50, owner_id=7))
    await db.writing(digests.insert_digest, record(guild_id=2, source_id=60, target_id=70))
    assert (await db.writing(erasure.erase_channel, 10)).digests == 2
    assert (await db.writing(erasure.erase_member, 7)).digests == 1
    assert (await db.writing(erasure.erase_guild, 2)).digests == 1
    assert await db.reading(digests.count_digests) == 0


async def test_list_is_per_guild_in_id_order(db) -> None:
    a = await db.writing(digests.insert_digest, record())
    await db.writing(digests.insert_digest, record(guild_id=2))
    b = await db.writing(digests.insert_digest, record())
    assert [d.id for d in await db.reading(digests.list_digests, 1)] == [a, b]


async def test_survives_reopen(db_target: str) -> None:
    async with open_database(db_target) as db:
        new_id = await db.writing(digests.insert_digest, record())
    async with open_database(db_target) as db:
        assert (await db.reading(digests.get_digest, new_id)).next_run_at == T0
