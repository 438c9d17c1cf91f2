"""Shared helpers and fixtures for the storage tests (imported by the test_storage_* modules)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

import pytest

from storage import Database, StoredAttachment, StoredMessage, SummaryRecord, open_database

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


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    async with open_database(db_path) as database:
        yield database
