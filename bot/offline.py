"""Summarizing a conversation offline and printing it: what `summarize` and the `make run` demo share.

The same summarizer and executor as the bot, with the model from the settings; the text output
names participants and the time range and links each cited message when its ids are known.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from engine.conversation import ChatMessage
from engine.generation import GenerationError, GenerationSettings, InvalidRequest
from engine.models import ModelLoadError
from engine.prompts import generation_for
from engine.summarizer import FALLBACK_NOTE, Summarizer, Summary, SummaryOptions

from .cli_common import EXIT_FAILED, EXIT_INPUT
from .config import Config
from .exports import Conversation, ExportError, load_conversation

SAMPLE_CONVERSATION = Path(__file__).parent / "data" / "sample_conversation.json"
EXCERPT_CHARS = 90


# --- progress -----------------------------------------------------------------------------


class ProgressPrinter:
    """Shows the summarizer's progress on stderr: a bar on a terminal, plain lines otherwise.

    Only work in several parts (long inputs) or a wait in the queue is shown;
    a one-request summary stays quiet.
    """

    WIDTH = 24

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last: tuple[str, int, int] | None = None
        self._open_bar = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "queued":
            self._emit(f"queued: position {done}", (stage, done, 0), final=True)
            return
        if total < 2:
            return
        text = f"{stage}: {done}/{total}"
        if self.tty:
            filled = self.WIDTH * done // total
            text = f"{stage:<12}[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total}"
        self._emit(text, (stage, done, total), final=done >= total)

    def _emit(self, text: str, key: tuple[str, int, int], final: bool) -> None:
        if key == self._last:
            return
        self._last = key
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
            self._open_bar = not final
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open_bar:
            self.stream.write("\n")
            self.stream.flush()
            self._open_bar = False


# --- running ------------------------------------------------------------------------------


async def summarize_messages(
    messages: list[ChatMessage], settings: Config, options: SummaryOptions, progress: ProgressPrinter | None = None
) -> Summary:
    """Load the model through the real executor and summarize ``messages`` once."""
    from .services import build_executor  # the model stack loads only when a summary is asked for

    async with build_executor(settings) as executor:
        summarizer = Summarizer(executor, settings.input_token_budget)
        return await summarizer.summarize(messages, options, guild="local", user="local", progress=progress)


def run_demo(settings: Config) -> int:
    """``make run`` without a token: summarize the bundled sample conversation and print it."""
    try:
        conversation = load_conversation(str(SAMPLE_CONVERSATION), attachment_max_bytes=settings.attachment_max_bytes)
    except ExportError as exc:  # only a broken install gets here
        print(f"error: the bundled sample conversation can't be read: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return summarize_and_print(conversation, settings, "medium", "paragraph", generation_for("medium"), as_json=False)


def summarize_and_print(
    conversation: Conversation, settings: Config, length: str, style: str, generation: GenerationSettings,
    *, as_json: bool,
) -> int:
    options = SummaryOptions(length=length, style=style, generation=generation)
    progress = ProgressPrinter()
    print(f"Loading model {settings.model_label} and summarizing {len(conversation.messages)} messages...", file=sys.stderr)
    try:
        summary = asyncio.run(summarize_messages(conversation.messages, settings, options, progress))
    except ModelLoadError as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except InvalidRequest as exc:
        progress.close()
        print(f"error: {exc.user_message if str(exc) == exc.user_message else f'{exc.user_message} ({exc})'}", file=sys.stderr)
        return EXIT_INPUT
    except GenerationError as exc:
        progress.close()
        detail = "" if str(exc) == exc.user_message else f" ({exc})"
        print(f"error: {exc.user_message}{detail}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        progress.close()
        print("stopped.", file=sys.stderr)
        return 130
    progress.close()
    for warning in conversation.warnings:
        print(f"note: {warning}", file=sys.stderr)
    if as_json:
        print(json.dumps(summary_json(summary, conversation, length, style), ensure_ascii=False))
    else:
        print(format_summary(summary, conversation))
    return 0


# --- output -------------------------------------------------------------------------------


def jump_url(guild_id: int | None, channel_id: int | None, message_id: int | None) -> str | None:
    """Discord's link to a message; ``@me`` stands for direct messages. None when ids are unknown."""
    if channel_id is None or message_id is None:
        return None
    return f"https://discord.com/channels/{guild_id if guild_id else '@me'}/{channel_id}/{message_id}"


