"""Shared SimCord fixtures for bot tests: a real RecapBot on a real SQLite file, with a real
Executor (tiny random model, see ``build_word_model``) and Summarizer, against SimCord's simulated Discord.

Use from a test module::

    from simcord_helpers import recap_world, World  # noqa: F401  (fixtures are found by name)

    async def test_x(recap_world: World):
        result = await recap_world.alice.slash(recap_world.channel, "status")

Options per test: override the ``recap_options`` fixture, or parametrize it directly::

    @pytest.mark.parametrize("recap_options", [{"settings": {"user_cooldown_s": "30"}}])

Keys are ``start_world``'s keywords; ``settings`` are raw strings by ``Config`` field name.
"""

from __future__ import annotations

import asyncio

import functools
import hashlib
import inspect
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

import discord
import pytest
import pytest_asyncio
import simcord

from bot.client import RecapBot
from bot.config import Config
from engine.executor import Executor
from engine.models import load_backend
from storage import MessageBuffer, open_database

BOT_EXTENSIONS = ("cogs.errors", "cogs.history", "cogs.summarize", "cogs.settings", "cogs.privacy", "cogs.status", "cogs.admin")

# Each test gets its own database and executor; the executor's settings keep tiny-model runs short.
DEFAULT_TEST_SETTINGS = {
    "user_cooldown_s": "0",
    "max_batch_wait_ms": "0",
    "request_timeout_s": "120",
}


def make_settings(tmp_path: Path, **overrides: str) -> Config:
    raw = {**DEFAULT_TEST_SETTINGS, "database_path": str(tmp_path / "recap.sqlite3"), **overrides}
    return Config.from_env({}, **raw)


def make_executor(model_dir: Path | str, settings: Config, *, cache_dir: Path | None = None, **limits: Any) -> Executor:
    kwargs: dict[str, Any] = dict(
        max_batch_size=settings.max_batch_size,
        max_batch_wait_ms=settings.max_batch_wait_ms,
        max_queue=settings.max_queue,
        max_queue_per_guild=settings.max_queue_per_guild,
        max_queue_per_user=settings.max_queue_per_user,
        request_timeout_s=settings.request_timeout_s,
    )
    kwargs.update(limits)
    # One torch thread: on a shared 2-core machine, two threads spin against each other (20x slower).
    factory = functools.partial(load_backend, str(model_dir), device="cpu", cpu_threads=1, cache_dir=cache_dir)
    return Executor(factory, **kwargs)


def build_word_model(base: Path, folder: Path, n_words: int = 400) -> Path:
    """A copy of the tiny random model whose output layer only reaches ``n_words`` lowercase words, ``.`` and ``,``.

    Its text is still random, but made of real lowercase words, so it passes the summarizer's
    output checks (no invented names, enough distinct words) and summaries succeed in bot tests.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (folder / "recap-words.done").is_file():  # written last: the folder is complete
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    tokenizer = AutoTokenizer.from_pretrained(tmp)
    model = AutoModelForCausalLM.from_pretrained(tmp)
    words = sorted(
        i for t, i in tokenizer.get_vocab().items() if t.startswith("\u0120") and t[1:].isalpha() and t[1:].islower() and len(t) >= 5
    )
    gen = torch.Generator().manual_seed(1)
    chosen = [words[j] for j in torch.randperm(len(words), generator=gen)[:n_words].tolist()]
    marks = [tokenizer.encode(p, add_special_tokens=False)[0] for p in (".", ",")]
    with torch.no_grad():
        # Untie the output layer from the input embeddings: tied, a word's own row scores highest
        # after reading it, and the model says the same word forever.
        model.config.tie_word_embeddings = False
        out = torch.zeros_like(model.get_input_embeddings().weight)  # every other token scores 0
        out[chosen] = torch.randn(len(chosen), out.shape[1], generator=gen) * 0.8
        out[marks] = torch.randn(len(marks), out.shape[1], generator=gen) * 1.0
        model.lm_head.weight = torch.nn.Parameter(out)
    model.save_pretrained(tmp)
    (tmp / "recap-words.done").write_text("ok\n")
    try:
        tmp.rename(folder)
    except OSError:  # built concurrently by another run
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def word_model_for(tiny_causal_dir: Path) -> Path:
    """The word model for this tiny model, rebuilt whenever ``build_word_model`` changes."""
    version = hashlib.sha256(inspect.getsource(build_word_model).encode()).hexdigest()[:8]
    return build_word_model(tiny_causal_dir, tiny_causal_dir.with_name(f"{tiny_causal_dir.name}-words-{version}"))


@dataclass
class World:
    """A server with a #general channel, a plain member (alice), a second member (bob) and an admin."""

    env: simcord.Env
    bot: RecapBot
    guild: simcord.GuildHandle
    channel: simcord.ChannelHandle
    alice: simcord.MemberActor
    bob: simcord.MemberActor
    admin: simcord.MemberActor

    @property
    def db(self) -> Any:
        return self.bot.db

    @property
    def message_buffer(self) -> MessageBuffer:
        """The history cog's buffer; the test needs that cog loaded."""
        buffer = self.bot.services.message_buffer.get()
        assert buffer is not None, "cogs.history is not loaded"
        return buffer

    async def say(self, who: simcord.MemberActor, *lines: str, channel: simcord.ChannelHandle | None = None) -> list[discord.Message]:
        return [await who.send(channel or self.channel, line) for line in lines]

    def bot_payloads(self) -> list[Any]:
        """Every JSON body the bot sent to Discord (messages, edits, interaction responses, followups)."""
        return [entry.json for entry in self.env.http_requests if entry.method in ("POST", "PATCH") and entry.json]


