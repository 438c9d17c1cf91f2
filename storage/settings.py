"""Per-server defaults with per-channel overrides for every summary tunable.

``SPECS`` is the one declaration of each setting: type, built-in default, allowed values and
meaning. Reads resolve channel -> server -> built-in default and say where each value came from.
Values are validated on ``set`` so nothing out of range is ever stored; they are stored as JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import aiosqlite

from .convert import check_id, to_ms, utc_now
from .errors import InvalidSetting

SERVER = 0  # channel_id of a server-wide value

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


@dataclass(frozen=True)
class SettingSpec:
    name: str
    kind: type
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    zero_means: str | None = None  # 0 is allowed below ``minimum`` and means this

    def allowed(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.choices:
            return ", ".join(self.choices)
        span = f"{_num(self.minimum)} to {_num(self.maximum)}"
        return f"0 ({self.zero_means}) or {span}" if self.zero_means else span

    def validate(self, value: Any) -> Any:
        """The typed value, from a value of the right type or its text; raises InvalidSetting."""
        bad = InvalidSetting(self.name, f"{self.name} cannot be {value!r} (allowed: {self.allowed()}).", self.allowed())
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
                return value.strip().lower() in _TRUE
            raise bad
        if self.kind is str:
            if isinstance(value, str) and value.strip().lower() in (self.choices or ()):
                return value.strip().lower()
            raise bad
        number = _number(value, self.kind)
        if number is None:
            raise bad
        if self.zero_means and number == 0:
            return self.kind(0)
        assert self.minimum is not None and self.maximum is not None
        if not self.minimum <= number <= self.maximum:
            raise bad
        return number


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


def _number(value: Any, kind: type) -> Any:
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


def _spec(name: str, kind: type, default: Any, description: str, **limits: Any) -> tuple[str, SettingSpec]:
    return name, SettingSpec(name, kind, default, description, **limits)


SPECS: dict[str, SettingSpec] = dict(
    [
        _spec("length", str, "medium", "Summary length preset.", choices=("short", "medium", "long")),
        _spec("max_new_tokens", int, 0, "Most tokens a summary may generate.", minimum=16, maximum=1024, zero_means="from the length preset"),
        _spec("temperature", float, 0.7, "Sampling temperature (used when sampling is on).", minimum=0.05, maximum=2.0),
        _spec("top_p", float, 0.9, "Nucleus sampling: keep the most likely tokens up to this probability.", minimum=0.05, maximum=1.0),
        _spec("top_k", int, 50, "Sample only from the k most likely tokens (0: no limit).", minimum=0, maximum=500),
        _spec("repetition_penalty", float, 1.1, "Penalty for repeating tokens (1.0: none).", minimum=1.0, maximum=2.0),
        _spec("sampling", bool, False, "Sample (varied wording) instead of greedy decoding."),
        _spec("default_window", int, 100, "Messages summarized when /summarize is given no range.", minimum=1, maximum=1000),
        _spec("max_messages", int, 1000, "Most messages one summary may read.", minimum=1, maximum=5000),
        _spec("style", str, "paragraph", "Summary format.", choices=("paragraph", "bullets", "topics", "action_items", "key_messages")),
        _spec("private_default", bool, False, "Reply only to the requester unless they choose otherwise."),
        _spec("retention_days", int, 30, "Delete stored messages older than this many days (0: keep forever). Server-wide.", minimum=0, maximum=3650),
        _spec("enabled", bool, True, "Whether Recap summarizes and records messages here."),
    ]
)
DEFAULTS: dict[str, Any] = {name: spec.default for name, spec in SPECS.items()}


@dataclass(frozen=True)
class ResolvedSetting:
    name: str
    value: Any
    source: str  # "channel" | "server" | "default"


@dataclass(frozen=True)
class ResolvedSettings:
    values: dict[str, Any]
    sources: dict[str, str]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def source(self, name: str) -> str:
        return self.sources[name]

    def items(self) -> list[ResolvedSetting]:
        return [ResolvedSetting(n, self.values[n], self.sources[n]) for n in SPECS]


def _spec_for(name: str) -> SettingSpec:
    spec = SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        known = ", ".join(SPECS)
        raise InvalidSetting(str(name), f"There is no setting called {name!r} (settings: {known}).", known)
    return spec


def validate_setting(name: str, value: Any) -> Any:
    return _spec_for(name).validate(value)


def _scope(channel_id: int | None) -> int:
    return SERVER if channel_id is None else check_id(channel_id, "channel id")


def _decode(name: str, raw: str) -> Any:
    """A stored value, re-validated so a hand-edited or outdated row falls back instead of leaking."""
    return SPECS[name].validate(json.loads(raw))


async def get_settings(conn: aiosqlite.Connection, guild_id: int, channel_id: int | None = None) -> ResolvedSettings:
    gid = check_id(guild_id, "guild id")
    scopes = (SERVER,) if channel_id is None else (SERVER, _scope(channel_id))
    rows = await conn.execute_fetchall(
        f"SELECT channel_id, name, value FROM settings WHERE guild_id = ? AND channel_id IN ({', '.join('?' * len(scopes))})",
        (gid, *scopes),
    )
    values, sources = dict(DEFAULTS), {name: "default" for name in SPECS}
    # Server rows first, then channel rows override them.
    for scope, name, raw in sorted(rows, key=lambda r: r[0] != SERVER):
        if name not in SPECS:
            continue  # a setting a newer or older version wrote; ignore it
        try:
            values[name] = _decode(name, raw)
        except (InvalidSetting, ValueError):
            continue
        sources[name] = "server" if scope == SERVER else "channel"
    return ResolvedSettings(values, sources)


async def get_setting(conn: aiosqlite.Connection, guild_id: int, name: str, channel_id: int | None = None) -> ResolvedSetting:
    _spec_for(name)
    resolved = await get_settings(conn, guild_id, channel_id)
    return ResolvedSetting(name, resolved[name], resolved.source(name))


async def set_setting(conn: aiosqlite.Connection, guild_id: int, name: str, value: Any, channel_id: int | None = None) -> Any:
    """Validate and store one value for a server (``channel_id`` None) or a channel; returns the stored value."""
    spec = _spec_for(name)
    typed = spec.validate(value)
    if name == "retention_days" and channel_id is not None:
        raise InvalidSetting(name, "retention_days is a server-wide setting; set it without a channel.", spec.allowed())
    await conn.execute(
        "INSERT INTO settings (guild_id, channel_id, name, value, updated_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (guild_id, channel_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (check_id(guild_id, "guild id"), _scope(channel_id), name, json.dumps(typed), to_ms(utc_now())),
    )
    return typed


async def reset_setting(conn: aiosqlite.Connection, guild_id: int, name: str | None = None, channel_id: int | None = None) -> int:
    """Remove one stored value (or all, when ``name`` is None) of a scope; returns rows removed."""
    sql = "DELETE FROM settings WHERE guild_id = ? AND channel_id = ?"
    args: list[Any] = [check_id(guild_id, "guild id"), _scope(channel_id)]
    if name is not None:
        _spec_for(name)
        sql += " AND name = ?"
        args.append(name)
    cur = await conn.execute(sql, args)
    return cur.rowcount


async def list_overrides(conn: aiosqlite.Connection, guild_id: int) -> dict[int, dict[str, Any]]:
    """Every stored value of a server: scope (0 = server, else channel id) -> name -> value."""
    rows = await conn.execute_fetchall(
        "SELECT channel_id, name, value FROM settings WHERE guild_id = ? ORDER BY channel_id, name",
        (check_id(guild_id, "guild id"),),
    )
    out: dict[int, dict[str, Any]] = {}
    for scope, name, raw in rows:
        if name in SPECS:
            try:
                out.setdefault(scope, {})[name] = _decode(name, raw)
            except (InvalidSetting, ValueError):
                continue
    return out
