"""Many members summarizing at once: the real bot process against the fake Discord of the e2e tests.

Usage:
  python bench/load.py [--members 8 40 | --members 0] [--window 20] [--long 3000 | --long 0]
                       [--short-spacing 3] [--timeout 900] [--keep-log PATH] [--engine torch --engine llama.cpp]

Starts ``python -m bot run`` (the embedded model, CPU) against ``tests/fakediscord`` over the real,
unpatched transport, as ``tests/test_e2e.py`` does. Each scenario runs in a channel of its own, seeded
with the same team conversation, so no scenario reuses another's stored summary:

- ``alone``: one member, ``/summarize messages:<window>``: the reference time.
- ``distinct_<n>``: n members at once, each over a different window (n consecutive ``messages:`` counts
  around ``<window>``, from 3 up).
- ``shared_<n>``: n members at once over one window (``messages:<window>``).

For each: summaries, refusals (told to retry), p50/p95 seconds from the command to its final reply,
the slowest acknowledgement, wall time, wall time as a ratio to ``alone``, and how many final replies
came within 120 s. ``--members 0`` skips these three. With ``--engine`` given twice, each engine runs the
scenarios with a bot of its own, one after the other, and a table puts their figures side by side.

- ``long_<N>`` (``--long N``, 0 skips it): one long job beside short ones from another server. Server A
  (the default one) has a channel of N varied messages; a moderator raises its ``max_messages`` to N
  through ``/settings set``. Server B (a second guild; the bot then syncs its commands globally) has 5
  members and three channels seeded alike. Each member first asks ``/summarize messages:<window+i>`` in
  the first channel, one after another: their times alone. Then they ask again in the third channel,
  spaced as below but with no long job: what the 5 cost each other on this machine (on a CPU, one model
  serves them all, so spaced requests slow each other down with or without a long job). Then a member of A asks ``/summarize
  messages:N``; once its reply shows a place in line or a part (read, and its parts handed to the model)
  and ``--long-lead`` seconds more, the 5 members ask the same windows again in the second channel (so
  no stored summary is reused), ``--short-spacing`` seconds apart: members who do not coordinate, each
  meeting the long job's batches at a different point (0 sends them at once, where they mostly share one
  batch). Reported: each short request's time alone, together and during the long job, the ratios of
  during to alone (the target) and of during to together (the long job's own cost to them), the long
  summary's time, the messages it read (its "Messages" field), whether it succeeded, its progress lines
  with their times, and ``/status``'s batch sizes (which requests shared a generate call).
  INPUT_TOKEN_BUDGET is raised (``--input-token-budget``) so N messages fit the reader's budget at all
  (3,000 seeded messages are about 80,000 tokens; the default 24,000 keeps only the newest ~900). On a
  CPU give the long reply time: ``--timeout 3600`` for ``--long 3000``.

The last line printed is one JSON object.
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

from fakediscord import Channel, FakeDiscord, InteractionRecord, Member  # noqa: E402
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
# The long channel repeats the conversation, each pass about another project and release.
PROJECTS = ["Billing", "Search", "Mobile app", "Data pipeline", "Onboarding", "Reporting", "Payments", "Login",
            "File storage", "Notifications", "Analytics", "Admin console"]
SHORT_MEMBERS = 5  # members of the other server in the long scenario


@dataclass
class Outcome:
    record: InteractionRecord
    final_at: float | None = None
    refused: bool = False
    failed: bool = False

    @property
    def ok(self) -> bool:
        return self.final_at is not None and not self.refused and not self.failed

    @property
    def seconds(self) -> float | None:
        return round(self.final_at - self.record.sent_at, 2) if self.final_at is not None else None


async def await_final(fake: FakeDiscord, bot: BotProcess, outcome: Outcome, timeout: float, what: str) -> Outcome:
    """Wait for the bot's last word on ``outcome.record``; note when it came and whether it was a refusal."""
    await bot.until(fake.wait_for(lambda: outcome.record.is_final(), timeout=timeout, what=what), what=what)
    outcome.final_at = asyncio.get_running_loop().time()
    text = outcome.record.error_text()
    if text is not None:
        outcome.refused = "Try again in" in text or "busy" in text
        outcome.failed = not outcome.refused
    return outcome


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
    results = await asyncio.gather(*(await_final(fake, bot, o, timeout, f"{name} reply") for o in outcomes),
                                   return_exceptions=True)
    wall = loop.time() - started
    for result in results:
        if isinstance(result, BaseException):
            print(f"{name}: {result!r}"[:500], file=sys.stderr)
    finals = [o.final_at - o.record.sent_at for o in outcomes if o.final_at is not None]
    acks = [o.record.callbacks[0]["at"] - o.record.sent_at for o in outcomes if o.record.callbacks]
    summaries = sum(o.ok for o in outcomes)
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
        "within_120s": sum(f <= 120 for f in finals),
        "refusal_texts": sorted({o.record.error_text() or "" for o in outcomes if o.refused})[:3],
    }


