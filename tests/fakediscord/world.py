"""What the fake Discord knows: servers with roles, channels, members, messages and commands.

Records are plain dataclasses; ``payloads.py`` turns them into the JSON shapes
discord.py parses. Tests seed and inspect a ``World`` directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable

from . import permissions as perms
from .snowflake import new_snowflake, snowflake_at

MENTION_RE = re.compile(r"<@!?(\d+)>")
ROLE_MENTION_RE = re.compile(r"<@&(\d+)>")

# Channel types used here (Discord's numbering).
TEXT, DM, PUBLIC_THREAD = 0, 1, 11
# Message types.
DEFAULT, REPLY, CHAT_INPUT_COMMAND = 0, 19, 20
# Message flags.
EPHEMERAL, LOADING = 1 << 6, 1 << 7


@dataclass
class User:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    color: int = 0
    guild_id: int | None = None  # None: the world's first server


@dataclass
class Member:
    user: User
    role_ids: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: datetime = field(default_factory=lambda: datetime(2024, 1, 1, tzinfo=timezone.utc))


@dataclass
class Channel:
    id: int
    name: str
    type: int = TEXT
    topic: str | None = None
    position: int = 0
    parent_id: int | None = None
    overwrites: list[dict] = field(default_factory=list)  # raw payload dicts, ids/bits as strings
    owner_id: int | None = None  # threads
    archived: bool = False
    recipients: list[int] = field(default_factory=list)  # DMs
    guild_id: int | None = None  # None for DMs; set by World.add_channel


@dataclass
class Guild:
    """A server the bot is in. Roles and channels name their server; members are listed here."""

    id: int
    name: str
    owner_id: int = 0
    member_ids: list[int] = field(default_factory=list)


@dataclass
class Attachment:
    id: int
    filename: str
    data: bytes
    content_type: str | None = None


@dataclass
class Message:
    id: int
    channel_id: int
    author: User
    content: str = ""
    type: int = DEFAULT
    flags: int = 0
    embeds: list[dict] = field(default_factory=list)
    components: list[dict] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    reply_to: int | None = None
    edited_at: datetime | None = None
    webhook_id: int | None = None
    interaction_id: int | None = None  # set on interaction responses
    interaction_user: User | None = None
    interaction_name: str | None = None
    mention_ids: list[int] = field(default_factory=list)
    role_mention_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    pinned: bool = False

    @property
    def created_at(self) -> datetime:
        from .snowflake import snowflake_time

        return snowflake_time(self.id)


class World:
    """One server, the bot in it, a few members with different permissions, and two text channels.

    ``general``: everyone reads it, except members with the Newcomer role, who may view but not
    read its history. ``staff``: only Moderators (and the bot) can see it.
    ``add_guild`` adds more servers (the bot is in each); ``guild_id`` stays the first one.
    """

    def __init__(self, *, guild_name: str = "Recap Test Server", bot_name: str = "Recap") -> None:
        self.bot = User(new_snowflake(), bot_name, bot=True)
        self.application_id = self.bot.id
        self.guild_id = new_snowflake()
        self.guild_name = guild_name
        self.users: dict[int, User] = {self.bot.id: self.bot}
        self.members: dict[int, Member] = {}
        self.roles: dict[int, Role] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, list[Message]] = {}
        self.ephemeral: list[Message] = []  # interaction replies only their invoker sees
        self.global_commands: list[dict] = []
        self.guild_commands: dict[int, list[dict]] = {}
        self.guilds: dict[int, Guild] = {self.guild_id: Guild(self.guild_id, guild_name)}

        self.everyone = self.add_role("@everyone", perms.EVERYONE_DEFAULT, role_id=self.guild_id)
        self.moderator_role = self.add_role("Moderator", perms.MANAGE_GUILD | perms.MANAGE_MESSAGES, position=2)
        self.newcomer_role = self.add_role("Newcomer", 0, position=1)
        self.bot_role = self.add_role(
            bot_name, perms.VIEW_CHANNEL | perms.SEND_MESSAGES | perms.EMBED_LINKS | perms.ATTACH_FILES
            | perms.READ_MESSAGE_HISTORY | perms.SEND_MESSAGES_IN_THREADS, position=3, managed=True)

        self.owner = self.add_member("ada", "Ada")
        self.moderator = self.add_member("bram", "Bram", roles=[self.moderator_role.id])
        self.member = self.add_member("chloe", "Chloe")
        self.newcomer = self.add_member("newt", "Newt", roles=[self.newcomer_role.id])
        self.bot_member = Member(self.bot, [self.bot_role.id])
        self.members[self.bot.id] = self.bot_member
        self.guilds[self.guild_id].member_ids.append(self.bot.id)
        self.guilds[self.guild_id].owner_id = self.owner.user.id

        self.general = self.add_channel("general", topic="Everything and nothing", overwrites=[
            overwrite(self.newcomer_role.id, 0, deny=perms.READ_MESSAGE_HISTORY)])
        self.staff = self.add_channel("staff", overwrites=[
            overwrite(self.guild_id, 0, deny=perms.VIEW_CHANNEL),
            overwrite(self.moderator_role.id, 0, allow=perms.VIEW_CHANNEL),
            overwrite(self.bot.id, 1, allow=perms.VIEW_CHANNEL)])

    @property
    def owner_id(self) -> int:
        return self.guilds[self.guild_id].owner_id

    # -- building -------------------------------------------------------------------------

    def add_guild(self, name: str, owner_name: str, *, shard: tuple[int, int] | None = None) -> Guild:
        """Another server with its own @everyone, the bot (with its managed role) and an owner member;
        with ``shard`` (id, count), its id puts it on that shard."""
        guild_id = new_snowflake()
        step = 0
        while shard is not None and (guild_id >> 22) % shard[1] != shard[0]:
            step += 1
            guild_id = snowflake_at(datetime.now(timezone.utc) + timedelta(milliseconds=step))
        guild = Guild(guild_id, name)
        self.guilds[guild.id] = guild
        self.add_role("@everyone", perms.EVERYONE_DEFAULT, role_id=guild.id, guild_id=guild.id)
        bot_role = self.add_role(self.bot.username, self.roles[self.bot_role.id].permissions, position=3, managed=True,
                                 guild_id=guild.id)
        # One Member record spans servers; each server sees only its own roles (``roles_in``).
        self.bot_member.role_ids.append(bot_role.id)
        guild.member_ids.append(self.bot.id)
        guild.owner_id = self.add_member(owner_name, guild_id=guild.id).user.id
        return guild

    def add_role(self, name: str, permissions: int, *, position: int = 0, managed: bool = False,
                 role_id: int | None = None, guild_id: int | None = None) -> Role:
        role = Role(role_id or new_snowflake(), name, permissions, position, managed, guild_id=guild_id or self.guild_id)
        self.roles[role.id] = role
        return role

    def add_member(self, username: str, display_name: str | None = None, *, roles: Iterable[int] = (),
                   bot: bool = False, guild_id: int | None = None) -> Member:
        user = User(new_snowflake(), username, display_name, bot)
        self.users[user.id] = user
        member = Member(user, list(roles))
        self.members[user.id] = member
        self.guilds[guild_id or self.guild_id].member_ids.append(user.id)
        return member

    def add_channel(self, name: str, *, type: int = TEXT, topic: str | None = None,
                    overwrites: list[dict] | None = None, parent_id: int | None = None,
                    owner_id: int | None = None, guild_id: int | None = None) -> Channel:
        channel = Channel(new_snowflake(), name, type, topic, len(self.channels), parent_id,
                          overwrites or [], owner_id, guild_id=None if type == DM else guild_id or self.guild_id)
        self.channels[channel.id] = channel
        self.messages[channel.id] = []
        return channel

    def add_thread(self, parent: Channel, name: str, owner: Member) -> Channel:
        return self.add_channel(name, type=PUBLIC_THREAD, parent_id=parent.id, owner_id=owner.user.id,
                                guild_id=parent.guild_id)

    def open_dm(self, user_id: int) -> Channel:
        for channel in self.channels.values():
            if channel.type == DM and channel.recipients == [user_id]:
                return channel
        channel = self.add_channel("", type=DM)
        channel.recipients = [user_id]
        return channel

    def add_message(self, channel_id: int, author: User | Member, content: str = "", *,
                    at: datetime | None = None, reply_to: int | None = None,
                    attachments: Iterable[tuple[str, bytes, str | None]] = (), **extra: object) -> Message:
        """Store a message; ``at`` sets its time, so its id sorts where that time belongs."""
        user = author.user if isinstance(author, Member) else author
        message_id = snowflake_at(at) if at else new_snowflake()
        message = Message(message_id, channel_id, user, content,
                          type=REPLY if reply_to else DEFAULT, reply_to=reply_to, **extra)  # type: ignore[arg-type]
        message.attachments = [Attachment(new_snowflake(), name, data, ctype) for name, data, ctype in attachments]
        message.mention_ids = [int(m) for m in MENTION_RE.findall(content) if int(m) in self.users]
        message.role_mention_ids = [int(m) for m in ROLE_MENTION_RE.findall(content) if int(m) in self.roles]
        self.store(message)
        return message

    def attach(self, message: Message, filename: str, data: bytes, content_type: str | None = None) -> Attachment:
        """Add a file to a stored message; the fake serves it at the attachment's URL."""
        attachment = Attachment(new_snowflake(), filename, data, content_type)
        message.attachments.append(attachment)
        return attachment

    def store(self, message: Message) -> None:
        if message.flags & EPHEMERAL:
            self.ephemeral.append(message)
            return
        history = self.messages.setdefault(message.channel_id, [])
        history.append(message)
        history.sort(key=lambda m: m.id)

    def seed_conversation(self, channel_id: int, lines: list[tuple[Member, str]], *,
                          start: datetime | None = None, spacing: timedelta = timedelta(minutes=2)) -> list[Message]:
        """Store ``(author, text)`` lines as consecutive messages, ``spacing`` apart."""
        start = start or datetime.now(timezone.utc) - spacing * (len(lines) + 5)
        return [self.add_message(channel_id, author, text, at=start + spacing * i)
                for i, (author, text) in enumerate(lines)]

    # -- reading --------------------------------------------------------------------------

    def find_message(self, message_id: int) -> Message | None:
        for history in self.messages.values():
            for message in history:
                if message.id == message_id:
                    return message
        return next((m for m in self.ephemeral if m.id == message_id), None)

    def remove_message(self, message_id: int) -> bool:
        for history in self.messages.values():
            for i, message in enumerate(history):
                if message.id == message_id:
                    del history[i]
                    return True
        return False

    def attachment(self, attachment_id: int) -> Attachment | None:
        for history in [*self.messages.values(), self.ephemeral]:
            for message in history:
                for attachment in message.attachments:
                    if attachment.id == attachment_id:
                        return attachment
        return None

    def guild_of(self, channel: Channel) -> Guild | None:
        """The server ``channel`` belongs to; None for a DM."""
        return self.guilds[channel.guild_id] if channel.guild_id is not None else None

    def roles_in(self, guild_id: int) -> list[Role]:
        return [r for r in self.roles.values() if r.guild_id == guild_id]

    def members_in(self, guild_id: int) -> list[Member]:
        return [self.members[uid] for uid in self.guilds[guild_id].member_ids]

    def role_ids_in(self, member: Member, guild_id: int) -> list[int]:
        """The member's roles in that server (a Member record may hold roles of several)."""
        return [r for r in member.role_ids if r in self.roles and self.roles[r].guild_id == guild_id]

    def permissions_in(self, channel: Channel, user_id: int) -> int:
        """The member's permissions in ``channel`` after overwrites; threads use their parent's."""
        guild = self.guild_of(channel)
        if guild is None:
            return perms.VIEW_CHANNEL | perms.SEND_MESSAGES | perms.READ_MESSAGE_HISTORY | perms.ATTACH_FILES
        member = self.members.get(user_id)
        if member is None or user_id not in guild.member_ids:
            return 0
        if channel.type == PUBLIC_THREAD and channel.parent_id in self.channels:
            channel = self.channels[channel.parent_id]
        role_ids = self.role_ids_in(member, guild.id)
        base = perms.base_permissions(guild.id, guild.owner_id, user_id, role_ids,
                                      {r.id: r.permissions for r in self.roles_in(guild.id)})
        return perms.apply_overwrites(base, guild.id, user_id, role_ids, channel.overwrites)

    def commands_for(self, guild_id: int | None) -> list[dict]:
        return self.guild_commands.get(guild_id, []) if guild_id else self.global_commands


def overwrite(target_id: int, target_type: int, *, allow: int = 0, deny: int = 0) -> dict:
    """A permission overwrite payload; ``target_type`` 0 is a role, 1 a member."""
    return {"id": str(target_id), "type": target_type, "allow": str(allow), "deny": str(deny)}
