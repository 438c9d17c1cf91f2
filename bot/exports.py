"""Reading conversations from files: DiscordChatExporter JSON exports and plain transcripts.

Both become a list of ``ChatMessage``. The format is detected from the text;
every problem raises ``ExportError`` with a message that names the source and
the place (``export.json: messages[12].timestamp: not an ISO 8601 time``), so
the command line can print it as it is. Nothing here touches the network:
attachment URLs are never fetched, and of the local files named by exports made
with local media only small text files inside the export's own folder are read.
"""

from __future__ import annotations

import json
import mimetypes
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlparse

from engine.conversation import Attachment, ChatMessage

DEFAULT_ATTACHMENT_MAX_BYTES = 262_144

# Message types that carry what a person wrote; every other type is a system notice.
_AUTHORED_TYPES = {"Default", "Reply", "ChatInputCommand", "ContextMenuCommand", "ThreadStarterMessage", "0", "19", "20", "21", "23"}
# What a system message means when its export carries no text for it.
_SYSTEM_FALLBACK = {
    "RecipientAdd": "added someone to the group.",
    "RecipientRemove": "removed someone from the group.",
    "Call": "started a call.",
    "ChannelNameChange": "changed the channel name.",
    "ChannelIconChange": "changed the channel icon.",
    "ChannelPinnedMessage": "pinned a message.",
    "GuildMemberJoin": "joined the server.",
    "ThreadCreated": "started a thread.",
}
# Attachments read as text when they are local and small: by extension, then checked to decode.
_TEXT_SUFFIXES = {
    ".txt", ".md", ".markdown", ".rst", ".log", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".toml",
    ".ini", ".cfg", ".conf", ".env", ".xml", ".html", ".htm", ".css", ".js", ".ts", ".tsx", ".jsx", ".py",
    ".rb", ".go", ".rs", ".java", ".kt", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".sh", ".bash", ".ps1",
    ".sql", ".diff", ".patch", ".lua", ".php", ".swift", ".srt", ".vtt",
}
# A transcript line: "Name: text" (a space or the line end after the colon keeps URLs and
# times like 12:30 out), or DialogSum's "#Person1#: text".
_SPEAKER_RE = re.compile(r"^\s*(#[A-Za-z]+\d*#|[^\s:#][^:\n]{0,63}?)\s*:(?:\s+|$)(.*)$")
_SPEAKER_NAME_MAX_WORDS = 5
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")  # JSON "\ud800" escapes and undecodable stdin bytes
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")


class ExportError(ValueError):
    """The input can't be read as a conversation. The message names the source and the place."""


