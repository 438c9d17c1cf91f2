"""End-to-end: ``python -m bot run`` as a subprocess against the fake Discord, through the real transport.

The bot runs the embedded model (the product default); its converted weights are cached
in ``tests/.cache/model-cache`` so only the very first run pays for the conversion.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytest_asyncio

from fakediscord import FakeDiscord, InteractionRecord, Member, Message, World
from fakediscord.botprocess import BotProcess

pytestmark = [pytest.mark.e2e, pytest.mark.embedded, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "fake.token.value"
CONNECT_TIMEOUT = 90  # python, torch and the cached model load before the gateway connects
COLD_CONNECT_TIMEOUT = 420  # the first run on a machine also converts the GGUF (slow on a busy CPU)
ANSWER_TIMEOUT = 300  # the embedded model on a shared, busy 2-core CPU
LINK = re.compile(r"https://discord\.com/channels/(\d+)/(\d+)/(\d+)")

RELEASE_NOTES = b"""Release 2.4 checklist
- migrate the settings table before deploy
- rotate the staging API keys
- announce the maintenance window on Thursday 18:00 UTC
"""


def conversation(world: World) -> list[tuple[Member, str]]:
    """About thirty messages of a team planning a release, with a reply, a mention and an @everyone."""
    dmitri = world.add_member("dmitri", "Dmitri")
    elena = world.add_member("elena", "Elena")
    ada, bram, chloe = world.owner, world.moderator, world.member
    return [
        (ada, "Morning all. We need to decide today whether release 2.4 ships this week."),
        (bram, "The migration for the settings table is still untested on the big staging database."),
        (chloe, "I ran it on a copy last night, it took eleven minutes and finished cleanly."),
        (dmitri, "Eleven minutes of downtime is too long for the EU evening peak."),
        (elena, "Could we run it online in batches instead of one big ALTER?"),
        (chloe, "Batches work, I tested 10k rows per batch, no locks longer than a second."),
        (ada, "Great, then batches it is. Chloe, can you write that up?"),
        (chloe, "Sure, I'll put the steps in the runbook by tomorrow."),
        (bram, "Second topic: the staging API keys expire on Friday."),
        (dmitri, "I can rotate them Wednesday afternoon, after the load test."),
        (elena, "Please also update the CI secrets when you do, last time we forgot."),
        (dmitri, "Noted, CI secrets included."),
        (ada, "Third: when do we announce the maintenance window?"),
        (bram, "Thursday 18:00 UTC is the quietest hour according to the dashboards."),
        (elena, "Support needs 48 hours notice, so the announcement must go out Tuesday."),
        (ada, "@everyone please keep Thursday 18:00 UTC free for the 2.4 release."),
        (chloe, "Attached the release checklist so nobody has to dig through this thread."),
        (dmitri, "Who is on call during the window?"),
        (bram, "Me and Elena, with Ada as escalation."),
        (elena, f"Fine by me. <@{bram.user.id}> let's do a dry run Wednesday."),
        (bram, "Dry run Wednesday 15:00 then."),
        (chloe, "The new summary export also needs a changelog entry."),
        (ada, "Add it under 'Improvements', not 'Features'."),
        (dmitri, "Load test results: p95 latency went from 480 ms to 310 ms with the new cache."),
        (elena, "Nice, that's the cache Chloe added last sprint."),
        (chloe, "Thanks! It only caches reads, writes still go straight to the database."),
        (bram, "One risk: the cache is not invalidated when an admin edits settings directly in SQL."),
        (ada, "Then nobody edits settings in SQL during the release. I'll write it in the runbook."),
        (dmitri, "Sounds like a plan. Go for Thursday?"),
        (ada, "Go for Thursday. Thanks everyone."),
    ]


@dataclass
class Running:
    fake: FakeDiscord
    bot: BotProcess
    seeded: list[Message]


def connect_timeout(cache: Path) -> float:
    converted = any((d / "config.json").is_file() for d in cache.iterdir() if d.is_dir())
    return CONNECT_TIMEOUT if converted else COLD_CONNECT_TIMEOUT


def start_bot(fake: FakeDiscord, folder: Path, cache: Path, name: str, database_url: str = "",
              **env: str) -> BotProcess:
    """A bot process whose database lives in ``folder`` (or at ``database_url``): two started on one
    folder share it."""
    return BotProcess(fake, token=TOKEN, database=folder / "recap.sqlite3", model_cache=cache, log_path=folder / f"{name}.log",
                      # One torch thread: on a shared, oversubscribed CPU more threads made generation
                      # over ten times slower (OpenMP workers spinning against other processes).
                      extra_env={"USER_COOLDOWN_S": "0", "CPU_THREADS": "1", "DATABASE_URL": database_url, **env})


def database_url(store: str, request: pytest.FixtureRequest) -> str:
    """Empty for the SQLite file in the bot's folder, or a fresh PostgreSQL schema's URL."""
    return "" if store == "sqlite" else request.getfixturevalue("pg_schemas")()


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["sqlite", "postgresql"])
async def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                  embedded_cache_dir: Path) -> AsyncIterator[Running]:
    """One bot process for the read-only tests, with a seeded #general, on each store."""
    url = database_url(request.param, request)
    folder = tmp_path_factory.mktemp("e2e-shared")
    fake = await FakeDiscord(token=TOKEN).start()
    world = fake.world
    start = datetime.now(timezone.utc) - timedelta(hours=3)
    lines = conversation(world)
    seeded = world.seed_conversation(world.general.id, lines, start=start, spacing=timedelta(minutes=3))
    # The checklist message carries the text attachment.
    checklist = next(m for m in seeded if m.content.startswith("Attached the release checklist"))
    world.attach(checklist, "release-checklist.txt", RELEASE_NOTES, "text/plain")
    bot = await start_bot(fake, folder, embedded_cache_dir, "bot", url).start()
    try:
        await bot.wait_connected(timeout=connect_timeout(embedded_cache_dir))
        yield Running(fake, bot, seeded)
        rc = await bot.stop(timeout=15)
        assert rc == 0, bot.log_tail()
        assert bot.logged_errors() == []
        assert fake.errors == [], fake.errors
    finally:
        await bot.kill()
        await fake.close()


