"""Storage benchmark: buffered ingest rate, "last 500 messages" latency, and size per million.

    python bench/storage.py                    # 1,000,000 messages across 100 channels (a few minutes)
    python bench/storage.py --messages 100000  # quick check

Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import MessageBuffer, StoredMessage, messages, open_database  # noqa: E402

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


async def run(total: int, channels: int, batch: int, queries: int, folder: Path) -> dict[str, float]:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall-clock figures assume an idle machine)")
    rng = random.Random(1234)
    path = folder / "bench.sqlite3"
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    async with open_database(path) as db:
        buffer = MessageBuffer(db, max_batch=batch, max_delay_s=1.0)
        ingest_s = ingest_cpu = 0.0
        chunk = 20_000
        for start in range(0, total, chunk):
            msgs = make_messages(start, min(chunk, total - start), channels, t0, rng)
            t, c = time.perf_counter(), time.process_time()
            await buffer.add_many(msgs)
            ingest_s += time.perf_counter() - t
            ingest_cpu += time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        await buffer.aclose()
        ingest_s += time.perf_counter() - t
        ingest_cpu += time.process_time() - c
        rate = total / ingest_s
        print(f"ingest: {total:,} messages in {ingest_s:.1f} s through MessageBuffer(max_batch={batch}): {rate:,.0f} msgs/s")
        # CPU time (all threads) shows the cost when other processes share the cores.
        print(f"        {ingest_cpu:.1f} CPU-seconds: {total / ingest_cpu:,.0f} msgs per CPU-second")

        await db.checkpoint()
        size = db.file_size()
        per_million = size * 1_000_000 / total
        print(f"size: {size / 2**20:,.1f} MiB for {total:,} messages = {per_million / 2**20:,.1f} MiB per million")

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
        p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
        print(f"last 500 of a channel ({total // channels:,} per channel): p50 {p50:.2f} ms, p95 {p95:.2f} ms over {queries} queries")
        print(f"        CPU time per query: p50 {statistics.median(cpu):.2f} ms, p95 {percentile(cpu, 0.95):.2f} ms")
    return {
        "ingest_msgs_per_s": round(rate),
        "last500_p95_ms": round(p95, 3),
        "last500_p50_ms": round(p50, 3),
        "bytes_per_million": round(per_million),
        # The same work in CPU time: comparable across runs when other processes share the cores.
        "ingest_msgs_per_cpu_s": round(total / ingest_cpu),
        "last500_cpu_p95_ms": round(percentile(cpu, 0.95), 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages to ingest (default 1,000,000)")
    parser.add_argument("--channels", type=int, default=100, help="channels they are spread over (default 100)")
    default_batch = inspect.signature(MessageBuffer).parameters["max_batch"].default
    parser.add_argument("--batch", type=int, default=default_batch, help=f"MessageBuffer max_batch (default {default_batch}, as the bot uses)")
    parser.add_argument("--queries", type=int, default=500, help="last-500 queries to time (default 500)")
    parser.add_argument("--dir", type=Path, help="folder for the database (default: a temporary folder, removed)")
    args = parser.parse_args()
    if args.messages < args.channels or args.channels < 1:
        parser.error("--messages must be at least --channels, and --channels at least 1")
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run(args.messages, args.channels, args.batch, args.queries, args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="recap-bench-") as tmp:
            result = asyncio.run(run(args.messages, args.channels, args.batch, args.queries, Path(tmp)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
