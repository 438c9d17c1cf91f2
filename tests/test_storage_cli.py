"""`python -m bot db migrate|stats|vacuum`, run as a subprocess against a real file."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiosqlite

from storage import messages, migrations, open_database, privacy
from test_storage_helpers import OTHER_GUILD, msg

REPO = Path(__file__).resolve().parents[1]


def _db(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_PATH": str(path), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "bot", "--env-file", "", "db", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


def test_migrate_creates_and_migrates_the_database(tmp_path: Path) -> None:
    path = tmp_path / "new" / "recap.sqlite3"
    first = _db(path, "migrate")
    assert first.returncode == 0, first.stderr
    assert f"migrated from schema version 0 to {migrations.LATEST_VERSION}" in first.stdout
    again = _db(path, "migrate")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_migrate_upgrades_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"

    async def make_v1() -> None:
        async with aiosqlite.connect(path, isolation_level=None) as conn:
            await migrations.apply_migrations(conn, target=1)

    asyncio.run(make_v1())
    result = _db(path, "migrate")
    assert result.returncode == 0, result.stderr
    assert f"from schema version 1 to {migrations.LATEST_VERSION}" in result.stdout


def test_stats_prints_counts_and_size(tmp_path: Path) -> None:
    path = tmp_path / "recap.sqlite3"

    async def fill() -> None:
        async with open_database(path) as db:
            await db.writing(messages.upsert_messages, [msg(1), msg(2, channel=20), msg(3, guild=OTHER_GUILD, channel=99)])
            await db.writing(privacy.opt_out, 42)

    asyncio.run(fill())
    text = _db(path, "stats")
    assert text.returncode == 0, text.stderr
    assert "Messages:        3" in text.stdout and "Opted-out users: 1" in text.stdout
    assert f"Schema version:  {migrations.LATEST_VERSION}" in text.stdout and "Size:" in text.stdout
    data = json.loads(_db(path, "stats", "--json").stdout)
    assert (data["messages"], data["channels"], data["guilds"], data["summaries"]) == (3, 3, 2, 0)
    assert data["file_bytes"] > 0


def test_vacuum_runs(tmp_path: Path) -> None:
    path = tmp_path / "recap.sqlite3"
    assert _db(path, "migrate").returncode == 0
    result = _db(path, "vacuum")
    assert result.returncode == 0 and "vacuumed" in result.stdout
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


def test_stats_of_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    result = _db(tmp_path / "none.sqlite3", "stats")
    assert result.returncode == 1 and "python -m bot db migrate" in result.stderr
    assert not (tmp_path / "none.sqlite3").exists()


def test_newer_schema_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    assert _db(path, "migrate").returncode == 0

    async def bump() -> None:
        async with aiosqlite.connect(path, isolation_level=None) as conn:
            await conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")

    asyncio.run(bump())
    result = _db(path, "stats")
    assert result.returncode == 1 and "schema version 999" in result.stderr and "Traceback" not in result.stderr


def test_help_lists_the_actions() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "db", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0
    for action in ("migrate", "stats", "vacuum", "DATABASE_PATH"):
        assert action in result.stdout
