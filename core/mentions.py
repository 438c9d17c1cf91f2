"""The one ``allowed_mentions`` the bot sends with: nobody is ever pinged.

Summaries quote members, roles and @everyone; a reply must never ping them. Every send,
edit and followup passes ``NO_PINGS`` (the bot's default is the same, this keeps each call
explicit), and this is the only place it is built.
"""

from __future__ import annotations

import discord

NO_PINGS = discord.AllowedMentions.none()
