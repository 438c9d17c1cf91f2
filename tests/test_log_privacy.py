"""No message text and no secret at INFO or above: a rejected model output that echoes the channel,
and the inference server's URL (its credentials, path and query), never reach the logs there."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest

from bot.config import ConfigError, Config
from engine.conversation import ChatMessage
from engine.executor import Executor
from engine.netcheck import url_origin
from engine.remote_backend import RemoteConfig, connect
from engine.summarizer import Summarizer, SummaryOptions
from fake_openai import FakeOpenAI

SECRET = "hunter2-swordfish-passphrase"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)


def echo_the_channel(body: dict[str, Any]) -> str:
    """A model that repeats the conversation back: an echo, which the summarizer rejects."""
    prompt = body.get("prompt") or "\n".join(m["content"] for m in body.get("messages", []))
    return f"Ann: the vault code is {SECRET}, keep it to yourself. " + prompt[-300:]


@pytest.fixture
def echo_server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(echo_the_channel).start()
    yield fake
    fake.stop()


def info_and_above(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)


async def test_a_rejected_output_that_echoes_channel_text_stays_out_of_info_logs(
        echo_server: FakeOpenAI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = RemoteConfig(echo_server.url, retries=0, timeout_s=30.0)
    messages = [
        ChatMessage(1, "Ann", f"the vault code is {SECRET}, keep it to yourself", created_at=T0),
        ChatMessage(2, "Bo", "noted, I will not share it", created_at=T0 + timedelta(minutes=1)),
        ChatMessage(3, "Ann", "thanks, the audit is on friday", created_at=T0 + timedelta(minutes=2)),
    ]
    async with Executor(lambda: connect(config), max_batch_wait_ms=0) as executor:
        try:
            await Summarizer(executor).summarize(messages, SummaryOptions("short", "paragraph"))
        except Exception:  # noqa: BLE001 - what the member is told is not this test's business
            pass
    assert len(echo_server.requests) >= 2  # the echo was rejected and retried
    debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert "unusable generation" in info_and_above(caplog) and SECRET in debug  # logged, at DEBUG only
    assert SECRET not in info_and_above(caplog)


def test_the_inference_url_is_logged_as_its_host_only() -> None:
    url = f"https://models.example.org:8443/v1/deployments/{SECRET}?key={SECRET}"
    settings = Config.from_env({"INFERENCE_URL": url})
    assert SECRET not in settings.model_label and "https://models.example.org:8443" in settings.model_label
    assert url_origin(f"https://user:{SECRET}@models.example.org/v1") == "https://models.example.org"
    assert url_origin("http://[::1]:8000/v1") == "http://[::1]:8000"


def test_a_refused_inference_url_is_not_echoed_with_its_credentials() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"INFERENCE_URL": f"https://user:{SECRET}@models.example.org/v1"})
    assert SECRET not in str(info.value) and "INFERENCE_URL" in str(info.value)
