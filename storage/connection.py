"""The connection every storage function takes, on either store.

An ``aiosqlite.Connection`` is one as it is. On PostgreSQL, ``storage.postgres.PgConnection``
wraps an asyncpg connection with the same three calls and turns this package's SQL (``?``
placeholders, ``json_each(?)`` id lists) into PostgreSQL's; everything else in the SQL here is
written to mean the same on both (``ON CONFLICT``, ``RETURNING``, ``TRUE``, aliased subqueries).
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, Sequence


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...


class Connection(Protocol):
    async def execute(self, sql: str, parameters: Iterable[Any] = ..., /) -> Any: ...

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ..., /) -> Iterable[Sequence[Any]]: ...

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]], /) -> Any: ...


def is_postgres(conn: Any) -> bool:
    """Whether ``conn`` is a PostgreSQL connection (for the few statements written per store)."""
    return getattr(conn, "dialect", "sqlite") == "postgresql"
