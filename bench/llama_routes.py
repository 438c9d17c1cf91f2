"""The two ways to run llama.cpp from the bot, side by side: its own server, or the Python binding.

Usage:
  python bench/llama_routes.py [--requests 8] [--max-new-tokens 160] [--threads 2] [--llama-cpp-dir .llama.cpp]
                               [--weights]

Both run the file ENGINE=llama.cpp serves (the embedded model in Q8_0 with the shipped adapter merged,
``engine.llama_gguf``) on the same greedy prompts, rendered with the embedded tokenizer:

- ``server``: ``llama-server`` from ``make llama-cpp`` with ``--requests`` slots, every request sent at once
  (as the executor hands them over to a self-batching backend);
- ``binding``: ``llama_cpp.Llama`` from the ``llama-cpp-python`` package of the same version, in this
  process, one request after another (a ``Llama`` object decodes one sequence at a time and is not
  thread-safe, so a model worker would run them in turn).

The binding is not a dependency: install it into the venv first, built from the same registry sdist
(``pip install llama-cpp-python==0.3.36``, a compile of several minutes). Prints single-stream tokens/s and
the wall time for all requests for each route; the last line is one JSON object.

``--weights`` compares two files on the server route instead: the embedded Q4_1 GGUF with the adapter
beside it (``--lora``, the converted GGUF LoRA), and the merged Q8_0 file the bot serves.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from executor import build_prompts  # noqa: E402  (bench/executor.py: the same prompts as that benchmark)
from engine.generation import GenerationSettings  # noqa: E402
from engine.llama_cpp import LlamaCppConfig, start_llama_cpp  # noqa: E402


def server_route(cfg: LlamaCppConfig, texts: list[str], max_new: int) -> dict[str, Any]:
    backend = start_llama_cpp(cfg)
    try:
        settings = GenerationSettings(max_new_tokens=max_new)
        prompts = build_prompts(len(texts))
        backend.generate_batch(prompts[:1], settings.with_(max_new_tokens=4))  # warm-up
        started = time.perf_counter()
        one = backend.generate_batch(prompts[:1], settings)[0]
        single = one.new_tokens / (time.perf_counter() - started)
        started = time.perf_counter()

        def ask(prompt: Any) -> tuple[int, float]:
            result = backend.generate_batch([prompt], settings)[0]
            return result.new_tokens, time.perf_counter() - started

        with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:  # each its own request, all at once
            done = list(pool.map(ask, prompts))
        return figures(single, done)
    finally:
        backend.close()


def binding_route(model: Path, lora: Path | None, rendered: list[str], threads: int, max_new: int) -> dict[str, Any]:
    from llama_cpp import Llama  # the optional binding (see the module doc)

    llm = Llama(model_path=str(model), lora_path=str(lora) if lora else None, n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                verbose=False)

    def complete(text: str) -> int:
        out = llm.create_completion(text, max_tokens=max_new, temperature=0.0, repeat_penalty=1.1)
        return int(out["usage"]["completion_tokens"])

    complete(rendered[0][:200])  # warm-up
    started = time.perf_counter()
    single = complete(rendered[0]) / (time.perf_counter() - started)
    started = time.perf_counter()
    done = [(complete(text), time.perf_counter() - started) for text in rendered]  # one sequence at a time
    return figures(single, done)


def figures(single: float, done: list[tuple[int, float]]) -> dict[str, Any]:
    """Single-stream tokens/s, and for all at once: wall time and each request's time to its answer."""
    times = sorted(t for _, t in done)
    return {"single_stream_tokens_per_s": round(single, 2), "all_wall_s": round(times[-1], 2),
            "p50_s": round(times[len(times) // 2], 2), "first_s": round(times[0], 2),
            "tokens": sum(n for n, _ in done)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--llama-cpp-dir", default=".llama.cpp")
    ap.add_argument("--weights", action="store_true", help="compare Q4_1 + --lora with the merged Q8_0 file instead")
    args = ap.parse_args()
    threads = args.threads or os.cpu_count() or 1
    home = Path(args.llama_cpp_dir)
    cfg = LlamaCppConfig(home, cache_dir=home / "cache", threads=threads, slots=args.requests, timeout_s=3600)
    prompts = build_prompts(args.requests)
    head = f"{args.requests} requests, greedy, up to {args.max_new_tokens} new tokens, {threads} threads"
    if args.weights:
        beside = server_route(dataclasses.replace(cfg, merged=False), [p.user for p in prompts], args.max_new_tokens)
        merged = server_route(cfg, [p.user for p in prompts], args.max_new_tokens)
        print(head)
        print(f"Q4_1 + adapter beside (--lora): {beside}")
        print(f"Q8_0, adapter merged:           {merged}")
        ratio = merged["single_stream_tokens_per_s"] / beside["single_stream_tokens_per_s"]
        print(f"single stream: merged Q8_0 {ratio:.2f}x; all {args.requests}: "
              f"{beside['all_wall_s'] / merged['all_wall_s']:.2f}x")
        print(json.dumps({"requests": args.requests, "threads": threads, "q4_1_lora": beside, "q8_0_merged": merged}))
        return
    server = server_route(cfg, [p.user for p in prompts], args.max_new_tokens)
    # The file the server used: the merged model in the cache.
    backend = start_llama_cpp(cfg)
    try:
        rendered = [backend.render(p) for p in prompts]
        model, lora = backend.server.model, backend.server.lora
    finally:
        backend.close()
    try:
        binding: dict[str, Any] | str = binding_route(model, lora, rendered, threads, args.max_new_tokens)
    except ImportError:
        binding = "not installed (pip install llama-cpp-python==0.3.36)"
    print(head)
    print(f"server:  {server}")
    print(f"binding: {binding}")
    print(json.dumps({"requests": args.requests, "threads": threads, "server": server, "binding": binding}))


if __name__ == "__main__":
    main()
