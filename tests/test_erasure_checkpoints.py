"""WAL checkpoints after erasures: a failed one stays owed and is retried until it succeeds."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from core.erasure import ErasureCheckpoints
from storage import StoredMessage, messages, open_database

MARKER = "heron-copper-4410"


def file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


async def test_a_checkpoint_that_fails_while_a_reader_is_busy_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "recap.sqlite3"
    async with open_database(path, busy_timeout_ms=50) as db:
        msg = StoredMessage(1, 2, 3, 4, "alice", f"secret {MARKER}", datetime(2026, 1, 1, tzinfo=timezone.utc))
        await db.writing(messages.upsert_messages, [msg])
        await db.checkpoint()
        checkpoints = ErasureCheckpoints(db)
        async with db.read(snapshot=True) as reader:
            await reader.execute_fetchall("SELECT count(*) FROM messages")  # pins the WAL
            await db.writing(messages.delete_messages, [1])
            assert await checkpoints.now() is False
            assert checkpoints.pending
        assert await checkpoints.run() is True
        assert not checkpoints.pending
        assert MARKER.encode() not in file_bytes(path)


async def test_nothing_owed_means_no_checkpoint(tmp_path: Path) -> None:
    async with open_database(tmp_path / "recap.sqlite3") as db:
        checkpoints = ErasureCheckpoints(db)
        assert not checkpoints.pending and await checkpoints.run() is True


async def test_postgres_vacuums_after_an_erasure_at_most_once_a_minute(pg_url: str, monkeypatch) -> None:
    import core.erasure

    clock = [1000.0]
    monkeypatch.setattr(core.erasure.time, "monotonic", lambda: clock[0])
    async with open_database(pg_url) as db:
        vacuums = []
        real = db.checkpoint

        async def counted() -> None:
            vacuums.append(clock[0])
            await real()

        monkeypatch.setattr(db, "checkpoint", counted)
        checkpoints = ErasureCheckpoints(db)
        assert await checkpoints.now() is True  # the first erasure: VACUUM at once
        clock[0] += 10
        assert await checkpoints.now() is False and checkpoints.pending  # ten seconds later: it waits
        clock[0] += db.checkpoint_every_s
        assert await checkpoints.run() is True and not checkpoints.pending  # the loop's next try runs it
        assert vacuums == [1000.0, 1070.0]