async def start_world(
    tmp_path: Path,
    model_dir: Path | str,
    *,
    cache_dir: Path | None = None,
    settings: dict[str, str] | None = None,
    extensions: Iterable[str] = BOT_EXTENSIONS,
    executor_limits: dict[str, Any] | None = None,
    settle_timeout: float = 60.0,
    start_executor: bool = True,
) -> AsyncIterator[World]:
    from engine.summarizer import Summarizer

    cfg = make_settings(tmp_path, **(settings or {}))
    async with open_database(cfg.database_path) as db:
        if cfg.inference_url or cfg.engine == "llama.cpp":  # a model server: the product's own executor building
            from bot.services import build_executor

            executor = build_executor(cfg)
        else:
            executor = make_executor(model_dir, cfg, cache_dir=cache_dir, **(executor_limits or {}))
        if start_executor:
            await executor.start()
        try:
            summarizer = Summarizer(executor, input_token_budget=cfg.input_token_budget)
            bot = RecapBot(settings=cfg, db=db, executor=executor, summarizer=summarizer, extensions=extensions)
            # Env.start/shutdown rather than ``async with simcord.run``: fixture setup and teardown run in
            # different contexts under pytest-asyncio, and run()'s context manager needs one context.
            # SimCord plays Discord's recommended shard count (one) when SHARD_COUNT leaves it to Discord.
            env = simcord.Env(bot, settle_timeout=settle_timeout, shard_count=None if cfg.shard_count else 1)
            await env.start()
            try:
                guild = env.create_guild("Recap Test")
                channel = guild.create_text_channel("general")
                admins = guild.create_role("Admins", permissions=discord.Permissions(manage_guild=True))
                world = World(
                    env=env,
                    bot=bot,
                    guild=guild,
                    channel=channel,
                    alice=guild.add_member(env.create_user("alice")),
                    bob=guild.add_member(env.create_user("bob")),
                    admin=guild.add_member(env.create_user("boss"), roles=[admins]),
                )
                await env.settle()
                yield world
            finally:
                await env.shutdown()
            env.raise_errors()  # anything the bot raised and nobody handled fails the test
        finally:
            await executor.aclose()


@pytest.fixture
def recap_options() -> dict[str, Any]:
    return {}


@pytest_asyncio.fixture
async def recap_world(recap_options: dict[str, Any], tmp_path: Path, tiny_causal_dir: Path) -> AsyncIterator[World]:
    """Needs ``recap_options`` in scope: import it from here, define your own, or parametrize it."""
    async for world in start_world(tmp_path, word_model_for(tiny_causal_dir), **recap_options):
        yield world


def sent_allowed_mentions(world: World) -> list[Any]:
    """``allowed_mentions`` of every message-creating or -editing payload the bot sent."""
    out = []
    for entry in world.env.http_requests:
        body = entry.json
        if entry.method not in ("POST", "PATCH") or not isinstance(body, dict):
            continue
        data = body.get("data") if isinstance(body.get("data"), dict) else body
        if any(k in data for k in ("content", "embeds")):
            out.append(data.get("allowed_mentions"))
    return out


def allow_command(world: World, name: str, *members: simcord.MemberActor) -> None:
    """Let members see a command hidden by default_permissions (what a server admin can do in Integrations)."""
    command = world.env.backend.find_command(name, world.guild.id)
    assert command is not None, f"/{name} was not synced"
    world.guild.set_command_permissions(int(command["id"]), {m: True for m in members})


def reply_text(result: Any) -> str:
    """The visible text of an interaction's outcome: the response and followups, content and embeds."""
    parts: list[str] = []
    messages = ([result.response] if result.response is not None else []) + list(result.followups)
    for message in messages:
        parts.append(message.content or "")
        for embed in message.embeds:
            parts.append(embed.title or "")
            parts.append(embed.description or "")
            parts.extend(f"{f.name}: {f.value}" for f in embed.fields)
            parts.append(embed.footer.text or "")
    return "\n".join(p for p in parts if p)


def database_bytes(world: World) -> bytes:
    """Every byte of the database files (main file, WAL), to prove erased text is really gone."""
    path = Path(world.bot.settings.database_path)
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def declare_model_waits(world: "World") -> None:
    """The executor answers from its worker thread; tell SimCord that wait is intentional, not a hang."""
    executor = world.bot.executor
    if getattr(executor.submit, "declared", False):
        return
    submit = executor.submit

    async def submit_as_external_wait(request):
        return await world.env.external_wait(submit(request), reason="generation on the executor's worker thread")

    submit_as_external_wait.declared = True  # type: ignore[attr-defined]
    executor.submit = submit_as_external_wait


async def until(world: "World", condition, timeout: float = 180.0) -> None:
    """Let the bot work (including generation on the worker thread) until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await world.env.settle()
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"the bot did not finish in time; errors: {world.env.errors}")
        await asyncio.sleep(0.05)
