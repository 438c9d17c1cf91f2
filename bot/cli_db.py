"""Database maintenance: apply migrations, show what is stored, or compact the file.

  python -m bot db migrate   create the database if needed and apply pending migrations
  python -m bot db stats     schema version, counts and file size
  python -m bot db vacuum    checkpoint the WAL and rebuild the file without free space
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from storage import StorageError, guilds, migrations, open_database

from .config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.epilog = "The database file is DATABASE_PATH (default data/recap.sqlite3)."
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    actions.add_parser("migrate", help="create the database if needed and apply pending migrations")
    stats = actions.add_parser("stats", help="schema version, counts (messages, channels, servers, summaries, opted-out users), file size")
    stats.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    actions.add_parser("vacuum", help="checkpoint the WAL and rebuild the file (reclaims space after deletes)")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


async def _migrate(path: str) -> None:
    async with open_database(path, migrate=False) as db:
        before = db.schema_version
    async with open_database(path) as db:
        after = db.schema_version
    if after == before:
        print(f"{path}: schema version {after}, up to date.")
    else:
        print(f"{path}: migrated from schema version {before} to {after}.")


async def _stats(path: str, as_json: bool) -> None:
    async with open_database(path) as db:
        stats = await db.reading(guilds.database_stats)
        size = db.file_size()
    if as_json:
        print(json.dumps({**stats.__dict__, "file_bytes": size, "path": path}))
        return
    print(f"Database:        {path}")
    print(f"Schema version:  {stats.schema_version} (this Recap knows up to {migrations.LATEST_VERSION})")
    print(f"Messages:        {stats.messages:,}")
    print(f"Channels:        {stats.channels:,}")
    print(f"Servers:         {stats.guilds:,}")
    print(f"Summaries:       {stats.summaries:,}")
    print(f"Opted-out users: {stats.opted_out_users:,}")
    print(f"File size:       {_size(size)}")


async def _vacuum(path: str) -> None:
    async with open_database(path) as db:
        before = db.file_size()
        await db.vacuum()
        after = db.file_size()
    print(f"{path}: vacuumed, {_size(before)} -> {_size(after)}.")


def main(args: argparse.Namespace, settings: Config) -> int:
    path = str(settings.database_path)
    if args.db_action != "migrate" and not settings.database_path.is_file():
        print(f"No database at {path} yet. Create it with: python -m bot db migrate", file=sys.stderr)
        return 1
    try:
        if args.db_action == "migrate":
            asyncio.run(_migrate(path))
        elif args.db_action == "stats":
            asyncio.run(_stats(path, args.json))
        else:
            asyncio.run(_vacuum(path))
    except StorageError as exc:
        print(f"Database error: {exc}", file=sys.stderr)
        return 1
    return 0
