"""Fine-tune the serving model with LoRA on dialogue/summary pairs, then score base vs tuned.

``python -m bot finetune --data train.jsonl --out DIR [--eval dev.jsonl]``
trains an adapter for whatever ``MODEL`` points at (the embedded model by
default), checkpointing as it goes (``--resume`` continues exactly; Ctrl-C
saves a checkpoint), and writes the adapter with a model card. Serve it with
``MODEL_ADAPTER=DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from engine.models import ModelLoadError
from engine.prompts import COMPACT, PROMPT_FORMATS
from engine.speakers import SPEAKER_MODES, TAGS
from tuning.data import FinetuneDataError, build_examples
from tuning.scoring import EvalDataError, load_records

from .eval_run import evaluate
from .cli_common import EXIT_FAILED, EXIT_INPUT, apply_model_overrides, positive_float, positive_int
from .config import ConfigError, Config

DATA_LICENCES = {"dialogsum": "CC BY-NC-SA 4.0 (DialogSum, Chen et al. 2021)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="JSON Lines training file: {\"dialogue\": ..., \"summary\": ...} per line")
    parser.add_argument("--out", required=True, help="directory for the adapter, its model card and checkpoints")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="train on the first N records only")
    parser.add_argument("--eval", metavar="FILE", help="score base and tuned model on this JSON Lines file at the end")
    parser.add_argument("--eval-limit", type=positive_int, default=200, metavar="N", help="records of --eval to score (default: 200)")
    parser.add_argument("--epochs", type=positive_float, default=1.0, help="passes over the data (default: 1)")
    parser.add_argument("--max-steps", type=positive_int, help="stop after this many optimizer steps (overrides --epochs)")
    parser.add_argument("--lr", type=positive_float, default=3e-4, help="peak learning rate (default: 3e-4)")
    parser.add_argument("--rank", type=positive_int, default=16, help="LoRA rank (default: 16)")
    parser.add_argument("--lora-layers", type=positive_int, metavar="N",
                        help="adapt only the top N transformer blocks (default: all); the backward pass stops "
                             "below them, so a step costs less on a CPU")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="examples per step (default: 8)")
    parser.add_argument("--max-tokens", type=positive_int, default=768, help="longest example (prompt + summary) kept (default: 768)")
    parser.add_argument("--seed", type=int, default=0, help="seed for names, data order and LoRA init (default: 0)")
    parser.add_argument("--checkpoint-every", type=positive_int, default=50, metavar="N", help="save a checkpoint every N steps")
    parser.add_argument("--checkpoint-dir", help="where checkpoints go (default: OUT/checkpoint)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint, exactly")
    parser.add_argument("--stop-at", type=positive_int, metavar="STEP",
                        help="train only to this step of the run and write that step's adapter (a pilot to score "
                             "early); the same command with --resume and without --stop-at goes on to the end")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 autocast on CUDA where supported, fp32 elsewhere")
    parser.add_argument("--prompt-format", choices=PROMPT_FORMATS, default=COMPACT,
                        help="the prompts to train on, and then serve the adapter with: compact (one short instruction; "
                             "the default) or rules (the full rules an untuned model gets)")
    parser.add_argument("--speakers", choices=SPEAKER_MODES, default=TAGS,
                        help="how the model sees people: tags (the default: #Person1#..., mapped back to the exact "
                             "names after generation; it scored higher) or names (as the chat shows them); "
                             "recorded in the adapter")
    parser.add_argument("--name", help="adapter name shown in /status and logs (default: the --out folder's name)")
    parser.add_argument("--licence", help="licence of the training data, for the model card (default: guessed from the file name)")
    parser.add_argument("--model", help="`embedded`, a hub id or a local directory (overrides MODEL)")
    parser.add_argument("--model-file", help="GGUF file inside the model directory or repo (overrides MODEL_FILE)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (overrides DEVICE)")


def _settings(settings: Config, args: argparse.Namespace) -> Config:
    # The adapter is trained on the bare base model.
    return dataclasses.replace(apply_model_overrides(settings, args), model_adapter="none")


def _licence(args: argparse.Namespace) -> str:
    if args.licence:
        return args.licence
    name = Path(args.data).name.lower()
    return next((text for key, text in DATA_LICENCES.items() if key in name), "not stated (pass --licence)")


def main(args: argparse.Namespace, settings: Config) -> int:
    from tuning.trainer import FinetuneError, Interrupted, TrainConfig, Trainer, tokenize
    from engine.models import load_backend

    out = Path(args.out).expanduser()
    try:
        settings = _settings(settings, args)
        records = load_records(args.data, args.limit)
        texts = build_examples(records, args.seed, args.prompt_format, args.speakers)
        eval_records = load_records(args.eval, args.eval_limit) if args.eval else None
    except (EvalDataError, FinetuneDataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    config = TrainConfig(rank=args.rank, lr=args.lr, batch_size=args.batch_size, seed=args.seed, epochs=args.epochs,
                         max_steps=args.max_steps, max_tokens=args.max_tokens, checkpoint_every=args.checkpoint_every,
                         precision=args.precision, prompt_format=args.prompt_format, speakers=args.speakers,
                         lora_layers=args.lora_layers)
    print(f"Loading model {settings.model}...", file=sys.stderr)
    try:
        backend = load_backend(settings.model, model_file=settings.model_file, device=settings.device, dtype=settings.dtype,
                               cpu_threads=settings.cpu_threads, cache_dir=settings.model_cache_dir)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    examples, skipped = tokenize(backend, texts, args.max_tokens)
    kinds = Counter(ex.kind for ex in examples)
    print(f"{len(records)} records -> {len(examples)} examples ({', '.join(f'{n} {k}' for k, n in kinds.items())}); "
          f"{skipped} skipped as longer than --max-tokens {args.max_tokens}", file=sys.stderr)
    name = args.name or out.name
    given = sys.argv[1:]  # the options after the subcommand (global ones such as --env-file come before it)
    command = "python -m bot finetune " + shlex.join(given[given.index("finetune") + 1:] if "finetune" in given else given)
    run_info = {"data": Path(args.data).name, "data_licence": _licence(args), "records": len(records),
                "examples": len(examples), "examples_by_kind": dict(kinds), "skipped": skipped, "command": command,
                "rank": args.rank, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed, "device": backend.device,
                "prompt_format": args.prompt_format, "speakers": args.speakers, "precision": args.precision,
                "lora_layers": args.lora_layers}
    checkpoint_dir = Path(args.checkpoint_dir).expanduser() if args.checkpoint_dir else None
    try:
        trainer = Trainer(backend, examples, config, out, checkpoint_dir, run_info)
        print(f"Training {trainer.total} steps of {args.batch_size} on {backend.device}"
              f"{f', resuming from {trainer.checkpoint_dir}' if args.resume else ''}...", file=sys.stderr)
        result = trainer.train(resume=args.resume, stop_at=args.stop_at)
    except Interrupted as exc:
        print(f"stopped at step {exc.step}; checkpoint saved in {trainer.checkpoint_dir}. "
              "Run the same command with --resume to continue.", file=sys.stderr)
        return 130
    except FinetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    trainer.run_info.update(epochs=round(result.epochs, 3), final_loss=result.final_loss,
                            examples_seen=result.examples_seen, train_seconds=round(result.train_seconds, 1),
                            examples_per_s=round(result.examples_per_s, 3), threads=_threads(),
                            planned_steps=trainer.total,
                            **({"replanned": list(trainer.replanned)} if trainer.replanned else {}))
    trainer.save_adapter(name, backend.name)
    print(f"Adapter saved in {out} ({result.steps} steps, final loss {result.final_loss:.3f}, {result.seconds / 60:.1f} min).",
          file=sys.stderr)
    base_name = backend.name
    del trainer, backend
    scores = None
    if eval_records is not None:
        scores = compare(eval_records, settings, out)
        if scores is None:
            return EXIT_FAILED
    write_model_card(out, name, run_info, result.steps, scores, base_name)
    print(f"Model card: {out / 'README.md'}. Serve with MODEL_ADAPTER={out}", file=sys.stderr)
    return 0


def compare(records: list[Any], settings: Config, adapter: Path) -> dict[str, Any] | None:
    """Base and tuned scores on the same records, default style and length, printed side by side."""
    rows: dict[str, Any] = {}
    for label, value in (("base", "none"), ("tuned", str(adapter))):
        print(f"Scoring the {label} model on {len(records)} records...", file=sys.stderr)
        try:
            rows[label] = evaluate(records, dataclasses.replace(settings, model_adapter=value), "short", "paragraph")
        except Exception as exc:  # noqa: BLE001 - the adapter is saved; a failed score must say so, not lose it
            print(f"error: scoring the {label} model failed: {exc}", file=sys.stderr)
            return None
    print(compare_table(rows))
    return rows


def compare_table(rows: dict[str, Any]) -> str:
    base = rows["base"]
    lines = ["| model | ROUGE-1 | ROUGE-2 | ROUGE-L | absent names | copies of one message |", "|---|---|---|---|---|---|"]
    for label, key in (("lead-2", "lead2"), ("lead-3", "lead3")):
        s = base[key]
        lines.append(f"| {label} | {s['rouge1']:.2f} | {s['rouge2']:.2f} | {s['rougeL']:.2f} | | |")
    for label, result in rows.items():
        s = result["pipeline"]
        lines.append(f"| {label} ({result['model']}) | {s['rouge1']:.2f} | {s['rouge2']:.2f} | {s['rougeL']:.2f} | "
                     f"{result['absent_names']} of {result['n']} | {result.get('copies', '?')} of {result['n']} |")
    return "\n".join(lines)


def _speaker_data(info: dict[str, Any]) -> str:
    if info.get("speakers") == "tags":
        return "Speaker tags like `#Person1#` were kept, as the adapter sees people in serving"
    return "Speaker tags like `#Person1#` were replaced by seeded names"


def _snapshot(info: dict[str, Any], steps: int) -> str:
    planned = info.get("planned_steps")
    note = f" of a run planned for {planned} (stopped early with --stop-at)" if planned and planned > steps else ""
    replanned = info.get("replanned")
    if replanned:
        first, end, at = replanned
        note += f" (first planned for {first}; re-planned to end at {end} when resumed at step {at})"
    return note


def _layers(info: dict[str, Any]) -> str:
    return f" of the top {info['lora_layers']} blocks" if info.get("lora_layers") else ""


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _speed(info: dict[str, Any]) -> str:
    """Examples seen, examples per second and training wall time (resumes included), when the run recorded them."""
    if not info.get("examples_seen"):
        return ""
    minutes, seconds = divmod(round(float(info.get("train_seconds") or 0)), 60)
    return (f" ({info.get('threads', '?')} threads, {info.get('precision', 'auto')} precision): "
            f"{info['examples_seen']:,} examples seen in {minutes // 60}:{minutes % 60:02d}:{seconds:02d} of training, "
            f"{info.get('examples_per_s', 0):.2f} examples/s")


def write_model_card(out: Path, name: str, info: dict[str, Any], steps: int, scores: dict[str, Any] | None, model: str,
                     scored_with: str | None = None) -> None:
    how = scored_with or f"`python -m bot eval` (style paragraph, length short) on {scores['base']['n'] if scores else 0} records of the eval file"
    score_text = (
        f"Scored with {how}:\n\n{compare_table(scores)}\n" if scores else "Not scored (run with `--eval FILE`).\n"
    )
    card = f"""# {name}: a Recap summarization adapter

