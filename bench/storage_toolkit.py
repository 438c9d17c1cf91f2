"""What a database toolkit would cost: Recap's own SQL against SQLAlchemy Core's async engine, on the
same schema, the same rows and the same store (why storage/ writes its SQL itself; README, Performance).

    .venv/bin/pip install "sqlalchemy[asyncio]>=2"     # not a Recap dependency: only this benchmark uses it
    .venv/bin/python bench/storage_toolkit.py                              # SQLite
    .venv/bin/python bench/storage_toolkit.py --database postgresql://...  # PostgreSQL (its Recap tables are dropped)

Both sides write batches of 2,000 messages, one transaction each (the buffer's batch), as upserts, and
read "the last 500 messages of a channel". Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage import messages, open_database  # noqa: E402
from storage.urls import is_postgres_url  # noqa: E402

_spec = importlib.util.spec_from_file_location("storage_bench", ROOT / "bench" / "storage.py")
storage_bench = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(storage_bench)  # type: ignore[union-attr]

BATCH = 2000
COLUMNS = ("id", "guild_id", "channel_id", "parent_id", "author_id", "author_name", "content", "created_at",
           "edited_at", "reply_to", "is_bot", "attachments")


def _rows(total: int) -> list[tuple]:
    made = storage_bench.make_messages(0, total, 100, datetime(2025, 1, 1, tzinfo=timezone.utc), random.Random(7))
    return [messages.message_row(m) for m in made]


async def _ours(target: str, rows: list[tuple], queries: int) -> dict[str, float]:
    async with open_database(target) as db:
        t = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            await db.writing(messages.write_rows, rows[i:i + BATCH])
        rate = len(rows) / (time.perf_counter() - t)
        lat = []
        for n in range(queries):
            t = time.perf_counter()
            await db.reading(messages.last_messages, 1000 + n % 100, 500)
            lat.append((time.perf_counter() - t) * 1000)
    return {"ingest_msgs_per_s": round(rate), "last500_p50_ms": round(statistics.median(lat), 3)}


async def _toolkit(url: str, rows: list[tuple], queries: int) -> dict[str, float]:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    meta = sa.MetaData()
    table = sa.Table("messages", meta, *(sa.Column(c, sa.BigInteger if c not in ("author_name", "content", "attachments")
                                                    else sa.Text, primary_key=c == "id") for c in COLUMNS))
    if url.startswith("postgresql"):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    upsert = stmt.on_conflict_do_update(index_elements=["id"], set_={
        "author_name": stmt.excluded.author_name, "content": stmt.excluded.content,
        "edited_at": sa.func.coalesce(stmt.excluded.edited_at, table.c.edited_at),
        "reply_to": sa.func.coalesce(stmt.excluded.reply_to, table.c.reply_to),
        "parent_id": sa.func.coalesce(stmt.excluded.parent_id, table.c.parent_id),
        "is_bot": stmt.excluded.is_bot, "attachments": stmt.excluded.attachments,
    })
    authors = sa.Table("message_authors", meta, sa.Column("author_id", sa.BigInteger, primary_key=True),
                       sa.Column("channel_id", sa.BigInteger, primary_key=True), sa.Column("guild_id", sa.BigInteger))
    pairs_stmt = insert(authors).on_conflict_do_nothing()
    engine = create_async_engine(url)
    try:
        t = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            batch = rows[i:i + BATCH]
            async with engine.begin() as conn:
                await conn.execute(upsert, [dict(zip(COLUMNS, r)) for r in batch])
                await conn.execute(pairs_stmt, [{"author_id": r[4], "channel_id": r[2], "guild_id": r[1]}
                                                for r in {(r[4], r[2], r[1]): r for r in batch}.values()])
        rate = len(rows) / (time.perf_counter() - t)
        query = sa.select(table).where(table.c.channel_id == sa.bindparam("c")).order_by(table.c.id.desc()).limit(500)
        lat = []
        async with engine.connect() as conn:
            for n in range(queries):
                t = time.perf_counter()
                result = (await conn.execute(query, {"c": 1000 + n % 100})).all()
                [messages._from_row(tuple(r)) for r in reversed(result)]  # the same objects ours returns
                lat.append((time.perf_counter() - t) * 1000)
    finally:
        await engine.dispose()
    return {"ingest_msgs_per_s": round(rate), "last500_p50_ms": round(statistics.median(lat), 3)}


async def main_async(database: str | None, total: int, queries: int) -> dict:
    rows = _rows(total)
    with tempfile.TemporaryDirectory(prefix="recap-toolkit-") as tmp:
        if database and is_postgres_url(database):
            targets = {"ours": database, "toolkit": database.replace("postgresql://", "postgresql+asyncpg://", 1)}
        else:
            targets = {"ours": f"{tmp}/ours.sqlite3", "toolkit": f"sqlite+aiosqlite:///{tmp}/toolkit.sqlite3"}
        results = {}
        for side in ("ours", "toolkit"):
            if database and is_postgres_url(database):
                await storage_bench._empty_postgres(database)
                async with open_database(database):
                    pass  # the schema, fresh
            else:
                async with open_database(f"{tmp}/{side}.sqlite3"):
                    pass
            results[side] = await (_ours(targets["ours"], rows, queries) if side == "ours"
                                   else _toolkit(targets["toolkit"], rows, queries))
            print(f"{side:8} ingest {results[side]['ingest_msgs_per_s']:>8,} msgs/s, "
                  f"last 500 p50 {results[side]['last500_p50_ms']:.2f} ms")
    store = "postgresql" if database and is_postgres_url(database) else "sqlite"
    ratio = results["ours"]["ingest_msgs_per_s"] / results["toolkit"]["ingest_msgs_per_s"]
    print(f"{store}: Recap's SQL ingests {ratio:.2f}x the toolkit's rate")
    return {"store": store, "messages": total, **{f"{k}_{m}": v for k, r in results.items() for m, v in r.items()},
            "ingest_ratio": round(ratio, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="a postgresql:// URL (default: SQLite files in a temporary folder)")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        print('SQLAlchemy is not installed: .venv/bin/pip install "sqlalchemy[asyncio]>=2"', file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(main_async(args.database, args.messages, args.queries))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
