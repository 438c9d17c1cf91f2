"""The no-leak rule: who can see a digest's target but not read its source.

Real discord.py channel, role and member objects, built through SimCord.
"""

from __future__ import annotations

import discord
import pytest
import simcord
from discord.ext import commands

from core.visibility import bot_access, describe_leaks, find_leaks

HIDE = discord.PermissionOverwrite(view_channel=False)
SHOW = discord.PermissionOverwrite(view_channel=True, read_message_history=True)
NO_HISTORY = discord.PermissionOverwrite(read_message_history=False)


@pytest.fixture
def simcord_bot() -> commands.Bot:
    return commands.Bot(command_prefix="!", intents=discord.Intents.all())


@pytest.fixture
def env(simcord_env: simcord.Env) -> simcord.Env:
    return simcord_env


def dpy(env: simcord.Env, handle: simcord.ChannelHandle):
    return env.bot.get_channel(handle.id)


async def test_public_to_public_is_fine(env) -> None:
    guild = env.create_guild()
    source, target = guild.create_text_channel("dev"), guild.create_text_channel("digest")
    guild.add_member(env.create_user("alice"))
    assert await find_leaks(dpy(env, source), dpy(env, target)) == []


async def test_private_source_public_target_names_everyone(env) -> None:
    guild = env.create_guild()
    staff = guild.create_role("Staff")
    source = guild.create_text_channel("staff", overwrites={guild.default_role: HIDE, staff: SHOW})
    target = guild.create_text_channel("general")
    leaks = await find_leaks(dpy(env, source), dpy(env, target))
    assert [e.label for e in leaks][0] == "@everyone"
    assert "Staff" not in describe_leaks(leaks)


async def test_same_restriction_on_both_is_fine(env) -> None:
    guild = env.create_guild()
    staff = guild.create_role("Staff")
    source = guild.create_text_channel("staff", overwrites={guild.default_role: HIDE, staff: SHOW})
    target = guild.create_text_channel("staff-digest", overwrites={guild.default_role: HIDE, staff: SHOW})
    guild.add_member(env.create_user("mod"), roles=[staff])
    guild.add_member(env.create_user("pleb"))
    assert await find_leaks(dpy(env, source), dpy(env, target)) == []


async def test_role_that_sees_target_but_not_source(env) -> None:
    guild = env.create_guild()
    staff, guests = guild.create_role("Staff"), guild.create_role("Guests")
    source = guild.create_text_channel("staff", overwrites={guild.default_role: HIDE, staff: SHOW})
    target = guild.create_text_channel(
        "digest", overwrites={guild.default_role: HIDE, staff: SHOW, guests: SHOW}
    )
    leaks = await find_leaks(dpy(env, source), dpy(env, target))
    assert [(e.kind, e.label) for e in leaks] == [("role", "@Guests")]


async def test_missing_read_history_on_source_counts_as_unreadable(env) -> None:
    guild = env.create_guild()
    source = guild.create_text_channel("announcements", overwrites={guild.default_role: NO_HISTORY})
    target = guild.create_text_channel("general")
    leaks = await find_leaks(dpy(env, source), dpy(env, target))
    assert "@everyone" in describe_leaks(leaks)


async def test_member_overwrite_on_target_is_listed(env) -> None:
    guild = env.create_guild()
    staff = guild.create_role("Staff")
    visitor = guild.add_member(env.create_user("visitor"))
    source = guild.create_text_channel("staff", overwrites={guild.default_role: HIDE, staff: SHOW})
    target = guild.create_text_channel(
        "digest", overwrites={guild.default_role: HIDE, staff: SHOW, visitor: SHOW}
    )
    leaks = await find_leaks(dpy(env, source), dpy(env, target))
    assert [(e.kind, e.id) for e in leaks] == [("member", visitor.id)]


async def test_member_denied_on_source_by_own_overwrite(env) -> None:
    guild = env.create_guild()
    banned = guild.add_member(env.create_user("muted"))
    source = guild.create_text_channel("dev", overwrites={banned: HIDE})
    target = guild.create_text_channel("general")
    leaks = await find_leaks(dpy(env, source), dpy(env, target))
    assert [(e.kind, e.label) for e in leaks] == [("member", "muted")]


