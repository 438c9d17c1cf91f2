"""Shared fixtures: tiny random models on disk and the embedded model's conversion cache.

Models are cached under ``tests/.cache`` (gitignored) keyed by the code that builds them,
so later test runs skip the ~15 s it takes to build one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from bot.tunables import register_settings
from engine.models import save_tiny_model

# The application declares its settings at start (bot.__main__, RecapBot); storage tests use them directly.
register_settings()

CACHE_ROOT = Path(__file__).parent / ".cache"

# A wider weight init than the library default makes greedy outputs varied (not one token
# repeated), so "batched equals unbatched" compares real, distinct token sequences.
TINY_CONFIG: dict[str, dict[str, Any]] = {"causal": {"initializer_range": 0.3}, "seq2seq": {"init_std": 0.3}}


def cached_tiny_model(kind: str, **config: Any) -> Path:
    """Path of a tiny model of ``kind`` built by ``save_tiny_model``, built once per code version."""
    key_src = inspect.getsource(save_tiny_model) + kind + json.dumps(config, sort_keys=True)
    folder = CACHE_ROOT / f"tiny-{kind}-{hashlib.sha256(key_src.encode()).hexdigest()[:12]}"
    if (folder / "recap-tiny.json").is_file():  # written last: the folder is complete
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_tiny_model(tmp, kind, **config)
    try:
        tmp.rename(folder)
    except OSError:  # another test run built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@pytest.fixture(scope="session")
def tiny_causal_dir() -> Path:
    return cached_tiny_model("causal", **TINY_CONFIG["causal"])


@pytest.fixture(scope="session")
def tiny_seq2seq_dir() -> Path:
    return cached_tiny_model("seq2seq", **TINY_CONFIG["seq2seq"])


@pytest.fixture(scope="session")
def embedded_cache_dir() -> Path:
    """Pass as ``cache_dir=`` to ``load_backend("embedded", ...)``: the de-quantized model is kept here."""
    folder = CACHE_ROOT / "model-cache"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
