"""Same window, same answer: when a stored summary may be shown again instead of generating.

A summary's fingerprint covers everything that decides its text: the messages read
(ids, authors, text, attachment text, how their mentions read for this audience), length,
style, generation settings and model.
A recent stored summary of the same channel with the same fingerprint, whose source
messages are all still stored and unedited since (``storage.summaries.reusable_summaries``),
is reused. Deletes need no check here: deleting a message deletes every summary built
from it. A private summary is only ever reused for the member who asked for it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import discord

from storage import SummaryRecord, summaries

if TYPE_CHECKING:
    from .app import App

    from .reading import Conversation

REUSE_WINDOW = timedelta(minutes=15)  # "recent": older summaries are regenerated, never shown as current


def fingerprint(conversation: "Conversation", length: str, style: str, settings: Any, model: str) -> str:
    """A digest of everything that decides a summary's text."""
    parts = {
        "channel": conversation.channel_id,
        "messages": [
            [m.id, m.author_id, m.author, m.text, m.reply_to, [[a.filename, a.text] for a in m.attachments],
             # How mentions read depends on who reads: a channel hidden from some readers reads #hidden-channel.
             sorted(m.mentions.items()), sorted(m.role_mentions.items()), sorted(m.channel_mentions.items())]
            for m in conversation.messages
        ],
        "length": length,
        "style": style,
        "settings": settings.as_dict() if settings is not None else None,
        "model": model,
    }
    raw = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


async def find_reusable(bot: "App", conversation: "Conversation", digest: str, requester_id: int) -> SummaryRecord | None:
    """The newest stored summary that may be shown again for this request, or None.

    The caller must already have checked that the member may read the channel.
    """
    ids = conversation.source_ids
    if not ids:
        return None
    candidates = await bot.db.reading(
        summaries.reusable_summaries,
        conversation.channel_id,
        min(ids),
        max(ids),
        since=discord.utils.utcnow() - REUSE_WINDOW,
        visible_to=requester_id,
    )
    read = set(ids)
    for record in candidates:
        # The fingerprint pins what was read now; the sources must be among those messages.
        if (record.structured or {}).get("fingerprint") == digest and set(record.source_ids) <= read:
            return record
    return None


def reuse_note(record: SummaryRecord) -> str:
    when = discord.utils.format_dt(record.created_at, "R") if record.created_at else "recently"
    return (f"A recent summary of exactly these messages (made {when}; none changed since). "
            "Press Regenerate for a fresh one.")
