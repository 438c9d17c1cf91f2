"""Database maintenance: apply migrations, show what is stored, compact, or copy to PostgreSQL.

  python -m bot db migrate   create the database if needed and apply pending migrations
  python -m bot db stats     schema version, counts and size
  python -m bot db vacuum    SQLite: checkpoint the WAL and rebuild the file; PostgreSQL: VACUUM FULL
  python -m bot db copy --to postgresql://user@host/db
                             copy this database into another (run twice, it copies nothing twice)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from storage import StorageError, guilds, migrations, open_database, redact_url
from storage.copy import copy_database, count_rows
from storage.urls import is_postgres_url, sqlite_path

from .config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.epilog = "The database is DATABASE_URL when set, else the SQLite file DATABASE_PATH (default data/recap.sqlite3)."
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    actions.add_parser("migrate", help="create the database if needed and apply pending migrations")
    stats = actions.add_parser("stats", help="schema version, counts (messages, channels, servers, summaries, opted-out users), file size")
    stats.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    actions.add_parser("vacuum", help="rebuild the store without free space (reclaims space, and erased bytes, after deletes)")
    copy = actions.add_parser("copy", help="copy every row into another database (e.g. this SQLite file into PostgreSQL)")
    copy.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host/dbname (the database must exist), or a SQLite path")
    copy.add_argument("--from", dest="source", metavar="URL", help="the database to copy (default: DATABASE_URL, else DATABASE_PATH)")
    copy.add_argument("--quiet", action="store_true", help="no progress bar")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _shown(target: str) -> str:
    return redact_url(target) if is_postgres_url(target) else target


async def _migrate(target: str) -> None:
    async with open_database(target, migrate=False) as db:
        before = db.schema_version
    async with open_database(target) as db:
        after = db.schema_version
    if after == before:
        print(f"{_shown(target)}: schema version {after}, up to date.")
    else:
        print(f"{_shown(target)}: migrated from schema version {before} to {after}.")


async def _stats(target: str, as_json: bool) -> None:
    async with open_database(target) as db:
        stats = await db.reading(guilds.database_stats)
        size = await db.size()
        label = db.label
    if as_json:
        print(json.dumps({**stats.__dict__, "file_bytes": size, "path": _shown(target), "store": label}))
        return
    print(f"Database:        {label}")
    print(f"Schema version:  {stats.schema_version} (this Recap knows up to {migrations.LATEST_VERSION})")
    print(f"Messages:        {stats.messages:,}")
    print(f"Channels:        {stats.channels:,}")
    print(f"Servers:         {stats.guilds:,}")
    print(f"Summaries:       {stats.summaries:,}")
    print(f"Opted-out users: {stats.opted_out_users:,}")
    print(f"Size:            {_size(size)}")


async def _vacuum(target: str) -> None:
    async with open_database(target) as db:
        before = await db.size()
        await db.vacuum()
        after = await db.size()
    print(f"{_shown(target)}: vacuumed, {_size(before)} -> {_size(after)}.")


async def _copy(source_target: str, target: str, quiet: bool) -> int:
    from tqdm import tqdm

    async with open_database(source_target) as source, open_database(target) as destination:
        total = sum((await count_rows(source)).values())
        print(f"Copying {total:,} rows from {source.label} to {destination.label} ...", file=sys.stderr)
        with tqdm(total=total, unit=" rows", disable=quiet, file=sys.stderr, dynamic_ncols=True) as bar:
            counts = await copy_database(source, destination, bar.update)
    wrong = [c for c in counts if c.target < c.source]
    extra = [c for c in counts if c.target > c.source]
    for c in counts:
        mark = "ok" if c.target == c.source else ("MISSING ROWS" if c.target < c.source else "more in the target")
        print(f"  {c.table:16} source {c.source:>12,}  target {c.target:>12,}  {mark}")
    if wrong:
        print(f"The copy is incomplete: {', '.join(c.table for c in wrong)} has fewer rows in the target. "
              "Run the same command again to finish it.", file=sys.stderr)
        return 1
    if extra:
        print("Every row was copied; the target also holds rows the source does not (it was not empty).")
    else:
        print("Every row was copied; the row counts match.")
    return 0


def _exists(target: str) -> bool:
    if is_postgres_url(target):
        return True  # the server says whether the database exists
    return Path(sqlite_path(target)).is_file()


def main(args: argparse.Namespace, settings: Config) -> int:
    target = settings.database_target
    if args.db_action == "copy" and args.source:
        target = args.source
    try:
        if args.db_action != "migrate" and not _exists(target):
            print(f"No database at {_shown(target)} yet. Create it with: python -m bot db migrate", file=sys.stderr)
            return 1
        if args.db_action == "migrate":
            asyncio.run(_migrate(target))
        elif args.db_action == "stats":
            asyncio.run(_stats(target, args.json))
        elif args.db_action == "copy":
            return asyncio.run(_copy(target, args.to, args.quiet))
        else:
            asyncio.run(_vacuum(target))
    except StorageError as exc:
        print(f"Database error: {exc}", file=sys.stderr)
        return 1
    return 0
