"""Recap's storage: message history, summaries, settings, digests and privacy, in a SQLite file
(the embedded default) or a PostgreSQL database shared by bot processes on several hosts.

Functions take a connection (``storage.connection.Connection``) so callers can compose them in one
transaction; :class:`Database` hands out the writer (``db.write()``) and readers (``db.read()``).
See docs/storage-api.md. This package imports neither discord nor torch.
"""

from . import erasure, guilds, messages, migrations, privacy, settings, summaries
from .buffer import MessageBuffer
from .db import open_database
from .errors import InvalidSetting, MigrationError, SchemaTooNew, SourcesGone, StorageError
from .messages import DeleteResult, StoredAttachment, StoredMessage
from .store import Database
from .summaries import SummaryRecord
from .urls import redact_url

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
    "redact_url",
    "privacy",
    "settings",
    "summaries",
]
