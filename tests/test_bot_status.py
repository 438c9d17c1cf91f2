"""/status and the owner-only /sync."""

from __future__ import annotations

import dataclasses

import pytest
from simcord_helpers import World, allow_command, recap_options, recap_world, reply_text  # noqa: F401


async def test_status_shows_model_queue_uptime_and_stored_count(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "one", "two")
    await w.message_buffer.flush()
    result = await w.alice.slash(w.channel, "status")
    assert result.ephemeral
    fields = {f.name: f.value for f in result.response.embeds[0].fields}
    assert fields["Device"] == "cpu"
    assert fields["Queue (this server)"] == "0 waiting, 0 running · 0 summaries in progress"
    assert fields["Queue (whole bot)"] == "0 waiting, 0 running · 0 summaries in progress"
    assert fields["Batches (this server)"] == fields["Batches (whole bot)"] == "none yet"
    assert fields["Stored messages (this server)"] == "2"
    assert "Uptime" in fields and "Latency" in fields


@pytest.mark.parametrize("recap_options", [{"start_executor": False}])
async def test_status_while_the_model_loads(recap_world: World) -> None:
    w = recap_world
    result = await w.alice.slash(w.channel, "status")
    assert "still loading" in reply_text(result)


async def test_sync_is_refused_for_non_owners(recap_world: World) -> None:
    w = recap_world
    allow_command(w, "sync", w.alice)
    result = await w.alice.slash(w.channel, "sync")
    assert result.ephemeral
    assert "Only the bot's owner" in reply_text(result)


async def test_sync_by_owner_syncs_even_when_unchanged(recap_world: World) -> None:
    w = recap_world
    w.bot.settings = dataclasses.replace(w.bot.settings, owner_ids=(w.admin.id,))
    allow_command(w, "sync", w.admin)
    before = sum(1 for e in w.env.http_requests if e.method == "PUT" and "/commands" in e.path)
    result = await w.admin.slash(w.channel, "sync")
    assert "Synced" in reply_text(result)
    after = sum(1 for e in w.env.http_requests if e.method == "PUT" and "/commands" in e.path)
    assert after == before + 1

