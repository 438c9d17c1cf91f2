"""Which store a database target names, and opening it.

A target is a path (the embedded SQLite file), a ``sqlite:///path`` URL, or a
``postgresql://user@host/db`` URL. Both stores hand out connections with the same three calls
(``execute``, ``execute_fetchall``, ``executemany``; see ``storage.connection``), so every
function in this package runs on either.
"""

from __future__ import annotations

import os
from typing import Any, Generator

from .store import Database
from .urls import is_postgres_url, sqlite_path


class _Opener:
    """``await open_database(t)`` or ``async with open_database(t) as db``."""

    def __init__(self, target: str | os.PathLike[str], options: dict[str, Any]) -> None:
        self._target = target
        self._options = options
        self._db: Database | None = None

    async def _open(self) -> Database:
        if is_postgres_url(self._target):
            from .postgres import open_postgres

            return await open_postgres(str(self._target), readers=self._options["readers"],
                                       migrate=self._options["migrate"])
        from .sqlite import open_sqlite

        return await open_sqlite(sqlite_path(self._target), self._options["readers"],
                                 self._options["busy_timeout_ms"], self._options["migrate"])

    def __await__(self) -> Generator[Any, None, Database]:
        return self._open().__await__()

    async def __aenter__(self) -> Database:
        self._db = await self._open()
        return self._db

    async def __aexit__(self, *exc: object) -> None:
        if self._db is not None:
            await self._db.close()


def open_database(
    target: str | os.PathLike[str], *, readers: int = 2, busy_timeout_ms: int = 5000, migrate: bool = True
) -> _Opener:
    """Open and migrate the database ``target`` names: a SQLite path (the folder and file are
    created if needed), ``sqlite:///path``, or ``postgresql://...`` (the database must exist)."""
    return _Opener(target, {"readers": readers, "busy_timeout_ms": busy_timeout_ms, "migrate": migrate})
