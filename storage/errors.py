"""Errors raised by the storage package. Each message is a sentence a user can act on."""

from __future__ import annotations


class StorageError(Exception):
    """A storage operation was refused or failed; ``str(exc)`` says why."""


class SchemaTooNew(StorageError):
    """The database was written by a newer Recap than this one."""

    def __init__(self, found: int, supported: int, path: str = "") -> None:
        self.found = found
        self.supported = supported
        where = f" {path}" if path else ""
        super().__init__(
            f"The database{where} has schema version {found}, but this version of Recap only knows up to "
            f"{supported}. Upgrade Recap, or point DATABASE_PATH at another file."
        )


class MigrationError(StorageError):
    """A migration could not be applied (it was rolled back), or the migration files are misnumbered."""


class InvalidSetting(StorageError):
    """A setting name or value is not allowed."""

    def __init__(self, name: str, message: str, allowed: str = "") -> None:
        self.name = name
        self.allowed = allowed
        super().__init__(message)


class SourcesGone(StorageError):
    """A summary's source messages were deleted (or their author opted out) while it was being made."""

    def __init__(self, missing: int) -> None:
        self.missing = missing
        super().__init__(f"{missing} of the summary's source messages no longer exist; the summary was not stored.")
