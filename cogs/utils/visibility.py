"""The no-leak rule for digests: whoever can see the target must be able to read the source.

A digest copies what was said in the source channel into the target channel.
If anyone who can view the target could not read the source's history, the
digest would leak it to them. ``find_leaks`` compares, for @everyone, every
role, every member with an overwrite on either channel, and every cached
member, whether they can view the target but not view + read the source.

Checking single roles alone is not enough: a member holding two roles can be
denied by one of them where neither alone is denied, so cached members are
checked with their real roles too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import discord

from .checks import can_read

# Members checked one by one at most; beyond this the role checks stand for them.
MAX_MEMBERS_CHECKED = 25_000


@dataclass(frozen=True)
class Exposed:
    """Someone who could see the target but not read the source."""

    kind: str  # "everyone" | "role" | "member"
    id: int
    label: str  # how to name them in a reply (no mention pings: plain names)


def can_view(perms: discord.Permissions) -> bool:
    return perms.view_channel


def _role_reads_source(role: discord.Role, source: Any) -> bool:
    perms = source.permissions_for(role)
    if not (perms.view_channel and perms.read_message_history):
        return False
    if isinstance(source, discord.Thread) and source.type is discord.ChannelType.private_thread:
        # A private thread is readable by a role only through Manage Threads; membership is per member.
        return perms.manage_threads
    return True


def _member_overwrite_ids(channels: Iterable[Any]) -> set[int]:
    """Ids of members named in the overwrites of ``channels`` (a thread uses its parent's)."""
    members: set[int] = set()
    for channel in channels:
        holder = channel.parent if isinstance(channel, discord.Thread) else channel
        if holder is None:
            continue
        # Uncached members come back as discord.Object(type=Member); they are resolved (or skipped) later.
        for target in holder.overwrites:
            if isinstance(target, discord.Member) or getattr(target, "type", None) is discord.Member:
                members.add(target.id)
    return members


async def resolve_member(guild: discord.Guild, member_id: int) -> discord.Member | None:
    member = guild.get_member(member_id)
    if member is not None:
        return member
    try:
        return await guild.fetch_member(member_id)
    except (discord.NotFound, discord.Forbidden, discord.HTTPException):
        return None  # left the server: nobody to leak to


async def find_leaks(source: Any, target: Any) -> list[Exposed]:
    """Everyone who can view ``target`` but cannot read ``source``. Empty: the digest may post there."""
    guild: discord.Guild = target.guild
    exposed: list[Exposed] = []
    seen_members: set[int] = set()

    everyone = guild.default_role
    if can_view(target.permissions_for(everyone)) and not _role_reads_source(everyone, source):
        exposed.append(Exposed("everyone", everyone.id, "@everyone"))

    for role in guild.roles:
        if role.is_default() or role.is_bot_managed():
            continue  # @everyone handled above; a bot's own role is that bot
        if can_view(target.permissions_for(role)) and not _role_reads_source(role, source):
            exposed.append(Exposed("role", role.id, f"@{role.name}"))

    member_ids = _member_overwrite_ids((source, target))
    candidates: list[discord.Member] = []
    for member_id in sorted(member_ids):
        member = await resolve_member(guild, member_id)
        if member is not None:
            candidates.append(member)
    candidates.extend(guild.members[:MAX_MEMBERS_CHECKED])
    for member in candidates:
        if member.id in seen_members or member.bot:
            continue
        seen_members.add(member.id)
        if can_view(target.permissions_for(member)) and not await can_read(member, source):
            exposed.append(Exposed("member", member.id, member.display_name))
    return exposed


def describe_leaks(exposed: list[Exposed], limit: int = 10) -> str:
    """``@everyone, @Guests and 3 more`` — names only, never pings."""
    labels = [e.label for e in exposed]
    shown = ", ".join(labels[:limit])
    if len(labels) > limit:
        shown += f" and {len(labels) - limit} more"
    return shown


@dataclass(frozen=True)
class BotAccess:
    can_read_source: bool
    can_post_target: bool

    @property
    def ok(self) -> bool:
        return self.can_read_source and self.can_post_target


async def bot_access(me: discord.Member, source: Any, target: Any) -> BotAccess:
    """Can the bot read the source's history and post embeds in the target?"""
    perms = target.permissions_for(me)
    return BotAccess(
        can_read_source=await can_read(me, source),
        can_post_target=perms.view_channel and perms.send_messages and perms.embed_links,
    )
