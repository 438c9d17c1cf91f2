"""Leases and digest claims on both stores: of processes asking at once, exactly one does the work."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from storage import digests, leases, open_database
from storage.digests import DigestRecord
from test_storage_helpers import db, db_path, db_target  # noqa: F401  (fixtures)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


async def test_a_lease_has_one_holder_until_it_lapses(db) -> None:
    assert await db.writing(leases.take_lease, "retention", now=NOW, ttl=HOUR, holder="a")
    assert not await db.writing(leases.take_lease, "retention", now=NOW + timedelta(minutes=59), ttl=HOUR, holder="b")
    assert await db.writing(leases.take_lease, "retention", now=NOW + timedelta(minutes=30), ttl=HOUR, holder="a")  # renewed
    assert await db.reading(leases.lease_holder, "retention", now=NOW + timedelta(minutes=80)) == "a"
    assert await db.writing(leases.take_lease, "retention", now=NOW + timedelta(minutes=91), ttl=HOUR, holder="b")
    assert await db.reading(leases.lease_holder, "retention", now=NOW + timedelta(minutes=91)) == "b"


async def test_only_the_holder_releases_a_lease(db) -> None:
    assert await db.writing(leases.take_lease, "sweep:4:0,1", now=NOW, ttl=HOUR, holder="a")
    assert not await db.writing(leases.release_lease, "sweep:4:0,1", holder="b")
    assert await db.writing(leases.release_lease, "sweep:4:0,1", holder="a")
    assert await db.writing(leases.take_lease, "sweep:4:0,1", now=NOW, ttl=HOUR, holder="b")
    assert await db.reading(leases.lease_holder, "other", now=NOW) is None


async def test_two_databases_asking_at_once_get_one_lease(db_target: str) -> None:
    async with open_database(db_target) as first, open_database(db_target) as second:
        for round_ in range(10):
            at = NOW + round_ * 2 * HOUR  # every round starts after the last lease lapsed
            won = await asyncio.gather(
                first.writing(leases.take_lease, "job", now=at, ttl=HOUR, holder="first"),
                second.writing(leases.take_lease, "job", now=at, ttl=HOUR, holder="second"),
            )
            assert sorted(won) == [False, True], round_


def _digest() -> DigestRecord:
    return DigestRecord(guild_id=1, source_id=10, target_id=20, owner_id=100, every="daily", at_time="08:00",
                        timezone="UTC", length="medium", style="bullets", next_run_at=NOW)


async def test_a_claimed_digest_is_not_due_for_anyone_else(db) -> None:
    digest_id = await db.writing(digests.insert_digest, _digest())
    assert [d.id for d in await db.reading(digests.due_digests, NOW)] == [digest_id]
    assert await db.writing(digests.claim_digest, digest_id, due_at=NOW, now=NOW, until=NOW + HOUR, holder="a")
    assert not await db.writing(digests.claim_digest, digest_id, due_at=NOW, now=NOW, until=NOW + HOUR, holder="b")
    assert await db.reading(digests.due_digests, NOW + timedelta(minutes=1)) == []
    # The other process sleeps until the claim would lapse, not in a busy loop.
    assert await db.reading(digests.earliest_next_run) == NOW + HOUR
    # A crashed holder's claim lapses: the run is due again and can be claimed.
    assert [d.id for d in await db.reading(digests.due_digests, NOW + HOUR)] == [digest_id]
    assert await db.writing(digests.claim_digest, digest_id, due_at=NOW, now=NOW + HOUR, until=NOW + 2 * HOUR, holder="b")


async def test_a_finished_run_ends_the_claim_and_a_stale_claim_fails(db) -> None:
    digest_id = await db.writing(digests.insert_digest, _digest())
    assert await db.writing(digests.claim_digest, digest_id, due_at=NOW, now=NOW, until=NOW + HOUR, holder="a")
    tomorrow = NOW + timedelta(days=1)
    await db.writing(digests.record_run, digest_id, ran_until=NOW, next_run_at=tomorrow, status="posted")
    # A process that saw the old next_run_at cannot claim the run that was already made.
    assert not await db.writing(digests.claim_digest, digest_id, due_at=NOW, now=NOW + 2 * HOUR,
                                until=NOW + 3 * HOUR, holder="b")
    assert await db.reading(digests.earliest_next_run) == tomorrow
    assert await db.writing(digests.claim_digest, digest_id, due_at=tomorrow, now=tomorrow, until=tomorrow + HOUR, holder="b")
    assert await db.writing(digests.release_digest, digest_id, holder="b")
    assert [d.id for d in await db.reading(digests.due_digests, tomorrow)] == [digest_id]


async def test_two_databases_claiming_one_run_at_once_get_one_claim(db_target: str) -> None:
    async with open_database(db_target) as first, open_database(db_target) as second:
        ids = [await first.writing(digests.insert_digest, _digest()) for _ in range(10)]
        for digest_id in ids:
            won = await asyncio.gather(
                first.writing(digests.claim_digest, digest_id, due_at=NOW, now=NOW, until=NOW + HOUR, holder="first"),
                second.writing(digests.claim_digest, digest_id, due_at=NOW, now=NOW, until=NOW + HOUR, holder="second"),
            )
            assert sorted(won) == [False, True], digest_id
