"""Logging set up once for the process, in discord.py's ``setup_logging`` style."""

from __future__ import annotations

import logging


def setup_logging(level: str = "INFO") -> None:
    import discord.utils

    discord.utils.setup_logging(level=getattr(logging, level), root=True)
    # Request-level chatter from discord.http is noise at INFO; keep warnings.
    logging.getLogger("discord.http").setLevel(logging.WARNING)
    for noisy in ("transformers", "accelerate", "urllib3", "filelock", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))
