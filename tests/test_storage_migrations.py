"""Schema migrations, opening the file, and connection pragmas."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest

from storage import MigrationError, SchemaTooNew, StorageError, messages, migrations, open_database
from storage.migrations import Migration, apply_migrations, current_version, load_migrations
from test_storage_helpers import column_names, db, db_path, msg, sqlite_db  # noqa: F401  (fixtures)

EXPECTED_COLUMNS = {
    "schema_migrations": ["version", "name", "applied_at"],
    "messages": [
        "id", "guild_id", "channel_id", "parent_id", "author_id", "author_name", "content",
        "created_at", "edited_at", "reply_to", "is_bot", "attachments",
    ],
    "summaries": [
        "id", "guild_id", "channel_id", "requester_id", "created_at", "length", "style", "private",
        "settings", "text", "structured", "start_id", "end_id", "start_at", "end_at",
    ],
    "message_authors": ["author_id", "channel_id", "guild_id"],
    "summary_sources": ["summary_id", "message_id"],
    "settings": ["guild_id", "channel_id", "name", "value", "updated_at"],
    "opt_outs": ["user_id", "opted_out_at"],
}


async def test_fresh_database_has_exact_columns(db) -> None:
    async with db.read() as conn:
        for table, columns in EXPECTED_COLUMNS.items():
            assert await column_names(conn, table) == columns, table


async def test_fresh_database_records_every_migration(db) -> None:
    async with db.read() as conn:
        rows = await conn.execute_fetchall("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    known = load_migrations()
    assert [(r[0], r[1]) for r in rows] == [(m.version, m.name) for m in known]
    assert rows[0][1] == "initial" and all(r[2] > 0 for r in rows)
    assert db.schema_version == migrations.LATEST_VERSION == len(known)


async def test_open_creates_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "recap.sqlite3"
    async with open_database(path) as database:
        assert database.path == path
    assert path.is_file()


async def test_older_database_is_migrated_and_keeps_data(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        assert await apply_migrations(conn, target=1) == [1]
        await conn.execute(
            "INSERT INTO messages (id, guild_id, channel_id, author_id, author_name, content, created_at) "
            "VALUES (42, 1, 2, 3, 'old', 'kept', 1000)"
        )
        assert await current_version(conn) == 1
    async with open_database(db_path) as database:
        assert database.schema_version == migrations.LATEST_VERSION
        stored = await database.reading(messages.get_message, 42)
    assert stored is not None and stored.content == "kept"


async def test_reopening_applies_nothing(db_path: Path) -> None:
    async with open_database(db_path):
        pass
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        assert await apply_migrations(conn) == []


async def test_newer_schema_is_refused(db_path: Path) -> None:
    async with open_database(db_path):
        pass
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        await conn.execute("INSERT INTO schema_migrations VALUES (999, 'from_the_future', 0)")
    with pytest.raises(SchemaTooNew) as info:
        async with open_database(db_path):
            pass
    assert info.value.found == 999 and info.value.supported == migrations.LATEST_VERSION
    assert "999" in str(info.value) and "Upgrade Recap" in str(info.value)


async def test_failed_migration_rolls_back_and_names_itself(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = Migration(1, "broken", "CREATE TABLE t1 (x INTEGER);\nTHIS IS NOT SQL;\n")
    monkeypatch.setattr(migrations, "load_migrations", lambda: [broken])
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        with pytest.raises(MigrationError, match="0001_broken failed and was rolled back"):
            await apply_migrations(conn)
        assert await conn.execute_fetchall("SELECT name FROM sqlite_master WHERE name = 't1'") == []
        assert await current_version(conn) == 0


def test_statements_keep_trigger_bodies_whole() -> None:
    sql = "-- c\nCREATE TABLE a (x);\nCREATE TRIGGER t AFTER DELETE ON a\nBEGIN\n  DELETE FROM a;\n  SELECT 1;\nEND;\n-- end\n"
    statements = Migration(9, "x", sql).statements()
    assert len(statements) == 2 and statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")


def test_unfinished_statement_is_reported() -> None:
    with pytest.raises(MigrationError, match="unfinished"):
        Migration(3, "x", "CREATE TABLE a (x);\nCREATE TABLE b (\n").statements()


async def test_connections_use_wal_foreign_keys_secure_delete_and_busy_timeout(sqlite_db) -> None:
    db = sqlite_db
    for ctx in (db.write(), db.read()):
        async with ctx as conn:
            pragmas = {}
            for name in ("journal_mode", "foreign_keys", "secure_delete", "busy_timeout", "synchronous"):
                pragmas[name] = (await conn.execute_fetchall(f"PRAGMA {name}"))[0][0]
            assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "secure_delete": 1, "busy_timeout": 5000, "synchronous": 1}


async def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="Cannot open the database .*junk.sqlite3"):
        async with open_database(path):
            pass


async def test_write_rolls_back_on_error(db) -> None:
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            await messages.upsert_messages(conn, [msg(1)])
            raise RuntimeError("boom")
    assert await db.reading(messages.count_messages) == 0


async def test_closed_database_refuses_use(db_path: Path) -> None:
    database = await open_database(db_path)
    await database.close()
    with pytest.raises(StorageError, match="closed"):
        await database.reading(messages.count_messages)