A LoRA adapter (rank {info['rank']}, all linear layers{_layers(info)}) for **{model}**, trained by Recap's
`finetune` command to write chat summaries for Recap's `{info.get('prompt_format', 'rules')}` prompts (no written answer start),
seeing people by {'speaker tags (`#Person1#`, mapped back to names after generation)' if info.get('speakers') == 'tags' else 'their names'}.
Serve it with `MODEL_ADAPTER={out}` (merged into the weights at load).

- Base model: {model}
- Training data: `{info['data']}`, {info['records']} records -> {info['examples']} examples
  ({', '.join(f'{n} {k}' for k, n in info['examples_by_kind'].items())}); {info['skipped']} skipped as too long.
  {_speaker_data(info)}; summaries were cited with `[n]` of the
  message sharing the most content words; bullets examples are the reference's own sentences.
  `channel-notes` and `channel-combine` examples come from synthetic long channels (made, not real): 3 to 5
  training dialogues one after another, numbered as one conversation, for the map and combine stages.
- Data licence: {info['data_licence']}. This adapter is derived from that data and carries its licence.
- Training: {steps} steps{_snapshot(info, steps)}, batch {info['batch_size']}, peak learning rate {info['lr']}, seed {info['seed']},
  {info.get('epochs', '?')} epochs, final loss {info.get('final_loss') or 0:.3f}, on {info['device']}{_speed(info)}.
- Command: `{info['command']}`
- Written {time.strftime('%Y-%m-%d')}.

## Scores

{score_text}"""
    (out / "README.md").write_text(card, encoding="utf-8")
