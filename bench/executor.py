"""Throughput of the executor (dynamic batching) against plain one-at-a-time ``model.generate``.

Usage:
  python bench/executor.py [--model embedded|PATH] [--requests 16] [--max-new-tokens N] [--device auto]
                           [--max-batch-size 8] [--make-random-model llama-1b|llama-small]
                           [--backend inprocess|openai --url http://127.0.0.1:8000/v1]
                           [--backend llama.cpp --threads 2 --slots 8]

In one process, on one loaded model, with the same greedy settings: N chat-summary
prompts of varied length go through the executor concurrently, then the same N run
one after another with ``model.generate`` (the naive approach). Throughput counts the
tokens each run actually generated. A ticker task records the event loop's worst
stall during the executor run. The last line printed is one JSON object.

``--backend openai --url URL`` compares instead the executor over an OpenAI-compatible server serving
the same model (``RemoteBackend``, each row its own concurrent request) with the in-process executor,
side by side on the same prompts.

``--backend llama.cpp`` compares the two engines a CPU host can pick (``ENGINE``), both running the embedded model
with its shipped adapter on ``--threads`` threads: torch in this process and llama.cpp's server (``make llama-cpp``).
For each it prints single-stream generation (one request alone: new tokens over its whole time, the prompt's
reading included), generation alone (the same with the prompt's reading taken out: ``generation_rate``) and
the executor's throughput for ``--requests`` requests at once, side by side with the ratios.

``--make-random-model llama-1b`` first builds a random-weight ~1B Llama-shaped model
(the embedded tokenizer) in a temporary folder, for measuring on a GPU without a download.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.executor import Executor  # noqa: E402
from engine.llama_cpp import LlamaCppConfig, start_llama_cpp  # noqa: E402
from engine.generation import GenerationRequest, GenerationResult, GenerationSettings, Prompt  # noqa: E402
from engine.models import ModelBackend, load_backend, save_tiny_model  # noqa: E402
from engine.prompts import LENGTHS  # noqa: E402
from engine.remote_backend import RemoteBackend, RemoteConfig, connect  # noqa: E402

RANDOM_SHAPES: dict[str, dict[str, Any]] = {
    "llama-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=8192, max_position_embeddings=4096),
    # Same code path at a size a CPU builds in seconds: for checking the option works.
    "llama-small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                        intermediate_size=1024, max_position_embeddings=4096),
}

SYSTEM = (
    "You summarize Discord conversations. Write two to four sentences of plain prose in the third person. "
    "Name who decided what. Do not invent details."
)
PEOPLE = ["ana", "ben", "chloe", "dev", "emeka", "farah", "gus", "hiro"]
LINES = [
    "did anyone look at the failing deploy from last night?",
    "yes, the migration timed out on the big table, I rolled it back",
    "can we split it into batches of ten thousand rows?",
    "I'll write that today and open a PR before standup",
    "the release notes still mention the old config flag",
    "good catch, I'll fix the docs after lunch",
    "are we still doing the game night on friday?",
    "I'm in, but can we start at 8 instead of 7",
    "8 works for me, I'll book the room",
    "who owns the on-call rotation next week?",
    "me, but I'm travelling on tuesday so I need a swap",
    "I can take tuesday if you take my thursday",
    "deal, updating the schedule now",
    "the new dashboard shows p95 latency doubled since monday",
    "that lines up with the cache change, let's revert it and measure again",
    "reverted, numbers are back to normal",
]


def build_prompts(count: int, seed: int = 7) -> list[Prompt]:
    """Chat transcripts of varied length (3 to ~45 messages), rendered the way the summarizer sends them."""
    rng = random.Random(seed)
    prompts = []
    for i in range(count):
        lines = 3 + (i * 7) % 43
        start = rng.randrange(len(LINES))
        talk = [f"[{n + 1}] {rng.choice(PEOPLE)}: {LINES[(start + n) % len(LINES)]}" for n in range(lines)]
        prompts.append(Prompt(SYSTEM, "TRANSCRIPT\n" + "\n".join(talk) + "\nEND OF TRANSCRIPT"))
    return prompts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def sequential(backend: ModelBackend, prompts: list[Prompt], settings: GenerationSettings) -> dict[str, Any]:
    """The naive approach: one ``model.generate`` per prompt, one after another."""
    import torch

    tok, model = backend.tokenizer, backend.model
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    tokens, done_at, texts = 0, [], []
    started = time.perf_counter()
    for prompt in prompts:
        enc = tok(backend.render(prompt), return_tensors="pt", add_special_tokens=not backend.has_chat_template)
        enc = {k: v.to(backend.device) for k, v in enc.items()}
        with torch.inference_mode():
            out = model.generate(**enc, **settings.to_generate_kwargs(), pad_token_id=tok.pad_token_id)
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        kept = []
        for token in new:
            if token in eos_ids:
                break
            kept.append(token)
        tokens += len(kept)
        texts.append(tok.decode(kept, skip_special_tokens=True).strip())
        done_at.append(time.perf_counter() - started)  # as if all arrived at once and queued
    wall = time.perf_counter() - started
    return {"tokens": tokens, "wall_s": wall, "latencies": done_at, "texts": texts}


def wrapper_of(base: ModelBackend) -> Callable[[], ModelBackend]:
    def factory() -> ModelBackend:
        # A fresh wrapper over the already loaded model: closing the executor then frees only the wrapper.
        return ModelBackend(base.tokenizer, base.model, base.device, base.dtype, base.name)

    return factory


async def through_executor(factory: Callable[[], ModelBackend | RemoteBackend], prompts: list[Prompt],
                           settings: GenerationSettings, batch: int) -> dict[str, Any]:
    n = len(prompts)

    worst_stall = 0.0

    async def ticker() -> None:
        nonlocal worst_stall
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            worst_stall = max(worst_stall, time.perf_counter() - before - 0.005)

    async with Executor(factory, max_batch_size=batch, max_batch_tokens=1_000_000, max_batch_wait_ms=15,
                        max_queue=max(64, n), max_queue_per_guild=n, max_queue_per_user=n, request_timeout_s=3600) as ex:
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        results: list[GenerationResult] = await asyncio.gather(*(
            ex.submit(GenerationRequest(p, settings, guild=f"g{i % 4}", user=f"u{i}")) for i, p in enumerate(prompts)
        ))
        wall = time.perf_counter() - started
        tick.cancel()
        metrics = ex.metrics()
    return {
        "tokens": sum(r.new_tokens for r in results), "wall_s": wall, "latencies": [r.latency_s for r in results],
        "texts": [r.text for r in results], "stall_s": worst_stall, "batch_sizes": metrics["batch_sizes"],
    }


def make_random_model(shape: str, folder: Path) -> str:
    print(f"building a random {shape} model in {folder} ...", flush=True)
    save_tiny_model(folder, "causal", **RANDOM_SHAPES[shape])
    return str(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--model", default="embedded", help="embedded, a local model directory, or a hub id")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument(
        "--max-new-tokens", type=int, default=LENGTHS["medium"].max_new_tokens,
        help="tokens generated per request (default: the medium length preset, what /summarize uses by default)",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--max-batch-size", type=int, default=8, help="executor batch size (8 measured faster than 16 on a 2-core CPU)")
    ap.add_argument("--cache-dir", default="data/model-cache", help="where the converted GGUF model is cached")
    ap.add_argument("--make-random-model", choices=sorted(RANDOM_SHAPES), help="build a random-weight model first")
    ap.add_argument("--backend", choices=("inprocess", "openai", "llama.cpp"), default="inprocess",
                    help="openai: compare the executor over --url with the in-process executor; "
                         "llama.cpp: compare ENGINE=llama.cpp with ENGINE=torch")
    ap.add_argument("--threads", type=int, default=0, help="with --backend llama.cpp: CPU threads for each engine (0: all)")
    ap.add_argument("--slots", type=int, default=8, help="with --backend llama.cpp: llama-server's parallel slots")
    ap.add_argument("--llama-cpp-dir", default=".llama.cpp", help="with --backend llama.cpp: where `make llama-cpp` built it")
    ap.add_argument("--url", help="with --backend openai: the server's /v1 base, serving the same model as --model")
    ap.add_argument("--served-model", default="", help="with --backend openai: the model name to ask for (default: the first listed)")
    args = ap.parse_args()
    if args.backend == "openai":
        if not args.url:
            ap.error("--backend openai needs --url")
        return compare_remote(args)
    if args.backend == "llama.cpp":
        return compare_engines(args)

    with tempfile.TemporaryDirectory(prefix="recap-bench-") as tmp:
        model = make_random_model(args.make_random_model, Path(tmp)) if args.make_random_model else args.model
        base = load_backend(model, device=args.device, dtype=args.dtype, cache_dir=args.cache_dir)
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens)  # greedy
        prompts = build_prompts(args.requests)
        sizes = [base.prompt_tokens(p) for p in prompts]
        print(f"model {base.name} on {base.device} ({base.dtype_name}); {len(prompts)} prompts of "
              f"{min(sizes)}-{max(sizes)} tokens; max_new_tokens={args.max_new_tokens}; executor batch {args.max_batch_size}")
        base.generate_batch(prompts[:1], settings.with_(max_new_tokens=4))  # warm-up for both runs

        ex = asyncio.run(through_executor(wrapper_of(base), prompts, settings, args.max_batch_size))
        # On a thread of its own, like the executor's worker: torch's CPU threading behaves differently
        # on the main thread of a busy machine, and the comparison is about batching, not that.
        seq = asyncio.run(asyncio.to_thread(sequential, base, prompts, settings))

    ex_tps, seq_tps = ex["tokens"] / ex["wall_s"], seq["tokens"] / seq["wall_s"]
    same = sum(a == b for a, b in zip(ex["texts"], seq["texts"]))
    print(f"executor:   {ex['tokens']} tokens in {ex['wall_s']:.1f}s = {ex_tps:.1f} tok/s; "
          f"p50 {percentile(ex['latencies'], .5):.1f}s p95 {percentile(ex['latencies'], .95):.1f}s; batches {ex['batch_sizes']}")
    print(f"sequential: {seq['tokens']} tokens in {seq['wall_s']:.1f}s = {seq_tps:.1f} tok/s; "
          f"p50 {percentile(seq['latencies'], .5):.1f}s p95 {percentile(seq['latencies'], .95):.1f}s (all queued at once)")
    print(f"throughput ratio {ex_tps / seq_tps:.2f}x; identical outputs {same}/{len(prompts)}; "
          f"worst event-loop stall {ex['stall_s'] * 1000:.1f} ms; mean output {seq['tokens'] / len(prompts):.0f} tokens")
    print(json.dumps({
        "throughput_ratio": round(ex_tps / seq_tps, 3),
        "executor_tokens_per_s": round(ex_tps, 2),
        "sequential_tokens_per_s": round(seq_tps, 2),
        "p50_s": round(percentile(ex["latencies"], .5), 3),
        "p95_s": round(percentile(ex["latencies"], .95), 3),
        "loop_stall_ms": round(ex["stall_s"] * 1000, 1),
        "model": base.name,
        "device": base.device,
        "requests": len(prompts),
    }))


def compare_remote(args: argparse.Namespace) -> None:
    """The executor in front of the server, then in front of the in-process model: same prompts, same settings."""
    base = load_backend(args.model, device=args.device, dtype=args.dtype, cache_dir=args.cache_dir)
    # Greedy without a repetition penalty: `transformers serve` ignores the penalty, so both sides do the same.
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, repetition_penalty=1.0)
    prompts = build_prompts(args.requests)
    config = RemoteConfig(args.url, args.served_model, tokenizer=args.model, timeout_s=3600)
    remote = asyncio.run(through_executor(lambda: connect(config), prompts, settings, args.max_batch_size))
    local = asyncio.run(through_executor(wrapper_of(base), prompts, settings, args.max_batch_size))
    figures = {}
    for label, run in (("openai", remote), ("inprocess", local)):
        tps = run["tokens"] / run["wall_s"]
        print(f"{label:10} {run['tokens']} tokens in {run['wall_s']:.1f}s = {tps:.1f} tok/s; "
              f"p50 {percentile(run['latencies'], .5):.1f}s p95 {percentile(run['latencies'], .95):.1f}s; "
              f"worst event-loop stall {run['stall_s'] * 1000:.1f} ms")
        figures[label] = {"tokens_per_s": round(tps, 2), "p50_s": round(percentile(run["latencies"], .5), 3),
                          "p95_s": round(percentile(run["latencies"], .95), 3), "tokens": run["tokens"]}
    same = sum(a == b for a, b in zip(remote["texts"], local["texts"]))
    print(f"identical outputs {same}/{len(prompts)}")
    print(json.dumps({"model": base.name, "url": config.origin, "requests": len(prompts),
                      "max_new_tokens": args.max_new_tokens, "identical": same, **figures}))


def single_stream(factory: Callable[[], Any], prompts: list[Prompt], settings: GenerationSettings) -> dict[str, Any]:
    """One request at a time through the executor: generated tokens per second of each request's latency."""
    async def run() -> list[GenerationResult]:
        async with Executor(factory, max_batch_wait_ms=0, request_timeout_s=3600) as ex:
            return [await ex.submit(GenerationRequest(p, settings, guild="g", user="u")) for p in prompts]

    results = asyncio.run(run())
    tokens, seconds = sum(r.new_tokens for r in results), sum(r.latency_s for r in results)
    return {"tokens": tokens, "wall_s": seconds, "tokens_per_s": tokens / seconds}