def clean_str(text: str) -> str:
    """``text`` with lone surrogates replaced: they are not Unicode, and tokenizers and printing fail on them."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def decode_json(text: str, source: str, *, line: int | None = None) -> Any:
    """``json.loads(text)``; every way hostile JSON fails is one ``ExportError`` line naming ``source``
    (and ``line``, for one record of a JSON Lines file), never a traceback."""
    where = source if line is None else f"{source}: line {line}"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno if line is None else line}, column {exc.colno}"  # a record is one line
        raise ExportError(f"{source}: {at}: invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise ExportError(f"{where}: invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. a number with more digits than Python converts
        raise ExportError(f"{where}: invalid JSON ({str(exc)[:120]})") from None


@dataclass
class Conversation:
    """Messages read from one file, oldest first, with the channel they came from when known."""

    messages: list[ChatMessage]
    source: str
    format: str  # "discord-export" or "transcript"
    guild_id: int | None = None
    channel_id: int | None = None
    guild_name: str | None = None
    channel_name: str | None = None
    skipped: int = 0  # messages with nothing to read (no text, no attachments)
    warnings: list[str] = field(default_factory=list)


def load_conversation(
    path: str, *, attachment_max_bytes: int = DEFAULT_ATTACHMENT_MAX_BYTES, stdin: TextIO | None = None
) -> Conversation:
    """Read ``path`` (``-`` for stdin) and parse it, detecting the format."""
    if path == "-":
        stream = stdin if stdin is not None else sys.stdin
        try:
            text = stream.read()
        except UnicodeDecodeError as exc:
            raise ExportError(f"<stdin>: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        # No folder to confine local media to: the working directory may hold .env, so none is read.
        return parse_text(text, "<stdin>", base_dir=None, attachment_max_bytes=attachment_max_bytes)
    file = Path(path).expanduser()
    if not file.exists():
        raise ExportError(f"{path}: no such file")
    if file.is_dir():
        raise ExportError(f"{path}: is a directory, not a file")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ExportError(f"{path}: can't be read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExportError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_text(text, file.name, base_dir=file.parent, attachment_max_bytes=attachment_max_bytes)


def parse_text(
    text: str, source: str, *, base_dir: Path | None = None, attachment_max_bytes: int = DEFAULT_ATTACHMENT_MAX_BYTES
) -> Conversation:
    """Detect the format of ``text`` and parse it. ``base_dir`` resolves relative local media paths."""
    stripped = text.strip()
    if not stripped:
        raise ExportError(f"{source}: empty input: expected a DiscordChatExporter JSON export or a `Name: text` transcript")
    if stripped[0] in "{[":
        data = decode_json(text.lstrip("\ufeff"), source)
        return parse_export(data, source, base_dir=base_dir, attachment_max_bytes=attachment_max_bytes)
    return parse_transcript(clean_str(text), source)


# --- plain transcripts ---------------------------------------------------------------


def speaker_of(line: str) -> tuple[str, str] | None:
    """``(name, text)`` when ``line`` starts a message in a ``Name: text`` transcript."""
    match = _SPEAKER_RE.match(line)
    if not match:
        return None
    name = match.group(1).strip()
    if len(name.split()) > _SPEAKER_NAME_MAX_WORDS:
        return None
    return name, match.group(2).strip()


def parse_transcript(text: str, source: str = "<transcript>") -> Conversation:
    """``Name: text`` lines; lines without a ``Name:`` prefix continue the previous message."""
    messages: list[ChatMessage] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        started = speaker_of(line)
        if started is not None:
            messages.append(ChatMessage(id=None, author=started[0], text=started[1]))
        elif messages:
            previous = messages[-1]
            previous.text = f"{previous.text}\n{line.strip()}" if previous.text else line.strip()
        else:
            raise ExportError(
                f"{source}: line {number}: unknown format: expected a DiscordChatExporter JSON export "
                f"or a transcript whose first line looks like `Name: text`"
            )
    if not messages:
        raise ExportError(f"{source}: empty input: no messages found")
    return Conversation(messages=messages, source=source, format="transcript")


# --- DiscordChatExporter JSON ----------------------------------------------------------


class _Reader:
    """Checks fields of one export and names the exact place of anything wrong."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> ExportError:
        return ExportError(f"{self.source}: {where}: {problem}")

    def obj(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, found {_kind(value)}")
        return value

    def opt_obj(self, parent: dict[str, Any], key: str, where: str) -> dict[str, Any] | None:
        value = parent.get(key)
        return None if value is None else self.obj(value, f"{where}.{key}")

    def opt_list(self, parent: dict[str, Any], key: str, where: str) -> list[Any]:
        value = parent.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"{where}.{key}", f"expected a list, found {_kind(value)}")
        return value

    def opt_str(self, parent: dict[str, Any], key: str, where: str) -> str | None:
        value = parent.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", f"expected text, found {_kind(value)}")
        return clean_str(value)

    def snowflake(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.fail(where, f"not a Discord id (found {_kind(value)})")
        # ASCII digits only, and few of them: str.isdigit() accepts "²", and int() refuses 5,000 digits.
        if isinstance(value, int):
            if not 0 <= value < 2**64:
                raise self.fail(where, "not a Discord id (out of range)")
            return value
        text = value.strip()
        if not _SNOWFLAKE.fullmatch(text) or int(text) >= 2**64:
            raise self.fail(where, f"not a Discord id: {text[:40]!r}")
        return int(text)

    def opt_snowflake(self, parent: dict[str, Any] | None, key: str, where: str) -> int | None:
        if parent is None or parent.get(key) in (None, ""):
            return None
        return self.snowflake(parent[key], f"{where}.{key}")

    def time(self, parent: dict[str, Any], key: str, where: str) -> datetime | None:
        value = parent.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", f"not an ISO 8601 time (found {_kind(value)})")
        try:
            moment = datetime.fromisoformat(value.strip())
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)  # exports write offsets; a bare time is taken as UTC
            return moment.astimezone(timezone.utc)
        except ValueError:
            raise self.fail(f"{where}.{key}", f"not an ISO 8601 time: {value[:40]!r}") from None
        except OverflowError:  # 9999-12-31T23:59:59-05:00 is past the last UTC time Python has
            raise self.fail(f"{where}.{key}", f"time out of range: {value[:40]!r}") from None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


