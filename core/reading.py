"""Reading a conversation: stored history where it is complete, Discord's history for the rest.

Conversions live here too: ``discord.Message`` -> ``StoredMessage`` (what the
listeners and backfill store) and ``StoredMessage`` -> ``ChatMessage`` (what
the summarizer reads). Every message goes through the stored form, so a
summary reads the same thing whether it came from the database or Discord.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import discord

from engine.conversation import Attachment, ChatMessage
from storage import StoredAttachment, StoredMessage, messages, privacy

from .attachments import AttachmentBudget, looks_like_text, read_text_attachment
from .channel_names import Readers, channel_names
from .jobs import MAX_ID, Scope

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger(__name__)

# Messages scanned beyond those wanted (bot, system, opted-out ones) before a backfill gives up.
SCAN_SLACK = 1000
# At most 20 digits (a snowflake): int() refuses thousands of digits.
_USER_MENTION = re.compile(r"<@!?([0-9]{1,20})>")
_ROLE_MENTION = re.compile(r"<@&([0-9]{1,20})>")
_CHANNEL_MENTION = re.compile(r"<#([0-9]{1,20})>")
# Message types that are people talking; everything else (joins, pins, boosts...) is a system message.
_CONVERSATION_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})

Progress = Callable[[str, int, int], Awaitable[None] | None]


@dataclass
class Conversation:
    channel_id: int
    guild_id: int
    messages: list[ChatMessage]
    capped_at: int | None = None  # the max_messages cap that cut the scope
    skipped_files: list[str] = field(default_factory=list)
    fetched: int = 0  # messages fetched from Discord (backfill) rather than read from storage

    @property
    def source_ids(self) -> list[int]:
        return [m.id for m in self.messages if m.id is not None]


def is_own(message: discord.Message, bot_user_id: int | None) -> bool:
    """The bot's own messages (including the deferred "thinking" placeholder) and ephemeral ones."""
    return (bot_user_id is not None and message.author.id == bot_user_id) or message.flags.ephemeral


def is_conversation(message: discord.Message, bot_user_id: int | None) -> bool:
    return message.type in _CONVERSATION_TYPES and not is_own(message, bot_user_id)


async def to_stored(
    message: discord.Message, attachment_max_bytes: int, budget: AttachmentBudget | None = None
) -> StoredMessage:
    """The stored form of a guild message; text attachments are downloaded and decoded here, once
    (within ``budget``, when a read of history shares one)."""
    channel = message.channel
    parent_id = channel.parent_id if isinstance(channel, discord.Thread) else None
    attachments = [
        StoredAttachment(
            filename=a.filename,
            size=a.size,
            content_type=a.content_type,
            text=await read_text_attachment(a, attachment_max_bytes, budget),
        )
        for a in message.attachments
    ]
    reply_to = message.reference.message_id if message.reference and message.type is discord.MessageType.reply else None
    assert message.guild is not None
    return StoredMessage(
        id=message.id,
        guild_id=message.guild.id,
        channel_id=channel.id,
        parent_id=parent_id,
        author_id=message.author.id,
        author_name=message.author.display_name,
        content=message.content,
        created_at=message.created_at,
        edited_at=message.edited_at,
        reply_to=reply_to,
        is_bot=message.author.bot,
        attachments=attachments,
    )


def to_chat(
    stored: StoredMessage, names: dict[int, str], guild: discord.Guild | None, channels: dict[int, str] | None = None
) -> ChatMessage:
    """The summarizer's form. ``names``: user id -> display name, for resolving ``<@id>``; ``channels``:
    channel id -> the name the summary's readers may see (``channel_names``), for ``<#id>``."""
    text = stored.content
    mentions: dict[int, str] = {}
    for raw in _USER_MENTION.findall(text):
        uid = int(raw)
        name = names.get(uid)
        if name is None and guild is not None:
            member = guild.get_member(uid)
            name = member.display_name if member else None
        if name is not None:
            mentions[uid] = name
    role_mentions: dict[int, str] = {}
    channel_mentions: dict[int, str] = {}
    if guild is not None:
        for raw in _ROLE_MENTION.findall(text):
            role = guild.get_role(int(raw))
            if role is not None:
                role_mentions[role.id] = role.name
    for raw in _CHANNEL_MENTION.findall(text):
        if channels is not None and int(raw) in channels:
            channel_mentions[int(raw)] = channels[int(raw)]
    return ChatMessage(
        id=stored.id,
        author=stored.author_name,
        text=text,
        author_id=stored.author_id,
        created_at=stored.created_at,
        reply_to=stored.reply_to,
        attachments=[Attachment(a.filename, a.size, a.content_type, a.text) for a in stored.attachments],
        is_bot=stored.is_bot,
        is_system=False,
        mentions=mentions,
        role_mentions=role_mentions,
        channel_mentions=channel_mentions,
        guild_id=stored.guild_id,
        channel_id=stored.channel_id,
    )


