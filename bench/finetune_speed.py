"""Fine-tuning speed for threads x precision x batch size, to pick the settings of a long run.

Usage:
  python bench/finetune_speed.py --data train.jsonl [--examples 48] [--threads 1,2] [--precision fp32,bf16]
                                 [--batch 4,8,16] [--lora-layers 0,10] [--max-tokens 640] [--prompt-format compact] [--model embedded]

Every configuration trains a fresh LoRA (rank 16, as `finetune`) on the same fixed sample of examples,
one pass, through `tuning.trainer.Trainer`: the code `finetune` runs. Speed is the steady rate from the
end of the first step to the end of the last (the first step carries one-off warm-up), in examples and
tokens per second. Nothing else heavy should run beside it. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuning.scoring import load_records  # noqa: E402
from tuning.trainer import TrainConfig, Trainer, tokenize  # noqa: E402
from tuning.data import build_examples  # noqa: E402
from engine.models import load_backend  # noqa: E402
from engine.prompts import COMPACT, PROMPT_FORMATS  # noqa: E402
from engine.speakers import NAMES, SPEAKER_MODES  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def measure(model: str, cache_dir: str, sample_texts: list, threads: int, precision: str, batch: int,
            max_tokens: int, lora_layers: int) -> dict:
    backend = load_backend(model, device="cpu", cpu_threads=threads, cache_dir=cache_dir)
    sample, _ = tokenize(backend, sample_texts, max_tokens)  # all of them fit: they were drawn from those that do
    config = TrainConfig(batch_size=batch, precision=precision, max_steps=math.ceil(len(sample) / batch),
                         max_tokens=max_tokens, checkpoint_every=10**9, lora_layers=lora_layers or None)
    marks: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(backend, sample, config, Path(tmp))
        started = time.perf_counter()
        result = trainer.train(progress_stream=open(os.devnull, "w"), on_step=lambda _: marks.append(time.perf_counter()))
    first = trainer.batch_at(0)
    steady_s = marks[-1] - marks[0]
    steady_examples = len(sample) - len(first)
    steady_tokens = sum(len(ex.ids) for ex in sample) - sum(len(ex.ids) for ex in first)
    return {
        "threads": threads, "precision": precision, "batch": batch, "lora_layers": lora_layers or "all",
        "steps": result.steps,
        "examples_per_s": round(steady_examples / steady_s, 3) if steady_s > 0 else None,
        "tokens_per_s": round(steady_tokens / steady_s, 1) if steady_s > 0 else None,
        "first_step_s": round(marks[0] - started, 2),
        "final_loss": round(result.final_loss, 3) if result.final_loss is not None else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="JSON Lines training file (dialogue, summary)")
    ap.add_argument("--examples", type=int, default=48, help="examples per configuration, the same for all (default 48)")
    ap.add_argument("--threads", type=_ints, default=[1, 2], help="comma-separated torch thread counts (default 1,2)")
    ap.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16 (default both)")
    ap.add_argument("--batch", type=_ints, default=[4, 8, 16], help="comma-separated batch sizes (default 4,8,16)")
    ap.add_argument("--lora-layers", type=_ints, default=[0],
                    help="comma-separated: LoRA on the top N blocks, 0 for all (default 0), as finetune --lora-layers")
    ap.add_argument("--max-tokens", type=int, default=640, help="longest example kept, as finetune --max-tokens")
    ap.add_argument("--prompt-format", choices=PROMPT_FORMATS, default=COMPACT)
    ap.add_argument("--speakers", choices=SPEAKER_MODES, default=NAMES)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--cache-dir", default="data/model-cache", help="where the converted GGUF model is cached")
    ap.add_argument("--records", type=int, default=1000, help="records read to draw the sample from (default 1000)")
    args = ap.parse_args()

    records = load_records(args.data, args.records)
    texts = build_examples(records, 0, args.prompt_format, args.speakers)
    # The sample is drawn once, from the examples that fit, so every configuration trains on the same data.
    probe = load_backend(args.model, device="cpu", cache_dir=args.cache_dir)
    fitting = [text for text in texts if tokenize(probe, [text], args.max_tokens)[0]]
    picked = random.Random(0).sample(fitting, min(args.examples, len(fitting)))
    mean_tokens = sum(len(ex.ids) for ex in tokenize(probe, picked, args.max_tokens)[0]) / len(picked)
    del probe
    print(f"{len(picked)} examples of {len(fitting)} that fit {args.max_tokens} tokens; mean {mean_tokens:.0f} tokens "
          f"(prompt + answer, {args.prompt_format} prompts)", file=sys.stderr)

    rows = []
    for threads in args.threads:
        for precision in [p for p in args.precision.split(",") if p]:
            for batch in args.batch:
                for layers in args.lora_layers:
                    row = measure(args.model, args.cache_dir, picked, threads, precision, batch, args.max_tokens, layers)
                    rows.append(row)
                    print(f"threads {threads} {precision} batch {batch} LoRA layers {row['lora_layers']}: "
                          f"{row['examples_per_s']} examples/s", file=sys.stderr)

    best = max(rows, key=lambda r: r["examples_per_s"] or 0)
    print("| threads | precision | batch | LoRA layers | examples/s | s per example | tokens/s | first step s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        rate = r["examples_per_s"] or 0
        mark = " **fastest**" if r is best else ""
        print(f"| {r['threads']} | {r['precision']} | {r['batch']} | {r['lora_layers']} | {rate:.3f}{mark} | "
              f"{(1 / rate if rate else float('nan')):.2f} | {r['tokens_per_s']} | {r['first_step_s']} |")
    print(json.dumps({"examples": len(picked), "mean_tokens": round(mean_tokens, 1), "max_tokens": args.max_tokens,
                      "prompt_format": args.prompt_format, "rows": rows, "fastest": best}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
