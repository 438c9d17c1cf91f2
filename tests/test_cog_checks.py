"""The Manage Server helper and the one-request cooldown helper, without Discord."""

from __future__ import annotations

import asyncio

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from core.checks import manage_guild_only, require_manage_guild
from core.cooldowns import GuildActivity, UserCooldown, summary_request
from core.errors import TryLater
from core.services import Provided


def test_manage_guild_only_on_a_command_sets_what_discord_shows_and_what_is_enforced() -> None:
    @app_commands.command(name="tidy")
    @manage_guild_only()
    async def tidy(interaction: discord.Interaction) -> None:
        """Tidy up."""

    assert tidy.default_permissions == discord.Permissions(manage_guild=True)
    assert tidy.guild_only
    assert require_manage_guild in tidy.checks


def test_manage_guild_only_on_a_group_cog_marks_the_group_and_guards_the_cogs_own_check() -> None:
    class Tidy(commands.GroupCog, group_name="tidy"):
        async def interaction_check(self, interaction: discord.Interaction) -> bool:
            return True

        @app_commands.command(name="now")
        async def now(self, interaction: discord.Interaction) -> None:
            """Tidy now."""

    own = Tidy.interaction_check
    manage_guild_only()(Tidy)
    group = Tidy().__cog_app_commands_group__
    assert group is not None and group.default_permissions == discord.Permissions(manage_guild=True) and group.guild_only
    # discord.py has no class-level checks: the rule is enforced in the cog's interaction_check, kept in front.
    assert Tidy.interaction_check is not own


def test_manage_guild_only_refuses_a_plain_cog() -> None:
    # A plain Cog's Group attributes would not get default_permissions: Discord would show them to everyone.
    with pytest.raises(TypeError):
        @manage_guild_only()
        class Loose(commands.Cog):
            pass


def test_summary_request_keeps_the_cooldown_of_a_summary_made() -> None:
    cooldowns, activity = UserCooldown(60), GuildActivity()
    with summary_request(cooldowns, activity, 1, 10):
        assert activity.running(10) == 1
    assert activity.running(10) == 0
    with pytest.raises(TryLater) as refused:
        with summary_request(cooldowns, activity, 1, 10):
            pytest.fail("a member cooling down must not start")
    assert "You're summarizing too often" in refused.value.message and activity.total() == 0


@pytest.mark.parametrize("ending", [ValueError("failed"), asyncio.CancelledError(), TryLater("busy", 5)])
def test_summary_request_that_made_nothing_starts_no_cooldown(ending: BaseException) -> None:
    cooldowns, activity = UserCooldown(60), GuildActivity()
    with pytest.raises(type(ending)):
        with summary_request(cooldowns, activity, 1, 10):
            raise ending
    assert cooldowns.retry_after(1) == 0 and activity.total() == 0
    with summary_request(cooldowns, activity, 1, 10):  # at once: nothing to wait for
        pass
    assert cooldowns.retry_after(1) > 0


def test_a_provided_part_is_one_cogs_at_a_time() -> None:
    part: Provided[str] = Provided("the part")
    first, second = "first", "second"
    part.provide(first)
    with pytest.raises(RuntimeError):
        part.provide(second)
    part.withdraw(second)  # not the provider: nothing changes
    assert part.get() is first
    part.withdraw(first)
    assert part.get() is None
    part.provide(second)
    assert part.get() is second
