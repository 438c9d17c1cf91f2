"""A digest re-checks the bot's access and the no-leak rule right before posting (issue 17): generating
can take minutes, and meanwhile the target may be opened to more people or the bot lose its permissions."""

from __future__ import annotations

import asyncio
from typing import Callable

import discord
from simcord.backend.models.channel import Overwrite
from simcord.enums import OverwriteType

from simcord_helpers import World, recap_world  # noqa: F401
from test_digests_cog import HIDE, SHOW, add_digest, digest_posts, get, recap_options, run_at, world  # noqa: F401


def while_generating(w: World, change: Callable[[], None], seen: Callable[[], bool]) -> None:
    """Make ``change`` in Discord once the digest's summary is being generated, and let the bot see it."""
    executor = w.bot.executor
    generate = executor.submit
    changed: list[bool] = []

    async def submit(request):
        if not changed:
            changed.append(True)
            change()
            for _ in range(500):  # the gateway event reaches the bot's cache within a few turns
                if seen():
                    break
                await asyncio.sleep(0.01)
            assert seen(), "the bot never saw the change"
        return await generate(request)

    executor.submit = submit


def dm_to(w: World, member) -> str:
    dm = member.user.dm_channel.last_message if member.user.dm_channel is not None else None
    return dm.content if dm is not None else ""


async def test_a_target_opened_to_everyone_while_generating_is_not_posted(world: World) -> None:
    w, staff, me = world, world.guild.create_role("Staff"), world.env.bot.user
    secret = w.guild.create_text_channel("staff", overwrites={w.guild.default_role: HIDE, staff: SHOW, me: SHOW, w.admin: SHOW})
    target = w.guild.create_text_channel("staff-digest", overwrites={w.guild.default_role: HIDE, staff: SHOW, me: SHOW})
    record = await add_digest(w, secret, target)
    await w.say(w.admin, "The budget for next quarter is cut by a third.", "Hiring is frozen until June.", channel=secret)

    def opened() -> bool:
        return w.bot.get_channel(target.id).permissions_for(w.bot.get_guild(w.guild.id).default_role).view_channel

    while_generating(w, lambda: w.env.backend.delete_overwrite(target.id, w.guild.id), opened)
    await run_at(w, record.next_run_at)
    assert digest_posts(target) == []
    stored = await get(w, record.id)
    assert stored.last_status.startswith("skipped:") and "@everyone" in stored.last_status
    assert stored.last_run_at is None  # the window is kept for when it is fixed
    assert f"Digest #{record.id} was skipped" in dm_to(w, w.admin) and "@everyone" in dm_to(w, w.admin)


async def test_the_bot_losing_send_while_generating_is_not_posted(world: World) -> None:
    w = world
    target = w.guild.create_text_channel("digests")
    record = await add_digest(w, w.channel, target)
    await w.say(w.alice, "We should ship the release on Friday.", "I'll write the changelog.")
    deny_send = Overwrite(target_id=w.env.bot.user.id, type=OverwriteType.MEMBER, allow=0,
                          deny=discord.Permissions(send_messages=True).value)

    def refused() -> bool:
        channel = w.bot.get_channel(target.id)
        return not channel.permissions_for(channel.guild.me).send_messages

    while_generating(w, lambda: w.env.backend.set_overwrite(target.id, deny_send), refused)
    await run_at(w, record.next_run_at)
    assert digest_posts(target) == []
    stored = await get(w, record.id)
    assert stored.last_status.startswith("skipped:") and "can't post" in stored.last_status
    assert f"Digest #{record.id} was skipped" in dm_to(w, w.admin)