async def mentioned_channels(guild: discord.Guild, stored: list[StoredMessage], readers: Readers | None) -> dict[int, str]:
    """Names for the ``<#id>`` mentions in ``stored`` as the summary's readers may see them. Without
    ``readers``, the audience of the conversation's own channel stands for them."""
    ids = {int(raw) for m in stored for raw in _CHANNEL_MENTION.findall(m.content)}
    if readers is None:
        readers = Readers(audiences=tuple({m.channel_id: guild.get_channel_or_thread(m.channel_id) for m in stored}.values()))
    return await channel_names(guild, ids, readers)


def skipped_files(stored: list[StoredMessage]) -> list[str]:
    """Text-like attachments that were named but not read (too big, binary, or failed to download)."""
    return [a.filename for m in stored for a in m.attachments if a.text is None and looks_like_text(a.filename, a.content_type)]


async def _report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is None:
        return
    result = progress(stage, done, total)
    if result is not None:
        await result


async def flush_buffered(bot: "App") -> None:
    """Write what the history listeners buffered: it is part of history (and of what a summary may cite)."""
    buffer = bot.services.message_buffer.get()
    if buffer is not None:  # no history cog loaded: nothing is buffered
        await buffer.flush()


async def _store(bot: "App", batch: list[StoredMessage]) -> None:
    """A fetched page is already a batch: written at once, in order with the listeners' deletes."""
    if not batch:
        return
    buffer = bot.services.message_buffer.get()
    if buffer is not None:
        await buffer.write_fetched(batch)  # skips ids deleted since the fetch
    else:
        await bot.db.writing(messages.upsert_messages, batch)


async def _reconcile(bot: "App", channel_id: int, after_id: int, upto_id: int, present: set[int]) -> None:
    """Discord was just read for ``(after_id, upto_id]``: what it no longer has is erased here too."""
    if upto_id <= after_id:
        return
    buffer = bot.services.message_buffer.get()
    if buffer is not None:
        result = await buffer.reconcile(channel_id, after_id, upto_id, present)
    else:
        result, _ = await bot.db.writing(messages.delete_missing, channel_id, after_id, upto_id, present)
    if result.messages or result.summaries:
        log.info("channel %s: erased %d messages deleted while unseen, and %d summaries of them",
                 channel_id, result.messages, result.summaries)
        bot.erasure.request()  # the history cog's loop checkpoints within a second


@dataclass
class _Scan:
    found: list[StoredMessage]  # conversation messages, newest first
    complete: bool  # the whole range was scanned
    oldest: int  # the oldest id scanned


async def _scan(
    bot: "App",
    channel: Any,
    lower: int,
    top: int,
    wanted: int,
    progress: Progress | None,
) -> _Scan:
    """Fetch ids in ``(lower, top]`` newest first until ``wanted`` conversation messages are found,
    storing them, and erase stored messages of the scanned part that Discord no longer returns.

    At most ``wanted + SCAN_SLACK`` messages are scanned, so a channel of bot or system messages
    is never paged through to its very start.
    """
    me = bot.user.id if bot.user else None
    # Messages posted after the first request are not in its answer: never erase above this.
    ceiling = min(top, discord.utils.time_snowflake(discord.utils.utcnow(), high=False))
    limit = wanted + SCAN_SLACK
    budget = AttachmentBudget(bot.settings.attachment_read_max_bytes)
    found: list[StoredMessage] = []
    page: list[StoredMessage] = []
    seen: set[int] = set()
    oldest = top + 1
    complete = True
    after = discord.Object(id=lower) if lower > 0 else None
    async for message in channel.history(limit=limit, before=discord.Object(id=top + 1), after=after, oldest_first=False):
        oldest = message.id
        seen.add(message.id)
        if not is_conversation(message, me):
            continue
        stored = await to_stored(message, bot.settings.attachment_max_bytes, budget)
        found.append(stored)
        page.append(stored)
        if len(page) >= 100:
            await _store(bot, page)
            page = []
            await _report(progress, "reading", len(found), 0)
        if len(found) >= wanted:
            complete = False
            break
    if len(seen) >= limit:
        complete = False  # the scan cap, not the start of the range, ended it
    await _store(bot, page)
    await _reconcile(bot, channel.id, lower if complete else oldest - 1, ceiling, seen)
    return _Scan(found, complete, oldest)