def _message_url(conversation: Conversation, by_id: dict[int, ChatMessage], message_id: int | None) -> str | None:
    found = by_id.get(message_id) if message_id is not None else None
    guild = found.guild_id if found and found.guild_id else conversation.guild_id
    channel = found.channel_id if found and found.channel_id else conversation.channel_id
    return jump_url(guild, channel, message_id)


def _excerpt(message: ChatMessage | None) -> str:
    if message is None:
        return ""
    text = " ".join(message.text.split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1].rstrip() + "…"


def _time_range(start: datetime | None, end: datetime | None) -> str | None:
    if start is None or end is None:
        return None
    start, end = start.astimezone(timezone.utc), end.astimezone(timezone.utc)
    if start.date() == end.date():
        return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M} UTC"
    return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC"


def _truncation_note(summary: Summary) -> str:
    return (
        f"Note: the conversation was longer than the input budget, so only the newest {summary.message_count} "
        "messages were read (raise INPUT_TOKEN_BUDGET or use --limit to choose)."
    )


def format_summary(summary: Summary, conversation: Conversation) -> str:
    """The summary as text for a terminal: header, summary, topics and cited messages with links."""
    by_id = {m.id: m for m in conversation.messages if m.id is not None}
    where = f"#{conversation.channel_name}" if conversation.channel_name else conversation.source
    if conversation.guild_name:
        where += f" ({conversation.guild_name})"
    header = [f"Summary of {where}: {summary.message_count} messages"]
    time_range = _time_range(summary.start, summary.end)
    if time_range:
        header.append(f"Time: {time_range}")
    if summary.participants:
        header.append(f"Participants: {', '.join(summary.participants)}")
    if summary.fallback:
        header.append(FALLBACK_NOTE)
    parts = ["\n".join(header), summary.text.strip()]
    if summary.topics:
        lines = ["Topics:"]
        for topic in summary.topics:
            url = _message_url(conversation, by_id, topic.message_id)
            lines.append(f"  - {topic.title}" + (f"  {url}" if url else ""))
        parts.append("\n".join(lines))
    if summary.citations:
        lines = ["Cited messages:"]
        for number, message_id in enumerate(summary.citations, 1):
            message = by_id.get(message_id)
            who = f"{message.author}: " if message else ""
            url = _message_url(conversation, by_id, message_id)
            lines.append(f"  [{number}] {who}{_excerpt(message)}" + (f"\n      {url}" if url else ""))
        parts.append("\n".join(lines))
    footer = []
    if summary.truncated:
        footer.append(_truncation_note(summary))
    footer.append(f"Model: {summary.model}")
    parts.append("\n".join(footer))
    return "\n\n".join(parts)


def _id(value: int | None) -> str | None:
    return None if value is None else str(value)  # as strings, like Discord's API: JSON numbers lose precision


def summary_json(summary: Summary, conversation: Conversation, length: str, style: str) -> dict[str, Any]:
    by_id = {m.id: m for m in conversation.messages if m.id is not None}
    return {
        "summary": summary.text,
        "citations": [
            {
                "message_id": _id(mid),
                "url": _message_url(conversation, by_id, mid),
                "author": by_id[mid].author if mid in by_id else None,
                "excerpt": _excerpt(by_id.get(mid)),
            }
            for mid in summary.citations
        ],
        "topics": [
            {"title": t.title, "message_id": _id(t.message_id), "url": _message_url(conversation, by_id, t.message_id)}
            for t in summary.topics
        ],
        "participants": list(summary.participants),
        "range": {
            "start": summary.start.isoformat() if summary.start else None,
            "end": summary.end.isoformat() if summary.end else None,
        },
        "message_count": summary.message_count,
        "truncated": summary.truncated,
        "model": summary.model,
        "fallback": summary.fallback,  # why the model's summary was unusable; null when it is the model's
        "settings": {"length": length, "style": style, "generation": summary.settings.as_dict()},
        "source": {
            "name": conversation.source,
            "format": conversation.format,
            "guild_id": _id(conversation.guild_id),
            "channel_id": _id(conversation.channel_id),
            "channel_name": conversation.channel_name,
        },
    }
