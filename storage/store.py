"""What every open store offers, whichever it is (SQLite or PostgreSQL)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager
from typing import Any, Awaitable, Callable, TypeVar

from .connection import Connection

T = TypeVar("T")


class Database(ABC):
    """An open Recap database (SQLite or PostgreSQL). Create it with :func:`open_database`.

    ``write()`` yields a connection inside a transaction that no other writer interleaves with
    (committed on success, rolled back on error); ``read()`` one that sees committed data.
    """

    kind = ""  # "sqlite" or "postgresql"
    checkpoint_every_s = 0.0  # callers run checkpoint() at most this often (PostgreSQL's VACUUM is costly)

    def __init__(self, label: str) -> None:
        self.label = label  # for logs: never holds a password
        self.schema_version = 0

    @abstractmethod
    def write(self) -> AbstractAsyncContextManager[Connection]:
        ...

    @abstractmethod
    def read(self, *, snapshot: bool = False) -> AbstractAsyncContextManager[Connection]:
        ...

    async def writing(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        async with self.write() as conn:
            return await fn(conn, *args, **kwargs)

    async def reading(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        async with self.read() as conn:
            return await fn(conn, *args, **kwargs)

    @abstractmethod
    async def checkpoint(self) -> None:
        """After erasures: push deleted rows' bytes out of what the store keeps (see each store)."""
        ...

    @abstractmethod
    async def vacuum(self) -> None:
        """Rebuild the store without free space (an admin's maintenance command)."""
        ...

    @abstractmethod
    async def size(self) -> int:
        """Bytes the store takes on disk."""
        ...

    @abstractmethod
    async def close(self) -> None:
        ...
