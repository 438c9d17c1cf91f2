"""Deleted data is gone from the stored bytes, for every delete path: from the SQLite file and its WAL
(secure_delete + WAL checkpoint), and from PostgreSQL's table files after ``vacuum()`` (VACUUM FULL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from storage import StoredAttachment, erasure, messages, open_database, privacy, summaries
from test_storage_helpers import (  # noqa: F401  (fixtures)
    CHANNEL, GUILD, OTHER_GUILD, T0, THREAD, db_path, msg, sqlite_db, summary,
)

MARKER = "ZQX-unique-marker-7f3a9"


def _file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


async def _delete_by_id(db):
    await db.writing(messages.delete_messages, 2)


async def _bulk_delete(db):
    await db.writing(messages.delete_messages, [2, 3])


async def _delete_channel(db):
    await db.writing(erasure.erase_channel, THREAD)


async def _delete_threads(db):
    await db.writing(erasure.erase_channel, CHANNEL)


async def _delete_guild(db):
    await db.writing(erasure.erase_guild, GUILD)


async def _delete_author(db):
    await db.writing(messages.delete_author_messages, 77)


async def _forget_user(db):
    await db.writing(erasure.erase_member, 77)


async def _retention(db):
    await privacy.purge_expired(db, T0 + timedelta(days=60))


async def _edit(db):
    await db.writing(messages.edit_message, 2, "nothing to see", T0 + timedelta(days=1), [])
    await db.writing(summaries.delete_summary, 1)


@pytest.mark.parametrize(
    "delete",
    [_delete_by_id, _bulk_delete, _delete_channel, _delete_threads, _delete_guild, _delete_author, _forget_user, _retention, _edit],
    ids=lambda f: f.__name__.strip("_"),
)
@pytest.mark.parametrize("size", [1, 20_000], ids=["small", "overflow-pages"])
async def test_deleted_marker_is_gone_from_the_file(sqlite_db, db_path: Path, delete, size: int) -> None:
    db = sqlite_db
    await _store_secret(db, size)
    await db.checkpoint()
    assert MARKER.encode() in _file_bytes(db_path)  # the test can see the marker when it is there

    await delete(db)
    await db.checkpoint()

    assert MARKER.encode() not in _file_bytes(db_path)
    assert await db.reading(messages.count_messages, guild_id=OTHER_GUILD) == 40  # the other rows are untouched


async def _store_secret(db, size: int) -> None:
    secret = (MARKER + " ") * size
    await db.writing(
        messages.upsert_messages,
        [msg(i, guild=OTHER_GUILD, channel=99, content=f"filler {i} " * 50, at=T0 + timedelta(days=59)) for i in range(100, 140)]
        + [
            replace(
                msg(2, channel=THREAD, parent=CHANNEL, author=77, content=secret, at=T0),
                attachments=[StoredAttachment("secret.txt", 10, "text/plain", MARKER)],
            )
        ],
    )
    await db.writing(summaries.insert_summary, summary([2, 100], channel=THREAD, text=f"It said {MARKER}"))


async def _pg_table_bytes(db) -> bytes:
    """Every file of this test's database on the test server (tables, TOAST, indexes), after a
    CHECKPOINT has written the shared buffers out."""
    async with db.read() as conn:
        await conn.execute("CHECKPOINT")
        rows = await conn.execute_fetchall(
            "SELECT current_setting('data_directory'), pg_relation_filepath(c.oid) FROM pg_class AS c "
            "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
            "AND pg_relation_filepath(c.oid) IS NOT NULL"
        )
    files = [Path(root) / rel for root, rel in rows]
    if not files or not files[0].parent.is_dir():
        pytest.skip("the PostgreSQL server's files are not on this machine")
    out = b""
    for file in files:
        for segment in sorted(file.parent.glob(file.name + "*")):  # segments .1, .2 and the _fsm/_vm forks
            out += segment.read_bytes()
    return out


@pytest.mark.parametrize(
    "delete",
    [_delete_by_id, _delete_channel, _delete_guild, _forget_user, _retention, _edit],
    ids=lambda f: f.__name__.strip("_"),
)
@pytest.mark.parametrize("size", [1, 20_000], ids=["small", "toast"])
async def test_postgres_vacuum_leaves_no_erased_bytes_in_the_table_files(pg_url: str, delete, size: int) -> None:
    async with open_database(pg_url) as db:
        await _store_secret(db, size)
        assert MARKER.encode() in await _pg_table_bytes(db)  # the test can see the marker when it is there
        await delete(db)
        await db.checkpoint()  # what the bot runs after an erasure: plain VACUUM
        await db.vacuum()  # `python -m bot db vacuum`: VACUUM FULL rewrites the tables
        assert MARKER.encode() not in await _pg_table_bytes(db)
        assert await db.reading(messages.count_messages, guild_id=OTHER_GUILD) == 40


async def test_retention_purge_alone_leaves_no_trace(sqlite_db, db_path: Path) -> None:
    db = sqlite_db
    await db.writing(messages.upsert_messages, [msg(1, content=MARKER, at=T0), msg(2, at=T0 + timedelta(days=59))])
    await db.checkpoint()
    assert MARKER.encode() in _file_bytes(db_path)
    await privacy.purge_expired(db, T0 + timedelta(days=60))
    assert MARKER.encode() not in _file_bytes(db_path)
