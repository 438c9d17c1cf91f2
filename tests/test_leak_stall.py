"""The leak check stays exact but never holds the event loop for long (issue 17), and a member in
cooldown is told so before any leak check runs."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import discord
import pytest
from simcord_helpers import BOT_EXTENSIONS, World, recap_world, reply_text  # noqa: F401

import cogs.summaries
import core.flow
from cogs.summaries import followup_view
from core import visibility
from core.channel_names import HIDDEN_CHANNEL, Readers, channel_names
from storage import SummaryRecord, summaries

SHOW = discord.PermissionOverwrite(view_channel=True, read_message_history=True)
HIDE = discord.PermissionOverwrite(view_channel=False)
BITS = (visibility._VIEW, visibility._HISTORY, visibility._THREADS)


# --- exact: the same answer as trying every role set with every union, one by one --------------


def enumerated_leaks(question: visibility._Question) -> tuple[tuple[int, int], ...]:
    """The rule as first written: every role set by size, every union, skipping what a smaller leak covers."""
    k, found = len(question.roles), []
    for size in range(k + 1):
        for combo in itertools.combinations(range(k), size):
            mask = sum(1 << i for i in combo)
            effect = 0
            for i in combo:
                effect |= question.roles[i]
            for extra in question.unions:
                if any(m & ~mask == 0 and e & ~extra == 0 for m, e in found):
                    continue
                if question.leaks(effect, extra):
                    found.append((mask, extra))
    return tuple(found[: visibility.MAX_REPORTED])


def random_bits(rng: random.Random) -> int:
    return sum(bit for bit in BITS if rng.random() < 0.4)


def random_question(rng: random.Random) -> visibility._Question:
    roles = tuple(visibility._pack(*(random_bits(rng) for _ in range(5))) for _ in range(rng.randint(0, 7)))
    return visibility._Question(
        everyone_bits=random_bits(rng),
        unions=tuple(visibility._reachable_unions(random_bits(rng) for _ in range(rng.randint(0, 3)))),
        source_everyone=(random_bits(rng), random_bits(rng)),
        target_everyone=(random_bits(rng), random_bits(rng)),
        roles=roles,
        private_source=rng.random() < 0.3,
    )


async def test_role_combinations_give_the_same_answer_as_trying_each_one() -> None:
    rng = random.Random(17)
    questions = [random_question(rng) for _ in range(300)]
    assert sum(1 for q in questions if enumerated_leaks(q)) > 50  # leaks and non-leaks both tried
    for question in questions:
        assert await visibility._minimal_leaks(question) == enumerated_leaks(question), question


# --- bounded: a read naming 20 channels in a server with 12 overwritten roles -------------------


@pytest.fixture
def simcord_bot() -> discord.Client:
    from discord.ext import commands

    return commands.Bot(command_prefix="!", intents=discord.Intents.all())


async def worst_stall(work) -> tuple[object, float]:
    """(result, the longest the event loop went without running a 1 ms ticker) while awaiting ``work``."""
    worst, done = 0.0, asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - last)
            last = time.perf_counter()

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    try:
        result = await asyncio.wait_for(work, timeout=60)
    finally:
        done.set()
        await tick  # its last wake-up measures the time since the one before
    return result, worst


async def test_a_read_naming_many_channels_never_holds_the_loop_long(simcord_env) -> None:
    env = simcord_env
    guild = env.create_guild()
    roles = [guild.create_role(f"team-{i}") for i in range(12)]
    for bits in ("view_channel", "read_message_history", "manage_threads"):  # 8 unions of server-wide bits
        guild.create_role(bits, permissions=discord.Permissions(**{bits: True}))
    posted_in = guild.create_text_channel("posted-in", overwrites={r: SHOW for r in roles})
    # Each named channel lets every team read it, one in its own way: nobody is exposed, the costly answer.
    named = [guild.create_text_channel(f"named-{j}", overwrites={
        **{r: SHOW for r in roles}, roles[j % 12]: discord.PermissionOverwrite(view_channel=True, manage_threads=True),
    }).id for j in range(19)]
    named.append(guild.create_text_channel("secret", overwrites={guild.default_role: HIDE}).id)  # 20 in all: the most checked
    await env.settle()
    readers = Readers(audiences=(env.bot.get_channel(posted_in.id),))

    names, stall = await worst_stall(channel_names(env.bot.get_guild(guild.id), named, readers))
    # Before: every check tried 4096 role sets x 8 unions at once, seconds without a break.
    assert stall < 0.5, f"the event loop was held {stall * 1000:.0f} ms"
    assert [name for name in names.values() if name == HIDDEN_CHANNEL] == [HIDDEN_CHANNEL]  # still exact


# --- the cooldown is checked first ----------------------------------------------------------------


@pytest.fixture
def recap_options() -> dict:
    return {"extensions": (*BOT_EXTENSIONS, "cogs.summaries"), "settings": {"user_cooldown_s": "600"}}


@pytest.fixture
def leak_checks(monkeypatch) -> list[tuple[int, int]]:
    """(source, destination) of every leak check run by /summarize or a follow-up button."""
    checked: list[tuple[int, int]] = []

    async def recording(source, destination) -> bool:
        checked.append((source.id, destination.id))
        return False

    monkeypatch.setattr(core.flow, "reply_would_leak", recording)
    monkeypatch.setattr(cogs.summaries, "reply_would_leak", recording)
    return checked


async def test_summarize_in_cooldown_answers_without_a_leak_check(recap_world: World, leak_checks) -> None:
    w = recap_world
    other = w.guild.create_text_channel("other")
    await w.say(w.alice, "something to summarize over there", channel=other)
    w.bot.cooldowns.hit(w.alice.id)  # she just asked for a summary
    result = await w.alice.slash(w.channel, "summarize", channel=other)
    assert result.ephemeral and "too often" in reply_text(result)
    assert leak_checks == []


async def test_a_button_in_cooldown_answers_without_a_leak_check(recap_world: World, leak_checks) -> None:
    w = recap_world
    other = w.guild.create_text_channel("other")
    spoken = await w.say(w.alice, "the budget is tight", "we postpone the offsite", channel=other)
    await w.message_buffer.flush()
    record = SummaryRecord(guild_id=w.guild.id, channel_id=other.id, requester_id=w.alice.id, text="Budget talk.",
                           length="medium", style="paragraph", source_ids=[m.id for m in spoken])
    summary_id = await w.db.writing(summaries.insert_summary, record)
    message = await w.env.bot.get_channel(w.channel.id).send("Summary", view=followup_view(summary_id))
    await w.env.settle()
    w.bot.cooldowns.hit(w.alice.id)
    pressed = await w.alice.click(message, label="Shorter")
    assert pressed.ephemeral and "too often" in reply_text(pressed)
    assert leak_checks == []
