"""Recap's SQLite storage: message history, summaries, settings and privacy.

Functions take an ``aiosqlite.Connection`` so callers can compose them in one transaction;
:class:`Database` hands out the writer (``db.write()``) and readers (``db.read()``).
See docs/storage-api.md. This package imports neither discord nor torch.
"""

from . import erasure, guilds, messages, migrations, privacy, settings, summaries
from .buffer import MessageBuffer
from .db import Database, open_database
from .errors import InvalidSetting, MigrationError, SchemaTooNew, SourcesGone, StorageError
from .messages import DeleteResult, StoredAttachment, StoredMessage
from .summaries import SummaryRecord

__all__ = [
    "Database",
    "DeleteResult",
    "InvalidSetting",
    "MessageBuffer",
    "MigrationError",
    "SchemaTooNew",
    "SourcesGone",
    "StorageError",
    "StoredAttachment",
    "StoredMessage",
    "SummaryRecord",
    "erasure",
    "guilds",
    "messages",
    "migrations",
    "open_database",
    "privacy",
    "settings",
    "summaries",
]
