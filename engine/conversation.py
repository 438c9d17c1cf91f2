"""The engine's view of a chat: plain messages, free of any Discord type.

Cogs and the export parser turn what they read into ``ChatMessage`` objects;
the summarizer reads only these, so it can be tested and used offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Attachment:
    filename: str
    size: int
    content_type: str | None = None
    text: str | None = None  # already extracted by the caller for text files; None otherwise


@dataclass
class ChatMessage:
    id: int | None
    author: str
    text: str
    author_id: int | None = None
    created_at: datetime | None = None  # timezone-aware UTC
    reply_to: int | None = None  # id of the message this one answers
    attachments: list[Attachment] = field(default_factory=list)
    is_bot: bool = False
    is_system: bool = False
    mentions: dict[int, str] = field(default_factory=dict)  # user id -> display name, resolves <@id>
    role_mentions: dict[int, str] = field(default_factory=dict)
    channel_mentions: dict[int, str] = field(default_factory=dict)
    guild_id: int | None = None
    channel_id: int | None = None
