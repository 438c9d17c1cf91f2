"""Which part of each channel's history is already in the database.

While the bot is connected, the history listeners store every message, so from
the moment of connection on, storage is complete ("covered"). Older history is
fetched from Discord once and stored, which extends the covered range back.
A new gateway session (missed events) resets everything to "covered from now";
a single shard's new session resets only the servers on that shard.
"""

from __future__ import annotations

from datetime import datetime

import discord


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard Discord puts a server on."""
    return (guild_id >> 22) % shard_count


class Coverage:
    def __init__(self) -> None:
        self._since_id: int | None = None  # everything newer than this id is stored, in every channel
        self._shard_count = 1
        self._shard_since: dict[int, int] = {}  # shard -> start of its later session (overrides _since_id)
        self._channels: dict[int, tuple[int, int]] = {}  # channel id -> (its server, older bound reached by a backfill)

    def connected(self, at: datetime | None = None) -> None:
        """A fresh gateway session: events before ``at`` may have been missed."""
        self._since_id = discord.utils.time_snowflake(at or discord.utils.utcnow(), high=False)
        self._shard_since.clear()
        self._channels.clear()

    def shard_connected(self, shard_id: int, shard_count: int, at: datetime | None = None) -> None:
        """One shard got a fresh session: events of its servers before ``at`` may have been missed."""
        if self._since_id is None:
            return  # nothing is trusted yet
        self._shard_count = shard_count
        self._shard_since[shard_id] = discord.utils.time_snowflake(at or discord.utils.utcnow(), high=False)
        # A backfill of those servers was checked against Discord before the gap: it is stale too.
        self._channels = {c: (g, b) for c, (g, b) in self._channels.items() if shard_of(g, shard_count) != shard_id}

    def reset(self) -> None:
        """Trust nothing stored (e.g. after the bot was disconnected without a resume)."""
        self._since_id = None
        self._shard_since.clear()
        self._channels.clear()

    def covered_after(self, channel_id: int, *, guild_id: int) -> int | None:
        """Messages with an id greater than this are all stored; ``None``: nothing is known to be complete."""
        if self._since_id is None:
            return None
        since = self._shard_since.get(shard_of(guild_id, self._shard_count), self._since_id)
        backfilled = self._channels.get(channel_id)
        return since if backfilled is None else min(since, backfilled[1])

    def extend(self, channel_id: int, after_id: int, *, guild_id: int) -> None:
        """A backfill stored everything in ``(after_id, covered_after]``: the covered range now starts at ``after_id``."""
        current = self.covered_after(channel_id, guild_id=guild_id)
        if current is not None and after_id < current:
            self._channels[channel_id] = (guild_id, after_id)

    def forget_channel(self, channel_id: int) -> None:
        self._channels.pop(channel_id, None)
