"""Reading a channel's effective settings (channel -> server -> default), threads using their parent's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord

from storage import settings as settings_store

if TYPE_CHECKING:
    from .app import App
    from storage.settings import ResolvedSettings


def settings_channel_id(source: Any) -> int:
    """Threads and forum posts use their parent channel's settings."""
    return source.parent_id if isinstance(source, discord.Thread) and source.parent_id else source.id


async def load_settings(bot: "App", source: Any) -> "ResolvedSettings":
    return await bot.db.reading(settings_store.get_settings, source.guild.id, settings_channel_id(source))
