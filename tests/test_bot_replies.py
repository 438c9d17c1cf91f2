"""The error ladder: every error type maps to one friendly sentence; unexpected ones get a reference id."""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

import discord
import pytest
from discord import app_commands

from engine.executor import Executor
from engine.generation import (
    EngineDead,
    ExecutorClosed,
    GenerationRequest,
    GenerationSettings,
    InvalidRequest,
    Overloaded,
    Prompt,
    RequestTimeout,
    SummaryFailed,
)
from engine.models import load_backend
from core.cooldowns import GuildActivity, UserCooldown
from core.errors import BadOption, TryLater
from core.replies import describe_error
from storage import InvalidSetting, StorageError


@pytest.mark.parametrize(
    "error, expected",
    [
        (app_commands.MissingPermissions(["manage_guild"]), "You need the Manage Server permission to use this."),
        (app_commands.BotMissingPermissions(["read_message_history"]), "I need the Read Message History permission here to do that."),
        (app_commands.CommandOnCooldown(app_commands.Cooldown(1, 30), 12.2), "Slow down: try again in 12 s."),
        (app_commands.NoPrivateMessage(), "This command works in servers only."),
        (BadOption("`x` is not valid."), "`x` is not valid."),
        (TryLater("Try again in 5 s.", 5), "Try again in 5 s."),
        (Overloaded("queue full", retry_after=42), "The summarizer is busy right now. Try again in 42 s."),
        (Overloaded("queue full", retry_after=300), "The summarizer is busy right now. Try again in 5 min."),
        (RequestTimeout("late"), RequestTimeout.user_message),
        (SummaryFailed("x"), SummaryFailed.user_message),
        (InvalidRequest("x"), InvalidRequest.user_message),
        (ExecutorClosed("x"), ExecutorClosed.user_message),
        (EngineDead("x"), EngineDead.user_message),
        (InvalidSetting("top_p", "top_p cannot be 3 (allowed: 0.05 to 1).", "0.05 to 1"), "top_p cannot be 3 (allowed: 0.05 to 1)."),
    ],
)
def test_each_error_type_has_one_friendly_reply(error: Exception, expected: str) -> None:
    reply = describe_error(error)
    assert reply.text == expected and reply.reference is None


def test_wrapped_errors_are_unwrapped() -> None:
    command = app_commands.Command(name="x", description="x", callback=_noop)
    wrapped = app_commands.CommandInvokeError(command, Overloaded("full", retry_after=3))
    assert describe_error(wrapped).text.startswith("The summarizer is busy")


async def _noop(interaction: discord.Interaction) -> None:
    pass


def test_unexpected_error_gets_a_logged_reference_and_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise KeyError("secret internals")
    except KeyError as exc:
        reply = describe_error(exc)
    assert reply.reference is not None and re.fullmatch(r"[0-9a-f]{8}", reply.reference)
    assert reply.reference in reply.text and "secret internals" not in reply.text and "KeyError" not in reply.text
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged and reply.reference in logged[-1].getMessage() and logged[-1].exc_info is not None


def test_database_failures_hide_their_internals(caplog: pytest.LogCaptureFixture) -> None:
    import sqlite3

    try:
        try:
            raise sqlite3.OperationalError("disk I/O error in /srv/recap/recap.sqlite3")
        except sqlite3.OperationalError as exc:
            raise StorageError(f"The database write failed and was rolled back: {exc}.") from exc
    except StorageError as exc:
        reply = describe_error(exc)
    assert reply.reference is not None and reply.reference in reply.text
    assert "I/O" not in reply.text and "/srv" not in reply.text and "sqlite" not in reply.text
    # A refusal meant for the member still reads as itself.
    limit = StorageError("This server already has 25 digests, the most allowed. Remove one first.")
    assert describe_error(limit).text == str(limit) and describe_error(limit).reference is None


def test_a_bad_option_value_is_quoted_back_without_pings() -> None:
    error = app_commands.TransformerError("@everyone `` <@&1> " + "x" * 200, discord.AppCommandOptionType.string, _Transformer())
    text = describe_error(error).text
    assert "@everyone" not in text and "<@&1>" not in text and len(text) < 120


class _Transformer(app_commands.Transformer):
    async def transform(self, interaction: discord.Interaction, value: str) -> str:
        return value


async def test_a_real_timeout_reads_as_took_too_long(tiny_causal_dir: Path) -> None:
    executor = Executor(functools.partial(load_backend, str(tiny_causal_dir), device="cpu", cpu_threads=1), request_timeout_s=0.001)
    async with executor:
        with pytest.raises(RequestTimeout) as info:
            await executor.submit(GenerationRequest(Prompt("s", "hello " * 20), GenerationSettings(max_new_tokens=200)))
    assert describe_error(info.value).text == "The summary took too long and was stopped."


def test_user_cooldown() -> None:
    now = [100.0]
    cooldown = UserCooldown(20, clock=lambda: now[0])
    cooldown.hit(1)
    with pytest.raises(TryLater) as info:
        cooldown.hit(1)
    assert info.value.retry_after == 20 and "Try again in 20 s" in info.value.message
    cooldown.hit(2)  # per member
    now[0] += 20
    cooldown.hit(1)


def test_a_failed_request_never_clears_a_later_requests_cooldown() -> None:
    now = [100.0]
    cooldown = UserCooldown(20, clock=lambda: now[0])
    slow = cooldown.hit(1)
    now[0] += 25  # the first request is still running when the cooldown has passed
    fresh = cooldown.hit(1)
    slow.release()  # the first one times out: no cooldown for it, but the second keeps its own
    with pytest.raises(TryLater):
        cooldown.hit(1)
    fresh.release()  # the second fails too: the member may try again at once
    cooldown.hit(1)


def test_guild_activity_counts_and_never_refuses() -> None:
    activity = GuildActivity()
    with activity.slot(1), activity.slot(1), activity.slot(1), activity.slot(1), activity.slot(2):
        assert activity.running(1) == 4 and activity.total() == 5
    assert activity.running(1) == 0 and activity.total() == 0