def generation_rate(factory: Callable[[], Any], prompts: list[Prompt], settings: GenerationSettings,
                    short: int = 16) -> float:
    """Tokens/s of generation alone, the prompt's reading taken out: each prompt is asked for ``short`` tokens
    and for the full length, one request at a time, and the rate is the extra tokens over the extra time.
    A first, untimed request of each prompt puts both timed ones on the same footing on an engine that
    keeps a prompt's state between requests (llama-server's prompt cache); torch reads it every time."""
    async def run() -> tuple[int, float]:
        tokens, seconds = 0, 0.0
        async with Executor(factory, max_batch_wait_ms=0, request_timeout_s=3600) as ex:
            for p in prompts:
                await ex.submit(GenerationRequest(p, settings.with_(max_new_tokens=short), guild="g", user="u"))
                few = await ex.submit(GenerationRequest(p, settings.with_(max_new_tokens=short), guild="g", user="u"))
                full = await ex.submit(GenerationRequest(p, settings, guild="g", user="u"))
                tokens += full.new_tokens - few.new_tokens
                seconds += full.latency_s - few.latency_s
        return tokens, seconds

    tokens, seconds = asyncio.run(run())
    return tokens / seconds if seconds > 0 and tokens > 0 else float("nan")


def compare_engines(args: argparse.Namespace) -> None:
    """ENGINE=torch against ENGINE=llama.cpp: the embedded model and its adapter, the same prompts and settings."""
    import torch

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    base = load_backend("embedded", adapter="auto", device="cpu", cache_dir=args.cache_dir, cpu_threads=threads)
    llama = LlamaCppConfig(Path(args.llama_cpp_dir), adapter="auto", cache_dir=Path(args.llama_cpp_dir) / "cache",
                           threads=threads, slots=args.slots, timeout_s=3600)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)  # greedy, the default penalty
    prompts = build_prompts(args.requests)
    alone = build_prompts(3, seed=11)
    engines: dict[str, Callable[[], Any]] = {"torch": wrapper_of(base), "llama.cpp": lambda: start_llama_cpp(llama)}
    print(f"embedded model + shipped adapter on {threads} threads; {len(prompts)} requests at once, "
          f"max_new_tokens={args.max_new_tokens}; llama.cpp slots {args.slots}")
    figures: dict[str, dict[str, float]] = {}
    for label, factory in engines.items():
        one = single_stream(factory, alone, settings)
        rate = generation_rate(factory, alone, settings)
        many = asyncio.run(through_executor(factory, prompts, settings, args.max_batch_size))
        tps = many["tokens"] / many["wall_s"]
        figures[label] = {"single_stream_tokens_per_s": round(one["tokens_per_s"], 2), "tokens_per_s": round(tps, 2),
                          "generation_tokens_per_s": round(rate, 2),
                          "wall_s": round(many["wall_s"], 2), "p50_s": round(percentile(many["latencies"], .5), 3),
                          "p95_s": round(percentile(many["latencies"], .95), 3), "tokens": many["tokens"]}
        print(f"{label:10} single stream {one['tokens_per_s']:.1f} tok/s (generation alone {rate:.1f}); {len(prompts)} at once: {many['tokens']} tokens "
              f"in {many['wall_s']:.1f}s = {tps:.1f} tok/s, p50 {figures[label]['p50_s']:.1f}s "
              f"p95 {figures[label]['p95_s']:.1f}s; worst event-loop stall {many['stall_s'] * 1000:.1f} ms", flush=True)
    ratio_one = figures["llama.cpp"]["single_stream_tokens_per_s"] / figures["torch"]["single_stream_tokens_per_s"]
    ratio_many = figures["llama.cpp"]["tokens_per_s"] / figures["torch"]["tokens_per_s"]
    ratio_gen = figures["llama.cpp"]["generation_tokens_per_s"] / figures["torch"]["generation_tokens_per_s"]
    print(f"llama.cpp / torch: single stream {ratio_one:.2f}x (generation alone {ratio_gen:.2f}x), "
          f"{len(prompts)} at once {ratio_many:.2f}x")
    print(json.dumps({"threads": threads, "requests": len(prompts), "max_new_tokens": args.max_new_tokens,
                      "single_stream_ratio": round(ratio_one, 2), "generation_ratio": round(ratio_gen, 2),
                      "throughput_ratio": round(ratio_many, 2), **figures}))


if __name__ == "__main__":
    main()
