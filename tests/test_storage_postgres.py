"""What only the PostgreSQL store has: its SQL translation, URLs, start-up errors, migrations that
match SQLite's, and copying a SQLite database into it (``python -m bot db copy``)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import aiosqlite
import pytest

from storage import StorageError, StoredMessage, messages, migrations, open_database, summaries
from storage.copy import TABLES, copy_database, count_rows
from storage.postgres import translate
from storage.urls import redact_url, sqlite_path
from test_storage_helpers import T0, db_path, msg, summary  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]


def test_translate_numbers_placeholders_and_keeps_literals() -> None:
    assert translate("SELECT a FROM t WHERE b = ? AND c = '?' AND d IN (SELECT value FROM json_each(?))") == (
        "SELECT a FROM t WHERE b = $1 AND c = '?' AND d IN (SELECT value FROM recap_ids($2))"
    )
    assert translate("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', $1"


def test_urls_for_logs_never_hold_the_password_or_query() -> None:
    assert redact_url("postgresql://recap:s3cret@db.internal:5433/recap?sslmode=require&password=x") == (
        "postgresql://recap@db.internal:5433/recap"
    )
    assert "s3cret" not in redact_url("postgresql://u:s3cret@[::1]:99/x")


def test_sqlite_urls_name_files() -> None:
    assert sqlite_path("sqlite:///data/recap.sqlite3") == "data/recap.sqlite3"
    assert sqlite_path("sqlite:////var/lib/recap.sqlite3") == "/var/lib/recap.sqlite3"
    assert sqlite_path("data/x.sqlite3") == "data/x.sqlite3"
    for bad in ("sqlite://host/x", "mysql://u@h/db", "sqlite:///"):
        with pytest.raises(StorageError):
            sqlite_path(bad)


def test_both_stores_have_the_same_migrations() -> None:
    sqlite = [(m.version, m.name) for m in migrations.load_migrations("sqlite")]
    postgres = [(m.version, m.name) for m in migrations.load_migrations("postgresql")]
    assert sqlite == postgres and len(sqlite) == migrations.LATEST_VERSION


@pytest.mark.parametrize("url", [
    "postgresql://recap:hunter2@/recap?host=/nonexistent-recap-socket-dir&port=5999",  # server down
    "postgresql://recap:hunter2@localhost:notaport/recap",  # not a URL
])
async def test_an_unusable_server_is_one_clear_line(url: str) -> None:
    with pytest.raises(StorageError) as caught:
        await open_database(url)
    text = str(caught.value)
    assert "\n" not in text and "hunter2" not in text and "PostgreSQL" in text


async def test_a_missing_database_is_one_clear_line(pg_server: str) -> None:
    url = pg_server.replace("@/recap?", "@/no_such_database?")
    with pytest.raises(StorageError, match="no_such_database"):
        await open_database(url)


async def test_migrating_twice_applies_nothing_and_records_each_version_once(pg_url: str) -> None:
    async with open_database(pg_url) as first:
        assert first.schema_version == migrations.LATEST_VERSION
    async with open_database(pg_url) as again, again.read() as conn:
        rows = await conn.execute_fetchall("SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, migrations.LATEST_VERSION + 1))


async def _fill(db, n: int = 1200) -> None:
    await db.writing(messages.upsert_messages, [
        msg(i, channel=10 + i % 3, author=500 + i % 5, content="odd \ud800 text\x00" if i == 7 else None)
        for i in range(1, n + 1)
    ])
    for start in range(1, 50, 10):
        await db.writing(summaries.insert_summary, summary(list(range(start, start + 10))))


async def test_copy_sqlite_into_postgres_twice_copies_each_row_once(db_path: Path, pg_url: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("storage.copy.BATCH_ROWS", 500)  # several batches per table
    async with open_database(db_path) as source:
        await _fill(source)
        # A row as an older Recap wrote it: lone surrogates as a BLOB.
        async with aiosqlite.connect(db_path) as raw:
            await raw.execute("UPDATE messages SET content = ? WHERE id = 8", ("old \ud800 blob".encode("utf-8", "surrogatepass"),))
            await raw.commit()
        async with open_database(pg_url) as target:
            first = await copy_database(source, target)
            second = await copy_database(source, target)
            assert first == second and all(c.source == c.target for c in second)
            assert {c.table for c in second} == set(TABLES)
            assert (await count_rows(target))["messages"] == 1200
            assert (await target.reading(messages.get_message, 7)).content == "odd \ud800 text\x00"
            assert (await target.reading(messages.get_message, 8)).content == "old \ud800 blob"
            # New summaries in the target get ids past the copied ones.
            new_id = await target.writing(summaries.insert_summary, summary([1]))
            assert new_id == 6  # five copied, ids 1 to 5


async def test_copy_refuses_a_database_into_itself(db_path: Path) -> None:
    async with open_database(db_path) as a, open_database(db_path) as b:
        with pytest.raises(StorageError, match="same database"):
            await copy_database(a, b)


def _bot(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    full.pop("DATABASE_URL", None) if "DATABASE_URL" not in env else None
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=180)


async def test_db_copy_command_copies_and_verifies(db_path: Path, pg_url: str) -> None:
    async with open_database(db_path) as source:
        await _fill(source, 300)
    done = _bot("db", "copy", "--to", pg_url, DATABASE_PATH=str(db_path))
    assert done.returncode == 0, done.stderr
    assert "row counts match" in done.stdout and "rows" in done.stderr  # the progress bar
    again = _bot("db", "copy", "--to", pg_url, "--quiet", DATABASE_PATH=str(db_path))
    assert again.returncode == 0 and "row counts match" in again.stdout
    stats = _bot("db", "stats", DATABASE_URL=pg_url, DATABASE_PATH=str(db_path))
    assert stats.returncode == 0, stats.stderr
    assert "PostgreSQL" in stats.stdout and "Messages:        300" in stats.stdout


def test_a_bad_database_url_stops_the_bot_with_one_line(tmp_path: Path) -> None:
    done = _bot("run", DISCORD_TOKEN="x" * 59, DATABASE_URL="postgresql://recap:hunter2@/recap?host=/nonexistent-recap-dir",
                DATABASE_PATH=str(tmp_path / "unused.sqlite3"))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.strip() and "INFO" not in line]
    assert len(errors) == 1 and errors[0].startswith("Database error:"), done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "unused.sqlite3").exists()  # DATABASE_URL wins
