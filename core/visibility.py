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

One read can check dozens of channels, so the work is kept short and the event loop free:
role sets with the same effect on both channels are decided together, "a smaller set
already leaks" is a few bitset operations, each answer is remembered keyed by every bit
it depends on (so it is never stale), and the check yields to the loop every few
milliseconds of work.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import discord

from .checks import can_read

# Cached members also checked one by one, so a leak names real people where the cache knows them.
MAX_MEMBERS_CHECKED = 25_000
MEMBERS_PER_TURN = 500  # cached members checked between yields to the event loop
# Sets of overwritten roles tried at most (2^12); beyond this the rule refuses. Each set is tried with
# every union of the other roles' server-wide bits: at most 8 (Administrator unions never leak).
MAX_COMBINATIONS = 4096
MAX_REPORTED = 25  # leaking role combinations listed at most
MAX_ANSWERS = 1024  # role-combination answers remembered (a few hundred bytes each)
EFFECTS_PER_TURN = 512  # distinct role-set effects decided between yields to the event loop

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
    """One channel's overwrites as bit masks of the relevant bits: (allow, deny) for @everyone and for each
    role, and the ids of members with their own (read once: discord.py builds them anew on every access)."""

    everyone: tuple[int, int]
    roles: dict[int, tuple[int, int]]
    members: frozenset[int]

    @classmethod
    def of(cls, channel: Any) -> "_Overwrites":
        holder = _holder(channel)
        if holder is None:
            raise _Undecided("the channel's parent is not known to me")
        guild_id = holder.guild.id
        everyone, roles, members = (0, 0), {}, set()
        for target, overwrite in holder.overwrites.items():
            allow, deny = overwrite.pair()
            pair = (allow.value & _RELEVANT, deny.value & _RELEVANT)
            if target.id == guild_id:
                everyone = pair
            elif isinstance(target, discord.Role) or getattr(target, "type", None) is discord.Role:
                roles[target.id] = pair
            elif isinstance(target, discord.Member) or getattr(target, "type", None) is discord.Member:
                # Uncached members come back as discord.Object(type=Member); they are resolved (or skipped) later.
                members.add(target.id)
        return cls(everyone, roles, frozenset(members))

    def role(self, role_id: int) -> tuple[int, int]:
        return self.roles.get(role_id, (0, 0))


def _channel_bits(base: int, everyone: tuple[int, int], allows: int, denies: int) -> int:
    """The relevant bits in a channel for server-wide bits ``base`` whose roles' overwrites sum to
    ``allows``/``denies`` (discord.py's order: @everyone's overwrite, then the roles', allow winning)."""
    if base & _ADMIN:
        return _RELEVANT
    perms = (base & ~everyone[1]) | everyone[0]
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


async def _role_leaks(guild: discord.Guild, src: _Overwrites, dst: _Overwrites, private_source: bool) -> list[Exposed]:
    """Every minimal role combination that can see the target but not read the source (the first ``MAX_REPORTED``)."""
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
    question = _Question(
        everyone_bits=guild.default_role.permissions.value & _RELEVANT,
        unions=tuple(unions),
        source_everyone=src.everyone,
        target_everyone=dst.everyone,
        roles=tuple(_pack(r.permissions.value & _RELEVANT, *src.role(r.id), *dst.role(r.id)) for r in combined),
        private_source=private_source,
    )
    return [_exposed_for(guild, tuple(combined[i] for i in _indices(mask)), extra)
            for mask, extra in await _minimal_leaks(question)]


# A role's effect, packed in one int so that a role set's effect is the OR of its roles': its server-wide
# bits, then its (allow, deny) on the source and on the target. Every field fits in _FIELD bits.
_FIELD = 64
_FIELDS = 5


def _pack(*fields: int) -> int:
    return sum(value << (_FIELD * n) for n, value in enumerate(fields))


def _unpack(effect: int) -> list[int]:
    return [(effect >> (_FIELD * n)) & ((1 << _FIELD) - 1) for n in range(_FIELDS)]


@dataclass(frozen=True)
class _Question:
    """All the role part of the rule depends on, as plain bits: equal questions get equal answers (cached)."""

    everyone_bits: int  # @everyone's server-wide relevant bits
    unions: tuple[int, ...]  # the other roles' possible server-wide unions, ascending
    source_everyone: tuple[int, int]
    target_everyone: tuple[int, int]
    roles: tuple[int, ...]  # each overwritten role's packed effect, in the server's role order
    private_source: bool

    def leaks(self, effect: int, extra: int) -> bool:
        """Does a member whose roles sum to ``effect``, plus other roles giving ``extra``, see the target
        but not read the source?"""
        bits, src_allow, src_deny, dst_allow, dst_deny = _unpack(effect)
        base = self.everyone_bits | bits | extra
        if not _channel_bits(base, self.target_everyone, dst_allow, dst_deny) & _VIEW:
            return False
        return not _reads(_channel_bits(base, self.source_everyone, src_allow, src_deny), self.private_source)


_answers: OrderedDict[_Question, tuple[tuple[int, int], ...]] = OrderedDict()  # least recently used first


