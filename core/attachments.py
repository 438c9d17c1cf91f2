"""Reading text attachments safely: by type and size, never crashing on binary or broken files."""

from __future__ import annotations

import logging
from pathlib import PurePath

import discord

from storage.messages import MAX_ATTACHMENT_TEXT_CHARS

log = logging.getLogger(__name__)

TEXT_EXTENSIONS = frozenset(
    ".txt .md .markdown .rst .log .csv .tsv .json .yaml .yml .toml .ini .cfg .conf .xml .html .css .js .ts "
    ".py .java .c .h .cpp .hpp .cs .go .rs .rb .php .sh .bat .ps1 .sql .kt .swift .lua .diff .patch".split()
)
TEXT_CONTENT_TYPES = ("text/", "application/json", "application/xml", "application/x-yaml", "application/toml")
_SNIFF = 8192  # bytes inspected for NULs: binary files almost always have one early


def looks_like_text(filename: str, content_type: str | None) -> bool:
    if content_type and content_type.split(";")[0].strip().lower().startswith(TEXT_CONTENT_TYPES):
        return True
    return PurePath(filename.lower()).suffix in TEXT_EXTENSIONS


def decode_text(data: bytes) -> str | None:
    """UTF-8 text with bad bytes replaced; ``None`` when the bytes look binary."""
    if b"\x00" in data[:_SNIFF]:
        return None
    return data.decode("utf-8", errors="replace")


class AttachmentBudget:
    """Bytes one read of history may still download (``ATTACHMENT_READ_MAX_BYTES``)."""

    def __init__(self, total: int) -> None:
        self.left = total

    def take(self, size: int) -> bool:
        if size > self.left:
            return False
        self.left -= size
        return True


async def read_text_attachment(
    attachment: discord.Attachment, max_bytes: int, budget: AttachmentBudget | None = None
) -> str | None:
    """The text of a small text attachment, or ``None`` (named only) for anything else, any failure,
    or when ``budget`` has no room left for it."""
    if not looks_like_text(attachment.filename, attachment.content_type):
        return None
    # Never more than storage keeps (a decoded byte is at most one character): a larger text would make
    # storing the whole message fail, whatever ATTACHMENT_MAX_BYTES says.
    max_bytes = min(max_bytes, MAX_ATTACHMENT_TEXT_CHARS)
    if attachment.size > max_bytes:
        return None
    if budget is not None and not budget.take(attachment.size):
        return None
    try:
        data = await attachment.read()
    except (discord.HTTPException, discord.DiscordException, OSError) as exc:
        log.info("could not download attachment %s: %s", attachment.id, exc)
        return None
    if len(data) > max_bytes:  # the size in the payload was wrong
        return None
    return decode_text(data)
