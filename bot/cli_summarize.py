"""Summarize a DiscordChatExporter JSON export or a plain `Name: text` transcript, offline.

``python -m bot summarize export.json`` (or ``-`` for stdin) runs the same
summarizer and executor as the bot, with the model from the settings or
``--model``. Input problems print one line naming the place and exit with 2;
model or generation failures exit with 1.
"""

from __future__ import annotations

import argparse
import sys

from engine.generation import InvalidRequest
from engine.prompts import LENGTH, STYLE

from .cli_common import (
    EXIT_INPUT,
    add_choice_argument,
    add_model_arguments,
    apply_model_overrides,
    generation_from_args,
    positive_int,
)
from .config import ConfigError, Config
from .exports import ExportError, load_conversation
from .offline import summarize_and_print


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="DiscordChatExporter JSON export or `Name: text` transcript; `-` reads stdin")
    add_choice_argument(parser, LENGTH)
    add_choice_argument(parser, STYLE)
    parser.add_argument("--limit", type=positive_int, metavar="N", help="summarize only the last N messages")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_model_arguments(parser)


def main(args: argparse.Namespace, settings: Config) -> int:
    try:
        conversation = load_conversation(args.path, attachment_max_bytes=settings.attachment_max_bytes)
        settings = apply_model_overrides(settings, args)
        generation = generation_from_args(args, args.length)
    except (ExportError, ConfigError, InvalidRequest) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if args.limit is not None:
        conversation.messages = conversation.messages[-args.limit:]
    return summarize_and_print(conversation, settings, args.length, args.style, generation, as_json=args.json)