def varied_lines(authors: list[Member], n: int) -> list[tuple[Member, str]]:
    """n messages: the team conversation pass after pass, each about another project and release and
    with the lines said by other people, so no two parts of the long transcript read alike."""
    lines = []
    for i in range(n):
        round_, j = divmod(i, len(LINES))
        release = f"{2 + round_ // len(PROJECTS)}.{round_ % len(PROJECTS)}"
        text = LINES[j].replace("release 2.4", f"release {release}")
        lines.append((authors[(i + round_) % len(authors)], f"{PROJECTS[round_ % len(PROJECTS)]}: {text}"))
    return lines


@dataclass
class LongScenario:
    n: int
    window: int
    channel: Channel  # server A: the n messages
    asker: Member  # server A: asks for the long summary
    alone_channel: Channel  # server B: the short requests alone ...
    during_channel: Channel  # ... and during the long one (seeded alike: no stored summary is reused)
    together_channel: Channel  # ... and spaced as during, but with no long job: what they cost each other
    members: list[Member]  # server B

    @property
    def name(self) -> str:
        return f"long_{self.n}"

    @property
    def windows(self) -> list[int]:
        """One window per member: different generations, none shared with another member's."""
        return [self.window + i for i in range(len(self.members))]


def seed_long(fake: FakeDiscord, n: int, window: int) -> LongScenario:
    world = fake.world
    now = datetime.now(timezone.utc)
    channel = world.add_channel(f"long-{n}")
    authors = [world.add_member(f"long-author{i}", f"Long Author {i}") for i in range(6)]
    world.seed_conversation(channel.id, varied_lines(authors, n), start=now - timedelta(minutes=n + 60),
                            spacing=timedelta(minutes=1))
    asker = world.add_member("long-asker", "Long Asker")
    other = world.add_guild("Other Server", "other-owner")
    short_authors = [world.add_member(f"other-author{i}", f"Other Author {i}", guild_id=other.id) for i in range(5)]
    lines = [(short_authors[i % len(short_authors)], LINES[i % len(LINES)]) for i in range(window + SHORT_MEMBERS + 10)]
    pair = [world.add_channel(name, guild_id=other.id) for name in ("short-alone", "short-during", "short-together")]
    for short in pair:
        world.seed_conversation(short.id, lines, start=now - timedelta(hours=2), spacing=timedelta(minutes=1))
    members = [world.add_member(f"other-member{i}", f"Other Member {i}", guild_id=other.id)
               for i in range(SHORT_MEMBERS)]
    return LongScenario(n, window, channel, asker, pair[0], pair[1], pair[2], members)


def messages_read(record: InteractionRecord) -> int | None:
    """The count in the summary's "Messages" field: the messages its transcript kept."""
    for embed in record.embeds():
        for item in embed.get("fields") or []:
            if item.get("name") == "Messages":
                return int(str(item.get("value", "")).replace(",", ""))
    return None


def progress_lines(fake: FakeDiscord, record: InteractionRecord) -> list[tuple[float, str]]:
    """The deferred reply's text edits (the progress lines), as seconds after the command."""
    return [(round(r.at - record.sent_at, 1), r.body["content"]) for r in fake.requests
            if r.method == "PATCH" and record.token in r.path and isinstance(r.body, dict) and r.body.get("content")]


