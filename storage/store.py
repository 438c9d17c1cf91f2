"""What every open store offers, whichever it is (SQLite or PostgreSQL)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Awaitable, Callable, TypeVar

from .connection import Connection

T = TypeVar("T")


class Database:
    """An open Recap database (SQLite or PostgreSQL). Create it with :func:`open_database`.

    ``write()`` yields a connection inside a transaction that no other writer interleaves with
    (committed on success, rolled back on error); ``read()`` one that sees committed data.
    """

    kind = ""  # "sqlite" or "postgresql"
    checkpoint_every_s = 0.0  # callers run checkpoint() at most this often (PostgreSQL's VACUUM is costly)

    def __init__(self, label: str) -> None:
        self.label = label  # for logs: never holds a password
        self.schema_version = 0

    def write(self) -> AbstractAsyncContextManager[Connection]:
        raise NotImplementedError

    def read(self, *, snapshot: bool = False) -> AbstractAsyncContextManager[Connection]:
        raise NotImplementedError

    async def writing(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        async with self.write() as conn:
            return await fn(conn, *args, **kwargs)

    async def reading(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        async with self.read() as conn:
            return await fn(conn, *args, **kwargs)

    async def checkpoint(self) -> None:
        """After erasures: push deleted rows' bytes out of what the store keeps (see each store)."""
        raise NotImplementedError

    async def vacuum(self) -> None:
        """Rebuild the store without free space (an admin's maintenance command)."""
        raise NotImplementedError

    async def size(self) -> int:
        """Bytes the store takes on disk."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError
