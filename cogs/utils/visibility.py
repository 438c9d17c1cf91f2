"""The no-leak rule: whoever can see the target must be able to read the source.

A digest copies what was said in the source channel into the target channel, and a
public reply about another channel does the same. If anyone who can view the target
could not read the source's history, that would leak it to them.

The bot has no members intent, so it cannot list who holds which roles. The rule is
therefore exact over every member who *could* exist: a member's permissions in a channel
depend only on their set of roles and their own overwrites. Roles with an overwrite on
either channel are combined in every way (2^k sets); every other role only matters
through its server-wide View Channel / Read Message History / Manage Threads /
Administrator bits, whose possible unions are few. Members with their own overwrite on
either channel are checked one by one (fetched when not cached). When the combinations
are too many to enumerate, or a member cannot be fetched, the answer is "leak", with
the reason as its label: refuse rather than guess.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable

import discord

from .checks import can_read

# Cached members also checked one by one, so a leak names real people where the cache knows them.
MAX_MEMBERS_CHECKED = 25_000
# Sets of overwritten roles tried at most (2^12); beyond this the rule refuses. Each set is tried with
# every union of the other roles' server-wide bits: at most 8 (Administrator unions never leak).
MAX_COMBINATIONS = 4096
MAX_REPORTED = 25  # leaking role combinations listed at most

_ADMIN = discord.Permissions(administrator=True).value
_VIEW = discord.Permissions(view_channel=True).value
_HISTORY = discord.Permissions(read_message_history=True).value
_THREADS = discord.Permissions(manage_threads=True).value
_RELEVANT = _ADMIN | _VIEW | _HISTORY | _THREADS
_BIT_NAMES = ((_VIEW, "View Channel"), (_HISTORY, "Read Message History"), (_THREADS, "Manage Threads"))


@dataclass(frozen=True)
class Exposed:
    """Someone who could see the target but not read the source (or a reason the rule could not decide)."""

    kind: str  # "everyone" | "role" | "roles" | "member" | "undecided"
    id: int
    label: str  # how to name them in a reply (no mention pings: plain names)


def can_view(perms: discord.Permissions) -> bool:
    return perms.view_channel


def _holder(channel: Any) -> Any:
    """Threads take their permissions from the parent channel."""
    return channel.parent if isinstance(channel, discord.Thread) else channel


def _is_private_thread(channel: Any) -> bool:
    return isinstance(channel, discord.Thread) and channel.type is discord.ChannelType.private_thread


@dataclass(frozen=True)
class _Overwrites:
    """One channel's overwrites as bit masks: (allow, deny) for @everyone and for each role."""

    everyone: tuple[int, int]
    roles: dict[int, tuple[int, int]]

    @classmethod
    def of(cls, channel: Any) -> "_Overwrites":
        holder = _holder(channel)
        if holder is None:
            raise _Undecided("the channel's parent is not known to me")
        guild_id = holder.guild.id
        everyone, roles = (0, 0), {}
        for target, overwrite in holder.overwrites.items():
            allow, deny = overwrite.pair()
            if target.id == guild_id:
                everyone = (allow.value, deny.value)
            elif isinstance(target, discord.Role) or getattr(target, "type", None) is discord.Role:
                roles[target.id] = (allow.value, deny.value)
        return cls(everyone, roles)

    def permissions(self, base: int, role_ids: Iterable[int]) -> int:
        """The relevant bits for a member with server-wide bits ``base`` and these roles (discord.py's order)."""
        if base & _ADMIN:
            return _RELEVANT
        allow, deny = self.everyone
        perms = (base & ~deny) | allow
        allows = denies = 0
        for role_id in role_ids:
            pair = self.roles.get(role_id)
            if pair is not None:
                allows |= pair[0]
                denies |= pair[1]
        perms = (perms & ~denies) | allows
        return perms if perms & _VIEW else 0


class _Undecided(Exception):
    """The rule cannot give an exact answer; the message says why."""


def _reads(perms: int, private_thread: bool) -> bool:
    if not (perms & _VIEW and perms & _HISTORY):
        return False
    # A private thread is readable through a role only with Manage Threads; membership is per member.
    return bool(perms & _THREADS) if private_thread else True


