"""History listeners: keep the stored history in step with Discord.

New messages go through the storage ``MessageBuffer`` (batched writes); edits,
deletes, channel/thread deletion and leaving a server are applied at once.
Opted-out members are never stored (storage skips them), nor are messages in
channels where Recap is disabled.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import discord
from discord.ext import commands, tasks

from cogs.utils.server_settings import settings_channel_id
from cogs.utils.reading import is_conversation, to_stored
from storage import MessageBuffer, guilds, messages, settings as settings_store

if TYPE_CHECKING:
    from bot.client import RecapBot

log = logging.getLogger(__name__)
ENABLED_TTL_S = 60.0
FLUSH_EVERY_S = 1.0


class History(commands.Cog):
    def __init__(self, bot: "RecapBot") -> None:
        self.bot = bot
        self.buffer = MessageBuffer(bot.db)
        self._enabled: dict[tuple[int, int], tuple[bool, float]] = {}  # (guild, channel) -> (enabled, expires)

    async def cog_load(self) -> None:
        # A discord.ext.tasks loop flushes the buffer (rather than MessageBuffer.start()'s own task) so the
        # flush cadence is visible to discord.py's lifecycle and to test harnesses that track bot tasks.
        self.flusher.start()
        self.bot.message_buffer = self.buffer
        if self.bot.is_ready():  # reloaded while connected: what happened meanwhile was missed
            self.bot.coverage.connected()

    async def cog_unload(self) -> None:
        self.bot.message_buffer = None
        self.flusher.cancel()
        await self.buffer.aclose()  # writes whatever is still buffered
        self.bot.coverage.reset()  # nothing is being recorded any more

    @tasks.loop(seconds=FLUSH_EVERY_S)
    async def flusher(self) -> None:
        try:
            await self.buffer.flush()
            # Deleted text lingers in old WAL pages until a checkpoint; erase it within a second,
            # and keep retrying one that failed (a busy reader) until it succeeds.
            await self.bot.erasure.run()
        except Exception:  # kept buffered / flagged; the next round retries
            log.exception("flushing %d buffered messages failed", len(self.buffer))

    async def _is_enabled(self, guild_id: int, channel: discord.abc.GuildChannel | discord.Thread) -> bool:
        key = (guild_id, settings_channel_id(channel))
        now = time.monotonic()
        cached = self._enabled.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        resolved = await self.bot.db.reading(settings_store.get_setting, guild_id, "enabled", key[1])
        self._enabled[key] = (bool(resolved.value), now + ENABLED_TTL_S)
        return bool(resolved.value)

    @commands.Cog.listener()
    async def on_recap_settings_changed(self, guild_id: int) -> None:
        self._enabled = {k: v for k, v in self._enabled.items() if k[0] != guild_id}

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        # A new gateway session: events before it may have been missed, so only what follows is complete.
        self.bot.coverage.connected()

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.guild is None or not is_conversation(message, self.bot.user.id if self.bot.user else None):
            return
        if not await self._is_enabled(message.guild.id, message.channel):  # type: ignore[arg-type]
            return
        await self.buffer.add(await to_stored(message, self.bot.settings.attachment_max_bytes))

    @commands.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        message = payload.message
        if payload.guild_id is None or message is None or message.edited_at is None:
            return  # link-preview updates carry no edit time: nothing the author changed
        stored = await to_stored(message, self.bot.settings.attachment_max_bytes)
        await self.buffer.edit(message.id, stored.content, message.edited_at, stored.attachments)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        if payload.guild_id is not None:
            await self.buffer.delete(payload.message_id)
            self.bot.erasure.request()

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        if payload.guild_id is not None:
            await self.buffer.delete(list(payload.message_ids))
            self.bot.erasure.request()

    @commands.Cog.listener()
    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        await self.buffer.write_after_flush(messages.delete_threads_of, channel.id)
        await self.buffer.write_after_flush(messages.delete_channel, channel.id)
        self.bot.coverage.forget_channel(channel.id)
        self.bot.erasure.request()

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        await self.buffer.write_after_flush(messages.delete_channel, payload.thread_id)
        self.bot.coverage.forget_channel(payload.thread_id)
        self.bot.erasure.request()

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        result = await self.buffer.write_after_flush(guilds.delete_guild, guild.id)
        await self.bot.erasure.now()  # a failure stays pending: the flush loop retries it
        log.info("removed from server %s: deleted %d messages, %d summaries", guild.id, result.messages, result.summaries)


async def setup(bot: "RecapBot") -> None:
    await bot.add_cog(History(bot))
