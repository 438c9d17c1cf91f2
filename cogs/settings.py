"""/settings show | set | reset: per-server defaults and per-channel overrides (Manage Server)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Optional

import discord
from discord import app_commands
from discord.ext import commands

from bot import tunables
from core.checks import manage_guild_only
from core.errors import BadOption
from core.mentions import NO_PINGS
from core.options import SourceChannel, choices_of
from core.server_settings import settings_channel_id
from core.render import truncate
from engine.prompts import LENGTH, STYLE
from storage import settings as store

if TYPE_CHECKING:
    from bot.client import RecapBot

ChannelOption = Optional[app_commands.Transform[Any, SourceChannel]]
SETTING_NAMES = tuple(t.name for t in tunables.SETTINGS)


def _scope_channel(interaction: discord.Interaction, scope: str | None, channel: Any) -> int | None:
    """``None`` for the server scope, else the channel id (a thread's settings are its parent's)."""
    if scope == "server":
        if channel is not None:
            raise BadOption("`scope:server` changes the whole server; leave `channel` empty, or use `scope:channel`.")
        return None
    if channel is None and scope is None:
        return None
    if channel is not None:
        resolved = interaction.guild.get_channel_or_thread(channel.id) if interaction.guild else None
        return settings_channel_id(resolved) if resolved is not None else channel.id
    return settings_channel_id(interaction.channel) if interaction.channel is not None else interaction.channel_id


def _where(channel_id: int | None) -> str:
    return "this server" if channel_id is None else f"<#{channel_id}>"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


@manage_guild_only()
class SettingsCog(commands.GroupCog, group_name="settings", group_description="Recap's settings for this server and its channels"):
    def __init__(self, bot: "RecapBot") -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="show")
    @app_commands.describe(channel="Show the settings that apply in this channel (default: here)")
    async def show(self, interaction: discord.Interaction, channel: ChannelOption = None) -> None:
        """Show the effective settings here and where each value comes from."""
        assert interaction.guild_id is not None
        channel_id = _scope_channel(interaction, "channel", channel)
        resolved = await self.bot.db.reading(store.get_settings, interaction.guild_id, channel_id)
        lines = [f"**{item.name}**: {_show(item.value)} · _{item.source}_" for item in resolved.items()]
        embed = discord.Embed(
            title="Recap settings",
            description=truncate(f"Effective in <#{channel_id}> (channel → server → default):\n" + "\n".join(lines), 4096),
            colour=discord.Colour.blurple(),
        )
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_PINGS)

    @app_commands.command(name="set")
    @app_commands.describe(
        scope="Change the server default or one channel's override",
        channel="The channel to override (with scope:channel; default: here)",
        **{t.name: t.help for t in tunables.SETTINGS},
    )
    @app_commands.choices(length=choices_of(LENGTH), style=choices_of(STYLE))
    async def set_(
        self,
        interaction: discord.Interaction,
        scope: Optional[Literal["server", "channel"]] = None,
        channel: ChannelOption = None,
        length: Optional[str] = None,
        max_new_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        repetition_penalty: Optional[float] = None,
        sampling: Optional[bool] = None,
        max_messages: Optional[int] = None,
        retention_days: Optional[int] = None,
        enabled: Optional[bool] = None,
        private_default: Optional[bool] = None,
        style: Optional[str] = None,
        default_window: Optional[int] = None,
    ) -> None:
        """Change one or more settings for the server or one channel."""
        assert interaction.guild_id is not None
        options = locals()  # one option per declared setting (a test checks they match)
        given = {t.name: options[t.name] for t in tunables.SETTINGS if options[t.name] is not None}
        if not given:
            raise BadOption("Give at least one setting to change, e.g. `/settings set length:short`.")
        channel_id = _scope_channel(interaction, scope, channel)
        guild_id = interaction.guild_id

        async def apply(conn: Any) -> dict[str, Any]:
            # One transaction: one bad value (InvalidSetting, shown to the admin) changes nothing.
            return {name: await store.set_setting(conn, guild_id, name, value, channel_id) for name, value in given.items()}

        stored = await self.bot.db.writing(apply)
        self.bot.dispatch("recap_settings_changed", guild_id)
        changes = ", ".join(f"**{name}** = {_show(value)}" for name, value in stored.items())
        await interaction.response.send_message(f"Updated for {_where(channel_id)}: {changes}", ephemeral=True, allowed_mentions=NO_PINGS)

    @app_commands.command(name="reset")
    @app_commands.describe(
        setting="The setting to reset, or all of them",
        scope="Reset the server default or one channel's override",
        channel="The channel whose override to remove (with scope:channel; default: here)",
    )
    @app_commands.choices(
        setting=[app_commands.Choice(name="all", value="all")] + [app_commands.Choice(name=n, value=n) for n in SETTING_NAMES]
    )
    async def reset(
        self,
        interaction: discord.Interaction,
        setting: str,
        scope: Optional[Literal["server", "channel"]] = None,
        channel: ChannelOption = None,
    ) -> None:
        """Reset a setting (or all) to the server value or the built-in default."""
        assert interaction.guild_id is not None
        channel_id = _scope_channel(interaction, scope, channel)
        name = None if setting == "all" else setting
        removed = await self.bot.db.writing(store.reset_setting, interaction.guild_id, name, channel_id)
        self.bot.dispatch("recap_settings_changed", interaction.guild_id)
        what = "every setting" if name is None else f"**{name}**"
        fallback = "server values and defaults" if channel_id is not None else "the built-in defaults"
        note = f"Reset {what} for {_where(channel_id)} ({removed} value{'s' if removed != 1 else ''} removed); {fallback} apply now."
        await interaction.response.send_message(note, ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: "RecapBot") -> None:
    await bot.add_cog(SettingsCog(bot))
