"""The remote backend against a real server: `transformers serve` (the `transformers[serving]` extra) serving
the embedded model's converted directory on 127.0.0.1. Skipped when the extra is not installed."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from engine.executor import Executor
from engine.generation import GenerationRequest, GenerationSettings, Prompt
from engine.models import _gguf_cache_dir, load_backend, resolve_source
from engine.remote_backend import RemoteConfig, connect
from fake_openai import free_port

pytestmark = [
    pytest.mark.embedded,
    pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in ("fastapi", "uvicorn")),
                       reason="`transformers serve` needs the transformers[serving] extra"),
]
STARTUP_S = 300.0

PROMPT = Prompt("Summarize the conversation in one sentence.",
                "[1] Ann: can we move the release to friday?\n[2] Bo: yes, friday works, I'll tell the team")


PREFIXED = Prompt(PROMPT.system, PROMPT.user, prefix="Ann and Bo")


@pytest.fixture(scope="module")
def served(embedded_cache_dir: Path) -> Iterator[tuple[str, Path]]:
    """(the /v1 URL, the model directory it serves)."""
    load_backend("embedded", cache_dir=embedded_cache_dir, cpu_threads=1)  # writes the converted directory once
    folder = _gguf_cache_dir(embedded_cache_dir, resolve_source("embedded"))
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [str(Path(sys.executable).with_name("transformers")), "serve", str(folder), "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_healthy(server, f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}/v1", folder
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _wait_healthy(server: subprocess.Popen[str], url: str) -> None:
    """Poll /health until the server answers; a server that exits fails the test with its output."""
    import time

    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"transformers serve exited: {server.stderr.read()[-2000:] if server.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)  # a process starting up: nothing to wait on but its port
    raise AssertionError(f"transformers serve did not answer within {STARTUP_S:.0f}s")


async def test_generation_through_transformers_serve(served: tuple[str, Path], embedded_cache_dir: Path) -> None:
    url, folder = served
    executor = Executor(lambda: connect(RemoteConfig(url, tokenizer=str(folder), timeout_s=600)), max_batch_wait_ms=50)
    await executor.start()
    try:
        backend = executor.backend
        assert backend.name == str(folder) and backend.context_window == 8192  # from the local model config
        assert backend.text_completions and backend.answer_prefix  # the prompt is rendered here
        greedy = GenerationSettings(max_new_tokens=12, repetition_penalty=1.2)
        sampled = GenerationSettings(max_new_tokens=12, sampling=True, temperature=0.7, top_k=20, seed=1)
        results = await asyncio.gather(executor.submit(GenerationRequest(PREFIXED, greedy, user="a")),
                                       executor.submit(GenerationRequest(PROMPT, greedy, user="b")),
                                       executor.submit(GenerationRequest(PROMPT, sampled, user="c")))
        assert all(r.text and 0 < r.new_tokens <= 12 for r in results)
        assert results[1].prompt_tokens == await executor.prompt_tokens(PROMPT)  # local counts match the server's
        facts = backend.describe()
        # `transformers serve` answers 422 "Unexpected fields" for top_k and the penalty's names: sent once, then left out.
        assert facts["ignored_settings"] == ["top_k"]  # the penalty goes as frequency_penalty, which it maps back
        assert facts["server_ok"] is True
    finally:
        await executor.aclose()
    # The same prompts on the same weights in this process: greedy answers are the same text.
    local = load_backend("embedded", cache_dir=embedded_cache_dir, cpu_threads=1)
    expected = local.generate_batch([PREFIXED, PROMPT], greedy)
    assert [r.text for r in results[:2]] == [r.text for r in expected]
