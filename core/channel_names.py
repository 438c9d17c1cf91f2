"""Which channel names a summary may show: ``<#id>`` in a message names a channel only to those who see it.

A summary is read by its readers: the member it is for (a private reply) and the audiences of the
channels it is shown in (a public reply's channel, the summarized channel whose readers can open it again
with ``/summaries``, a digest's target). A mentioned channel is named when every one of them can see it;
otherwise it becomes ``#hidden-channel``, so a summary never reveals that a hidden channel exists by name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

import discord

from .checks import can_read
from .visibility import find_leaks

log = logging.getLogger(__name__)

HIDDEN_CHANNEL = "hidden-channel"
MAX_CHANNELS_CHECKED = 20  # distinct mentioned channels checked per read; the rest are hidden


@dataclass(frozen=True)
class Readers:
    """Who will read a summary: a member (or None) and the channels whose audiences will see it."""

    member: discord.Member | None = None
    audiences: tuple[Any, ...] = ()

    async def can_all_see(self, channel: Any) -> bool:
        if self.member is not None and not await _member_sees(self.member, channel):
            return False
        for audience in self.audiences:
            if audience is None or getattr(audience, "id", None) == channel.id:
                continue  # a channel's own audience sees it
            if await find_leaks(channel, audience):
                return False  # someone who sees that audience's channel can't read this one
        return True


def summary_readers(member: discord.Member, source: Any, destination: Any, private: bool) -> Readers:
    """A private summary is its requester's alone; a public one is also read by whoever sees the channel it
    is posted in and, through ``/summaries``, whoever reads the summarized channel."""
    return Readers(member, () if private else (source, destination))


async def _member_sees(member: discord.Member, channel: Any) -> bool:
    if isinstance(channel, discord.Thread):
        return await can_read(member, channel)  # private threads: membership too
    return channel.permissions_for(member).view_channel


async def channel_names(guild: discord.Guild, channel_ids: Iterable[int], readers: Readers) -> dict[int, str]:
    """``<#id>`` -> the name to show: the channel's name, or ``HIDDEN_CHANNEL`` when a reader can't see it.

    Ids of channels that no longer exist are left out (the transcript says "a channel").
    """
    names: dict[int, str] = {}
    for channel_id in sorted(set(channel_ids)):
        channel = guild.get_channel_or_thread(channel_id)
        if channel is None:
            continue
        visible = False
        if len(names) < MAX_CHANNELS_CHECKED:
            try:
                visible = await readers.can_all_see(channel)
            except discord.HTTPException as exc:  # can't decide: hide it
                log.info("channel %s named as hidden: visibility check failed (%s)", channel_id, exc)
        names[channel_id] = channel.name if visible else HIDDEN_CHANNEL
    return names