def parse_export(
    data: Any, source: str, *, base_dir: Path | None = None, attachment_max_bytes: int = DEFAULT_ATTACHMENT_MAX_BYTES
) -> Conversation:
    """A decoded DiscordChatExporter JSON export -> ``Conversation`` (messages sorted oldest first)."""
    r = _Reader(source)
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        found = "no \"messages\" list" if isinstance(data, dict) else f"{_kind(data)} at the top level"
        raise ExportError(
            f"{source}: not a DiscordChatExporter export: expected an object with a \"messages\" list, found {found}"
        )
    guild = r.opt_obj(data, "guild", "guild") if "guild" in data else None
    channel = r.opt_obj(data, "channel", "channel") if "channel" in data else None
    guild_id = r.opt_snowflake(guild, "id", "guild")
    if guild_id == 0:  # DiscordChatExporter writes guild id 0 for direct messages
        guild_id = None
    channel_id = r.opt_snowflake(channel, "id", "channel")
    conversation = Conversation(
        messages=[],
        source=source,
        format="discord-export",
        guild_id=guild_id,
        channel_id=channel_id,
        guild_name=r.opt_str(guild, "name", "guild") if guild else None,
        channel_name=r.opt_str(channel, "name", "channel") if channel else None,
    )
    for index, raw in enumerate(data["messages"]):
        message = _parse_message(r, raw, f"messages[{index}]", conversation, base_dir, attachment_max_bytes)
        if message is None:
            conversation.skipped += 1
        else:
            conversation.messages.append(message)
    if not conversation.messages:
        raise ExportError(f"{source}: empty input: the export has no messages with text or attachments")
    # Snowflakes grow with time, so ids order messages even when timestamps tie.
    conversation.messages.sort(key=lambda m: m.id or 0)
    return conversation


def _parse_message(
    r: _Reader, raw: Any, where: str, conversation: Conversation, base_dir: Path | None, attachment_max_bytes: int
) -> ChatMessage | None:
    msg = r.obj(raw, where)
    if "id" not in msg:
        raise r.fail(f"{where}.id", "missing")
    message_id = r.snowflake(msg["id"], f"{where}.id")
    kind = msg.get("type", "Default")
    if isinstance(kind, int) and not isinstance(kind, bool):
        kind = str(kind)
    if not isinstance(kind, str):
        raise r.fail(f"{where}.type", f"expected text, found {_kind(kind)}")
    created_at = r.time(msg, "timestamp", where)
    r.time(msg, "timestampEdited", where)  # checked so a broken export is reported, not used
    content = r.opt_str(msg, "content", where) or ""

    author = r.opt_obj(msg, "author", where) or {}
    author_where = f"{where}.author"
    author_name = (
        r.opt_str(author, "nickname", author_where) or r.opt_str(author, "name", author_where) or "Unknown user"
    )
    is_bot = author.get("isBot") is True

    mentions: dict[int, str] = {}
    for i, item in enumerate(r.opt_list(msg, "mentions", where)):
        spot = f"{where}.mentions[{i}]"
        user = r.obj(item, spot)
        user_id = r.opt_snowflake(user, "id", spot)
        name = r.opt_str(user, "nickname", spot) or r.opt_str(user, "name", spot)
        if user_id is not None and name:
            mentions[user_id] = name

    # Older exports put "reference" on Default messages too, so any type may be a reply.
    reference = r.opt_obj(msg, "reference", where)
    reply_to = r.opt_snowflake(reference, "messageId", f"{where}.reference")

    attachments = [
        _parse_attachment(r, item, f"{where}.attachments[{i}]", base_dir, attachment_max_bytes, conversation)
        for i, item in enumerate(r.opt_list(msg, "attachments", where))
    ]
    is_system = kind not in _AUTHORED_TYPES
    text = content.strip()
    if not text and is_system:
        text = _SYSTEM_FALLBACK.get(kind, f"({kind})")
    if not text:
        text = _embed_or_sticker_text(r, msg, where)
    if not text and not attachments:
        return None
    return ChatMessage(
        id=message_id,
        author=author_name,
        text=text,
        author_id=r.opt_snowflake(author, "id", author_where),
        created_at=created_at,
        reply_to=reply_to,
        attachments=attachments,
        is_bot=is_bot,
        is_system=is_system,
        mentions=mentions,
        guild_id=conversation.guild_id,
        channel_id=conversation.channel_id,
    )


