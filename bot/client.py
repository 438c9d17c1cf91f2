"""RecapBot: the discord.py client, with its dependencies injected.

The runner opens the database, the executor and the summarizer and hands them
in; the bot only wires them to Discord. Features live in cogs, loaded by name
so that one broken cog does not stop the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import discord
from discord.ext import commands

from core.cooldowns import GuildActivity, UserCooldown
from core.coverage import Coverage
from core.erasure import ErasureCheckpoints
from core.mentions import NO_PINGS
from core.services import CogServices
from core.sharing import SharedRuns

from .tunables import register_settings

if TYPE_CHECKING:  # the engine pulls in the model stack: only the type checker needs it here
    from engine.executor import Executor
    from engine.summarizer import Summarizer
    from storage import Database

    from bot.config import Config

log = logging.getLogger(__name__)

EXTENSIONS: tuple[str, ...] = (
    "cogs.errors",
    "cogs.history",
    "cogs.summarize",
    "cogs.settings",
    "cogs.privacy",
    "cogs.status",
    "cogs.admin",
    "cogs.digests",
    "cogs.summaries",
    "cogs.retention",
)


def intents() -> discord.Intents:
    """Only what the bot uses: servers, their messages and message text. No members, no presences."""
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.message_content = True
    return wanted


def shard_options(settings: "Config") -> dict[str, Any]:
    """SHARD_COUNT / SHARD_IDS as discord.py wants them; None lets it ask Discord for the recommended count."""
    return {"shard_count": settings.shard_count or None, "shard_ids": list(settings.shard_ids) or None}


class RecapBot(commands.AutoShardedBot):
    """Sharded from the start: one process runs every shard by default, several processes split them
    with SHARD_COUNT / SHARD_IDS (see the README, "Scaling past one machine")."""

    def __init__(
        self,
        *,
        settings: "Config",
        db: "Database",
        executor: "Executor",
        summarizer: "Summarizer",
        extensions: Iterable[str] = EXTENSIONS,
        **options: Any,
    ) -> None:
        register_settings()  # the cogs read stored settings; declare them (a no-op when already done)
        options.setdefault("allowed_mentions", NO_PINGS)
        for key, value in shard_options(settings).items():
            options.setdefault(key, value)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents(),
            help_command=None,
            **options,
        )
        self.settings = settings
        self.db = db
        self.executor = executor
        self.summarizer = summarizer
        self.extension_names = tuple(extensions)
        self.failed_extensions: dict[str, BaseException] = {}
        self.coverage = Coverage()
        # Every erasure asks for a WAL checkpoint here; cogs.history's loop retries failed ones.
        self.erasure = ErasureCheckpoints(db)
        self.cooldowns = UserCooldown(settings.user_cooldown_s)
        self.guild_slots = GuildActivity()  # summaries in progress per server (counted, never refused)
        self.shared_summaries = SharedRuns()  # concurrent requests for the same summary generate it once
        # What cogs lend each other while loaded (cogs.history's message buffer, cogs.summaries' buttons).
        self.services = CogServices()
        self.started_at = time.time()
        self.accepting = True  # False while shutting down: commands answer "shutting down"
        self.force_sync = False  # sync at start even when the tree hash is unchanged (runner --force-sync)

    async def setup_hook(self) -> None:
        for name in self.extension_names:
            try:
                await self.load_extension(name)
            except commands.ExtensionNotFound:
                log.info("extension %s is not installed; skipping", name)
            except Exception as exc:
                self.failed_extensions[name] = exc
                log.exception("failed to load extension %s", name)
        await self.sync_commands(force=self.force_sync)

    # ------------------------------------------------------------ command sync

    @property
    def sync_state_file(self) -> Path:
        """The last synced tree's hash lives next to the database (storage has no key/value table)."""
        path = Path(self.settings.database_path)
        return path.with_name(path.name + ".commands.sha256")

    def tree_hash(self) -> str:
        target = self.settings.dev_guild_id
        payload = {
            "target": target or "global",
            "commands": sorted(
                (c.to_dict(self.tree) for c in self.tree.get_commands()),
                key=lambda d: (d.get("type", 1), d["name"]),
            ),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    async def sync_commands(self, *, force: bool) -> int | None:
        """Sync to DEV_GUILD_ID (copy_global_to) or globally, only when the tree changed unless forced.

        Returns the number of commands synced, or ``None`` when nothing changed.
        """
        digest = self.tree_hash()
        state = self.sync_state_file
        try:
            previous = state.read_text().strip() if state.is_file() else ""
        except OSError:
            previous = ""
        if not force and previous == digest:
            log.info("application commands unchanged since the last sync; not syncing")
            return None
        if self.settings.dev_guild_id:
            guild = discord.Object(id=self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        try:
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(digest + "\n")
        except OSError as exc:
            log.warning("could not record the command tree hash in %s: %s", state, exc)
        log.info("synced %d application commands (%s)", len(synced), self.settings.dev_guild_id or "global")
        return len(synced)

    def shard_scope(self) -> tuple[int, tuple[int, ...]] | None:
        """(shard count, the shards this process runs) once connected; None before."""
        if self.shard_count is None:
            return None
        return self.shard_count, tuple(sorted(self.shard_ids if self.shard_ids is not None else range(self.shard_count)))

    async def on_message(self, message: discord.Message, /) -> None:
        """Message text is data, never a command: no prefix commands are looked up (cogs still listen)."""

    # ------------------------------------------------------------ lifecycle

    async def on_ready(self) -> None:
        log.info("connected as %s (id %s) to %d servers on shards %s of %s", self.user, self.user.id if self.user else "?",
                 len(self.guilds), ",".join(map(str, sorted(self.shards))), self.shard_count)

    async def close(self) -> None:
        """Stop taking commands, unload cogs (the history cog flushes its buffer), then disconnect."""
        self.accepting = False
        await super().close()
