"""Run the bot when a token is configured, otherwise the offline demo."""

from __future__ import annotations

import argparse
import sys

from .config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace, settings: Config) -> int:
    if settings.discord_token:
        from . import runner

        return runner.main(args, settings)
    from .offline import run_demo

    print(
        "DISCORD_TOKEN is not set, so the bot will not connect to Discord.\n"
        "Running the offline demo instead: a summary of the bundled sample conversation.\n"
        "To run the bot, copy .env.example to .env and set DISCORD_TOKEN.\n",
        file=sys.stderr,
    )
    return run_demo(settings)