def _reachable_unions(values: Iterable[int]) -> list[int]:
    """Every union of any subset of ``values`` (few: they are 4-bit masks)."""
    reach = {0}
    for value in values:
        reach |= {r | value for r in reach}
    return sorted(reach)


def _combination_label(roles: tuple[discord.Role, ...], extra: int) -> str:
    parts = [f"@{r.name}" for r in roles]
    if extra:
        bits = "/".join(name for bit, name in _BIT_NAMES if extra & bit)
        parts.append(f"any role with server-wide {bits}")
    return " + ".join(parts) if parts else "@everyone"


def _role_leaks(guild: discord.Guild, source: Any, target: Any) -> list[Exposed]:
    """Every minimal role combination that can see ``target`` but not read ``source``."""
    src, dst = _Overwrites.of(source), _Overwrites.of(target)
    private_source = _is_private_thread(source)
    people_roles = [r for r in guild.roles if not r.is_default() and not r.is_bot_managed()]
    named = set(src.roles) | set(dst.roles)
    combined = [r for r in people_roles if r.id in named]
    # An Administrator sees and reads everything: such unions can never leak, so they are not tried.
    unions = [u for u in _reachable_unions(r.permissions.value & _RELEVANT for r in people_roles if r.id not in named)
              if not u & _ADMIN]
    if 2 ** len(combined) > MAX_COMBINATIONS:
        raise _Undecided(
            f"{len(combined)} roles have overwrites on these channels, too many combinations for me to check"
        )
    everyone_bits = guild.default_role.permissions.value & _RELEVANT
    found: list[tuple[frozenset[int], int]] = []
    exposed: list[Exposed] = []
    for size in range(len(combined) + 1):
        for roles in itertools.combinations(combined, size):
            ids = frozenset(r.id for r in roles)
            roles_bits = everyone_bits
            for role in roles:
                roles_bits |= role.permissions.value & _RELEVANT
            for extra in unions:
                if any(prev_ids <= ids and prev_extra & ~extra == 0 for prev_ids, prev_extra in found):
                    continue  # a smaller combination already leaks: this one says nothing new
                base = roles_bits | extra
                if dst.permissions(base, ids) & _VIEW and not _reads(src.permissions(base, ids), private_source):
                    found.append((ids, extra))
                    if len(exposed) < MAX_REPORTED:
                        exposed.append(_exposed_for(guild, roles, extra))
    return exposed


def _exposed_for(guild: discord.Guild, roles: tuple[discord.Role, ...], extra: int) -> Exposed:
    if not roles and not extra:
        return Exposed("everyone", guild.default_role.id, "@everyone")
    if len(roles) == 1 and not extra:
        return Exposed("role", roles[0].id, f"@{roles[0].name}")
    return Exposed("roles", roles[0].id if roles else 0, _combination_label(roles, extra))


def _member_overwrite_ids(channels: Iterable[Any]) -> set[int]:
    """Ids of members named in the overwrites of ``channels`` (a thread uses its parent's)."""
    members: set[int] = set()
    for channel in channels:
        holder = _holder(channel)
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


async def _member_with_overwrite(guild: discord.Guild, member_id: int) -> discord.Member | None:
    """Like ``resolve_member``, but only "unknown member" means nobody: any other failure is undecided."""
    member = guild.get_member(member_id)
    if member is not None:
        return member
    try:
        return await guild.fetch_member(member_id)
    except discord.NotFound:
        return None  # left the server: nobody to leak to
    except discord.HTTPException as exc:
        raise _Undecided(f"I could not look up a member who has their own overwrite there (HTTP {exc.status})") from None


async def find_leaks(source: Any, target: Any) -> list[Exposed]:
    """Everyone who can view ``target`` but cannot read ``source``. Empty: the digest may post there.

    When the answer cannot be exact, one ``Exposed("undecided", ...)`` says why: treat it as a leak.
    """
    guild: discord.Guild = target.guild
    try:
        exposed = _role_leaks(guild, source, target)
        candidates: list[discord.Member] = []
        for member_id in sorted(_member_overwrite_ids((source, target))):
            member = await _member_with_overwrite(guild, member_id)
            if member is not None:
                candidates.append(member)
    except _Undecided as why:
        return [Exposed("undecided", 0, f"possibly anyone ({why})")]
    candidates.extend(guild.members[:MAX_MEMBERS_CHECKED])
    seen_members: set[int] = set()
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