async def run_command(running: Running, command: str, options: dict, *, invoker: Member,
                      done: Callable[[InteractionRecord], bool], what: str,
                      timeout: float = ANSWER_TIMEOUT) -> InteractionRecord:
    """Send the command and wait until ``done`` (the model is loaded before the bot connects)."""
    fake, bot = running.fake, running.bot
    record = await fake.slash(command, options, invoker=invoker)
    await bot.until(fake.wait_for(lambda: done(record), timeout=timeout, what=what), what=what)
    return record


def _summary_embeds(record: InteractionRecord) -> list[dict]:
    """The summary's embeds: the text embed and the details embed with fields (participants ...)."""
    return [e for e in record.embeds() if e.get("description") or e.get("fields")]


def assert_no_pings(fake: FakeDiscord) -> None:
    bodies = fake.message_bodies()
    assert bodies, "the bot sent no message at all"
    for body in bodies:
        mentions = body.get("allowed_mentions")
        assert mentions is not None and mentions.get("parse") == [], body
        assert not mentions.get("users") and not mentions.get("roles"), body


# Runs first: it starts its own bot processes, before the shared one below exists.
@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_settings_persist_across_a_clean_restart(store: str, request: pytest.FixtureRequest, tmp_path: Path,
                                                       embedded_cache_dir: Path) -> None:
    url = database_url(store, request)
    fake = await FakeDiscord(token=TOKEN).start()
    world = fake.world
    first = start_bot(fake, tmp_path, embedded_cache_dir, "first", url)
    second = start_bot(fake, tmp_path, embedded_cache_dir, "second", url)
    try:
        await first.start()
        await first.wait_connected(timeout=connect_timeout(embedded_cache_dir))
        running = Running(fake, first, [])
        changed = await run_command(running, "settings set", {"length": "long"}, invoker=world.moderator,
                                    done=lambda r: bool(r.texts()), what="settings set reply", timeout=30)
        reply = "\n".join(changed.texts()).lower()
        assert "length" in reply and "long" in reply, reply  # the confirmation names the new value
        started = asyncio.get_running_loop().time()
        assert await first.stop(timeout=15) == 0, first.log_tail()
        assert asyncio.get_running_loop().time() - started < 10, "shutdown took too long"

        await second.start()
        await second.wait_connected(timeout=CONNECT_TIMEOUT, identify_count=2)
        running = Running(fake, second, [])
        shown = await run_command(running, "settings show", {}, invoker=world.moderator,
                                  done=lambda r: bool(r.texts()), what="settings show reply", timeout=30)
        text = "\n".join(shown.texts()).lower()
        assert re.search(r"length\W+long", text), text
        # A member without Manage Server cannot change it.
        denied = await run_command(running, "settings set", {"length": "short"}, invoker=world.member,
                                   done=lambda r: bool(r.texts()), what="settings set refusal", timeout=30)
        assert denied.error_text() is not None and "short" not in "\n".join(denied.texts()), denied.texts()
        assert await second.stop(timeout=15) == 0, second.log_tail()
        assert first.logged_errors() == [] and second.logged_errors() == []
        assert_no_pings(fake)
        assert fake.errors == []
    finally:
        await first.kill()
        await second.kill()
        await fake.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def summary(running: Running) -> InteractionRecord:
    """``/summarize messages:20`` by a regular member in #general, run once for the tests that read it."""
    return await run_command(running, "summarize", {"messages": 20}, invoker=running.fake.world.member,
                             done=InteractionRecord.is_final, what="the summary")


