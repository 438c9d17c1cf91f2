"""Helpers for the executor tests: real tiny models behind thin, scriptable backends.

(No tests here; the name keeps it among the executor's test files.)
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from engine.executor import Executor
from engine.generation import GenerationRequest, GenerationResult, GenerationSettings, Prompt
from engine.models import ModelBackend, load_backend

Hook = Callable[[Sequence[Prompt], GenerationSettings], None]


class ScriptedBackend(ModelBackend):
    """The real model and tokenizer; records each generate call and can stall or fail on purpose."""

    def __init__(self, base: ModelBackend, hook: Hook | None = None) -> None:
        super().__init__(base.tokenizer, base.model, base.device, base.dtype, base.name)
        self.hook = hook
        self.calls: list[tuple[list[str], GenerationSettings]] = []
        self.results: list[list[GenerationResult]] = []
        self.entered = threading.Event()  # set when a generate call starts
        self.gate = threading.Event()  # generate waits for it (set by default: no stall)
        self.gate.set()

    def generate_batch(self, prompts: Sequence[Prompt], settings: GenerationSettings, **kwargs: Any) -> list[GenerationResult]:
        self.calls.append(([p.user for p in prompts], settings))
        self.entered.set()
        if not self.gate.wait(timeout=60):
            raise AssertionError("test gate never opened")
        if self.hook is not None:
            self.hook(prompts, settings)
        results = super().generate_batch(prompts, settings, **kwargs)
        self.results.append(results)
        return results

    def stall(self) -> None:
        """Make the next generate call wait until ``release()``."""
        self.entered.clear()
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 30), "generate was never called"


class Factory:
    """A backend factory for the executor: a fresh ScriptedBackend over one shared loaded model."""

    def __init__(self, base: ModelBackend, hook: Hook | None = None, fail_on: set[int] | None = None) -> None:
        self.base = base
        self.hook = hook
        self.fail_on = fail_on or set()  # call numbers (1-based) that raise instead of loading
        self.made: list[ScriptedBackend] = []

    def __call__(self) -> ScriptedBackend:
        if len(self.made) + 1 in self.fail_on:
            self.made.append(None)  # type: ignore[arg-type]  # counts the attempt
            from engine.models import ModelLoadError

            raise ModelLoadError("simulated: the model files vanished")
        backend = ScriptedBackend(self.base, self.hook)
        self.made.append(backend)
        return backend

    @property
    def current(self) -> ScriptedBackend:
        return self.made[-1]


def executor(factory: Callable[[], ModelBackend], **limits: Any) -> Executor:
    """An executor with test-friendly defaults (any limit can be overridden)."""
    options: dict[str, Any] = dict(
        max_batch_size=8, max_batch_tokens=16384, max_batch_wait_ms=30, max_queue=64,
        max_queue_per_guild=24, max_queue_per_user=12, request_timeout_s=120,
    )
    options.update(limits)
    return Executor(factory, **options)


def request(text: str, max_new_tokens: int = 8, **fields: Any) -> GenerationRequest:
    settings = fields.pop("settings", GenerationSettings(max_new_tokens=max_new_tokens))
    return GenerationRequest(Prompt("Summarize the conversation.", text), settings, **fields)


CHATS = [
    "Ann: lunch at noon?\nBo: sure",
    "Cy: the deploy failed again\nDee: rolling back now\nCy: thanks, I will look at the logs after standup",
    "Eve: who has the keys to the storage room?",
    "Fay: release notes are up\nGus: I will review them\nFay: please check the migration section\n" * 3,
    "Hal: ok",
]


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Yield to the loop until predicate holds (the executor's own tasks make progress meanwhile)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def one_torch_thread() -> None:
    """Tiny models gain nothing from threads, and on a shared 2-core machine two threads run 10x slower."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_causal(tiny_causal_dir: Path) -> ModelBackend:
    one_torch_thread()
    return load_backend(str(tiny_causal_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_seq2seq(tiny_seq2seq_dir: Path) -> ModelBackend:
    one_torch_thread()
    return load_backend(str(tiny_seq2seq_dir), device="cpu")
