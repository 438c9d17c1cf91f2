"""The PostgreSQL store (asyncpg): the shared database of bot processes on several hosts.

Writes keep SQLite's promise: one at a time. Every write transaction first takes a transaction
advisory lock, so writers in all processes, on all hosts, queue for it as they queue for SQLite's
``BEGIN IMMEDIATE``: a summary stored while another process deletes one of its sources can never
survive the delete, whoever commits first. Reads never wait for it.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, AsyncIterator, Iterable, Sequence

import asyncpg

from . import migrations
from .convert import to_ms, utc_now
from .errors import MigrationError, SchemaTooNew, StorageError
from .store import Database
from .urls import redact_url

WRITE_LOCK = 0x5245_4341_5057  # "RECAPW": the advisory lock every write transaction holds
MIGRATION_LOCK = 0x5245_4341_504D  # "RECAPM": one process migrates at a time
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 120.0  # a statement past this is a stuck server: the caller gets a StorageError

# What a server or network failure raises; these become StorageError with a readable line.
# Constraint violations and SQL errors are bugs and propagate as they are.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.PostgresSystemError,
    asyncpg.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InsufficientPrivilegeError,
)

_LITERAL = re.compile(r"('(?:[^']|'')*')")


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """This package's SQL in PostgreSQL's words: ``?`` -> ``$1, $2, ...`` and ``json_each(?)``
    (a JSON list of ids) -> ``recap_ids($n)``, a function of migration 1. Quoted literals are kept."""
    pieces = _LITERAL.split(sql)
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    for i in range(0, len(pieces), 2):  # even pieces are outside quotes
        pieces[i] = re.sub(r"\?", number, pieces[i].replace("json_each(", "recap_ids("))
    return "".join(pieces)


def _rowcount(status: str) -> int:
    """asyncpg's command status ("DELETE 3", "INSERT 0 1") as a row count."""
    tail = status.rsplit(" ", 1)[-1] if status else ""
    return int(tail) if tail.isdigit() else 0


class _Done:
    __slots__ = ("rowcount",)

    def __init__(self, rowcount: int) -> None:
        self.rowcount = rowcount


class PgConnection:
    """An asyncpg connection with the calls storage functions use on an aiosqlite one."""

    dialect = "postgresql"

    def __init__(self, raw: asyncpg.Connection) -> None:
        self.raw = raw

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> _Done:
        return _Done(_rowcount(await self.raw.execute(translate(sql), *parameters)))

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Sequence[Any]]:
        return await self.raw.fetch(translate(sql), *parameters)

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> None:
        rows = [tuple(p) for p in parameters]
        if rows:
            await self.raw.executemany(translate(sql), rows)

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """COPY rows into ``table`` (the fastest way in; PostgreSQL only)."""
        await self.raw.copy_records_to_table(table, records=rows, columns=list(columns))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "the server did not answer in time"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class PostgresDatabase(Database):
    """An open PostgreSQL database. Create it with :func:`storage.open_database`."""

    kind = "postgresql"
    checkpoint_every_s = 60.0

    def __init__(self, url: str, pool: asyncpg.Pool, readers: int) -> None:
        super().__init__(f"PostgreSQL {redact_url(url)}")
        self.url = url
        self._pool = pool
        self._write_lock = asyncio.Lock()  # one writer per process; the advisory lock does the rest
        self._read_slots = asyncio.Semaphore(readers)  # the pool keeps one connection for the writer
        self._closed = False

    def _unavailable(self, doing: str, exc: BaseException) -> StorageError:
        return StorageError(f"The database ({self.label}) {doing}: {_describe(exc)}.")

    @asynccontextmanager
    async def write(self) -> AsyncIterator[PgConnection]:
        self._check_open()
        async with self._write_lock:
            try:
                raw = await self._pool.acquire()
            except _UNAVAILABLE as exc:
                raise self._unavailable("is unavailable", exc) from exc
            try:
                transaction = raw.transaction()
                try:
                    await transaction.start()
                    await raw.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                except _UNAVAILABLE as exc:
                    await _quietly(transaction.rollback())
                    raise self._unavailable("could not start a write", exc) from exc
                try:
                    yield PgConnection(raw)
                except BaseException as exc:
                    await _quietly(transaction.rollback())
                    if isinstance(exc, _UNAVAILABLE):
                        raise self._unavailable("write failed and was rolled back", exc) from exc
                    raise
                try:
                    await transaction.commit()
                except _UNAVAILABLE as exc:
                    await _quietly(transaction.rollback())
                    raise self._unavailable("write failed and was rolled back", exc) from exc
            finally:
                await _quietly(self._pool.release(raw))

    @asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[PgConnection]:
        self._check_open()
        async with self._read_slots:
            try:
                raw = await self._pool.acquire()
            except _UNAVAILABLE as exc:
                raise self._unavailable("is unavailable", exc) from exc
            try:
                if snapshot:
                    async with raw.transaction(isolation="repeatable_read", readonly=True):
                        yield PgConnection(raw)
                else:
                    yield PgConnection(raw)
            except _UNAVAILABLE as exc:
                raise self._unavailable("read failed", exc) from exc
            finally:
                await _quietly(self._pool.release(raw))

    async def _outside_transaction(self, *statements: str) -> None:
        self._check_open()
        try:
            async with self._pool.acquire() as raw:
                for statement in statements:
                    await raw.execute(statement)
        except _UNAVAILABLE as exc:
            raise self._unavailable("maintenance failed", exc) from exc

    async def checkpoint(self) -> None:
        """VACUUM the tables erasures touch: deleted rows leave every index and their space is
        reused for new rows. Their bytes can stay in free page space, in WAL segments until the
        server recycles them, and in backups; ``vacuum()`` rewrites the tables (README)."""
        await self._outside_transaction(f"VACUUM {', '.join(ERASABLE_TABLES)}")

    async def vacuum(self) -> None:
        """VACUUM FULL: every table rewritten into new files (the old files are deleted), then a
        CHECKPOINT where this role may run one."""
        await self._outside_transaction(f"VACUUM FULL {', '.join(ERASABLE_TABLES)}")
        try:
            await self._outside_transaction("CHECKPOINT")
        except StorageError:
            pass  # CHECKPOINT needs superuser or pg_checkpoint; the server's own checkpoints follow

    async def size(self) -> int:
        async with self.read() as conn:
            rows = await conn.raw.fetch("SELECT pg_database_size(current_database())")
        return int(rows[0][0])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            await _quietly(self._pool.close())

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("The database is closed.")