def _embed_or_sticker_text(r: _Reader, msg: dict[str, Any], where: str) -> str:
    """What a message without content shows: bots often post only an embed; people post stickers."""
    parts: list[str] = []
    for i, item in enumerate(r.opt_list(msg, "embeds", where)):
        embed = r.obj(item, f"{where}.embeds[{i}]")
        for key in ("title", "description"):
            value = embed.get(key)
            if isinstance(value, str) and value.strip():
                parts.append(clean_str(value.strip()))
    for i, item in enumerate(r.opt_list(msg, "stickers", where)):
        sticker = r.obj(item, f"{where}.stickers[{i}]")
        name = sticker.get("name")
        if isinstance(name, str) and name.strip():
            parts.append(f"[sticker: {clean_str(name.strip())}]")
    return "\n".join(parts)


def _parse_attachment(
    r: _Reader, raw: Any, where: str, base_dir: Path | None, max_bytes: int, conversation: Conversation
) -> Attachment:
    item = r.obj(raw, where)
    url = r.opt_str(item, "url", where) or ""
    filename = r.opt_str(item, "fileName", where) or (_url_name(url) if url else "") or "attachment"
    size = item.get("fileSizeBytes", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise r.fail(f"{where}.fileSizeBytes", f"expected a whole number of bytes, found {_kind(size)}")
    content_type = mimetypes.guess_type(filename)[0]
    text = None
    local = _local_path(url)
    found = _inside(base_dir, local) if local is not None and base_dir is not None else None
    claims_text = local is not None and bool({local.suffix.lower(), Path(filename).suffix.lower()} & _TEXT_SUFFIXES)
    if found is None and claims_text:
        why = "no such file inside the export's folder" if base_dir is not None else "local files are read only from a file's folder, not stdin"
        conversation.warnings.append(f"{where}: {filename} was named, not read ({why})")
    # The real file decides, never the export's fileName: its own suffix, then its bytes.
    if found is not None and found.suffix.lower() in _TEXT_SUFFIXES:
        text = _read_text_file(found, max_bytes)
        if text is None:
            conversation.warnings.append(f"{where}: {filename} was named, not read (too large or not text)")
        else:
            content_type = "text/plain"  # what was read is text, whatever the export called it
    return Attachment(filename=filename, size=size, content_type=content_type, text=text)


def _url_name(url: str) -> str:
    try:
        return Path(urlparse(url).path).name
    except ValueError:  # "http://[" and friends
        return ""


def _local_path(url: str) -> Path | None:
    """The local path an export made with local media names; None for remote URLs (never fetched)."""
    if not url or "\x00" in url:
        return None
    try:
        parsed = urlparse(url)
    except ValueError:
        return None
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)) if parsed.netloc in ("", "localhost") else None
    if parsed.scheme and len(parsed.scheme) > 1:  # http(s) and friends; one letter is a Windows drive
        return None
    # DiscordChatExporter writes media paths relative to the export file, sometimes percent-encoded.
    return Path(url)


def _inside(base_dir: Path, path: Path) -> Path | None:
    """``path`` (relative to ``base_dir``, or absolute) as a real regular file inside ``base_dir``, else None.

    An untrusted export must not pull in other files (``.env`` with the token): absolute paths, ``..``
    and symlinks are all judged by where they really lead.
    """
    candidates = [path]
    decoded = Path(unquote(str(path)))
    if decoded != path:
        candidates.append(decoded)
    try:
        root = base_dir.resolve(strict=True)
        for candidate in candidates:
            real = (root / candidate).resolve()  # an absolute candidate replaces root
            if real.is_relative_to(root) and real.is_file():
                return real
    except (OSError, ValueError, RuntimeError):  # unreadable, embedded NUL, symlink loop
        return None
    return None


def _read_text_file(path: Path, max_bytes: int) -> str | None:
    """The file's text when it is small UTF-8 without NUL bytes; None otherwise."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError:
        return None
    if len(data) > max_bytes or b"\x00" in data:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
