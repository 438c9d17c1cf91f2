"""One /summarize with the real embedded model (SmolLM2-135M): the product path with real output."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_asyncio
from simcord_helpers import World, reply_text, start_world

from storage import summaries

pytestmark = pytest.mark.embedded


@pytest_asyncio.fixture
async def embedded_world(tmp_path: Path, embedded_cache_dir: Path) -> AsyncIterator[World]:
    async for world in start_world(tmp_path, "embedded", cache_dir=embedded_cache_dir, settle_timeout=300):
        yield world


async def test_summary_of_a_real_conversation(embedded_world: World) -> None:
    w = embedded_world
    await w.say(w.alice, "The release is blocked by the login bug.", "Bob, can you fix the login bug by Monday?")
    await w.say(w.bob, "Yes, I'll fix it by Monday and then we ship on Tuesday.")
    result = await w.alice.slash(w.channel, "summarize", length="short")
    text = reply_text(result)
    assert "Summary of #general" in text, text
    rows = await w.db.reading(summaries.list_summaries, w.channel.id, limit=1)
    record = await w.db.reading(summaries.get_summary, rows[0].id)
    assert len(record.text.split()) >= 3
    assert record.structured["model"].startswith("SmolLM2-135M-Instruct")
    assert "Model: SmolLM2-135M-Instruct" in text
    assert len(record.source_ids) == 3