ERASABLE_TABLES = ("messages", "message_authors", "summaries", "summary_sources", "settings", "digests")


async def _quietly(awaitable: Any) -> None:
    """Clean-up that must not hide the error that led here."""
    try:
        await awaitable
    except Exception:
        pass


# ------------------------------------------------------------------ migrations

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at BIGINT  NOT NULL
)"""


async def current_version(raw: asyncpg.Connection) -> int:
    if await raw.fetchval("SELECT to_regclass('schema_migrations') IS NULL"):
        return 0
    return int(await raw.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def apply_migrations(raw: asyncpg.Connection, *, target: int | None = None, label: str = "") -> list[int]:
    """Bring the database up to ``target`` (default: the latest), each migration in its own
    transaction under an advisory lock, so two processes starting at once apply each one once."""
    known = migrations.load_migrations("postgresql")
    target = len(known) if target is None else target
    if not 0 <= target <= len(known):
        raise MigrationError(f"There is no schema version {target} (known: 0 to {len(known)}).")
    found = await current_version(raw)
    if found > len(known):
        raise SchemaTooNew(found, len(known), label)
    applied: list[int] = []
    for migration in known[found:target]:
        try:
            async with raw.transaction():
                await raw.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await raw.execute(_CREATE_TABLE)
                now = await current_version(raw)
                if now > len(known):
                    raise SchemaTooNew(now, len(known), label)
                if now >= migration.version:
                    continue
                await raw.execute(migration.sql)  # no parameters: the whole file in one round trip
                await raw.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version, migration.name, to_ms(utc_now()),
                )
        except asyncpg.PostgresError as exc:
            if isinstance(exc, _UNAVAILABLE):
                raise
            raise MigrationError(
                f"Migration {migration.version:04d}_{migration.name} failed and was rolled back: {_describe(exc)}"
            ) from exc
        applied.append(migration.version)
    return applied


# ------------------------------------------------------------------ opening

async def open_postgres(url: str, *, readers: int = 2, migrate: bool = True) -> PostgresDatabase:
    """Connect (the database must exist), migrate, and return the open database."""
    label = redact_url(url)
    readers = max(1, readers)
    try:
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=readers + 1, timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S, server_settings={"application_name": "recap"},
        )
    except (ValueError, TypeError, asyncpg.ClientConfigurationError) as exc:
        raise StorageError(f"DATABASE_URL is not a usable PostgreSQL URL ({label}): {_describe(exc)}.") from exc
    except _UNAVAILABLE as exc:
        raise StorageError(
            f"Cannot open the PostgreSQL database {label}: {_describe(exc)}. Check DATABASE_URL, that the "
            "server is running and reachable, and that the database and role exist."
        ) from exc
    db = PostgresDatabase(url, pool, readers)
    try:
        async with pool.acquire() as raw:
            if migrate:
                await apply_migrations(raw, label=label)
            db.schema_version = await current_version(raw)
        if db.schema_version > migrations.LATEST_VERSION:
            raise SchemaTooNew(db.schema_version, migrations.LATEST_VERSION, label)
    except _UNAVAILABLE as exc:
        await db.close()
        raise StorageError(f"Cannot open the PostgreSQL database {label}: {_describe(exc)}.") from exc
    except BaseException:
        await db.close()
        raise
    return db
