"""Shared helpers and fixtures for the storage tests (imported by the test_storage_* modules)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

import pytest

from storage import Database, StoredAttachment, StoredMessage, SummaryRecord, open_database
from storage.connection import is_postgres

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
GUILD, OTHER_GUILD = 1000, 2000
CHANNEL, OTHER_CHANNEL = 10, 20
THREAD = 11  # a thread under CHANNEL


def msg(
    id: int,
    *,
    channel: int = CHANNEL,
    guild: int = GUILD,
    author: int = 500,
    content: str | None = None,
    parent: int | None = None,
    at: datetime | None = None,
    attachments: list[StoredAttachment] | None = None,
) -> StoredMessage:
    return StoredMessage(
        id=id,
        guild_id=guild,
        channel_id=channel,
        author_id=author,
        author_name=f"user{author}",
        content=f"message {id}" if content is None else content,
        created_at=at or T0 + timedelta(minutes=id),
        parent_id=parent,
        attachments=attachments or [],
    )


def summary(source_ids: list[int], *, channel: int = CHANNEL, guild: int = GUILD, requester: int = 900, **kw) -> SummaryRecord:
    return SummaryRecord(
        guild_id=guild,
        channel_id=channel,
        requester_id=requester,
        text=kw.pop("text", "a summary"),
        length=kw.pop("length", "medium"),
        style=kw.pop("style", "paragraph"),
        source_ids=source_ids,
        **kw,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "recap.sqlite3"


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, db_path: Path) -> AsyncIterator[Database]:
    """The same contract on both stores: a SQLite file, and a fresh schema of the test PostgreSQL server."""
    target = str(db_path) if request.param == "sqlite" else request.getfixturevalue("pg_url")
    async with open_database(target) as database:
        yield database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, db_path: Path) -> str:
    """A database target not opened yet: a SQLite path, or a fresh PostgreSQL schema's URL."""
    return str(db_path) if request.param == "sqlite" else request.getfixturevalue("pg_url")


def target_of(db: Database) -> str:
    """The target another process opens to reach the same database."""
    return str(getattr(db, "url", None) or db.path)  # type: ignore[attr-defined]


@pytest.fixture
async def sqlite_db(db_path: Path) -> AsyncIterator[Database]:
    """For tests of what only the SQLite file has: its bytes, WAL, pragmas, statement traces."""
    async with open_database(db_path) as database:
        yield database


async def table_names(conn) -> set[str]:
    """The tables of the open database (either store)."""
    if is_postgres(conn):
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {row[0] for row in await conn.execute_fetchall(sql)}


async def column_names(conn, table: str) -> list[str]:
    """A table's columns in order (either store)."""
    if is_postgres(conn):
        rows = await conn.execute_fetchall(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position", (table,))
        return [r[0] for r in rows]
    return [r[1] for r in await conn.execute_fetchall(f"PRAGMA table_info({table})")]
