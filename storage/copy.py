"""Copying one Recap database into another (SQLite into PostgreSQL, or any store into any other).

Tables go over in primary-key order, in batches, each batch one write transaction that skips rows
the target already has (``ON CONFLICT DO NOTHING``): a copy that is run twice, or stopped and run
again, never duplicates anything. Leases are not copied: they belong to running processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .connection import Connection, is_postgres
from .convert import text_in, text_out
from .errors import StorageError
from .store import Database

BATCH_ROWS = 5_000

# table -> (primary key columns, every column), in an order that respects the foreign keys.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "messages": (("id",), ("id", "guild_id", "channel_id", "parent_id", "author_id", "author_name", "content",
                           "created_at", "edited_at", "reply_to", "is_bot", "attachments")),
    "message_authors": (("author_id", "channel_id"), ("author_id", "channel_id", "guild_id")),
    "summaries": (("id",), ("id", "guild_id", "channel_id", "requester_id", "created_at", "length", "style", "private",
                            "settings", "text", "structured", "start_id", "end_id", "start_at", "end_at")),
    "summary_sources": (("summary_id", "message_id"), ("summary_id", "message_id")),
    "settings": (("guild_id", "channel_id", "name"), ("guild_id", "channel_id", "name", "value", "updated_at")),
    "opt_outs": (("user_id",), ("user_id", "opted_out_at")),
    "digests": (("id",), ("id", "guild_id", "source_id", "target_id", "owner_id", "every", "at_time", "timezone",
                          "weekday", "length", "style", "created_at", "next_run_at", "last_run_at", "last_status",
                          "claimed_by", "claimed_until")),
}
_IDENTITIES = ("summaries", "digests")  # PostgreSQL identity columns to move past the copied ids


@dataclass(frozen=True)
class TableCount:
    table: str
    source: int
    target: int


async def count_rows(db: Database) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with db.read(snapshot=True) as conn:
        for table in TABLES:
            rows = list(await conn.execute_fetchall(f"SELECT count(*) FROM {table}"))
            counts[table] = int(rows[0][0])
    return counts


def _portable(value: Any) -> Any:
    """An older SQLite file's BLOB text (lone surrogates) in the escaped text form both stores hold."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return text_in(text_out(bytes(value)) or "")
    return value


async def _page(conn: Connection, table: str, key: tuple[str, ...], columns: tuple[str, ...],
                after: Sequence[Any] | None) -> list[tuple[Any, ...]]:
    order = ", ".join(key)
    sql = f"SELECT {', '.join(columns)} FROM {table}"
    params: list[Any] = []
    if after is not None:
        sql += f" WHERE ({order}) > ({', '.join('?' * len(key))})"
        params.extend(after)
    sql += f" ORDER BY {order} LIMIT ?"
    params.append(BATCH_ROWS)
    return [tuple(_portable(v) for v in row) for row in await conn.execute_fetchall(sql, params)]


async def _insert(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    await conn.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) ON CONFLICT DO NOTHING",
        rows,
    )


async def _move_identities(conn: Connection) -> None:
    if not is_postgres(conn):
        return  # SQLite's AUTOINCREMENT counter follows the largest id inserted
    for table in _IDENTITIES:
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table} HAVING max(id) IS NOT NULL"
        )


async def copy_database(source: Database, target: Database, progress: Callable[[int], None] | None = None) -> list[TableCount]:
    """Copy every row of ``source`` that ``target`` lacks; returns each table's count on both sides."""
    if source.label == target.label:
        raise StorageError("The source and the target are the same database.")
    if source.schema_version != target.schema_version:
        raise StorageError(f"The source is at schema version {source.schema_version} and the target at "
                           f"{target.schema_version}: open both with this Recap first (python -m bot db migrate).")
    for table, (key, columns) in TABLES.items():
        positions = [columns.index(k) for k in key]
        after: Sequence[Any] | None = None
        while True:
            async with source.read() as conn:
                rows = await _page(conn, table, key, columns, after)
            if not rows:
                break
            async with target.write() as conn:
                await _insert(conn, table, columns, rows)
            after = [rows[-1][i] for i in positions]
            if progress is not None:
                progress(len(rows))
            if len(rows) < BATCH_ROWS:
                break
    async with target.write() as conn:
        await _move_identities(conn)
    before, after_copy = await count_rows(source), await count_rows(target)
    return [TableCount(t, before[t], after_copy[t]) for t in TABLES]
