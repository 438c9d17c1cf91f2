"""History listeners: keep the stored history in step with Discord.

New messages go through the storage ``MessageBuffer`` (batched writes); edits,
deletes, channel/thread deletion and leaving a server are applied at once.
Opted-out members are never stored (storage skips them), nor are messages in
channels where Recap is disabled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import discord
from discord.ext import commands, tasks

from core.coverage import shard_of
from core.server_settings import settings_channel_id
from core.reading import is_conversation, to_stored
from storage import MessageBuffer, guilds, leases, settings as settings_store
from storage.erasure import erase_channel, erase_guild

if TYPE_CHECKING:
    from bot.client import RecapBot

log = logging.getLogger(__name__)
ENABLED_TTL_S = 60.0
FLUSH_EVERY_S = 1.0
# One sweep per shard set at a time, among processes sharing the database; a crashed sweeper's lease lapses.
SWEEP_LEASE_FOR = timedelta(minutes=15)


class History(commands.Cog):
    def __init__(self, bot: "RecapBot") -> None:
        self.bot = bot
        self.buffer = MessageBuffer(bot.db)
        self._enabled: dict[tuple[int, int], tuple[bool, float]] = {}  # (guild, channel) -> (enabled, expires)
        self._sweep: asyncio.Task[None] | None = None  # the start-up purge of vanished servers and channels

    async def cog_load(self) -> None:
        # A discord.ext.tasks loop flushes the buffer (rather than MessageBuffer.start()'s own task) so the
        # flush cadence is visible to discord.py's lifecycle and to test harnesses that track bot tasks.
        self.flusher.start()
        self.bot.services.message_buffer.provide(self.buffer)
        if self.bot.is_ready():  # reloaded while connected: what happened meanwhile was missed
            self.bot.coverage.connected()

    async def cog_unload(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self.bot.services.message_buffer.withdraw(self.buffer)
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
        # Servers left and channels deleted while the bot was offline sent no event: sweep them now.
        if self._sweep is None or self._sweep.done():
            self._sweep = asyncio.create_task(self._sweep_vanished(), name="recap-sweep-vanished")

    @commands.Cog.listener()
    async def on_shard_ready(self, shard_id: int) -> None:
        # One shard re-identified (a resume replays what was missed; this does not): its servers' deletes
        # and edits during the gap were lost, so their stored history is trusted only from now.
        if self.bot.shard_count:
            self.bot.coverage.shard_connected(shard_id, self.bot.shard_count)

    async def _sweep_vanished(self) -> None:
        try:
            await self.sweep_vanished()
        except Exception:
            log.exception("sweeping servers and channels deleted while offline failed; the next start retries")

    async def sweep_vanished(self) -> int:
        """Erase servers the bot is no longer in, and channels and threads that no longer exist.

        Returns how many servers and channels were erased. Unavailable servers (an outage) are left alone,
        and so are servers on shards this process does not run: other processes share the database.
        """
        scope = self.bot.shard_scope()
        lease = f"sweep:{scope[0]}:{','.join(map(str, scope[1]))}" if scope else "sweep"
        now = datetime.now(timezone.utc)
        if not await self.bot.db.writing(leases.take_lease, lease, now=now, ttl=SWEEP_LEASE_FOR):
            log.info("another bot process with the same shards is sweeping; this one leaves it to it")
            return 0
        try:
            return await self._sweep_once()
        finally:
            try:
                await self.bot.db.writing(leases.release_lease, lease)
            except Exception:  # it lapses by itself
                log.warning("could not release the sweep lease %s", lease)

    async def _sweep_once(self) -> int:
        erased = 0
        present = {g.id for g in self.bot.guilds}
        stored = await self.bot.db.reading(guilds.stored_guild_ids)
        for guild_id in sorted(g for g in stored - present if self._runs_shard_of(g)):
            self.buffer.forget_places([guild_id])
            self._digests_erased((await self.buffer.write_after_flush(erase_guild, guild_id)).digests)
            erased += 1
        for guild in list(self.bot.guilds):
            if guild.unavailable:
                continue
            for channel_id in sorted(await self.bot.db.reading(guilds.stored_channel_ids, guild.id)):
                if guild.get_channel_or_thread(channel_id) is not None or await self._still_exists(guild, channel_id):
                    continue
                await self._erase_channel(channel_id)
                erased += 1
        if erased:
            log.info("erased %d servers, channels and threads deleted while offline", erased)
            await self.bot.erasure.now()
        return erased

    def _runs_shard_of(self, guild_id: int) -> bool:
        scope = self.bot.shard_scope()
        if scope is None:
            return False  # shards unknown: any doubt keeps the data
        shard_count, own_shards = scope
        return shard_of(guild_id, shard_count) in own_shards

    async def _still_exists(self, guild: discord.Guild, channel_id: int) -> bool:
        """Archived threads are not cached: ask Discord. Only a 404 means gone; any doubt keeps the data."""
        try:
            await guild.fetch_channel(channel_id)
        except discord.NotFound:
            return False
        except (discord.HTTPException, discord.InvalidData):
            return True  # no access (403), another server's id, or Discord failing: not proof of deletion
        return True

    async def _erase_channel(self, channel_id: int) -> None:
        """A channel or thread is gone: everything about it and its threads, in one transaction."""
        self.buffer.forget_places([channel_id])
        erased = await self.buffer.write_after_flush(erase_channel, channel_id)
        self.bot.coverage.forget_channel(channel_id)
        self._digests_erased(erased.digests)

    def _digests_erased(self, count: int) -> None:
        """The digest schedule re-reads once the rows are gone (never before: it would act on them)."""
        wake = self.bot.services.digest_wake.get()  # None: cogs.digests is not loaded
        if count and wake is not None:
            wake()

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
        if not await self.buffer.knows(message.id):
            return  # never stored: nothing to update, so no attachment is downloaded for it
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
        await self._erase_channel(channel.id)
        self.bot.erasure.request()

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        await self._erase_channel(payload.thread_id)
        self.bot.erasure.request()

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        self.buffer.revive_place(guild.id)

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        self.buffer.forget_places([guild.id])
        result = await self.buffer.write_after_flush(erase_guild, guild.id)
        self._digests_erased(result.digests)
        await self.bot.erasure.now()  # a failure stays pending: the flush loop retries it
        log.info("removed from server %s: deleted %d messages, %d summaries, %d digests", guild.id, result.messages,
                 result.summaries, result.digests)


async def setup(bot: "RecapBot") -> None:
    await bot.add_cog(History(bot))
