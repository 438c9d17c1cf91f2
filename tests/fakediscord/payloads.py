"""JSON payloads in the shapes Discord sends (API v10), built from ``World`` records.

Ids and permission bit sets are strings, as on the wire. ``base_url`` is where the fake
serves attachment files, so discord.py downloads them from the fake.
"""

from __future__ import annotations

from typing import Any

from .snowflake import iso
from .world import DM, PUBLIC_THREAD, Attachment, Channel, Member, Message, Role, User, World


def user(u: User) -> dict[str, Any]:
    data: dict[str, Any] = {"id": str(u.id), "username": u.username, "global_name": u.global_name,
                            "discriminator": "0", "avatar": None, "public_flags": 0}
    if u.bot:
        data["bot"] = True
    return data


def member(m: Member, *, with_user: bool = True, role_ids: list[int] | None = None) -> dict[str, Any]:
    """``role_ids``: the member's roles in the server at hand (``World.role_ids_in``); default all."""
    roles = m.role_ids if role_ids is None else role_ids
    data: dict[str, Any] = {"roles": [str(r) for r in roles], "nick": m.nick, "avatar": None,
                            "joined_at": iso(m.joined_at), "premium_since": None, "deaf": False,
                            "mute": False, "flags": 0, "pending": False, "communication_disabled_until": None}
    if with_user:
        data["user"] = user(m.user)
    return data


def role(r: Role) -> dict[str, Any]:
    return {"id": str(r.id), "name": r.name, "color": r.color, "colors": {"primary_color": r.color},
            "hoist": False, "icon": None, "unicode_emoji": None, "position": r.position,
            "permissions": str(r.permissions), "managed": r.managed, "mentionable": False, "flags": 0}


def channel(world: World, c: Channel) -> dict[str, Any]:
    history = world.messages.get(c.id) or []
    last_id = str(history[-1].id) if history else None
    if c.type == DM:
        return {"id": str(c.id), "type": DM, "last_message_id": last_id, "flags": 0,
                "recipients": [user(world.users[r]) for r in c.recipients]}
    data: dict[str, Any] = {"id": str(c.id), "type": c.type, "guild_id": str(c.guild_id), "name": c.name,
                            "position": c.position, "parent_id": str(c.parent_id) if c.parent_id else None,
                            "last_message_id": last_id, "rate_limit_per_user": 0, "nsfw": False, "flags": 0}
    if c.type == PUBLIC_THREAD:
        data.update(owner_id=str(c.owner_id), message_count=len(history), member_count=1,
                    thread_metadata={"archived": c.archived, "auto_archive_duration": 1440, "locked": False,
                                     "archive_timestamp": iso(world.members[c.owner_id or world.bot.id].joined_at)})
    else:
        data.update(topic=c.topic, permission_overwrites=c.overwrites)
    return data


def guild_member(world: World, guild_id: int, m: Member, *, with_user: bool = True) -> dict[str, Any]:
    """A member as that server sees it: only its own roles."""
    return member(m, with_user=with_user, role_ids=world.role_ids_in(m, guild_id))


def guild(world: World, guild_id: int | None = None) -> dict[str, Any]:
    """GUILD_CREATE: ``member_count`` equals the members sent, so the client never asks for chunks."""
    g = world.guilds[guild_id or world.guild_id]
    members = world.members_in(g.id)
    mine = [c for c in world.channels.values() if c.guild_id == g.id]
    channels = [c for c in mine if c.type != PUBLIC_THREAD]
    threads = [c for c in mine if c.type == PUBLIC_THREAD and not c.archived]
    return {
        "id": str(g.id), "name": g.name, "icon": None, "splash": None, "banner": None,
        "description": None, "owner_id": str(g.owner_id), "afk_channel_id": None, "afk_timeout": 300,
        "verification_level": 0, "default_message_notifications": 1, "explicit_content_filter": 0,
        "mfa_level": 0, "premium_tier": 0, "premium_subscription_count": 0, "preferred_locale": "en-US",
        "system_channel_id": None, "system_channel_flags": 0, "rules_channel_id": None,
        "public_updates_channel_id": None, "nsfw_level": 0, "features": [], "emojis": [], "stickers": [],
        "roles": [role(r) for r in world.roles_in(g.id)],
        "channels": [channel(world, c) for c in channels],
        "threads": [channel(world, c) for c in threads],
        "members": [guild_member(world, g.id, m) for m in members], "member_count": len(members), "large": False,
        "unavailable": False, "joined_at": iso(world.bot_member.joined_at), "voice_states": [],
        "presences": [], "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        "application_id": None, "max_members": 500000,
    }


