"""/settings through SimCord: show, set (with the storage layer's range errors), reset, permissions."""

from __future__ import annotations

import discord
import pytest
from simcord_helpers import BOT_EXTENSIONS, World, allow_command, recap_options, recap_world, reply_text  # noqa: F401

from storage import settings as store


async def test_show_lists_effective_values_and_sources(recap_world: World) -> None:
    w = recap_world
    result = await w.admin.slash(w.channel, "settings show")
    assert result.ephemeral
    text = reply_text(result)
    assert "**length**: medium · _default_" in text
    assert "**enabled**: on · _default_" in text


async def test_set_channel_override_then_show_names_the_source(recap_world: World) -> None:
    w = recap_world
    await w.admin.slash(w.channel, "settings set", scope="server", length="long")
    result = await w.admin.slash(w.channel, "settings set", scope="channel", length="short", temperature=0.5)
    assert "**length** = short" in reply_text(result)
    resolved = await w.db.reading(store.get_settings, w.guild.id, w.channel.id)
    assert (resolved["length"], resolved.source("length")) == ("short", "channel")
    assert resolved["temperature"] == 0.5
    server = await w.db.reading(store.get_settings, w.guild.id, None)
    assert server["length"] == "long"
    text = reply_text(await w.admin.slash(w.channel, "settings show"))
    assert "**length**: short · _channel_" in text


async def test_out_of_range_value_states_the_allowed_range_and_changes_nothing(recap_world: World) -> None:
    w = recap_world
    result = await w.admin.slash(w.channel, "settings set", length="short", max_messages=999999)
    assert result.ephemeral
    assert "max_messages" in reply_text(result) and "1 to 5000" in reply_text(result)
    resolved = await w.db.reading(store.get_settings, w.guild.id, w.channel.id)
    assert resolved["length"] == "medium"  # the whole change was refused


async def test_retention_days_is_server_wide(recap_world: World) -> None:
    w = recap_world
    result = await w.admin.slash(w.channel, "settings set", scope="channel", retention_days=7)
    assert "server-wide" in reply_text(result)
    ok = await w.admin.slash(w.channel, "settings set", retention_days=7)
    assert "**retention_days** = 7" in reply_text(ok)


async def test_set_without_any_setting_is_a_clear_error(recap_world: World) -> None:
    w = recap_world
    result = await w.admin.slash(w.channel, "settings set", scope="server")
    assert "at least one setting" in reply_text(result)


async def test_reset_one_and_all(recap_world: World) -> None:
    w = recap_world
    await w.admin.slash(w.channel, "settings set", length="short", top_k=5)
    await w.admin.slash(w.channel, "settings reset", setting="length")
    resolved = await w.db.reading(store.get_settings, w.guild.id, None)
    assert resolved["length"] == "medium" and resolved["top_k"] == 5
    result = await w.admin.slash(w.channel, "settings reset", setting="all")
    assert "every setting" in reply_text(result)
    resolved = await w.db.reading(store.get_settings, w.guild.id, None)
    assert resolved.source("top_k") == "default"


async def test_member_without_manage_server_is_refused_even_if_shown_the_command(recap_world: World) -> None:
    w = recap_world
    allow_command(w, "settings", w.alice)  # an admin made the command visible; the runtime check still applies
    result = await w.alice.slash(w.channel, "settings set", length="short")
    assert result.ephemeral
    assert reply_text(result) == "You need the Manage Server permission to use this."
    resolved = await w.db.reading(store.get_settings, w.guild.id, None)
    assert resolved["length"] == "medium"


@pytest.mark.parametrize("recap_options", [{"extensions": (*BOT_EXTENSIONS, "cogs.digests")}])
async def test_settings_and_digest_are_hidden_from_members_by_default(recap_world: World) -> None:
    manage_guild = str(discord.Permissions(manage_guild=True).value)
    for name in ("settings", "digest"):
        command = recap_world.env.backend.find_command(name, recap_world.guild.id)
        assert command is not None and str(command.get("default_member_permissions")) == manage_guild, name
        assert command.get("dm_permission") is False or command.get("contexts") == [0], name
