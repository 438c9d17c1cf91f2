"""Leak-check benchmark: how long one read's channel-name check holds the event loop.

    python bench/leak_check.py

The case from issue 17: one message mentions 20 channels, in a server where 12 roles have
overwrites on them (and 3 more roles give server-wide View / Read History / Manage Threads, so
every role set is tried with 8 unions). Naming those channels in a public summary checks the
no-leak rule for each mentioned channel against both audiences: 40 checks, each with its own
overwrites. Real discord.py objects, through SimCord's simulated Discord.

A ticker task wakes every millisecond and records the largest gap between its wake-ups: the
worst time the loop was held. Prints one line per read (the first read computes every check,
the second finds them cached), then one JSON object as the last line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import discord
import simcord
from discord.ext import commands

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.channel_names import HIDDEN_CHANNEL, Readers, channel_names  # noqa: E402

ROLES = 12  # roles with overwrites: 2^12 role sets, the most the rule still checks exactly
MENTIONS = 20
TARGET_STALL_S = 0.050

SHOW = discord.PermissionOverwrite(view_channel=True, read_message_history=True)
HIDE = discord.PermissionOverwrite(view_channel=False)
NO_HISTORY = discord.PermissionOverwrite(read_message_history=False)


def build_server(env: simcord.Env) -> tuple[discord.Guild, list[int], Readers]:
    """The server, the ids of the mentioned channels, and a public summary's readers."""
    guild = env.create_guild("bench")
    roles = [guild.create_role(f"team-{i}") for i in range(ROLES)]
    # Roles without overwrites still count through their server-wide bits.
    guild.create_role("verified", permissions=discord.Permissions(view_channel=True, read_message_history=True))
    guild.create_role("archivist", permissions=discord.Permissions(read_message_history=True))
    guild.create_role("mod", permissions=discord.Permissions(manage_threads=True))
    source = guild.create_text_channel("source", overwrites={guild.default_role: HIDE, **{r: SHOW for r in roles}})
    posted_in = guild.create_text_channel("posted-in", overwrites={r: SHOW for r in roles})
    mentioned = []
    for j in range(MENTIONS):
        # Each channel's overwrites differ, so no two checks are the same question. Half of them
        # leak; the other half do not, which is the costly answer: every role set must be tried.
        overwrites = {role: SHOW for role in roles}
        if j % 2:
            overwrites[roles[j % ROLES]] = HIDE
            overwrites[roles[(j + 5) % ROLES]] = NO_HISTORY
            overwrites[guild.default_role] = HIDE
        else:
            overwrites[roles[j % ROLES]] = discord.PermissionOverwrite(view_channel=True, manage_threads=True)
        mentioned.append(guild.create_text_channel(f"mentioned-{j}", overwrites=overwrites).id)
    audiences = (env.bot.get_channel(source.id), env.bot.get_channel(posted_in.id))
    return env.bot.get_guild(guild.id), mentioned, Readers(audiences=audiences)


async def timed(work) -> tuple[object, float, float]:
    """(result, total seconds, worst event-loop stall in seconds) of awaiting ``work``."""
    worst = 0.0
    running = True

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)  # the ticker is running before the work starts
    start = time.perf_counter()
    result = await work
    total = time.perf_counter() - start
    running = False
    await tick
    return result, total, worst


async def main() -> int:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.all())
    env = simcord.Env(bot)
    await env.start()
    try:
        guild, mentioned, readers = build_server(env)
        await env.settle()
        figures = {}
        for read in ("first read", "second read"):
            names, total, stall = await timed(channel_names(guild, mentioned, readers))
            hidden = sum(1 for name in names.values() if name == HIDDEN_CHANNEL)
            print(f"{read}: {len(mentioned)} mentions x {len(readers.audiences)} audiences, {ROLES} roles with "
                  f"overwrites: total {total * 1000:.1f} ms, worst loop stall {stall * 1000:.1f} ms ({hidden} hidden)")
            figures[read.replace(" ", "_")] = {"total_ms": round(total * 1000, 1), "worst_stall_ms": round(stall * 1000, 1)}
    finally:
        await env.shutdown()
    worst = max(f["worst_stall_ms"] for f in figures.values())
    print(json.dumps({**figures, "target_stall_ms": TARGET_STALL_S * 1000, "ok": worst <= TARGET_STALL_S * 1000}))
    return 0 if worst <= TARGET_STALL_S * 1000 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
