"""The engine's executor built from the process settings: the one place where settings meet the engine."""

from __future__ import annotations

import functools

from engine.executor import Executor
from engine.models import load_backend

from .config import Settings


def build_executor(settings: Settings) -> Executor:
    """An executor whose worker loads ``MODEL`` (with ``MODEL_ADAPTER``) and enforces the queue limits."""
    factory = functools.partial(
        load_backend,
        settings.model,
        model_file=settings.model_file,
        device=settings.device,
        dtype=settings.dtype,
        cpu_threads=settings.cpu_threads,
        cache_dir=settings.model_cache_dir,
        adapter=settings.model_adapter,
    )
    return Executor(
        factory,
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        max_batch_wait_ms=settings.max_batch_wait_ms,
        max_queue=settings.max_queue,
        max_queue_per_guild=settings.max_queue_per_guild,
        max_queue_per_user=settings.max_queue_per_user,
        request_timeout_s=settings.request_timeout_s,
    )
