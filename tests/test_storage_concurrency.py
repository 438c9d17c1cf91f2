"""Many writers at once, a second process on the same file, and a writer killed mid-transaction."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiosqlite

from storage import messages, open_database, summaries
from test_storage_helpers import db, db_path, db_target, msg, summary, target_of  # noqa: F401

REPO = Path(__file__).resolve().parents[1]

# A second process: writes batches of messages plus a summary of each batch, and deletes
# some older messages (which deletes their summaries), forever or for a number of rounds.
# Given a count, it holds its last round until the other writer's messages (ids below its
# own) reach that count, so the two processes overlap whatever the machine's load.
WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import datetime, timedelta, timezone
    from storage import StoredMessage, SummaryRecord, messages, open_database, summaries

    path, start, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    wait_for = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)

    async def others(db):
        async with db.read() as conn:
            rows = await conn.execute_fetchall("SELECT count(*) FROM messages WHERE id < ?", (start,))
        return rows[0][0]

    async def main():
        async with open_database(path, busy_timeout_ms=30000) as db:
            n = 0
            while rounds == 0 or n < rounds:
                if wait_for and n == rounds - 1:
                    for _ in range(1200):  # up to 120 s
                        if await others(db) >= wait_for:
                            break
                        await asyncio.sleep(0.1)
                    print("saw", await others(db), flush=True)
                base = start + n * 50
                batch = [StoredMessage(base + i, 1, 10 + i % 3, 100 + i % 7, "w", "x" * (i * 37 % 3000),
                                       t0 + timedelta(seconds=base + i)) for i in range(50)]
                async with db.write() as conn:
                    await messages.upsert_messages(conn, batch)
                    await summaries.insert_summary(conn, SummaryRecord(1, 10, 5, "s" * 500, "short", "bullets",
                                                                       source_ids=[m.id for m in batch]))
                    if n % 3 == 2:
                        await messages.delete_messages(conn, range(base - 100, base - 80))
                n += 1
                if n == 5:
                    print("ready", flush=True)

    asyncio.run(main())
    """
)


def _spawn(path: Path | str, start: int, rounds: int, wait_for: int = 0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(start), str(rounds), str(wait_for)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


OPENER = textwrap.dedent(
    """
    import asyncio, sys
    from storage import open_database

    async def main():
        async with open_database(sys.argv[1], busy_timeout_ms=30000) as db:
            print(db.schema_version)

    asyncio.run(main())
    """
)


async def test_processes_opening_a_new_database_together_migrate_it_once(db_target: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", OPENER, db_target], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [await asyncio.to_thread(p.communicate, timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    async with open_database(db_target) as database:
        async with database.read() as conn:
            versions = [r[0] for r in await conn.execute_fetchall("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == list(range(1, database.schema_version + 1))
    assert {out.strip() for out, _ in outputs} == {str(database.schema_version)}


async def test_many_tasks_write_through_the_one_writer(db) -> None:
    async def writer(task: int) -> None:
        for j in range(20):
            await db.writing(messages.upsert_messages, [msg(task * 1000 + j * 10 + k) for k in range(1, 6)])

    await asyncio.gather(*(writer(t) for t in range(1, 51)))
    assert await db.reading(messages.count_messages) == 50 * 20 * 5


async def test_reads_run_while_a_write_is_open(db) -> None:
    await db.writing(messages.upsert_messages, [msg(1)])
    async with db.write() as conn:
        await messages.upsert_messages(conn, [msg(2)])
        # A reader sees the last committed state, without waiting for this transaction.
        seen = await asyncio.wait_for(db.reading(messages.count_messages), timeout=2)
    assert seen == 1 and await db.reading(messages.count_messages) == 2


async def test_two_databases_on_one_file_wait_for_each_other(db_path: Path) -> None:
    async with open_database(db_path) as first, open_database(db_path) as second:

        async def hold_then_write() -> None:
            async with first.write() as conn:
                await messages.upsert_messages(conn, [msg(1)])
                await asyncio.sleep(0.3)  # the second writer must wait (busy timeout), not fail

        holder = asyncio.create_task(hold_then_write())
        await asyncio.sleep(0.05)
        await second.writing(messages.upsert_messages, [msg(2)])
        await holder
        assert await second.reading(messages.count_messages) == 2


async def test_a_second_process_writes_concurrently(db) -> None:
    proc = _spawn(target_of(db), 1_000_000, 200, wait_for=400)
    assert proc.stdout is not None
    assert (await asyncio.to_thread(proc.stdout.readline)).strip() == "ready"  # it is writing now
    for j in range(40):
        await db.writing(messages.upsert_messages, [msg(j * 10 + k) for k in range(1, 11)])
    out, err = await asyncio.to_thread(proc.communicate, timeout=180)
    assert proc.returncode == 0, err
    # It was still to write its last round when all of ours had landed: the two overlapped.
    assert out.split() == ["saw", "400"]
    async with db.read() as conn:
        ours = (await conn.execute_fetchall("SELECT count(*) FROM messages WHERE id < 1000000"))[0][0]
        theirs = (await conn.execute_fetchall("SELECT count(*) FROM messages WHERE id >= 1000000"))[0][0]
    assert ours == 400
    assert theirs == 200 * 50 - 66 * 20  # rounds 2, 5, 8, ... each delete 20 earlier messages


async def test_killed_writer_leaves_a_consistent_database(db_path: Path) -> None:
    async with open_database(db_path):
        pass
    proc = _spawn(db_path, 1_000_000, 0)
    assert proc.stdout is not None
    line = await asyncio.to_thread(proc.stdout.readline)
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
    time.sleep(0.3)  # let it get well into later transactions
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    async with aiosqlite.connect(db_path) as conn:
        assert await conn.execute_fetchall("PRAGMA integrity_check") == [("ok",)]
        assert await conn.execute_fetchall("PRAGMA foreign_key_check") == []
    async with open_database(db_path) as database:
        async with database.read() as conn:
            dangling = await conn.execute_fetchall(
                "SELECT count(*) FROM summary_sources s LEFT JOIN messages m ON m.id = s.message_id WHERE m.id IS NULL"
            )
            batches = await conn.execute_fetchall("SELECT count(*) FROM summaries")
            stored = (await conn.execute_fetchall("SELECT count(*) FROM messages"))[0][0]
        assert dangling == [(0,)]
        assert batches[0][0] >= 5 and stored % 10 == 0  # whole transactions only: 50 per batch, 20 per delete
        # The database still takes writes after the crash.
        await database.writing(messages.upsert_messages, [msg(1)])
        await database.writing(summaries.insert_summary, summary([1]))


async def test_a_cancelled_write_leaves_the_writer_usable(db) -> None:
    async def slow_write() -> None:
        async with db.write() as conn:
            await messages.upsert_messages(conn, [msg(1)])
            await asyncio.sleep(10)

    task = asyncio.create_task(slow_write())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await db.writing(messages.upsert_messages, [msg(2)])
    assert [m.id for m in await db.reading(messages.last_messages, 10, 10)] == [2]


async def test_snapshot_read_sees_one_state(db) -> None:
    await db.writing(messages.upsert_messages, [msg(1)])
    async with db.read(snapshot=True) as conn:
        before = await messages.count_messages(conn)
        await db.writing(messages.upsert_messages, [msg(2)])
        assert await messages.count_messages(conn) == before == 1
    assert await db.reading(messages.count_messages) == 2
