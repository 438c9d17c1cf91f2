"""The SQLite store: pragmas, migrations, one writer connection and a small reader pool.

aiosqlite runs each connection on its own thread. All writes go through one connection guarded
by an ``asyncio.Lock`` and run as ``BEGIN IMMEDIATE`` transactions, so they never interleave;
reads use separate connections and, in WAL mode, never wait for the writer.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import aiosqlite

from . import migrations
from .errors import SchemaTooNew, StorageError
from .store import Database

async def _connect(path: Path, busy_timeout_ms: int) -> aiosqlite.Connection:
    # isolation_level=None: no implicit transactions; this module issues BEGIN/COMMIT itself.
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = (await conn.execute_fetchall("PRAGMA journal_mode = WAL"))[0][0]
        if str(mode).lower() != "wal":
            raise StorageError(f"The database {path} could not be switched to WAL mode (it is in {mode!r}).")
        await conn.execute("PRAGMA foreign_keys = ON")
        # Deleted rows are overwritten with zeros, so erased messages are gone from the file bytes.
        await conn.execute("PRAGMA secure_delete = ON")
        # Safe in WAL mode: a crash can lose the last commits but never corrupts the file.
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA cache_size = -32000")
        # Checkpoints shrink the -wal file back to this size instead of leaving old pages in it.
        await conn.execute("PRAGMA journal_size_limit = 4194304")
    except BaseException:
        await conn.close()
        raise
    return conn


async def _finish(conn: aiosqlite.Connection, statement: str = "ROLLBACK") -> None:
    """End the open transaction, if any; never hides the error that led here.

    Not guarded by ``in_transaction``: after a cancellation the BEGIN may still be queued on the
    connection's thread, and this statement, queued behind it, is what ends it.
    """
    try:
        await conn.execute(statement)
    except sqlite3.Error:
        pass  # no transaction was open (e.g. the COMMIT already ran)


def _friendly(path: Path, exc: BaseException) -> StorageError:
    return StorageError(f"Cannot open the database {path}: {exc}. Check DATABASE_PATH and the file's permissions.")


class SqliteDatabase(Database):
    """An open SQLite file. Create it with :func:`storage.open_database`."""

    kind = "sqlite"

    def __init__(self, path: Path, writer: aiosqlite.Connection, readers: list[aiosqlite.Connection]) -> None:
        super().__init__(f"SQLite file {path}")
        self.path = path
        self._writer = writer
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers = readers
        for reader in readers:
            self._readers.put_nowait(reader)
        self._closed = False

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """The writer connection inside ``BEGIN IMMEDIATE``; commits on success, rolls back on error."""
        self._check_open()
        async with self._write_lock:
            conn = self._writer
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StorageError(f"The database is busy (another process holds the write lock): {exc}.") from exc
            except BaseException:
                await _finish(conn)
                raise
            try:
                yield conn
                await conn.execute("COMMIT")
            except BaseException as exc:
                await _finish(conn)
                if isinstance(exc, sqlite3.OperationalError):  # locked, disk full, I/O error
                    raise StorageError(f"The database write failed and was rolled back: {exc}.") from exc
                raise

    @asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """A reader connection. Each statement sees committed data; ``snapshot=True`` wraps the
        block in one read transaction so several statements see the same state (two more round trips)."""
        self._check_open()
        conn = await self._readers.get()
        try:
            if snapshot:
                try:
                    await conn.execute("BEGIN")
                    yield conn
                finally:
                    # An open read transaction would pin the WAL and block checkpoints.
                    await _finish(conn, "COMMIT")
            else:
                yield conn
        finally:
            self._readers.put_nowait(conn)

    async def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it, so no old page images remain in it."""
        self._check_open()
        async with self._write_lock:
            rows = await self._writer.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
        if rows and rows[0][0]:
            raise StorageError("The WAL checkpoint could not finish because a reader was busy; try again.")

    async def vacuum(self) -> None:
        """Rebuild the file without free pages, then checkpoint."""
        self._check_open()
        async with self._write_lock:
            await self._writer.execute("VACUUM")
        await self.checkpoint()

    async def size(self) -> int:
        return self.file_size()

    def file_size(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(f"{self.path}{suffix}")
            except OSError:
                pass
        return total

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            for conn in [*self._all_readers, self._writer]:
                await conn.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("The database is closed.")


async def open_sqlite(path: str | os.PathLike[str], readers: int, busy_timeout_ms: int, migrate: bool) -> SqliteDatabase:
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _friendly(path, exc) from exc
    try:
        writer = await _connect(path, busy_timeout_ms)
    except sqlite3.Error as exc:
        raise _friendly(path, exc) from exc
    opened: list[aiosqlite.Connection] = [writer]
    try:
        if migrate:
            await migrations.apply_migrations(writer, path=str(path))
        version = await migrations.current_version(writer)
        if version > migrations.LATEST_VERSION:
            raise SchemaTooNew(version, migrations.LATEST_VERSION, str(path))
        reader_conns = []
        for _ in range(max(1, readers)):
            conn = await _connect(path, busy_timeout_ms)
            opened.append(conn)
            reader_conns.append(conn)
    except sqlite3.Error as exc:
        for conn in opened:
            await conn.close()
        raise _friendly(path, exc) from exc
    except BaseException:
        for conn in opened:
            await conn.close()
        raise
    db = SqliteDatabase(path, writer, reader_conns)
    db.schema_version = version
    return db
