"""The shipped DialogSum adapter on the embedded model: loaded by default, every style still works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import Config
from engine.executor import Executor
from engine.adapters import ADAPTER_META, EMBEDDED_ADAPTER_DIR
from engine.models import load_backend
from engine.prompts import STYLES
from engine.summarizer import Summarizer, SummaryOptions
from test_summarizer_embedded import CHAT

pytestmark = pytest.mark.embedded


def test_the_adapter_ships_small_with_its_model_card_and_licence() -> None:
    files = {p.name: p.stat().st_size for p in EMBEDDED_ADAPTER_DIR.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", ADAPTER_META, "README.md"} <= set(files)
    assert sum(files.values()) <= 25 * 1024 * 1024
    card = (EMBEDDED_ADAPTER_DIR / "README.md").read_text()
    assert "CC BY-NC-SA 4.0" in card and "ROUGE-L" in card and "python -m bot finetune" in card


def test_default_settings_serve_the_embedded_model_with_the_adapter(tmp_path: Path) -> None:
    settings = Config.from_env({})
    assert settings.model == "embedded" and settings.model_adapter == "auto"


@pytest.fixture
async def tuned_executor(embedded_cache_dir: Path):
    # A fresh backend each time: closing an executor releases its backend's model.
    ex = Executor(lambda: load_backend("embedded", cache_dir=embedded_cache_dir, cpu_threads=1, adapter="auto"),
                  max_batch_wait_ms=20)
    await ex.start()
    yield ex
    await ex.aclose()


@pytest.mark.parametrize("style", list(STYLES))
async def test_every_style_works_with_the_adapter(tuned_executor: Executor, style: str) -> None:
    assert "+ adapter recap-dialogsum" in tuned_executor.backend.name
    summary = await Summarizer(tuned_executor).summarize(CHAT, SummaryOptions("short", style))
    assert summary.text.strip()
    assert "@everyone" not in summary.text and "<@" not in summary.text and "http" not in summary.text
    assert set(summary.citations) <= {m.id for m in CHAT}
    if style in ("paragraph", "bullets"):
        assert re.search(r"Priya|Marco|Lena", summary.text)
    if style == "bullets":
        assert all(line.startswith("- ") for line in summary.text.splitlines())
