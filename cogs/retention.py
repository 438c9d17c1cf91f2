"""Retention: stored messages and summaries older than each server's ``retention_days`` are deleted.

A background loop (started with the cog, cancelled with it) runs the storage purge, which
deletes in small chunks, one short write transaction each, so ingest never waits long for it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from discord.ext import commands, tasks

from storage import leases, privacy

if TYPE_CHECKING:
    from bot.client import RecapBot

log = logging.getLogger(__name__)
PURGE_EVERY_S = 3600.0  # retention is counted in days: hourly is prompt enough
LEASE = "retention"
# The holder renews it every round; a process that stopped gives way to another after this.
LEASE_FOR = timedelta(seconds=2 * PURGE_EVERY_S + 600)


class Retention(commands.Cog):
    def __init__(self, bot: "RecapBot") -> None:
        self.bot = bot
        self.last_result: privacy.PurgeResult | None = None  # the latest purge, for logs and tests

    async def cog_load(self) -> None:
        self.purger.start()

    async def cog_unload(self) -> None:
        self.purger.cancel()

    @tasks.loop(seconds=PURGE_EVERY_S)
    async def purger(self) -> None:
        try:
            now = datetime.now(timezone.utc)
            if not await self.bot.db.writing(leases.take_lease, LEASE, now=now, ttl=LEASE_FOR):
                log.debug("retention: another bot process holds the lease and purges")
                return
            result = await privacy.purge_expired(self.bot.db)
        except Exception:  # a busy or failing database: the next round tries again
            log.exception("the retention purge failed")
            return
        self.last_result = result
        if result.messages or result.summaries:
            log.info("retention: deleted %d messages and %d summaries in %d servers", result.messages, result.summaries, result.guilds)
            await self.bot.erasure.now()  # the purge checkpoints too; this retries one that could not finish


async def setup(bot: "RecapBot") -> None:
    await bot.add_cog(Retention(bot))
