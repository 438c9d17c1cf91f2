"""The engine's executor built from the process settings: the one place where settings meet the engine."""

from __future__ import annotations

import functools

from typing import Any, Callable

from engine.executor import Executor
from engine.llama_cpp import LlamaCppConfig, start_llama_cpp
from engine.models import load_backend
from engine.remote_backend import RemoteConfig, connect

from .config import Config


def build_executor(settings: Config) -> Executor:
    """An executor whose worker loads ``MODEL`` (with ``MODEL_ADAPTER``), or talks to the serving engine at
    ``INFERENCE_URL``, or starts llama.cpp's server (``ENGINE=llama.cpp``), and enforces the queue limits either way."""
    factory: Callable[[], Any]
    if settings.inference_url:  # a serving engine runs the model; this process keeps the front
        factory = functools.partial(connect, remote_config(settings))
    elif settings.engine == "llama.cpp":  # a llama-server child process runs it; a crash restarts it
        factory = functools.partial(start_llama_cpp, llama_cpp_config(settings))
    else:
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
        max_batch_tokens=settings.max_batch_tokens or None,  # 0: by the model's device
        max_batch_wait_ms=settings.max_batch_wait_ms,
        max_queue=settings.max_queue,
        max_queue_per_guild=settings.max_queue_per_guild,
        max_queue_per_user=settings.max_queue_per_user,
        request_timeout_s=settings.request_timeout_s,
    )


def remote_config(settings: Config) -> RemoteConfig:
    """The INFERENCE_* settings for the remote backend (the API key unwrapped only here)."""
    return RemoteConfig(settings.inference_url, settings.inference_model, settings.inference_api_key.get(),
                        settings.inference_tokenizer, settings.inference_context, settings.inference_timeout_s,
                        settings.inference_retries, api=settings.inference_api)


def llama_cpp_config(settings: Config) -> LlamaCppConfig:
    """The settings ENGINE=llama.cpp reads; its converted adapters and log go beside the build."""
    return LlamaCppConfig(settings.llama_cpp_dir, settings.model, settings.model_file, settings.model_adapter,
                          settings.llama_cpp_dir / "cache", settings.cpu_threads, settings.llama_cpp_slots,
                          settings.llama_cpp_context, settings.request_timeout_s)
