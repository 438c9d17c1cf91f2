"""Tunable settings: each one declared once (name, type, default, range, help) and checked by one rule.

The generation settings are declared here; the length and style presets in ``prompts``; the bot's own
(message windows, privacy, retention) in ``bot/tunables.py``. The same declaration gives the stored
per-server settings (registered with ``storage.settings``), the ``/settings`` options, the command-line
flags and the check ``GenerationSettings`` runs before anything reaches the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class InvalidTunable(ValueError):
    """A value a tunable does not allow; the message names the setting and what is allowed."""

    def __init__(self, name: str, message: str, allowed: str) -> None:
        super().__init__(message)
        self.name = name
        self.allowed = allowed


@dataclass(frozen=True)
class Tunable:
    name: str
    kind: type  # bool, int, float or str (str: one of ``choices``)
    default: Any
    help: str  # one line, at most 100 characters (Discord's option description limit)
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    zero_means: str | None = None  # 0 is allowed below ``minimum`` and means this
    flag: str | None = None  # the command-line flag, when it is not --<name>

    def __post_init__(self) -> None:
        if len(self.help) > 100:
            raise ValueError(f"{self.name}: help text is longer than Discord's 100 characters")
        self.parse(self.default)  # a default outside its own range is a declaration bug

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def allowed(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.choices:
            return ", ".join(self.choices)
        span = f"{_num(self.minimum)} to {_num(self.maximum)}"
        return f"0 ({self.zero_means}) or {span}" if self.zero_means else span

    def parse(self, value: Any) -> Any:
        """The typed value from a typed value or its text (``" 0.7"``, ``"on"``, ``" Bullets"``).

        Raises ``InvalidTunable``. Used where a value enters: an admin's command, a stored row, a flag.
        """
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
                return value.strip().lower() in _TRUE
            raise self._bad(value)
        if self.kind is str:
            if isinstance(value, str) and value.strip().lower() in (self.choices or ()):
                return value.strip().lower()
            raise self._bad(value)
        number = parse_number(value, self.kind)
        if number is None:
            raise self._bad(value)
        return self.check(number)

    def check(self, value: Any) -> Any:
        """``value`` unchanged if it already has the right type and is allowed; raises ``InvalidTunable``."""
        if self.kind is bool or self.kind is str:
            if self.parse(value) != value:
                raise self._bad(value)
            return value
        typed = isinstance(value, self.kind) and not isinstance(value, bool)
        if self.kind is float:
            typed = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not typed:
            raise self._bad(value)
        if self.zero_means and value == 0:
            return value
        assert self.minimum is not None and self.maximum is not None
        if not self.minimum <= value <= self.maximum:
            raise self._bad(value)
        return value

    def _bad(self, value: Any) -> InvalidTunable:
        return InvalidTunable(self.name, f"{self.name} cannot be {value!r} (allowed: {self.allowed()}).", self.allowed())


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


def parse_number(value: Any, kind: type) -> Any:
    """``value`` (a number or its text) as ``kind`` (int or float), or None: not a number, not whole for
    an int, not finite. The one number reader for tunables and for the environment settings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip()) if kind is float else int(value.strip())
        except ValueError:
            return None
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) else None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


# --- the generation settings ---------------------------------------------------------------
# Admins tune these per server (per-channel overrides); the command line takes them as flags.

MAX_NEW_TOKENS = Tunable(
    "max_new_tokens", int, 0, "Most tokens a summary may generate (0: from the length preset).",
    minimum=16, maximum=1024, zero_means="from the length preset",
)
TEMPERATURE = Tunable("temperature", float, 0.7, "Sampling temperature (used when sampling is on).",
                      minimum=0.05, maximum=2.0)
TOP_P = Tunable("top_p", float, 0.9, "Nucleus sampling: keep the most likely tokens up to this probability.",
                minimum=0.05, maximum=1.0)
TOP_K = Tunable("top_k", int, 50, "Sample only from the k most likely tokens (0: no limit).", minimum=0, maximum=500)
# Off by default: a summary has to reuse the chat's names and words, and a penalty on every token already
# seen (transformers counts the prompt's) pushed the tuned model off them (ROUGE-L 29.5 -> 32.9 on dev-200
# without it; README, Quality). Loops are caught afterwards, and the retry turns it on (summarizer.retry_settings).
REPETITION_PENALTY = Tunable("repetition_penalty", float, 1.0, "Penalty for repeating tokens (1.0: none).",
                             minimum=1.0, maximum=2.0)
SAMPLING = Tunable("sampling", bool, False, "Sample (varied wording) instead of greedy decoding.", flag="--sample")

GENERATION_TUNABLES: tuple[Tunable, ...] = (MAX_NEW_TOKENS, TEMPERATURE, TOP_P, TOP_K, REPETITION_PENALTY, SAMPLING)
