"""A small fake Discord (REST + gateway) for end-to-end tests through discord.py's real transport.

Point a client at it with ``discord.http.Route.BASE = fake.api_base`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)``
(the bot's runner does this from RECAP_DISCORD_API_BASE / RECAP_DISCORD_GATEWAY, with RECAP_TEST_MODE=1,
for loopback URLs only).
"""

from .interactions import CommandMismatch, InteractionRecord
from .server import FakeDiscord, Recorded, Upload
from .world import Channel, Member, Message, User, World, overwrite

__all__ = ["CommandMismatch", "Channel", "FakeDiscord", "InteractionRecord", "Member", "Message", "Recorded",
           "Upload", "User", "World", "overwrite"]
