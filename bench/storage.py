"""Storage benchmark: buffered ingest rate, "last 500 messages" latency, and size, on each store.

    python bench/storage.py                    # 1,000,000 messages across 100 channels, SQLite (a few minutes)
    python bench/storage.py --messages 100000  # quick check
    python bench/storage.py --messages 10000000 --at 1000000 \
        --database sqlite --database postgresql://recap@/bench?host=/tmp/pg   # both stores, side by side

Latency and size are measured at every ``--at`` count on the way (and at the end). A PostgreSQL
database named with ``--database`` is emptied first (its Recap tables are dropped): give it one of
its own. Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import MessageBuffer, StoredMessage, messages, open_database, redact_url  # noqa: E402
from storage.urls import is_postgres_url  # noqa: E402

DISCORD_EPOCH_MS = 1_420_070_400_000
WORDS = (
    "the deploy failed again because staging ran out of disk so I restarted it and the queue "
    "drained after ten minutes can someone review my pull request before lunch thanks 👍 ok"
).split()


def snowflake(ms: int, seq: int) -> int:
    return ((ms - DISCORD_EPOCH_MS) << 22) | (seq & 0x3FFFFF)


def make_messages(start: int, count: int, channels: int, t0: datetime, rng: random.Random) -> list[StoredMessage]:
    """Messages in arrival order; channel 1000+k belongs to guild 1 + k % 10."""
    out = []
    base_ms = int(t0.timestamp() * 1000)
    for n in range(start, start + count):
        ms = base_ms + n * 10  # 100 messages a second across the server fleet
        channel = n % channels
        text = " ".join(rng.choices(WORDS, k=rng.randint(4, 24)))
        out.append(
            StoredMessage(
                id=snowflake(ms, n),
                guild_id=1 + channel % 10,
                channel_id=1000 + channel,
                author_id=10_000 + rng.randrange(2000),
                author_name="member",
                content=text,
                created_at=t0 + timedelta(milliseconds=n * 10),
            )
        )
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _empty_postgres(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS messages, message_authors, summary_sources, summaries, settings, "
                           "opt_outs, digests, leases, schema_migrations CASCADE; "
                           "DROP FUNCTION IF EXISTS recap_ids(text), recap_messages_delete_summaries() CASCADE")
    finally:
        await conn.close()


async def _latency(db, total: int, channels: int, queries: int, rng: random.Random) -> dict[str, float]:
    latencies, cpu = [], []
    for i in range(queries + 20):
        channel = 1000 + rng.randrange(channels)
        t, c = time.perf_counter(), time.process_time()
        got = await db.reading(messages.last_messages, channel, 500)
        elapsed = (time.perf_counter() - t) * 1000
        if i >= 20:  # the first queries warm the page cache
            latencies.append(elapsed)
            cpu.append((time.process_time() - c) * 1000)
        assert len(got) == min(500, total // channels) and got[0].id < got[-1].id
    return {"p50": statistics.median(latencies), "p95": percentile(latencies, 0.95),
            "cpu_p95": percentile(cpu, 0.95)}


async def run(target: str, total: int, channels: int, batch: int, queries: int, at: list[int]) -> dict:
    """Ingest ``total`` messages into ``target``, measuring latency and size at each count in ``at``."""
    label = redact_url(target) if is_postgres_url(target) else "SQLite"
    print(f"== {label}: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(wall-clock figures assume an idle machine)")
    if is_postgres_url(target):
        await _empty_postgres(target)
    rng = random.Random(1234)
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    marks = sorted({n for n in at if 0 < n < total} | {total})
    points: list[dict] = []
    async with open_database(target) as db:
        buffer = MessageBuffer(db, max_batch=batch, max_delay_s=1.0)
        ingest_s = ingest_cpu = 0.0
        chunk, done = batch, 0  # a batch at a time, as messages arrive: checking one overlaps writing the last
        for mark in marks:
            while done < mark:
                msgs = make_messages(done, min(chunk, mark - done), channels, t0, rng)
                t, c = time.perf_counter(), time.process_time()
                await buffer.add_many(msgs)
                ingest_s += time.perf_counter() - t
                ingest_cpu += time.process_time() - c
                done += len(msgs)
            t, c = time.perf_counter(), time.process_time()
            await buffer.flush()
            ingest_s += time.perf_counter() - t
            ingest_cpu += time.process_time() - c
            await db.checkpoint()
            size = await db.size()
            lat = await _latency(db, done, channels, queries, rng)
            point = {"messages": done, "last500_p50_ms": round(lat["p50"], 3), "last500_p95_ms": round(lat["p95"], 3),
                     "last500_cpu_p95_ms": round(lat["cpu_p95"], 3), "bytes": size,
                     "bytes_per_million": round(size * 1_000_000 / done)}
            points.append(point)
            print(f"at {done:,} messages: last 500 of a channel ({done // channels:,} per channel) p50 {lat['p50']:.2f} ms, "
                  f"p95 {lat['p95']:.2f} ms over {queries} queries; size {size / 2**20:,.1f} MiB "
                  f"({point['bytes_per_million'] / 2**20:,.1f} MiB per million)")
        await buffer.aclose()
        rate = total / ingest_s
        print(f"ingest: {total:,} messages in {ingest_s:.1f} s through MessageBuffer(max_batch={batch}): {rate:,.0f} msgs/s")
        # CPU time of this process (all threads) shows the cost when other processes share the cores;
        # PostgreSQL's own work is in the server's processes, not counted here.
        print(f"        {ingest_cpu:.1f} CPU-seconds in this process: {total / ingest_cpu:,.0f} msgs per CPU-second")
    last = points[-1]
    return {
        "store": "postgresql" if is_postgres_url(target) else "sqlite",
        "ingest_msgs_per_s": round(rate),
        "last500_p95_ms": last["last500_p95_ms"],
        "last500_p50_ms": last["last500_p50_ms"],
        "bytes_per_million": last["bytes_per_million"],
        "ingest_msgs_per_cpu_s": round(total / ingest_cpu),
        "last500_cpu_p95_ms": last["last500_cpu_p95_ms"],
        "points": points,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _side_by_side(results: list[dict]) -> None:
    print("\n" + " | ".join(["", *[r["store"] for r in results]]))
    print("ingest msgs/s | " + " | ".join(f"{r['ingest_msgs_per_s']:,}" for r in results))
    for i, point in enumerate(results[0]["points"]):
        row = [r["points"][i] for r in results]
        print(f"at {point['messages']:,}: last-500 p95 ms | " + " | ".join(str(p["last500_p95_ms"]) for p in row))
        print(f"at {point['messages']:,}: MiB | " + " | ".join(f"{p['bytes'] / 2**20:,.0f}" for p in row))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages to ingest (default 1,000,000)")
    parser.add_argument("--channels", type=int, default=100, help="channels they are spread over (default 100)")
    default_batch = inspect.signature(MessageBuffer).parameters["max_batch"].default
    parser.add_argument("--batch", type=int, default=default_batch, help=f"MessageBuffer max_batch (default {default_batch}, as the bot uses)")
    parser.add_argument("--queries", type=int, default=500, help="last-500 queries to time (default 500)")
    parser.add_argument("--dir", type=Path, help="folder for a SQLite database (default: a temporary folder, removed)")
    parser.add_argument("--database", action="append", metavar="URL",
                        help="`sqlite` (a file in --dir) or a postgresql:// URL; repeat to compare stores (default: sqlite)")
    parser.add_argument("--at", default="", help="also measure latency and size at these counts, e.g. 1000000")
    args = parser.parse_args()
    if args.messages < args.channels or args.channels < 1:
        parser.error("--messages must be at least --channels, and --channels at least 1")
    try:
        at = [int(x.replace("_", "")) for x in args.at.split(",") if x.strip()]
    except ValueError:
        parser.error("--at takes whole numbers separated by commas")
    results = []
    for database in args.database or ["sqlite"]:
        if database == "sqlite" or not is_postgres_url(database):
            folder = args.dir or Path(tempfile.mkdtemp(prefix="recap-bench-"))
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "bench.sqlite3" if database == "sqlite" else Path(database)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            try:
                results.append(asyncio.run(run(str(path), args.messages, args.channels, args.batch, args.queries, at)))
            finally:
                if args.dir is None:
                    shutil.rmtree(folder, ignore_errors=True)
        else:
            results.append(asyncio.run(run(database, args.messages, args.channels, args.batch, args.queries, at)))
    if len(results) > 1:
        _side_by_side(results)
    result = results[0] if len(results) == 1 else {"stores": results}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
