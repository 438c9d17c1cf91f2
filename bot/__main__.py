"""``python -m bot``: the command line. Subcommands live in their own modules.

``start`` is what ``make run`` calls: the bot when DISCORD_TOKEN is set,
otherwise the offline demo (a summary of the bundled sample conversation).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .config import ConfigError, Config

# name -> (module, help). Each module has add_arguments(parser) and main(args, settings) -> int.
SUBCOMMANDS = {
    "start": ("bot.cli_start", "run the bot if DISCORD_TOKEN is set, else summarize the bundled sample offline"),
    "run": ("bot.runner", "run the Discord bot"),
    "summarize": ("bot.cli_summarize", "summarize a DiscordChatExporter JSON export or a plain transcript"),
    "eval": ("bot.cli_eval", "score the summarizer with ROUGE on a dialogue data set"),
    "finetune": ("bot.cli_finetune", "fine-tune the model (LoRA) on dialogue/summary pairs, then score base vs tuned"),
    "db": ("bot.cli_db", "database maintenance: migrate, stats, vacuum"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Recap: a self-hosted Discord summarizer bot.")
    parser.add_argument("--env-file", default=".env", help="settings file read before the environment (default: .env)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().splitlines()[0])
        module.add_arguments(sp)
        sp.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Config.load(args.env_file)
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    from .logs import setup_logging
    from .tunables import register_settings

    setup_logging(settings.log_level)
    register_settings()  # before any command reads a stored setting
    return int(args._module.main(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
