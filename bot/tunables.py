"""Every setting a server admin can tune, in the order ``/settings show`` lists them.

The generation settings and the length/style presets are declared by the engine; the bot's own
(message windows, privacy, retention, on/off) here. ``register_settings()`` declares all of them to the
settings store; the command-line entry point and the bot's client call it before anything reads a setting.
"""

from __future__ import annotations

from engine.prompts import LENGTH, STYLE
from engine.tunables import GENERATION_TUNABLES, Tunable
from storage import settings as store

DEFAULT_WINDOW = Tunable("default_window", int, 100, "Messages summarized when /summarize is given no range.",
                         minimum=1, maximum=1000)
MAX_MESSAGES = Tunable("max_messages", int, 1000, "Most messages one summary may read.", minimum=1, maximum=5000)
PRIVATE_DEFAULT = Tunable("private_default", bool, False, "Reply only to the requester unless they choose otherwise.")
RETENTION_DAYS = Tunable(store.RETENTION_DAYS, int, 30,
                         "Delete stored messages older than this many days (0: keep forever). Server-wide.",
                         minimum=0, maximum=3650)
ENABLED = Tunable("enabled", bool, True, "Whether Recap summarizes and records messages here.")

SETTINGS: tuple[Tunable, ...] = (
    LENGTH,
    *GENERATION_TUNABLES,
    DEFAULT_WINDOW,
    MAX_MESSAGES,
    STYLE,
    PRIVATE_DEFAULT,
    RETENTION_DAYS,
    ENABLED,
)
BY_NAME: dict[str, Tunable] = {t.name: t for t in SETTINGS}


def register_settings() -> None:
    """Declare every setting to the settings store (again: a no-op)."""
    store.register(*SETTINGS)
