"""Turning a summary into Discord messages that respect every size limit.

Discord rejects a message outright when one limit is exceeded, so everything
here measures before it builds. Nothing in this module talks to Discord.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Protocol, Sequence

import discord

from engine.summarizer import FALLBACK_MODEL, FALLBACK_NOTE

# Discord's limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits).
CONTENT_LIMIT = 2000
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FIELDS_PER_EMBED = 25
FOOTER_LIMIT = 2048
EMBEDS_PER_MESSAGE = 10
EMBED_TOTAL_LIMIT = 6000  # summed over every embed of one message

ZWSP = "\u200b"
_MASS_MENTION = re.compile(r"@(everyone|here)")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_USER_MENTION = re.compile(r"<@(!?\d+)>")
EMBED_COLOUR = discord.Colour.blurple()


def neutralize_mentions(text: str) -> str:
    """Break ``@everyone``, ``@here``, role and user mentions so they can never ping, even if copied."""
    text = _MASS_MENTION.sub(lambda m: f"@{ZWSP}{m.group(1)}", text)
    text = _ROLE_MENTION.sub(lambda m: f"<@{ZWSP}&{m.group(1)}>", text)
    return _USER_MENTION.sub(lambda m: f"<@{ZWSP}{m.group(1)}>", text)


def jump_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id if guild_id else '@me'}/{channel_id}/{message_id}"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_text(text: str, limit: int) -> list[str]:
    """Split at paragraph, then line, then word boundaries; hard-cut only a word longer than ``limit``."""
    if limit < 1:
        raise ValueError("limit must be positive")
    chunks: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]
        cut = -1
        for sep in ("\n\n", "\n", " "):
            cut = window.rfind(sep)
            if cut > 0:
                break
        if cut <= 0:
            cut = limit
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        chunks.append(rest)
    return chunks


def split_lines(lines: Iterable[str], limit: int) -> list[str]:
    """Pack whole lines into chunks of at most ``limit`` characters (a too-long line is cut)."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        line = truncate(line, limit)
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks


def embed_size(embed: discord.Embed) -> int:
    """Characters Discord counts towards the 6,000 per-message total."""
    return len(embed)


def pack_embeds(embeds: Sequence[discord.Embed]) -> list[list[discord.Embed]]:
    """Group embeds into messages: at most 10 per message and 6,000 characters in total."""
    messages: list[list[discord.Embed]] = []
    current: list[discord.Embed] = []
    size = 0
    for embed in embeds:
        n = embed_size(embed)
        if n > EMBED_TOTAL_LIMIT:
            raise ValueError(f"one embed holds {n} characters, more than Discord allows in a message")
        if current and (len(current) >= EMBEDS_PER_MESSAGE or size + n > EMBED_TOTAL_LIMIT):
            messages.append(current)
            current, size = [], 0
        current.append(embed)
        size += n
    if current:
        messages.append(current)
    return messages


class TopicLike(Protocol):
    title: str
    message_id: int | None


class SummaryLike(Protocol):
    """What the renderer reads from ``engine.summarizer.Summary``."""

    text: str
    citations: list[int]
    topics: list[Any]
    participants: list[str]
    start: datetime | None
    end: datetime | None
    message_count: int
    truncated: bool
    model: str
    settings: Any
    source_ids: list[int]


@dataclass(frozen=True)
class ReplyContext:
    """Where the summary came from, for the title, links and notes."""

    guild_id: int | None
    channel_id: int
    channel_name: str
    length: str
    style: str
    capped_at: int | None = None  # max_messages cut the window to this many
    skipped_files: tuple[str, ...] = ()  # attachments named but not read
    notes: tuple[str, ...] = ()  # anything else the reader should know (e.g. sent privately, and why)


def _footer(summary: SummaryLike, ctx: ReplyContext) -> str:
    s = summary.settings
    parts = [f"Model: {summary.model}", f"{ctx.length}, {ctx.style}"]
    if s is not None:
        if getattr(s, "sampling", False):
            parts.append(f"sampling t={s.temperature} top_p={s.top_p} top_k={s.top_k}")
        else:
            parts.append("greedy")
        parts.append(f"max {s.max_new_tokens} tokens")
    return truncate(" · ".join(parts), FOOTER_LIMIT)


