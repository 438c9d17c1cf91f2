"""/status: the model, the queue and batches (this server's beside the whole bot's), latency, uptime, stored messages."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from core.mentions import NO_PINGS
from storage import messages

if TYPE_CHECKING:
    from bot.client import RecapBot


def _seconds(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2f} s"


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d"] if days else []
    return " ".join(parts + [f"{hours}h", f"{minutes}m"]) if (days or hours) else f"{minutes}m {secs}s"


def _queue(m: dict[str, Any], in_progress: int) -> str:
    return (f"{m.get('queue_depth', 0)} waiting, {m.get('in_flight', 0)} running · "
            f"{in_progress} summar{'y' if in_progress == 1 else 'ies'} in progress")


def _batches(m: dict[str, Any]) -> str:
    sizes: dict[int, int] = m.get("batch_sizes") or {}
    if not sizes:
        return "none yet"
    shown = ", ".join(f"{count}×{size}" for size, count in sorted(sizes.items(), reverse=True)[:6])
    return f"{shown} (batches × rows) · {m.get('tokens_per_s', 0)} tokens/s"


def _server_fields(facts: dict[str, Any]) -> list[tuple[str, str]]:
    """With INFERENCE_URL: whether the model server answers, and the admin settings it does not apply.

    The server's address and error details stay in the logs: members see /status too.
    """
    if "server" not in facts:
        return []
    health = "answering" if facts.get("server_ok") else "not answering (the bot's logs say why)"
    what = "The llama.cpp engine" if facts.get("engine") == "llama.cpp" else "The model server"
    fields = [(what.removeprefix("The ").capitalize(), health)]
    ignored = facts.get("ignored_settings") or []
    if ignored:
        fields.append((f"Settings {what.lower()} ignores", ", ".join(ignored) + " (the admins' values have no effect)"))
    return fields


class Status(commands.Cog):
    def __init__(self, bot: "RecapBot") -> None:
        self.bot = bot

    @app_commands.command(name="status")
    async def status(self, interaction: discord.Interaction) -> None:
        """Show the model, queue and latency, and how many messages are stored for this server."""
        m = self.bot.executor.metrics()
        embed = discord.Embed(title="Recap status", colour=discord.Colour.blurple())
        if m.get("ready"):
            embed.add_field(name="Model", value=f"{m.get('model', '?')} ({m.get('dtype', '?')})")
            facts = self.bot.executor.backend.describe()
            served = "server" in facts and facts.get("engine") != "llama.cpp"  # llama.cpp runs on this host
            embed.add_field(name="Device", value="a model server" if served else str(m.get("device", "?")))
            for name, value in _server_fields(facts):
                embed.add_field(name=name, value=value)
        else:
            embed.add_field(name="Model", value="still loading")
        if interaction.guild_id is not None:
            mine = self.bot.executor.metrics(str(interaction.guild_id))
            embed.add_field(name="Queue (this server)", value=_queue(mine, self.bot.guild_slots.running(interaction.guild_id)))
            embed.add_field(name="Batches (this server)", value=_batches(mine))
        embed.add_field(name="Queue (whole bot)", value=_queue(m, self.bot.guild_slots.total()))
        embed.add_field(name="Batches (whole bot)", value=_batches(m))
        embed.add_field(name="Latency", value=f"p50 {_seconds(m.get('p50_s'))} · p95 {_seconds(m.get('p95_s'))}")
        embed.add_field(name="Throughput", value=f"{m.get('tokens_per_s', 0)} tokens/s")
        embed.add_field(name="Uptime", value=_uptime(time.time() - self.bot.started_at))
        if interaction.guild_id is not None:
            count = await self.bot.db.reading(messages.count_messages, guild_id=interaction.guild_id)
            embed.add_field(name="Stored messages (this server)", value=f"{count:,}")
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: "RecapBot") -> None:
    await bot.add_cog(Status(bot))