async def test_member_with_two_roles_where_one_denies_source(env) -> None:
    # Neither role alone leaks: Readers alone cannot see the target; Viewers alone can read the
    # source. Together, Readers' deny on the source wins over nothing, while Viewers shows the target.
    guild = env.create_guild()
    viewers = guild.create_role("Viewers")
    readers = guild.create_role("Readers", permissions=discord.Permissions(view_channel=True, read_message_history=True))
    both = guild.add_member(env.create_user("both"), roles=[viewers, readers])
    source = guild.create_text_channel("dev", overwrites={readers: NO_HISTORY})
    target = guild.create_text_channel("digest", overwrites={guild.default_role: HIDE, viewers: SHOW})
    leaks = await find_leaks(dpy(env, source), dpy(env, target))
    assert ("member", both.id) in [(e.kind, e.id) for e in leaks]


async def test_private_thread_source_needs_manage_threads_or_membership(env) -> None:
    guild = env.create_guild()
    parent = guild.create_text_channel("dev")
    target = guild.create_text_channel("general")
    alice = guild.add_member(env.create_user("alice"))
    await alice.send(parent, "hello")
    thread = await env.bot.get_channel(parent.id).create_thread(name="secret", type=discord.ChannelType.private_thread)
    leaks = await find_leaks(thread, dpy(env, target))
    assert "@everyone" in describe_leaks(leaks)


async def test_describe_leaks_caps_the_list() -> None:
    from core.visibility import Exposed

    exposed = [Exposed("member", i, f"m{i}") for i in range(13)]
    text = describe_leaks(exposed, limit=10)
    assert text.endswith("and 3 more") and "m9" in text and "m10" not in text


async def test_bot_access_reports_missing_send(env) -> None:
    guild = env.create_guild()
    source = guild.create_text_channel("dev")
    target = guild.create_text_channel("readonly", overwrites={guild.default_role: discord.PermissionOverwrite(send_messages=False)})
    me = env.bot.get_guild(guild.id).me
    access = await bot_access(me, dpy(env, source), dpy(env, target))
    assert access.can_read_source and not access.can_post_target and not access.ok


# --- exact over role combinations (no member needs to be cached) ------------------------------


async def test_readers_plus_muted_is_a_leak_though_no_member_has_both_roles(env) -> None:
    guild = env.create_guild()
    readers, muted = guild.create_role("Readers"), guild.create_role("Muted")
    source = guild.create_text_channel("dev", overwrites={muted: HIDE})
    target = guild.create_text_channel("digest", overwrites={guild.default_role: HIDE, readers: SHOW})
    guild.add_member(env.create_user("reader"), roles=[readers])
    guild.add_member(env.create_user("muted"), roles=[muted])
    leaks = await find_leaks(dpy(env, source), dpy(env, target))
    assert [e.kind for e in leaks] == ["roles"]
    assert sorted(leaks[0].label.split(" + ")) == ["@Muted", "@Readers"]


async def test_a_role_without_overwrites_matters_through_its_server_wide_bits(env) -> None:
    guild = env.create_guild()
    env.backend.edit_role(guild.id, guild.id, {"permissions": 0})  # @everyone sees nothing by default
    guild.create_role("Verified", permissions=discord.Permissions(view_channel=True, read_message_history=True))
    muted = guild.create_role("Muted")
    await env.settle()
    source = guild.create_text_channel("dev", overwrites={muted: NO_HISTORY})
    target = guild.create_text_channel("general")
    leaks = await find_leaks(dpy(env, source), dpy(env, target))
    assert [e.label for e in leaks] == ["@Muted + any role with server-wide View Channel/Read Message History"]


async def test_too_many_role_combinations_is_treated_as_a_leak_and_says_why(env) -> None:
    guild = env.create_guild()
    roles = [guild.create_role(f"r{i}") for i in range(13)]
    source = guild.create_text_channel("dev", overwrites={r: SHOW for r in roles})
    target = guild.create_text_channel("digest", overwrites={r: SHOW for r in roles})
    leaks = await find_leaks(dpy(env, source), dpy(env, target))
    assert [e.kind for e in leaks] == ["undecided"]
    assert "too many combinations" in describe_leaks(leaks)


async def test_twelve_overwritten_roles_are_still_checked_exactly(env) -> None:
    guild = env.create_guild()
    roles = [guild.create_role(f"r{i}") for i in range(12)]
    source = guild.create_text_channel("dev", overwrites={r: SHOW for r in roles})
    target = guild.create_text_channel("digest", overwrites={r: SHOW for r in roles})
    assert await find_leaks(dpy(env, source), dpy(env, target)) == []