def _time_range(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "unknown"
    return f"{discord.utils.format_dt(start, 'f')} → {discord.utils.format_dt(end, 'f')}"


def _range_links(summary: SummaryLike, ctx: ReplyContext) -> str:
    """Jump links to the first and last message read, so every reply cites where it starts and ends."""
    ids = [i for i in (getattr(summary, "source_ids", None) or []) if i]
    if not ids:
        return ""
    first, last = min(ids), max(ids)
    links = f"[first message]({jump_url(ctx.guild_id, ctx.channel_id, first)})"
    if last != first:
        links += f" · [last message]({jump_url(ctx.guild_id, ctx.channel_id, last)})"
    return "\n" + links


def _notes(summary: SummaryLike, ctx: ReplyContext) -> list[str]:
    notes: list[str] = list(ctx.notes)
    if ctx.capped_at is not None:
        notes.append(f"Only the latest {ctx.capped_at:,} messages were read (this server's max_messages limit).")
    if summary.truncated:
        notes.append("The conversation was too long for the model, so the oldest part was cut.")
    if ctx.skipped_files:
        names = ", ".join(neutralize_mentions(name) for name in ctx.skipped_files[:10]) + ("…" if len(ctx.skipped_files) > 10 else "")
        notes.append(f"Attachments named but not read: {names}")
    return notes


def _fields(name: str, lines: list[str]) -> list[tuple[str, str]]:
    chunks = split_lines(lines, FIELD_VALUE_LIMIT)
    return [(name if i == 0 else f"{name} (cont.)", chunk) for i, chunk in enumerate(chunks)]


def build_summary_embeds(summary: SummaryLike, ctx: ReplyContext) -> list[discord.Embed]:
    """All embeds of one summary, each within Discord's per-embed limits, in reading order."""
    title = truncate(f"Summary of #{neutralize_mentions(ctx.channel_name)}", TITLE_LIMIT)  # thread names are free text
    text = neutralize_mentions(summary.text.strip() or "(empty summary)")
    if getattr(summary, "fallback", None) or summary.model == FALLBACK_MODEL:  # a stored one keeps its label
        text = f"*{FALLBACK_NOTE}*\n\n{text}"
    embeds: list[discord.Embed] = []
    for i, chunk in enumerate(split_text(text, DESCRIPTION_LIMIT)):
        embeds.append(discord.Embed(title=title if i == 0 else None, description=chunk, colour=EMBED_COLOUR))

    fields: list[tuple[str, str]] = []
    participants = [neutralize_mentions(p) for p in summary.participants]
    for i, chunk in enumerate(split_text(", ".join(participants) or "none", FIELD_VALUE_LIMIT)):
        fields.append(("Participants" if i == 0 else "Participants (cont.)", chunk))
    fields.append(("Time range", _time_range(summary.start, summary.end) + _range_links(summary, ctx)))
    fields.append(("Messages", f"{summary.message_count:,}"))
    topic_lines = [
        f"[{neutralize_mentions(truncate(t.title, 200))}]({jump_url(ctx.guild_id, ctx.channel_id, t.message_id)})"
        if t.message_id
        else neutralize_mentions(truncate(t.title, 200))
        for t in summary.topics
    ]
    fields += _fields("Topics", topic_lines)
    cite_lines = [f"[{i}]({jump_url(ctx.guild_id, ctx.channel_id, mid)})" for i, mid in enumerate(summary.citations, 1)]
    if cite_lines:
        fields += _fields("Sources", [" ".join(chunk.split("\n")) for chunk in split_lines(cite_lines, 200)])
    fields += _fields("Notes", _notes(summary, ctx))

    details = discord.Embed(colour=EMBED_COLOUR)
    for name, value in fields:
        if len(details.fields) >= FIELDS_PER_EMBED or len(details) + len(name) + len(value) > EMBED_TOTAL_LIMIT - FOOTER_LIMIT:
            embeds.append(details)
            details = discord.Embed(colour=EMBED_COLOUR)
        details.add_field(name=truncate(name, FIELD_NAME_LIMIT), value=value, inline=name in ("Time range", "Messages"))
    details.set_footer(text=_footer(summary, ctx))
    embeds.append(details)
    return embeds


def build_summary_messages(summary: SummaryLike, ctx: ReplyContext) -> list[list[discord.Embed]]:
    """The summary as a list of messages (each a list of embeds): the first edits the reply, the rest follow up."""
    return pack_embeds(build_summary_embeds(summary, ctx))


# Progress lines shown while the summary is made (edits of the deferred reply).
def progress_text(stage: str, done: int, total: int) -> str:
    if stage == "reading":
        return f"Reading {total:,} messages…" if total else "Reading messages…"
    if stage == "queued":  # done: place in line; total: estimated wait in seconds (0: unknown yet)
        ahead = "You're next in line" if done <= 1 else f"You're number {done:,} in line"
        return f"{ahead} (about {_wait(total)})…" if total > 0 else f"{ahead}…"
    if stage == "summarizing":
        return f"Summarizing part {done:,}/{total:,}…" if total > 1 else "Summarizing…"
    if stage == "combining":
        return "Combining the parts…"
    return "Working…"


def _wait(seconds: int) -> str:
    return f"{seconds} s" if seconds < 90 else f"{round(seconds / 60)} min"
