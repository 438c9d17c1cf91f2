"""Numbered schema migrations and the runner that applies them.

A migration is a file ``NNNN_name.sql`` in this package (SQLite) and the file of the same number
and name in ``postgresql/`` (the same schema in PostgreSQL's types). Each one is applied in its
own transaction together with its row in ``schema_migrations``, so a database is always at exactly
one recorded version. To change the schema, add the next-numbered file to both. This module runs
SQLite's; ``storage.postgres`` runs PostgreSQL's.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import aiosqlite

from ..connection import Connection, is_postgres
from ..convert import to_ms, utc_now
from ..errors import MigrationError, SchemaTooNew

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
)"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file split into single statements (trigger bodies kept whole)."""
        out: list[str] = []
        pending = ""
        for line in self.sql.splitlines(keepends=True):
            pending += line
            if sqlite3.complete_statement(pending):
                out.append(pending.strip())
                pending = ""
        if pending.strip() and not _only_comments(pending):
            raise MigrationError(f"Migration {self.version:04d}_{self.name}.sql ends with an unfinished statement.")
        return [s for s in out if not _only_comments(s)]


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


DIALECTS = ("sqlite", "postgresql")


@lru_cache(maxsize=2)
def _load(dialect: str = "sqlite") -> tuple[Migration, ...]:
    if dialect not in DIALECTS:
        raise MigrationError(f"No migrations for {dialect!r} (known: {', '.join(DIALECTS)}).")
    folder = resources.files(__name__)
    if dialect != "sqlite":
        folder = folder / dialect
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
        elif entry.name.endswith(".sql"):
            raise MigrationError(f"Migration file {entry.name} is not named NNNN_name.sql.")
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"Migrations must be numbered 1, 2, 3, ... without gaps or repeats; "
                f"expected {expected:04d} but found {migration.version:04d}_{migration.name}.sql."
            )
    return tuple(found)


def load_migrations(dialect: str = "sqlite") -> list[Migration]:
    return list(_load(dialect))


LATEST_VERSION: int = len(_load())


async def current_version(conn: Connection) -> int:
    """The highest applied version; 0 for an empty database (either store)."""
    if is_postgres(conn):
        rows = await conn.execute_fetchall("SELECT 1 WHERE to_regclass('schema_migrations') IS NOT NULL")
    else:
        rows = await conn.execute_fetchall(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        )
    if not rows:
        return 0
    rows = await conn.execute_fetchall("SELECT coalesce(max(version), 0) FROM schema_migrations")
    return int(rows[0][0])


async def apply_migrations(conn: aiosqlite.Connection, *, target: int | None = None, path: str = "") -> list[int]:
    """Bring the database up to ``target`` (default: the latest). Returns the versions applied.

    The version is re-read inside each write transaction, so two processes opening the same new
    file at once do not both apply a migration.
    """
    migrations = load_migrations()
    target = len(migrations) if target is None else target
    if not 0 <= target <= len(migrations):
        raise MigrationError(f"There is no schema version {target} (known: 0 to {len(migrations)}).")
    found = await current_version(conn)
    if found > len(migrations):
        raise SchemaTooNew(found, len(migrations), path)
    applied: list[int] = []
    for migration in migrations[found:target]:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.execute(_CREATE_TABLE)
            now = await current_version(conn)
            if now > len(migrations):
                raise SchemaTooNew(now, len(migrations), path)
            if now >= migration.version:
                await conn.execute("ROLLBACK")
                continue
            for statement in migration.statements():
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, to_ms(utc_now())),
            )
            await conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise MigrationError(
                    f"Migration {migration.version:04d}_{migration.name} failed and was rolled back: {exc}"
                ) from exc
            raise
        applied.append(migration.version)
    return applied
