"""ENGINE=llama.cpp: the embedded model and its adapter on a llama-server this process owns.

The tests that need the build (``make llama-cpp``) take the ``llama_cpp_home`` fixture: without a build
they are skipped with one line, except in CI (RECAP_REQUIRE_LLAMA_CPP=1). The rest check the one-line
answers to a missing or broken build and to settings that cannot work, and need nothing built.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from bot.config import Config, ConfigError
from engine.adapters import EMBEDDED_ADAPTER_DIR
from engine.executor import Executor
from engine.generation import EngineDead, GenerationRequest, GenerationSettings, ModelLoadError, Prompt
from engine.llama_cpp import LlamaCppBackend, LlamaCppConfig, find_build, start_llama_cpp
from simcord_helpers import World, recap_world  # noqa: F401

ROOT = Path(__file__).parents[1]
CACHE = Path(__file__).parent / ".cache" / "llama-cpp"  # the base model's files and converted adapters
SAMPLE = ROOT / "bot" / "data" / "sample_conversation.json"

pytestmark = pytest.mark.timeout(300)

PROMPT = Prompt("Summarize the conversation in one sentence.",
                "[1] #Person1#: can you review my patch for the search index today?\n"
                "[2] #Person2#: yes, after lunch. I will send comments by three.")


def run_bot(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("DISCORD_TOKEN", "MODEL", "MODEL_FILE", "DEVICE", "ENGINE", "INFERENCE_URL")}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "bot", "--env-file", os.devnull, *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=timeout)


def config(home: Path, **changes: object) -> LlamaCppConfig:
    return LlamaCppConfig(**{"home": home, "cache_dir": CACHE, "threads": 1, "slots": 2, "context": 2048,
                             **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def backend(llama_cpp_home: Path) -> Iterator[LlamaCppBackend]:
    started = start_llama_cpp(config(llama_cpp_home))
    yield started
    started.close()


# ---- with the build ----


def test_the_demo_runs_on_llama_cpp_with_the_adapter(llama_cpp_home: Path, tmp_path: Path) -> None:
    env = {"ENGINE": "llama.cpp", "LLAMA_CPP_DIR": str(llama_cpp_home), "MODEL": "embedded", "CPU_THREADS": "2",
           "LOG_LEVEL": "INFO", "DATABASE_PATH": str(tmp_path / "recap.sqlite3")}
    result = run_bot("start", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.startswith("Summary of #dev (Lumen Notes):")
    model = "SmolLM2-135M-Instruct (embedded, Q4_1 GGUF) + adapter recap-dialogsum, merged as Q8_0 for llama.cpp"
    assert f"llama.cpp engine: {model}" in result.stderr
    assert f"Model: {model}" in out  # the footer names the weights that wrote it
    body = out.split("\n\n")[1]
    assert any(name in body for name in ("Maya", "Theo", "Priya", "Jonas", "Sam"))  # tags mapped back to names
    assert "#Person" not in out
    # No message text in our log at INFO, nor in the server's own log.
    words = {w.strip(".,!?:;()\"'").lower() for m in json.loads(SAMPLE.read_text())["messages"]
             for w in m["content"].split()}
    rare = sorted(w for w in words if len(w) >= 9 and w.isalpha())[:20]
    server_log = (llama_cpp_home / "cache" / "llama-server.log").read_text(errors="replace").lower()
    for word in rare:
        assert word not in result.stderr.lower() and word not in server_log, word


def test_every_admin_setting_reaches_the_server(backend: LlamaCppBackend) -> None:
    greedy = GenerationSettings(max_new_tokens=24, repetition_penalty=1.2)
    first, again = (backend.generate_batch([PROMPT], greedy)[0] for _ in range(2))
    assert first.text and first.text == again.text and first.new_tokens <= 24
    sampled = GenerationSettings(max_new_tokens=24, sampling=True, temperature=1.5, top_p=0.95, top_k=100,
                                 repetition_penalty=1.1, seed=11)
    one, same = (backend.generate_batch([PROMPT], sampled)[0].text for _ in range(2))
    other = backend.generate_batch([PROMPT], sampled.with_(seed=12))[0].text
    assert one == same and one != other  # the seed is honoured
    body = backend.payload(PROMPT, sampled)
    assert {body[k] for k in ("repeat_penalty", "repetition_penalty")} == {1.1}
    assert (body["temperature"], body["top_p"], body["top_k"], body["seed"], body["max_tokens"]) == (1.5, 0.95, 100, 11, 24)
    assert backend.describe()["ignored_settings"] == []  # nothing to list in /status
    assert backend.generate_batch([PROMPT], greedy.with_(max_new_tokens=3))[0].finished is False


def test_the_server_runs_a_q8_0_copy_with_the_adapter_merged(backend: LlamaCppBackend) -> None:
    import gguf

    served = backend.server.model
    assert backend.server.lora is None and "--lora" not in backend.server.command()
    assert served.name.startswith("served-") and "-lora-adapter-smollm2-dialogsum-" in served.name
    reader = gguf.GGUFReader(str(served))
    assert reader.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    kinds = {t.tensor_type for t in reader.tensors if len(t.shape) == 2}
    assert kinds == {gguf.GGMLQuantizationType.Q8_0}


def test_the_prompt_is_the_one_the_torch_path_renders(backend: LlamaCppBackend) -> None:
    assert (backend.prompt_format, backend.speakers, backend.answer_prefix) == ("compact", "tags", False)
    rendered = backend.render(PROMPT)
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_start|>assistant\n")


@pytest.fixture
def endless_generations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests that run until max_new_tokens: a sampled end-of-text token would end them whenever the
    model's weights happen to make it likely (llama-server's own `ignore_eos`)."""
    payload = LlamaCppBackend.payload
    monkeypatch.setattr(LlamaCppBackend, "payload", lambda self, p, s: {**payload(self, p, s), "ignore_eos": True})