async def test_summarize_defers_then_replies_with_a_summary(running: Running, summary: InteractionRecord) -> None:
    fake, world = running.fake, running.fake.world
    # Acknowledged (deferred) within Discord's 3-second deadline.
    first = summary.callbacks[0]
    assert first["body"]["type"] == 5 and first["at"] - summary.sent_at < 3
    assert summary.error_text() is None, summary.error_text()
    assert _summary_embeds(summary), summary.texts()
    text = "\n".join(summary.texts())
    authors = {m.author.global_name for m in running.seeded[-20:]}
    assert sum(name in text for name in authors) >= 3, f"participants missing: {authors} in {text!r}"
    # Exactly the 20 newest seeded messages: the bot's own "thinking" message (newest in the
    # channel when it read the history) is not among them.
    stamps = [int(t) for t in re.findall(r"<t:(\d+):\w>", text)]
    expected = [int(running.seeded[i].created_at.timestamp()) for i in (-20, -1)]
    assert stamps[:2] == expected, (stamps, expected)

    history = fake.requests_to("GET", rf"/channels/{world.general.id}/messages")
    assert history and all(r.status == 200 for r in history)
    downloads = [r for r in fake.requests if r.path.endswith("/release-checklist.txt")]
    assert downloads and downloads[0].status == 200, "the text attachment was not read"
    assert "@everyone" not in text and "@here" not in text
    assert_no_pings(fake)


async def test_summary_links_to_the_messages_it_read(running: Running, summary: InteractionRecord) -> None:
    world = running.fake.world
    text = "\n".join(summary.texts())
    links = [tuple(map(int, m)) for m in LINK.findall(text)]
    assert links, f"no jump links in the reply: {text!r}"
    read = {m.id for m in running.seeded[-20:]}
    for guild_id, channel_id, message_id in links:
        assert (guild_id, channel_id) == (world.guild_id, world.general.id)
        assert message_id in read, f"link to {message_id}, which is not among the 20 messages read"


async def test_member_who_cannot_read_history_is_refused(running: Running) -> None:
    fake, world = running.fake, running.fake.world
    before = len(fake.requests_to("GET", rf"/channels/{world.general.id}/messages"))
    record = await run_command(running, "summarize", {"messages": 10}, invoker=world.newcomer,
                               done=InteractionRecord.is_final, what="the refusal", timeout=30)
    refusal = record.error_text()
    assert refusal is not None and "history" in refusal, record.texts()
    assert not _summary_embeds(record)
    assert len(fake.requests_to("GET", rf"/channels/{world.general.id}/messages")) == before
    assert_no_pings(fake)
