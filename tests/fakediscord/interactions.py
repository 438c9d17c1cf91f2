"""Slash-command interactions built from the commands the bot actually synced.

Options are checked against the synced schema (names, types, choices, required), so
a test that drifts from the real command fails with a message naming the difference.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from . import payloads
from .snowflake import new_snowflake
from .world import Channel, Member, World

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11


class CommandMismatch(AssertionError):
    """The test asked for a command or option the bot did not sync."""


@dataclass
class InteractionRecord:
    """One interaction and everything the bot answered to it, in order."""

    id: int
    token: str
    payload: dict[str, Any]
    channel_id: int
    user_id: int
    sent_at: float = 0.0  # loop time when INTERACTION_CREATE went out
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # {"at", "body"}
    edits: list[dict[str, Any]] = field(default_factory=list)  # bodies of PATCH @original
    followups: list[dict[str, Any]] = field(default_factory=list)  # bodies of POST /webhooks/...
    original_message_id: int | None = None
    followup_message_ids: list[int] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return bool(self.callbacks)

    def all_bodies(self) -> list[dict[str, Any]]:
        """Every message body the bot sent for this interaction (initial response data, edits, followups)."""
        first = [c["body"].get("data") or {} for c in self.callbacks]
        return [*first, *self.edits, *self.followups]

    def embeds(self) -> list[dict[str, Any]]:
        return [e for body in self.all_bodies() for e in body.get("embeds") or []]

    def error_text(self) -> str | None:
        """An error answer: an initial text-only response, or the deferred reply edited to text with no embeds."""
        for callback in self.callbacks:
            data = callback["body"].get("data") or {}
            if callback["body"].get("type") == 4 and data.get("content") and not data.get("embeds"):
                return data["content"]
        for body in [*self.edits, *self.followups]:
            if body.get("embeds") == [] and body.get("content"):
                return body["content"]
        return None

    def is_final(self) -> bool:
        """The bot's last word: a summary (its details embed has fields) or an error answer."""
        return any(e.get("fields") for e in self.embeds()) or self.error_text() is not None

    def texts(self) -> list[str]:
        """All visible text: contents and every embed part, for loose assertions."""
        out: list[str] = []
        for body in self.all_bodies():
            if body.get("content"):
                out.append(body["content"])
            for e in body.get("embeds") or []:
                out += [e.get("title") or "", e.get("description") or ""]
                out += [f"{f.get('name', '')}\n{f.get('value', '')}" for f in e.get("fields") or []]
                out.append((e.get("footer") or {}).get("text") or "")
        return [t for t in out if t]


def find_command(commands: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for command in commands:
        if command["name"] == name and command.get("type", 1) == 1:
            return command
    raise CommandMismatch(f"/{name} was not synced; synced: {sorted(c['name'] for c in commands)}")


def build_options(world: World, schema: dict[str, Any], path: list[str], values: dict[str, Any],
                  resolved: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``options`` list for ``path`` (subcommand names below the command) with ``values``."""
    if path:
        sub = next((o for o in schema.get("options") or [] if o["name"] == path[0]
                    and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)), None)
        if sub is None:
            known = [o["name"] for o in schema.get("options") or []]
            raise CommandMismatch(f"/{schema['name']} has no subcommand {path[0]!r}; it has {known}")
        return [{"type": sub["type"], "name": sub["name"],
                 "options": build_options(world, sub, path[1:], values, resolved)}]
    declared = {o["name"]: o for o in schema.get("options") or []}
    unknown = set(values) - set(declared)
    if unknown:
        raise CommandMismatch(f"/{schema['name']} has no option {sorted(unknown)}; it has {sorted(declared)}")
    missing = [n for n, o in declared.items() if o.get("required") and n not in values]
    if missing:
        raise CommandMismatch(f"/{schema['name']} needs {missing}")
    return [_option(world, declared[name], value, resolved) for name, value in values.items()]


def _option(world: World, spec: dict[str, Any], value: Any, resolved: dict[str, dict[str, Any]]) -> dict[str, Any]:
    kind = spec["type"]
    choices = spec.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise CommandMismatch(f"option {spec['name']!r}={value!r} is not one of {[c['value'] for c in choices]}")
    if kind in (INTEGER, NUMBER):
        low, high = spec.get("min_value"), spec.get("max_value")
        if (low is not None and value < low) or (high is not None and value > high):
            raise CommandMismatch(f"option {spec['name']!r}={value} is outside {low}..{high}; Discord would refuse it")
    if kind == STRING:
        value = str(value)
    elif kind == INTEGER:
        value = int(value)
    elif kind == NUMBER:
        value = float(value)
    elif kind == BOOLEAN:
        value = bool(value)
    elif kind == CHANNEL:
        channel: Channel = value if isinstance(value, Channel) else world.channels[int(value)]
        entry = payloads.channel(world, channel)
        entry["permissions"] = str(world.permissions_in(channel, world.bot.id))
        resolved.setdefault("channels", {})[str(channel.id)] = entry
        value = str(channel.id)
    elif kind in (USER, MENTIONABLE):
        target: Member = value if isinstance(value, Member) else world.members[int(value)]
        resolved.setdefault("users", {})[str(target.user.id)] = payloads.user(target.user)
        resolved.setdefault("members", {})[str(target.user.id)] = payloads.member(target, with_user=False)
        value = str(target.user.id)
    elif kind == ROLE:
        role = world.roles[int(getattr(value, "id", value))]
        resolved.setdefault("roles", {})[str(role.id)] = payloads.role(role)
        value = str(role.id)
    else:
        raise CommandMismatch(f"option type {kind} is not supported by the fake")
    return {"type": kind, "name": spec["name"], "value": value}


def slash_command(world: World, *, name: str, path: list[str], values: dict[str, Any], invoker: Member,
                  channel: Channel, guild_scoped: bool) -> InteractionRecord:
    """An INTERACTION_CREATE payload for ``/name path... values`` from ``invoker`` in ``channel``."""
    guild_id = channel.guild_id or world.guild_id
    commands = world.commands_for(guild_id if guild_scoped else None)
    schema = find_command(commands, name)
    resolved: dict[str, dict[str, Any]] = {}
    data: dict[str, Any] = {"id": schema["id"], "name": name, "type": 1,
                            "options": build_options(world, schema, path, values, resolved)}
    if resolved:
        data["resolved"] = resolved
    if guild_scoped:
        data["guild_id"] = str(guild_id)
    interaction_id = new_snowflake()
    token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48)
    member = payloads.guild_member(world, guild_id, invoker)
    member["permissions"] = str(world.permissions_in(channel, invoker.user.id))
    channel_payload = payloads.channel(world, channel)
    payload = {
        "id": str(interaction_id), "application_id": str(world.application_id), "type": 2, "token": token,
        "version": 1, "guild_id": str(guild_id),
        "guild": {"id": str(guild_id), "locale": "en-US", "features": []},
        "channel_id": str(channel.id), "channel": channel_payload, "member": member, "data": data,
        "app_permissions": str(world.permissions_in(channel, world.bot.id)), "locale": "en-US",
        "guild_locale": "en-US", "entitlements": [], "authorizing_integration_owners": {"0": str(guild_id)},
        "context": 0, "attachment_size_limit": 10 * 1024 * 1024,
    }
    return InteractionRecord(interaction_id, token, payload, channel.id, invoker.user.id)