async def run_long(fake: FakeDiscord, bot: BotProcess, sc: LongScenario, args: argparse.Namespace) -> dict[str, Any]:
    name, timeout = sc.name, args.timeout
    loop = asyncio.get_running_loop()
    setting = await fake.slash("settings set", {"max_messages": sc.n}, invoker=fake.world.moderator, channel=sc.channel)
    await bot.until(fake.wait_for(lambda: bool(setting.texts()), timeout=60, what="settings reply"),
                    what="settings reply")
    said = " ".join(setting.texts())
    if not said.startswith("Updated") or "max_messages" not in said:
        raise RuntimeError(f"/settings set max_messages:{sc.n} was not applied: {said!r}")

    alone: list[Outcome] = []
    for member, window in zip(sc.members, sc.windows):  # one after another: each on an idle bot
        record = await fake.slash("summarize", {"messages": window}, invoker=member, channel=sc.alone_channel)
        alone.append(await await_final(fake, bot, Outcome(record), timeout, f"{name} short reply alone"))
    print(f"{name}: short alone {[o.seconds for o in alone]} s, ok {[o.ok for o in alone]}", flush=True)

    async def short(i: int, member: Member, window: int, channel: Channel, what: str) -> Outcome:
        await asyncio.sleep(i * args.short_spacing)
        record = await fake.slash("summarize", {"messages": window}, invoker=member, channel=channel)
        return await await_final(fake, bot, Outcome(record), timeout, f"{name} short reply {what}")

    async def spaced_shorts(channel: Channel, what: str) -> list[Outcome]:
        results = await asyncio.gather(*(short(i, m, w, channel, what) for i, (m, w) in enumerate(zip(sc.members, sc.windows))),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                print(f"{name}: {result!r}"[:500], file=sys.stderr)
        return [r for r in results if isinstance(r, Outcome)]

    # The same spaced requests with no long job: on a CPU they slow each other down (one model, one
    # core), so this, not "alone", is what the long job's own cost to them is measured against.
    together = await spaced_shorts(sc.together_channel, "together")
    print(f"{name}: short together (no long job) {[o.seconds for o in together]} s, ok {[o.ok for o in together]}",
          flush=True)

    long = Outcome(await fake.slash("summarize", {"messages": sc.n}, invoker=sc.asker, channel=sc.channel))
    long_done = asyncio.ensure_future(await_final(fake, bot, long, timeout, f"{name} long reply"))

    def under_way() -> bool:
        # Read, and its parts handed to the model: the reply shows a place in line ("You're next in
        # line", the executor's queue report) or a part. "Summarizing part 1/k" alone comes only when
        # a whole batch of parts is done, too late to overlap.
        shown = [str(e.get("content") or "") for e in long.record.edits]
        return long.record.is_final() or any(t.startswith(("You're", "Summarizing", "Combining")) for t in shown)

    await bot.until(fake.wait_for(under_way, timeout=timeout, what="long summary under way"), what="long summary")
    started_s = round(loop.time() - long.record.sent_at, 2)
    await asyncio.sleep(args.long_lead)
    shown = long.record.edits[-1].get("content") if long.record.edits else None
    print(f"{name}: long summary under way after {started_s} s ({shown!r}); sending {len(sc.members)} short "
          f"requests {args.short_spacing} s apart", flush=True)

    during = await spaced_shorts(sc.during_channel, "during the long one")
    print(f"{name}: short during {[o.seconds for o in during]} s, ok {[o.ok for o in during]}", flush=True)
    try:
        await long_done
    except AssertionError as exc:
        print(f"{name}: {exc!r}"[:500], file=sys.stderr)
    read = messages_read(long.record)
    print(f"{name}: long summary {'done' if long.ok else 'FAILED'} in {long.seconds} s, read {read} of {sc.n}", flush=True)

    # /status in server A: batch sizes (batches x rows) of A's rows and of the whole bot, to show
    # which requests shared a generate call (the alone phase ran one row per batch).
    status = await fake.slash("status", {}, invoker=sc.asker, channel=sc.channel)
    await bot.until(fake.wait_for(lambda: any(e.get("fields") for e in status.embeds()), timeout=60, what="status"),
                    what="status reply")
    batches = {f["name"]: f["value"] for e in status.embeds() for f in e.get("fields") or []
               if f["name"].startswith("Batches")}

    pairs = [(a.seconds, d.seconds) for a, d in zip(alone, during) if a.ok and d.ok and a.seconds]
    ratios = [round(d / a, 2) for a, d in pairs]
    together_pairs = [(t.seconds, d.seconds) for t, d in zip(together, during) if t.ok and d.ok and t.seconds]
    ratios_together = [round(d / t, 2) for t, d in together_pairs]
    finished_before_long = sum(1 for o in during if o.final_at is not None and long.final_at is not None
                               and o.final_at < long.final_at)
    report = {
        "n": sc.n, "short_windows": sc.windows, "short_spacing_s": args.short_spacing,
        "short_alone_s": [o.seconds for o in alone],
        "short_together_s": [o.seconds for o in together],
        "short_during_long_s": [o.seconds for o in during],
        "short_ok": sum(o.ok for o in during), "short_refused": sum(o.refused for o in during),
        "short_failed": sum(o.failed for o in during), "short_unanswered": len(sc.members) - len(during),
        "ratios": ratios, "max_ratio": max(ratios) if ratios else None,
        "ratios_to_together": ratios_together, "max_ratio_to_together": max(ratios_together) if ratios_together else None,
        "short_finished_before_long": finished_before_long,  # below len(members): the overlap was partial
        "long_started_s": started_s, "long_wall_s": long.seconds, "long_read_messages": read,
        "long_read_fraction": round(read / sc.n, 3) if read is not None else None,
        "long_ok": long.ok, "long_error": long.record.error_text(),
        "long_progress": progress_lines(fake, long.record),
        "status_batches": batches,
    }
    report["target_met"] = bool(long.ok and read is not None and read >= 0.9 * sc.n and len(ratios) == len(sc.members)
                                and max(ratios) <= 2 and finished_before_long == len(sc.members))
    return report


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Every ``--engine`` in turn, each with a fresh fake Discord and bot; then their figures side by side."""
    if len(args.engine) == 1:
        return await run_engine(args, args.engine[0])
    reports = {engine: await run_engine(args, engine) for engine in args.engine}
    names = [k for k, v in reports[args.engine[0]].items() if isinstance(v, dict) and "wall_s" in v]
    print(f"{'scenario':14}" + "".join(f"  {e + ': summaries, p50, p95, wall, x alone, <=120s':>60}" for e in args.engine))
    for name in names:
        cells = []
        for engine in args.engine:
            r = reports[engine].get(name, {})
            cells.append(f"{r.get('summaries')}/{r.get('members')}, {r.get('p50_final_s')}s, {r.get('p95_final_s')}s, "
                         f"{r.get('wall_s')}s, {r.get('wall_ratio_to_alone', 1.0)}x, {r.get('within_120s')}")
        print(f"{name:14}" + "".join(f"  {c:>60}" for c in cells))
    return {"engines": reports}


async def run_engine(args: argparse.Namespace, engine: str) -> dict[str, Any]:
    print(f"engine {engine}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="recap-load-"))
    cache = Path(args.model_cache)
    cache.mkdir(parents=True, exist_ok=True)
    fake = await FakeDiscord(token=TOKEN).start()
    log_path = Path(args.keep_log) if args.keep_log else folder / "bot.log"
    env = {"CPU_THREADS": str(args.cpu_threads), "ENGINE": engine,
           "LLAMA_CPP_DIR": str(Path(args.llama_cpp_dir).resolve())}
    members = [n for n in args.members if n > 0]
    scenarios = [Scenario("alone", [args.window])] if members else []
    for n in members:
        first = max(3, args.window - n // 2)  # n different windows around the shared one's size
        scenarios.append(Scenario(f"distinct_{n}", [first + i for i in range(n)]))
        scenarios.append(Scenario(f"shared_{n}", [args.window] * n))
    for scenario in scenarios:
        seed(fake, scenario)
    long = seed_long(fake, args.long, args.window) if args.long else None
    if long is not None:
        env.update({
            "DEV_GUILD_ID": "",  # two servers: commands synced globally, as in production
            "USER_COOLDOWN_S": "0",  # the other server's members ask twice (alone, then during)
            "INPUT_TOKEN_BUDGET": str(args.input_token_budget),
            # Every part of a long job is queued at once and each has this deadline from then: on a CPU
            # the default (600 s) ends a 3,000-message summary before its last parts run.
            "REQUEST_TIMEOUT_S": str(args.request_timeout),
        })
    chosen = dict(item.split("=", 1) for item in args.bot_env)
    env.update(chosen)
    bot = BotProcess(fake, token=TOKEN, database=folder / "recap.sqlite3", model_cache=cache, log_path=log_path,
                     extra_env=env)
    report: dict[str, Any] = {"engine": engine, "window": args.window, "bot_env": chosen}
    try:
        started = time.perf_counter()
        await bot.start()
        await bot.wait_connected(timeout=args.connect_timeout)
        print(f"bot connected after {time.perf_counter() - started:.0f}s", flush=True)
        for scenario in scenarios:
            t0 = time.perf_counter()
            report[scenario.name] = await run_scenario(fake, bot, scenario, args.timeout)
            print(f"{scenario.name}: {json.dumps(report[scenario.name])} ({time.perf_counter() - t0:.0f}s)", flush=True)
        if scenarios:
            alone = report["alone"]["wall_s"]
            for scenario in scenarios[1:]:
                wall = report[scenario.name]["wall_s"]
                report[scenario.name]["wall_ratio_to_alone"] = round(wall / alone, 2) if alone else None
        if long is not None:
            t0 = time.perf_counter()
            report[long.name] = await run_long(fake, bot, long, args)
            print(f"{long.name}: {json.dumps(report[long.name])} ({time.perf_counter() - t0:.0f}s)", flush=True)
        report["bot_errors"] = bot.logged_errors()[:5]
        report["fake_errors"] = fake.errors[:5]
        await bot.stop(timeout=30)
    finally:
        await bot.kill()
        await fake.close()
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[8, 40], help="0: skip alone/distinct/shared")
    parser.add_argument("--long", type=int, default=3000, metavar="N",
                        help="messages in the long scenario's channel (0: skip it; at most 5000)")
    parser.add_argument("--short-spacing", type=float, default=3.0,
                        help="seconds between the other server's short requests during the long one (0: at once)")
    parser.add_argument("--long-lead", type=float, default=2.0,
                        help="seconds to wait after the long summary shows its first part before the short ones")
    parser.add_argument("--input-token-budget", type=int, default=200_000,
                        help="INPUT_TOKEN_BUDGET for the long scenario, so its N messages fit the reader's budget")
    parser.add_argument("--request-timeout", type=int, default=3600,
                        help="REQUEST_TIMEOUT_S for the bot in the long scenario (default 3600)")
    parser.add_argument("--window", type=int, default=20, help="messages per summary (the shared window)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for each reply")
    parser.add_argument("--connect-timeout", type=float, default=420)
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--engine", action="append", choices=("torch", "llama.cpp"),
                        help="ENGINE for the bot (repeatable: each runs in turn, then side by side; default torch)")
    parser.add_argument("--llama-cpp-dir", default=str(ROOT / ".llama.cpp"), help="with --engine llama.cpp: the build")
    parser.add_argument("--model-cache", default=str(ROOT / "tests" / ".cache" / "model-cache"))
    parser.add_argument("--keep-log", default="")
    parser.add_argument("--bot-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the bot process, e.g. MAX_BATCH_TOKENS=4096 (repeatable)")
    parsed = parser.parse_args()
    parsed.engine = parsed.engine or ["torch"]
    if not 0 <= parsed.long <= 5000:
        parser.error("--long: 0 to 5000 messages (the max_messages setting's range)")
    result = asyncio.run(main(parsed))
    print(json.dumps(result))