def attachment(a: Attachment, channel_id: int, base_url: str) -> dict[str, Any]:
    url = f"{base_url}/attachments/{channel_id}/{a.id}/{a.filename}"
    data: dict[str, Any] = {"id": str(a.id), "filename": a.filename, "size": len(a.data), "url": url,
                            "proxy_url": url}
    if a.content_type:
        data["content_type"] = a.content_type
    return data


def message(world: World, m: Message, base_url: str, *, with_member: bool = False,
            with_reference: bool = True) -> dict[str, Any]:
    c = world.channels.get(m.channel_id)
    guild_id = c.guild_id if c is not None else None
    in_guild = guild_id is not None
    data: dict[str, Any] = {
        "id": str(m.id), "channel_id": str(m.channel_id), "type": m.type, "flags": m.flags,
        "author": user(m.author), "content": m.content, "timestamp": iso(m.created_at),
        "edited_timestamp": iso(m.edited_at) if m.edited_at else None, "tts": False,
        "mention_everyone": m.mention_everyone,
        "mentions": [_mentioned(world, uid, guild_id) for uid in m.mention_ids],
        "mention_roles": [str(r) for r in m.role_mention_ids],
        "attachments": [attachment(a, m.channel_id, base_url) for a in m.attachments],
        "embeds": m.embeds, "components": m.components, "pinned": m.pinned, "reactions": [],
    }
    if in_guild:
        data["guild_id"] = str(guild_id)
        if with_member and m.author.id in world.members:
            data["member"] = guild_member(world, guild_id, world.members[m.author.id], with_user=False)
    if m.webhook_id:
        data["webhook_id"] = str(m.webhook_id)
        data["application_id"] = str(world.application_id)
    if m.interaction_id and m.interaction_user:
        data["interaction_metadata"] = {"id": str(m.interaction_id), "type": 2, "user": user(m.interaction_user),
                                        "authorizing_integration_owners": {"0": str(guild_id or world.guild_id)},
                                        "name": m.interaction_name}
    if m.reply_to:
        data["message_reference"] = {"type": 0, "message_id": str(m.reply_to), "channel_id": str(m.channel_id),
                                     "guild_id": str(guild_id) if in_guild else None}
        target = world.find_message(m.reply_to)
        if with_reference:
            data["referenced_message"] = (message(world, target, base_url, with_reference=False)
                                          if target else None)
    return data


def _mentioned(world: World, user_id: int, guild_id: int | None) -> dict[str, Any]:
    data = user(world.users[user_id])
    if guild_id is not None and user_id in world.guilds[guild_id].member_ids:
        data["member"] = guild_member(world, guild_id, world.members[user_id], with_user=False)
    return data


def application(world: World) -> dict[str, Any]:
    return {"id": str(world.application_id), "name": world.bot.username, "icon": None,
            "description": "Recap (fake)", "summary": "", "type": None, "bot_public": True,
            "bot_require_code_grant": False, "owner": user(world.owner.user), "team": None,
            "verify_key": "0" * 64, "flags": 0, "bot": user(world.bot), "tags": [],
            "approximate_guild_count": len(world.guilds), "redirect_uris": [], "interactions_endpoint_url": None,
            "integration_types_config": {"0": {}}, "install_params": None, "role_connections_verification_url": None}