async def _minimal_leaks(question: _Question) -> tuple[tuple[int, int], ...]:
    """``_solve``'s answer, remembered: a read asks the same few questions for every channel it names."""
    answer = _answers.get(question)
    if answer is None:
        answer = _answers[question] = await _solve(question)
        if len(_answers) > MAX_ANSWERS:
            _answers.popitem(last=False)
    _answers.move_to_end(question)
    return answer


async def _solve(question: _Question) -> tuple[tuple[int, int], ...]:
    """The minimal leaking (role set, extra) pairs, role sets as masks over ``question.roles``, in the order
    of the plain enumeration (set size, then ``itertools.combinations`` order, then extra), at most
    ``MAX_REPORTED``. A pair is minimal when no smaller role set with a smaller or equal extra leaks.

    Sets of role sets are bitsets (bit m: the role set with mask m), so "a subset of it leaks" is a
    few big-int shifts rather than a comparison with every leak found so far.
    """
    k = len(question.roles)
    effects = [0] * (1 << k)
    for mask in range(1, 1 << k):
        lowest = mask & -mask
        effects[mask] = effects[mask ^ lowest] | question.roles[lowest.bit_length() - 1]
    # Role sets with the same effect get the same answer: each distinct effect is decided once per extra.
    sets_with: dict[int, int] = {}
    for mask, effect in enumerate(effects):
        sets_with[effect] = sets_with.get(effect, 0) | (1 << mask)
    covered: dict[int, int] = {}  # extra -> role sets with a leaking pair at or below (role set, extra)
    found: list[tuple[int, int]] = []
    for extra in question.unions:  # ascending: a smaller union (a subset) comes first
        leaking = 0
        for decided, (effect, sets) in enumerate(sets_with.items(), 1):
            if decided % EFFECTS_PER_TURN == 0:
                await asyncio.sleep(0)  # up to 4096 distinct effects per extra: let the loop run meanwhile
            if question.leaks(effect, extra):
                leaking |= sets
        below = 0  # covered through a strictly smaller extra
        for smaller, sets in covered.items():
            if smaller & ~extra == 0:
                below |= sets
        covered[extra] = _supersets(leaking | below, k)
        minimal = leaking & ~below & ~_strict_supersets(covered[extra], k)
        found.extend((mask, extra) for mask in _members(minimal))
    rank = _enumeration_rank(k)
    found.sort(key=lambda pair: (rank[pair[0]], pair[1]))
    return tuple(found[:MAX_REPORTED])


@functools.lru_cache(maxsize=None)
def _enumeration_rank(k: int) -> list[int]:
    """Each role set's (mask's) place in the plain enumeration: by size, then in ``itertools.combinations`` order."""
    rank = [0] * (1 << k)
    masks = (sum(1 << i for i in combo) for size in range(k + 1) for combo in itertools.combinations(range(k), size))
    for place, mask in enumerate(masks):
        rank[mask] = place
    return rank


@functools.lru_cache(maxsize=None)
def _without(role: int, k: int) -> int:
    """The bitset of the role sets (masks below 2^k) that lack ``role``: runs of 2^role set and clear bits."""
    run = 1 << role
    every = (1 << (1 << k)) - 1
    return every // ((1 << (2 * run)) - 1) * ((1 << run) - 1)


def _strict_supersets(sets: int, k: int) -> int:
    """Role sets with one more role than some set in ``sets`` (all strict supersets, when ``sets`` is closed)."""
    out = 0
    for role in range(k):
        out |= (sets & _without(role, k)) << (1 << role)
    return out


def _supersets(sets: int, k: int) -> int:
    """Every role set containing one in ``sets``: add each role in turn."""
    for role in range(k):
        sets |= (sets & _without(role, k)) << (1 << role)
    return sets


def _members(bitset: int) -> Iterator[int]:
    while bitset:
        lowest = bitset & -bitset
        yield lowest.bit_length() - 1
        bitset ^= lowest


def _indices(mask: int) -> tuple[int, ...]:
    return tuple(_members(mask))


def _exposed_for(guild: discord.Guild, roles: tuple[discord.Role, ...], extra: int) -> Exposed:
    if not roles and not extra:
        return Exposed("everyone", guild.default_role.id, "@everyone")
    if len(roles) == 1 and not extra:
        return Exposed("role", roles[0].id, f"@{roles[0].name}")
    return Exposed("roles", roles[0].id if roles else 0, _combination_label(roles, extra))


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
        src, dst = _Overwrites.of(source), _Overwrites.of(target)
        exposed = await _role_leaks(guild, src, dst, _is_private_thread(source))
        candidates: list[discord.Member] = []
        for member_id in sorted(src.members | dst.members):
            member = await _member_with_overwrite(guild, member_id)
            if member is not None:
                candidates.append(member)
    except _Undecided as why:
        return [Exposed("undecided", 0, f"possibly anyone ({why})")]
    # One read may check many channels: let interactions (answered within 3 s) run between the parts.
    await asyncio.sleep(0)
    candidates.extend(guild.members[:MAX_MEMBERS_CHECKED])
    seen_members: set[int] = set()
    for checked, member in enumerate(candidates, 1):
        if checked % MEMBERS_PER_TURN == 0:
            await asyncio.sleep(0)
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
