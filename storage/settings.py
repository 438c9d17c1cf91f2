"""Per-server defaults with per-channel overrides for every registered setting.

Storage declares no setting itself: the application registers each one's declaration (name, default,
parsing rule) once at import (``bot/tunables.py``, which takes the generation settings from the
engine), as Red-DiscordBot's Config has its defaults registered. Reads resolve channel -> server ->
default and say where each value came from. Values are parsed on ``set`` so nothing out of range is
ever stored, and again when read, so a hand-edited or outdated row falls back instead of leaking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Protocol


from .connection import Connection
from .convert import check_id, to_ms, utc_now
from .errors import InvalidSetting

SERVER = 0  # channel_id of a server-wide value
RETENTION_DAYS = "retention_days"  # the one setting storage acts on itself (storage/privacy.py)


class SettingSpec(Protocol):
    """What storage needs of a setting's declaration (``engine.tunables.Tunable`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def default(self) -> Any: ...
    @property
    def help(self) -> str: ...
    def parse(self, value: Any) -> Any:
        """The typed value; raises ``ValueError`` with a message for the admin."""
    def allowed(self) -> str: ...


_registered: dict[str, SettingSpec] = {}
SPECS: Mapping[str, SettingSpec] = MappingProxyType(_registered)  # registration order: the order shown


def register(*specs: SettingSpec) -> None:
    """Declare settings; registering the same declaration again is a no-op, a different one an error."""
    for spec in specs:
        known = _registered.get(spec.name)
        if known is not None and known != spec:
            raise ValueError(f"setting {spec.name!r} is already registered with another declaration")
        _registered[spec.name] = spec


def defaults() -> dict[str, Any]:
    return {name: spec.default for name, spec in SPECS.items()}


def parse_value(spec: SettingSpec, value: Any) -> Any:
    try:
        return spec.parse(value)
    except ValueError as exc:
        raise InvalidSetting(spec.name, str(exc), spec.allowed()) from None


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
    return parse_value(_spec_for(name), value)


def _scope(channel_id: int | None) -> int:
    return SERVER if channel_id is None else check_id(channel_id, "channel id")


def _decode(name: str, raw: str) -> Any:
    """A stored value, re-validated so a hand-edited or outdated row falls back instead of leaking."""
    return parse_value(SPECS[name], json.loads(raw))


async def get_settings(conn: Connection, guild_id: int, channel_id: int | None = None) -> ResolvedSettings:
    gid = check_id(guild_id, "guild id")
    scopes = (SERVER,) if channel_id is None else (SERVER, _scope(channel_id))
    rows = await conn.execute_fetchall(
        f"SELECT channel_id, name, value FROM settings WHERE guild_id = ? AND channel_id IN ({', '.join('?' * len(scopes))})",
        (gid, *scopes),
    )
    values, sources = defaults(), {name: "default" for name in SPECS}
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


async def get_setting(conn: Connection, guild_id: int, name: str, channel_id: int | None = None) -> ResolvedSetting:
    _spec_for(name)
    resolved = await get_settings(conn, guild_id, channel_id)
    return ResolvedSetting(name, resolved[name], resolved.source(name))


async def set_setting(conn: Connection, guild_id: int, name: str, value: Any, channel_id: int | None = None) -> Any:
    """Validate and store one value for a server (``channel_id`` None) or a channel; returns the stored value."""
    spec = _spec_for(name)
    typed = parse_value(spec, value)
    if name == RETENTION_DAYS and channel_id is not None:
        raise InvalidSetting(name, "retention_days is a server-wide setting; set it without a channel.", spec.allowed())
    await conn.execute(
        "INSERT INTO settings (guild_id, channel_id, name, value, updated_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (guild_id, channel_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (check_id(guild_id, "guild id"), _scope(channel_id), name, json.dumps(typed), to_ms(utc_now())),
    )
    return typed


async def reset_setting(conn: Connection, guild_id: int, name: str | None = None, channel_id: int | None = None) -> int:
    """Remove one stored value (or all, when ``name`` is None) of a scope; returns rows removed."""
    sql = "DELETE FROM settings WHERE guild_id = ? AND channel_id = ?"
    args: list[Any] = [check_id(guild_id, "guild id"), _scope(channel_id)]
    if name is not None:
        _spec_for(name)
        sql += " AND name = ?"
        args.append(name)
    cur = await conn.execute(sql, args)
    return cur.rowcount


async def list_overrides(conn: Connection, guild_id: int) -> dict[int, dict[str, Any]]:
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
