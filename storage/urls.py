"""Database targets: which store a URL names, the file a SQLite URL names, and URLs fit for logs."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from .errors import StorageError

POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(target: str | os.PathLike[str]) -> bool:
    return isinstance(target, str) and urlsplit(target).scheme.lower() in POSTGRES_SCHEMES


def sqlite_path(target: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """The file a SQLite target names: a plain path, or ``sqlite:///relative`` / ``sqlite:////absolute``."""
    if not isinstance(target, str) or "://" not in target:
        return target
    parts = urlsplit(target)
    if parts.scheme.lower() != "sqlite":
        raise StorageError(
            f"Unknown database URL scheme {parts.scheme!r}: use sqlite:///path/to/file.sqlite3 or "
            "postgresql://user@host/dbname."
        )
    if parts.netloc:
        raise StorageError("A sqlite:// URL names a file, not a host: write sqlite:///data/recap.sqlite3.")
    path = unquote(parts.path)[1:]  # sqlite:///data/x -> data/x; sqlite:////abs/x -> /abs/x
    if not path:
        raise StorageError("The sqlite:// URL names no file: write sqlite:///data/recap.sqlite3.")
    return path


def redact_url(url: str) -> str:
    """``scheme://user@host:port/db`` without password or query, for logs and messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unreadable URL)"
    user = f"{unquote(parts.username)}@" if parts.username else ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"
