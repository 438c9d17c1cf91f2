"""Parsing the free-text options of /summarize: ``since`` and ``from_message``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import discord
from discord import app_commands

from engine.tunables import Tunable

from .errors import AccessDenied, BadOption, NO_ACCESS
from .render import neutralize_mentions


def choices_of(tunable: Tunable) -> list[app_commands.Choice[str]]:
    """A preset tunable's values as option choices: /summarize, /settings and /digest offer the engine's own."""
    return [app_commands.Choice(name=value, value=value) for value in tunable.choices or ()]


_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_SINCE = re.compile(r"^(\d{1,4})\s*(m|min|h|d|w)$")
MAX_SINCE = timedelta(days=90)
SINCE_HELP = "Use a number and a unit, like `30m`, `2h`, `1d` or `1w`, or `yesterday`."

_LINK = re.compile(r"^<?https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(\d+|@me)/(\d+)/(\d+)>?$")
MAX_SNOWFLAKE = 2**63 - 1  # Discord answers 400 (not 404) for anything larger
MESSAGE_REF_HELP = "`from_message` must be a message link (right-click a message → Copy Message Link) or a message id."


@dataclass(frozen=True)
class TimeWindow:
    after: datetime  # exclusive lower bound, aware UTC
    before: datetime | None = None  # exclusive upper bound; None: up to now


def parse_since(text: str, now: datetime) -> TimeWindow:
    """``30m``/``2h``/``1d``/``1w`` back from ``now``; ``yesterday`` is the previous UTC day."""
    raw = text.strip().lower()
    if raw == "yesterday":
        today = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        return TimeWindow(after=today - timedelta(days=1), before=today)
    match = _SINCE.match(raw)
    if not match:
        raise BadOption(f"`{_clip(text)}` is not a time span I understand. {SINCE_HELP}")
    amount = int(match.group(1))
    span = timedelta(seconds=amount * _UNITS[match.group(2)])
    if amount == 0:
        raise BadOption(f"The time span must be more than zero. {SINCE_HELP}")
    if span > MAX_SINCE:
        raise BadOption(f"The time span can be at most {MAX_SINCE.days} days. {SINCE_HELP}")
    return TimeWindow(after=now - span)


@dataclass(frozen=True)
class MessageRef:
    message_id: int
    channel_id: int | None  # None: a bare id, meaning "in the channel being summarized"


def parse_message_ref(text: str, guild_id: int | None) -> MessageRef:
    """A message link or a bare message id. A link to another server is refused like an unreadable channel."""
    raw = text.strip()
    if raw.isdecimal() and 15 <= len(raw) <= 21:  # isdigit() would let "²" through to int()
        return MessageRef(_snowflake(raw), None)
    match = _LINK.match(raw)
    if not match:
        raise BadOption(MESSAGE_REF_HELP)
    link_guild, channel_id, message_id = match.groups()
    if link_guild == "@me" or guild_id is None or int(link_guild) != guild_id:
        raise AccessDenied(NO_ACCESS)
    return MessageRef(_snowflake(message_id), _snowflake(channel_id))


def _snowflake(digits: str) -> int:
    value = int(digits)
    if not 0 < value <= MAX_SNOWFLAKE:
        raise BadOption(MESSAGE_REF_HELP)
    return value


def _clip(text: str, limit: int = 40) -> str:
    """The member's own text, quoted back safely: short, no code-span breakouts, no mentions."""
    text = neutralize_mentions(text.replace("`", "'"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Where a summary can be read from; Discord's channel picker offers only these.
SOURCE_CHANNEL_TYPES = [
    discord.ChannelType.text,
    discord.ChannelType.news,
    discord.ChannelType.voice,
    discord.ChannelType.stage_voice,
    discord.ChannelType.public_thread,
    discord.ChannelType.private_thread,
    discord.ChannelType.news_thread,
]


class SourceChannel(app_commands.Transformer):
    """A channel option restricted to readable channel types; passes Discord's resolved channel through."""

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.channel

    @property
    def channel_types(self) -> list[discord.ChannelType]:
        return SOURCE_CHANNEL_TYPES

    async def transform(self, interaction: discord.Interaction, value: Any, /) -> Any:
        return value