async def read_conversation(
    bot: "App",
    channel: Any,
    scope: Scope,
    max_messages: int,
    progress: Progress | None = None,
    readers: Readers | None = None,
) -> Conversation:
    """The conversation in ``scope``, oldest first, at most ``max_messages`` (the newest ones).

    Stored history is used for the range the listeners saw live (``bot.coverage``);
    the rest is fetched from Discord and stored, so the next read is local. ``readers``: who will read
    the summary, which decides the channel names ``<#id>`` may show (see ``channel_names``).
    """
    guild: discord.Guild = channel.guild
    wanted = min(scope.last, max_messages) if scope.last else max_messages
    lower, upper = scope.id_bounds()
    await flush_buffered(bot)

    covered = bot.coverage.covered_after(channel.id, guild_id=channel.guild.id)
    stored: list[StoredMessage] = []
    if covered is not None and covered < upper - 1:
        first = max(covered, lower) + 1
        stored = await bot.db.reading(messages.messages_between, channel.id, first, upper - 1, limit=wanted + 1)

    fetched: list[StoredMessage] = []
    top = min(covered if covered is not None else MAX_ID - 1, upper - 1)
    if len(stored) <= wanted and top > lower:
        scan = await _scan(bot, channel, lower, top, wanted + 1 - len(stored), progress)
        fetched = scan.found
        # Everything scanned is now stored (and what Discord no longer has, erased): no need to fetch it again.
        bot.coverage.extend(channel.id, lower if scan.complete else scan.oldest - 1, guild_id=channel.guild.id)

    by_id = {m.id: m for m in fetched}
    by_id.update({m.id: m for m in stored})  # a stored copy carries later edits
    opted_out = await bot.db.reading(privacy.opted_out_users, {m.author_id for m in by_id.values()})
    me = bot.user.id if bot.user else None
    ordered = sorted(
        (m for m in by_id.values() if m.author_id not in opted_out and m.author_id != me),
        key=lambda m: m.id,
    )
    capped_at = None
    if len(ordered) > wanted:
        ordered = ordered[-wanted:]
        if scope.last is None or scope.last > max_messages:
            capped_at = max_messages
    names = {m.author_id: m.author_name for m in ordered}
    channels = await mentioned_channels(guild, ordered, readers)
    chat = [to_chat(m, names, guild, channels) for m in ordered]
    await _report(progress, "reading", len(chat), len(chat))
    return Conversation(
        channel_id=channel.id,
        guild_id=guild.id,
        messages=chat,
        capped_at=capped_at,
        skipped_files=skipped_files(ordered),
        fetched=len(fetched),
    )


async def read_by_ids(bot: "App", channel: Any, source_ids: list[int], readers: Readers | None = None) -> Conversation:
    """The stored messages of an earlier summary (for Shorter/Longer/Regenerate); missing ones are skipped.

    Stored rows older than what this session has seen live or re-read are checked against Discord
    first: messages deleted while the bot was offline must not come back through a button.
    """
    if not source_ids:
        return Conversation(channel_id=channel.id, guild_id=channel.guild.id, messages=[])
    await flush_buffered(bot)
    wanted = set(source_ids)
    first, last = min(source_ids), max(source_ids)
    verified_from = await _recheck(bot, channel, first - 1, last, len(wanted))
    rows = await bot.db.reading(
        messages.messages_between, channel.id, first, last, limit=len(source_ids) * 4 + 100
    )
    opted_out = await bot.db.reading(privacy.opted_out_users, {m.author_id for m in rows})
    kept = [m for m in rows if m.id in wanted and m.id > verified_from and m.author_id not in opted_out]
    names = {m.author_id: m.author_name for m in kept}
    channels = await mentioned_channels(channel.guild, kept, readers)
    return Conversation(
        channel_id=channel.id,
        guild_id=channel.guild.id,
        messages=[to_chat(m, names, channel.guild, channels) for m in kept],
        skipped_files=skipped_files(kept),
    )


async def _recheck(bot: "App", channel: Any, lower: int, upper: int, expected: int) -> int:
    """Re-read ``(lower, upper]`` from Discord where this session has not; returns the id above which
    stored rows are known to be current (rows at or below it could not be checked)."""
    covered = bot.coverage.covered_after(channel.id, guild_id=channel.guild.id)
    if covered is not None and covered <= lower:
        return lower  # seen live or re-read since the bot connected
    top = upper if covered is None else min(upper, covered)
    scan = await _scan(bot, channel, lower, top, expected * 2 + 100, None)
    if covered is not None and top == covered:
        bot.coverage.extend(channel.id, lower if scan.complete else scan.oldest - 1, guild_id=channel.guild.id)
    return lower if scan.complete else scan.oldest - 1
