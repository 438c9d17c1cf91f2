"""Which part of each channel's history is already in the database.

While the bot is connected, the history listeners store every message, so from
the moment of connection on, storage is complete ("covered"). Older history is
fetched from Discord once and stored, which extends the covered range back.
A new gateway session (missed events) resets everything to "covered from now".
"""

from __future__ import annotations

from datetime import datetime

import discord


class Coverage:
    def __init__(self) -> None:
        self._since_id: int | None = None  # everything newer than this id is stored, in every channel
        self._channels: dict[int, int] = {}  # channel id -> older bound reached by a backfill

    def connected(self, at: datetime | None = None) -> None:
        """A fresh gateway session: events before ``at`` may have been missed."""
        self._since_id = discord.utils.time_snowflake(at or discord.utils.utcnow(), high=False)
        self._channels.clear()

    def reset(self) -> None:
        """Trust nothing stored (e.g. after the bot was disconnected without a resume)."""
        self._since_id = None
        self._channels.clear()

    def covered_after(self, channel_id: int) -> int | None:
        """Messages with an id greater than this are all stored; ``None``: nothing is known to be complete."""
        if self._since_id is None:
            return None
        return min(self._since_id, self._channels.get(channel_id, self._since_id))

    def extend(self, channel_id: int, after_id: int) -> None:
        """A backfill stored everything in ``(after_id, covered_after]``: the covered range now starts at ``after_id``."""
        current = self.covered_after(channel_id)
        if current is not None and after_id < current:
            self._channels[channel_id] = after_id

    def forget_channel(self, channel_id: int) -> None:
        self._channels.pop(channel_id, None)
