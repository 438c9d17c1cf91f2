"""Score the summarizer with ROUGE on a JSON Lines dialogue set, beside lead-2/lead-3 baselines.

``python -m bot eval --data dev.jsonl --limit 200`` summarizes every dialogue
through the real executor (all submitted at once, bounded so the executor can
batch them without refusing any), then prints ROUGE-1/2/L F1 for the pipeline
and the baselines, the throughput, and how many summaries name someone who is
not in the conversation. With ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.generation import GenerationError, InvalidRequest
from engine.models import ModelLoadError
from engine.prompts import LENGTH, STYLE, STYLES
from tuning.data import with_names
from tuning.scoring import EvalDataError, load_records

from .cli_common import (
    EXIT_FAILED,
    EXIT_INPUT,
    add_choice_argument,
    add_model_arguments,
    apply_model_overrides,
    generation_from_args,
    positive_int,
)
from .config import ConfigError, Config
from .eval_run import NAMES_SEED, evaluate, format_styles, format_table
from .exports import ExportError, parse_transcript


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="JSON Lines file: {\"dialogue\": ..., \"summary\" or \"summary1\"..\"summary3\": ...}")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N records")
    parser.add_argument("--json", action="store_true", help="end the output with one JSON line of the results")
    parser.add_argument("--names", action="store_true",
                        help="replace #PersonN# tags with seeded names in dialogues and references, as in a real chat")
    add_choice_argument(parser, LENGTH, default="short")
    add_choice_argument(parser, STYLE, extra=("all",))  # all: one row per style
    add_model_arguments(parser)


def main(args: argparse.Namespace, settings: Config) -> int:
    try:
        records = load_records(args.data, args.limit)
        if args.names:
            records = [with_names(r, NAMES_SEED) for r in records]
        for r in records:  # fail on a bad dialogue before the model loads
            parse_transcript(r.dialogue, f"{args.data}: record on line {r.line}")
        settings = apply_model_overrides(settings, args)
        generation = generation_from_args(args, args.length)
    except (EvalDataError, ExportError, ConfigError, InvalidRequest) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    styles = list(STYLES) if args.style == "all" else [args.style]
    print(f"Loading model {settings.model_label} and summarizing {len(records)} dialogues...", file=sys.stderr)
    rows = []
    try:
        for style in styles:
            rows.append(evaluate(records, settings, args.length, style, generation,
                                 label=f"{style}: " if len(styles) > 1 else "", names=args.names))
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except GenerationError as exc:
        print(f"error: {exc.user_message} ({exc})", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 130
    print(format_table(rows[0]) if len(rows) == 1 else format_styles(rows))
    if args.json:
        keys = ("pipeline", "lead2", "lead3", "dialogues_per_s", "n", "absent_names", "copies", "self_references",
                "repeated", "failed", "fallbacks", "names", "speakers", "model")
        if len(rows) == 1:
            print(json.dumps({k: rows[0][k] for k in keys}, ensure_ascii=False))
        else:
            print(json.dumps({row["style"]: {k: row[k] for k in keys} for row in rows}, ensure_ascii=False))
    return 0
