"""Recap's Discord app, its configuration and its command lines."""

# Registers every tunable setting with the settings store before any entry point reads settings.
from . import tunables as _tunables  # noqa: F401