@pytest.mark.usefixtures("endless_generations")
async def test_a_dead_server_fails_its_waiters_and_is_restarted(llama_cpp_home: Path) -> None:
    executor = Executor(functools.partial(start_llama_cpp, config(llama_cpp_home)), max_batch_wait_ms=0)
    await executor.start()
    try:
        first = executor.backend
        assert isinstance(first, LlamaCppBackend) and executor.backend.parallel_rows == 2
        endless = GenerationSettings(max_new_tokens=1024, sampling=True, temperature=2.0, top_k=200, top_p=1.0, seed=3)
        waiting = [asyncio.ensure_future(executor.submit(GenerationRequest(PROMPT, endless, guild="g", user=f"u{n}")))
                   for n in range(3)]  # two generating, one queued
        await asyncio.sleep(1.5)
        assert not any(w.done() for w in waiting)
        os.kill(first.server.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        outcomes = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 60)
        assert all(isinstance(o, EngineDead) for o in outcomes), outcomes
        result = await asyncio.wait_for(executor.submit(GenerationRequest(PROMPT, GenerationSettings(max_new_tokens=20))), 60)
        assert result.text
        assert executor.metrics()["restarts"] == 1 and executor.state == "ready"
        assert executor.backend is not first and executor.backend.server.alive()  # type: ignore[attr-defined]
        assert not first.server.alive()
    finally:
        await executor.aclose()


@pytest.mark.usefixtures("endless_generations")
async def test_a_member_who_leaves_frees_the_slot(llama_cpp_home: Path) -> None:
    """A cancelled request's connection closes and llama-server stops generating for it."""
    executor = Executor(functools.partial(start_llama_cpp, config(llama_cpp_home)), max_batch_wait_ms=0)
    await executor.start()
    try:
        backend = executor.backend
        assert isinstance(backend, LlamaCppBackend)
        endless = GenerationSettings(max_new_tokens=1024, sampling=True, temperature=2.0, top_k=200, top_p=1.0, seed=5)
        asking = [asyncio.ensure_future(executor.submit(GenerationRequest(PROMPT, endless, guild="g", user=f"u{n}")))
                  for n in range(2)]
        await asyncio.sleep(1.0)
        assert await asyncio.to_thread(busy_slots, backend) == 2
        for task in asking:
            task.cancel()
        await asyncio.gather(*asking, return_exceptions=True)
        # The server looks for closed connections once a second while no result arrives; asking /slots
        # often would keep that wait from ever timing out, so watch its log instead.
        for _ in range(100):
            if backend.server.log_path.read_text(errors="replace").count("stop: cancel task") >= 2:
                break
            await asyncio.sleep(0.1)
        for _ in range(20):  # the cancel is seen; its slot is released on the server's next loop
            if await asyncio.to_thread(busy_slots, backend) == 0:
                break
            await asyncio.sleep(0.5)
        assert await asyncio.to_thread(busy_slots, backend) == 0
        assert executor.metrics()["cancellations"] == 2
    finally:
        await executor.aclose()


def busy_slots(backend: LlamaCppBackend) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{backend.server.port}/slots", timeout=5) as answer:
        return sum(bool(slot.get("is_processing")) for slot in json.loads(answer.read()))


