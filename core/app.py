"""What the application core reads from the running bot, as a protocol.

``bot.client.RecapBot`` implements it. The core takes an ``App`` instead of importing the client,
which imports the core: so the import graph has no circle (``tests/test_boundaries.py``), and a
test checks that a real ``RecapBot`` is an ``App``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import discord

    from engine.executor import Executor
    from engine.summarizer import Summarizer
    from storage import Database

    from .cooldowns import GuildActivity, UserCooldown
    from .coverage import Coverage
    from .erasure import ErasureCheckpoints
    from .services import CogServices
    from .sharing import SharedRuns


@runtime_checkable
class App(Protocol):
    settings: Any  # bot.config.Config: the process's configuration (read only here)
    db: "Database"
    executor: "Executor"
    summarizer: "Summarizer"
    services: "CogServices"  # what loaded cogs lend each other
    coverage: "Coverage"  # since when stored history is trusted
    erasure: "ErasureCheckpoints"  # WAL checkpoints owed after erasures
    cooldowns: "UserCooldown"
    guild_slots: "GuildActivity"
    shared_summaries: "SharedRuns"
    accepting: bool  # False while shutting down

    @property
    def user(self) -> "discord.ClientUser | None": ...

    async def is_owner(self, user: "discord.abc.User", /) -> bool: ...
