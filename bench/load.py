"""Many members summarizing at once: the real bot process against the fake Discord of the e2e tests.

Usage:
  python bench/load.py [--members 8 40] [--window 20] [--timeout 900] [--keep-log PATH]

Starts ``python -m bot run`` (the embedded model, CPU) against ``tests/fakediscord`` over the real,
unpatched transport, as ``tests/test_e2e.py`` does. Each scenario runs in a channel of its own, seeded
with the same team conversation, so no scenario reuses another's stored summary:

- ``alone``: one member, ``/summarize messages:<window>``: the reference time.
- ``distinct_<n>``: n members at once, each over a different window (n consecutive ``messages:`` counts
  around ``<window>``, from 3 up).
- ``shared_<n>``: n members at once over one window (``messages:<window>``).

For each: summaries, refusals (told to retry), p50/p95 seconds from the command to its final reply,
the slowest acknowledgement, wall time, and wall time as a ratio to ``alone``. The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakediscord import FakeDiscord, InteractionRecord  # noqa: E402
from fakediscord.botprocess import BotProcess  # noqa: E402

TOKEN = "bench.token.value"
LINES = [
    "We need to decide today whether release 2.4 ships this week.",
    "The migration for the settings table is still untested on the big staging database.",
    "I ran it on a copy last night, it took eleven minutes and finished cleanly.",
    "Eleven minutes of downtime is too long for the evening peak.",
    "Could we run it online in batches instead of one big ALTER?",
    "Batches work, I tested ten thousand rows per batch, no long locks.",
    "Then batches it is. Can someone write that up?",
    "I'll put the steps in the runbook by tomorrow.",
    "Second topic: the staging API keys expire on Friday.",
    "I can rotate them Wednesday afternoon, after the load test.",
    "Please also update the CI secrets when you do.",
    "When do we announce the maintenance window?",
    "Thursday 18:00 UTC is the quietest hour according to the dashboards.",
    "Support needs 48 hours notice, so the announcement goes out Tuesday.",
    "Who is on call during the window?",
    "Load test results: p95 latency went from 480 ms to 310 ms with the new cache.",
    "The cache is not invalidated when an admin edits settings directly in SQL.",
    "Then nobody edits settings in SQL during the release.",
    "Dry run Wednesday 15:00 then.",
    "Go for Thursday. Thanks everyone.",
]


@dataclass
class Outcome:
    record: InteractionRecord
    final_at: float | None = None
    refused: bool = False
    failed: bool = False


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))], 2)


@dataclass
class Scenario:
    name: str
    windows: list[int]  # messages:<n> per member
    channel: Any = None
    members: list[Any] | None = None


def seed(fake: FakeDiscord, scenario: Scenario) -> None:
    """Its own channel with the conversation, and its members (before the bot connects, so it knows them)."""
    world = fake.world
    scenario.channel = world.add_channel(scenario.name)
    authors = [world.add_member(f"{scenario.name}-author{i}", f"Author {i}") for i in range(5)]
    lines = [(authors[i % len(authors)], LINES[i % len(LINES)]) for i in range(max(scenario.windows) + 10)]
    world.seed_conversation(scenario.channel.id, lines, start=datetime.now(timezone.utc) - timedelta(hours=4),
                            spacing=timedelta(minutes=1))
    scenario.members = [world.add_member(f"{scenario.name}-member{i}", f"Member {i}") for i in range(len(scenario.windows))]


async def run_scenario(fake: FakeDiscord, bot: BotProcess, scenario: Scenario, timeout: float) -> dict[str, Any]:
    name, windows, channel, members = scenario.name, scenario.windows, scenario.channel, scenario.members or []
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Every member's command goes out at once, as when a discussion ends and everyone asks.
    records = await asyncio.gather(*(
        fake.slash("summarize", {"messages": n}, invoker=m, channel=channel) for m, n in zip(members, windows)))
    outcomes = [Outcome(r) for r in records]

    async def watch(outcome: Outcome) -> None:
        await fake.wait_for(lambda: outcome.record.is_final(), timeout=timeout, what=f"{name} reply")
        outcome.final_at = loop.time()
        text = outcome.record.error_text()
        if text is not None:
            outcome.refused = "Try again in" in text or "busy" in text
            outcome.failed = not outcome.refused

    results = await asyncio.gather(*(bot.until(watch(o), what=f"{name} replies") for o in outcomes), return_exceptions=True)
    wall = loop.time() - started
    for result in results:
        if isinstance(result, BaseException):
            print(f"{name}: {result!r}"[:500], file=sys.stderr)
    finals = [o.final_at - o.record.sent_at for o in outcomes if o.final_at is not None]
    acks = [o.record.callbacks[0]["at"] - o.record.sent_at for o in outcomes if o.record.callbacks]
    summaries = sum(1 for o in outcomes if o.final_at is not None and not o.refused and not o.failed)
    return {
        "members": len(windows),
        "summaries": summaries,
        "refusals": sum(o.refused for o in outcomes),
        "failures": sum(o.failed for o in outcomes),
        "unanswered": sum(o.final_at is None for o in outcomes),
        "p50_final_s": percentile(finals, 0.50),
        "p95_final_s": percentile(finals, 0.95),
        "max_ack_s": round(max(acks), 2) if acks else None,
        "unacknowledged": sum(not o.record.callbacks for o in outcomes),
        "wall_s": round(wall, 2),
        "refusal_texts": sorted({o.record.error_text() or "" for o in outcomes if o.refused})[:3],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="recap-load-"))
    cache = Path(args.model_cache)
    cache.mkdir(parents=True, exist_ok=True)
    fake = await FakeDiscord(token=TOKEN).start()
    log_path = Path(args.keep_log) if args.keep_log else folder / "bot.log"
    bot = BotProcess(fake, token=TOKEN, database=folder / "recap.sqlite3", model_cache=cache, log_path=log_path,
                     extra_env={"CPU_THREADS": str(args.cpu_threads)})
    report: dict[str, Any] = {"window": args.window}
    scenarios = [Scenario("alone", [args.window])]
    for n in args.members:
        first = max(3, args.window - n // 2)  # n different windows around the shared one's size
        scenarios.append(Scenario(f"distinct_{n}", [first + i for i in range(n)]))
        scenarios.append(Scenario(f"shared_{n}", [args.window] * n))
    for scenario in scenarios:
        seed(fake, scenario)
    try:
        await bot.start()
        await bot.wait_connected(timeout=args.connect_timeout)
        for scenario in scenarios:
            t0 = time.perf_counter()
            report[scenario.name] = await run_scenario(fake, bot, scenario, args.timeout)
            print(f"{scenario.name}: {json.dumps(report[scenario.name])} ({time.perf_counter() - t0:.0f}s)", flush=True)
        alone = report["alone"]["wall_s"]
        for scenario in scenarios[1:]:
            wall = report[scenario.name]["wall_s"]
            report[scenario.name]["wall_ratio_to_alone"] = round(wall / alone, 2) if alone else None
        report["bot_errors"] = bot.logged_errors()[:5]
        report["fake_errors"] = fake.errors[:5]
        await bot.stop(timeout=30)
    finally:
        await bot.kill()
        await fake.close()
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[8, 40])
    parser.add_argument("--window", type=int, default=20, help="messages per summary (the shared window)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for each reply")
    parser.add_argument("--connect-timeout", type=float, default=420)
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--model-cache", default=str(ROOT / "tests" / ".cache" / "model-cache"))
    parser.add_argument("--keep-log", default="")
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result))
