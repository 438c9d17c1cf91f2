"""/status with INFERENCE_URL: the model server's health and the admin settings it ignores."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from fake_openai import FakeOpenAI
from simcord_helpers import World, recap_world  # noqa: F401

from engine.generation import GenerationRequest, GenerationSettings, Prompt, ServerUnavailable

SAMPLED = GenerationSettings(max_new_tokens=30, sampling=True, top_k=20, repetition_penalty=1.3, seed=7)


@pytest.fixture
def model_server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def recap_options(model_server: FakeOpenAI) -> dict[str, Any]:
    return {"settings": {"inference_url": model_server.url, "inference_retries": "0"}}


async def test_status_shows_the_model_servers_health_and_the_settings_it_ignores(
        recap_world: World, model_server: FakeOpenAI) -> None:
    w = recap_world

    async def status() -> dict[str, str]:
        result = await w.alice.slash(w.channel, "status")
        return {f.name: f.value for f in result.response.embeds[0].fields}

    fields = await status()
    assert fields["Model server"].startswith("answering")
    assert "Settings the model server ignores" not in fields
    assert "127.0.0.1" not in " ".join(fields.values())  # the address stays in the logs
    # A server that rejects top_k (as `transformers serve` does): the request goes again without it.
    model_server.reject_fields = {"top_k", "repetition_penalty", "repeat_penalty"}
    await w.bot.executor.submit(GenerationRequest(Prompt("s", "hello"), SAMPLED))
    fields = await status()
    assert fields["Settings the model server ignores"].startswith("top_k")
    # A server that fails: /status says so, without details.
    model_server.faults = ["500"]
    with pytest.raises(ServerUnavailable):
        await w.bot.executor.submit(GenerationRequest(Prompt("s", "hello"), SAMPLED))
    fields = await status()
    assert fields["Model server"].startswith("not answering") and "500" not in fields["Model server"]
