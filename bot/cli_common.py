"""What the command-line entry points share: exit codes, argument types and the model options.

Each CLI imports from here, never from another CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

from engine.generation import GenerationSettings
from engine.prompts import generation_for
from engine.tunables import GENERATION_TUNABLES, InvalidTunable, Tunable

from .config import FIELDS, Config

EXIT_INPUT = 2  # the user's input or options are wrong
EXIT_FAILED = 1  # the model could not load or could not summarize


def positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} must be 1 or more")
    return value


def tunable_flag(tunable: Tunable) -> Callable[[str], Any]:
    """An argparse ``type`` that applies the tunable's own rule (the one /settings applies)."""

    def parse(raw: str) -> Any:
        try:
            return tunable.parse(raw)
        except InvalidTunable as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model and generation options shared by ``summarize`` and ``eval``: one flag per generation tunable."""
    group = parser.add_argument_group("model and generation (default: the settings / the length preset)")
    group.add_argument("--model", help="`embedded`, a Hugging Face hub id, or a local directory (overrides MODEL)")
    group.add_argument("--model-file", help="GGUF file inside the model directory or repo (overrides MODEL_FILE)")
    group.add_argument("--adapter", help="fine-tuned adapter directory, `none` or `auto` (overrides MODEL_ADAPTER)")
    group.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (overrides DEVICE)")
    for tunable in GENERATION_TUNABLES:
        if tunable.kind is bool:  # --sample / --no-sample
            text = f"{tunable.help} (default: {'on' if tunable.default else 'off'})"
            group.add_argument(tunable.cli_flag, dest=tunable.name, action=argparse.BooleanOptionalAction, help=text)
        else:
            text = f"{tunable.help} Allowed: {tunable.allowed()}; default: {tunable.default}."
            group.add_argument(tunable.cli_flag, dest=tunable.name, type=tunable_flag(tunable),
                               metavar=tunable.kind.__name__.upper(), help=text)
    group.add_argument("--seed", type=int, help="random seed for --sample, for repeatable output")


def add_choice_argument(parser: argparse.ArgumentParser, tunable: Tunable, *, default: str | None = None,
                        extra: tuple[str, ...] = ()) -> None:
    """``--length`` / ``--style`` with the engine's presets (``extra``: choices this command adds)."""
    chosen = default or tunable.default
    parser.add_argument(tunable.cli_flag, dest=tunable.name, choices=[*(tunable.choices or ()), *extra],
                        default=chosen, help=f"{tunable.help} (default: {chosen})")


def apply_model_overrides(settings: Config, args: argparse.Namespace) -> Config:
    """The settings with ``--model``/``--model-file``/``--device`` applied; raises ``ConfigError``."""
    changes: dict[str, Any] = {}
    if args.model is not None:
        changes["model"] = FIELDS["model"].parse("--model", args.model)
    if args.model_file is not None:
        changes["model_file"] = FIELDS["model_file"].parse("--model-file", args.model_file)
    if args.device is not None:
        changes["device"] = FIELDS["device"].parse("--device", args.device)
    if getattr(args, "adapter", None) is not None:
        changes["model_adapter"] = FIELDS["model_adapter"].parse("--adapter", args.adapter)
    return dataclasses.replace(settings, **changes) if changes else settings


def generation_from_args(args: argparse.Namespace, length: str) -> GenerationSettings:
    """The length preset with the command line's generation flags (each checked as it was parsed)."""
    return generation_for(length, seed=args.seed, **{t.name: getattr(args, t.name) for t in GENERATION_TUNABLES})


def positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{raw!r} must be more than 0")
    return value