def test_a_missing_or_mismatched_adapter_is_one_line(llama_cpp_home: Path, tmp_path: Path) -> None:
    env = {"ENGINE": "llama.cpp", "LLAMA_CPP_DIR": str(llama_cpp_home), "MODEL": "embedded",
           "MODEL_ADAPTER": str(tmp_path / "nowhere")}
    missing = run_bot("start", env=env)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "MODEL_ADAPTER=" in missing.stderr and "no such directory" in missing.stderr
    other = tmp_path / "other-base"
    shutil.copytree(EMBEDDED_ADAPTER_DIR, other)
    meta = json.loads((other / "recap_adapter.json").read_text())
    meta["base"]["hidden_size"] = 1024
    (other / "recap_adapter.json").write_text(json.dumps(meta))
    mismatched = run_bot("start", env={**env, "MODEL_ADAPTER": str(other)})
    assert mismatched.returncode == 1 and "Traceback" not in mismatched.stderr
    assert "was trained for another base model" in mismatched.stderr


@pytest.fixture
def recap_options(llama_cpp_home: Path) -> dict[str, object]:
    return {"settings": {"engine": "llama.cpp", "llama_cpp_dir": str(llama_cpp_home), "cpu_threads": "1",
                         "llama_cpp_slots": "2", "llama_cpp_context": "2048"}}


async def test_a_member_gets_a_summary_and_status_names_the_engine(recap_world: World) -> None:
    w = recap_world
    await w.say(w.alice, "Shall we ship the release on Friday?", "I can write the release notes tonight.")
    await w.say(w.bob, "Friday works for me, I'll tag the build in the morning.")
    result = await w.alice.slash(w.channel, "summarize")
    embeds = [e for m in [result.response, *result.followups] if m is not None for e in m.embeds]
    assert embeds[0].title == "Summary of #general"
    assert embeds[-1].footer.text.startswith("Model: SmolLM2-135M-Instruct (embedded, Q4_1 GGUF) + adapter")
    status = await w.alice.slash(w.channel, "status")
    fields = {f.name: f.value for f in status.response.embeds[0].fields}
    assert fields["Llama.cpp engine"].startswith("answering")
    assert fields["Device"].startswith("cpu (llama.cpp, 1 threads)")
    assert "Settings the llama.cpp engine ignores" not in fields


# ---- without the build ----


def test_no_build_is_one_line_naming_the_command(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"run `make llama-cpp`"):
        find_build(tmp_path)
    result = run_bot("start", env={"ENGINE": "llama.cpp", "LLAMA_CPP_DIR": str(tmp_path / "none")})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "llama.cpp is not built" in result.stderr and "make llama-cpp" in result.stderr


def test_a_broken_build_is_one_line_naming_the_command(tmp_path: Path) -> None:
    home = tmp_path / "llama"
    (home / "bin").mkdir(parents=True)
    (home / "src" / "gguf-py").mkdir(parents=True)
    (home / "src" / "convert_lora_to_gguf.py").write_text("")
    server = home / "bin" / "llama-server"
    server.write_text("#!/bin/sh\necho 'error while loading shared libraries: libggml.so' >&2\nexit 127\n")
    server.chmod(0o755)
    with pytest.raises(ModelLoadError) as caught:
        start_llama_cpp(config(home, adapter="none", cache_dir=CACHE))
    message = str(caught.value)
    assert "exited during start-up (code 127" in message and "make llama-cpp" in message and "\n" not in message


def test_llama_cpp_runs_gguf_models_only(tmp_path: Path, tiny_causal_dir: Path) -> None:
    home = tmp_path / "llama"
    (home / "bin").mkdir(parents=True)
    (home / "src" / "gguf-py").mkdir(parents=True)
    (home / "src" / "convert_lora_to_gguf.py").write_text("")
    (home / "bin" / "llama-server").write_text("#!/bin/sh\nexit 1\n")
    (home / "bin" / "llama-server").chmod(0o755)
    with pytest.raises(ModelLoadError, match="ENGINE=llama.cpp runs GGUF models"):
        start_llama_cpp(config(home, model=str(tiny_causal_dir), adapter="none"))


def test_engine_and_inference_url_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="ENGINE=llama.cpp and INFERENCE_URL"):
        Config.from_env({"ENGINE": "llama.cpp", "INFERENCE_URL": "http://127.0.0.1:8000/v1"})
    assert Config.from_env({}).engine == "torch"
