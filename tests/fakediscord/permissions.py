"""Permission bits and Discord's overwrite algorithm, so the fake refuses what Discord refuses."""

from __future__ import annotations

from typing import Iterable

CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38

ALL = (1 << 51) - 1

# What @everyone gets in a freshly created server (the parts a text bot cares about).
EVERYONE_DEFAULT = (
    CREATE_INSTANT_INVITE | ADD_REACTIONS | VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES
    | READ_MESSAGE_HISTORY | MENTION_EVERYONE | USE_EXTERNAL_EMOJIS | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS
)


def base_permissions(guild_id: int, owner_id: int, user_id: int, role_ids: Iterable[int],
                     role_permissions: dict[int, int]) -> int:
    """Server-wide permissions: the owner and administrators get everything."""
    if user_id == owner_id:
        return ALL
    perms = role_permissions.get(guild_id, 0)
    for role_id in role_ids:
        perms |= role_permissions.get(role_id, 0)
    return ALL if perms & ADMINISTRATOR else perms


def apply_overwrites(perms: int, guild_id: int, user_id: int, role_ids: Iterable[int],
                     overwrites: list[dict]) -> int:
    """Channel permissions: @everyone overwrite, then all role overwrites together, then the member's."""
    if perms & ADMINISTRATOR or perms == ALL:
        return ALL
    by_id = {int(o["id"]): o for o in overwrites}
    everyone = by_id.get(guild_id)
    if everyone:
        perms = (perms & ~int(everyone["deny"])) | int(everyone["allow"])
    allow = deny = 0
    for role_id in role_ids:
        o = by_id.get(role_id)
        if o and o["type"] == 0:
            allow |= int(o["allow"])
            deny |= int(o["deny"])
    perms = (perms & ~deny) | allow
    member = by_id.get(user_id)
    if member and member["type"] == 1:
        perms = (perms & ~int(member["deny"])) | int(member["allow"])
    # Without View Channel nothing else in the channel applies.
    return perms if perms & VIEW_CHANNEL else 0
