"""REST routes under ``/api/v10`` and the attachment file server.

Handlers raise ``DiscordError`` for the errors Discord itself returns (same status,
code and message), so the bot sees the exceptions it would see in production.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import payloads
from . import permissions as perms
from .snowflake import new_snowflake
from .world import CHAT_INPUT_COMMAND, DM, EPHEMERAL, LOADING, Attachment, Channel, Message

from .request_keys import JSON_BODY, UPLOADS, Upload

if TYPE_CHECKING:
    from .interactions import InteractionRecord
    from .server import FakeDiscord


class DiscordError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def unknown(what: str, code: int) -> DiscordError:
    return DiscordError(404, code, f"Unknown {what}")


MISSING_ACCESS = DiscordError(403, 50001, "Missing Access")
MISSING_PERMISSIONS = DiscordError(403, 50013, "Missing Permissions")


class RestApi:
    def __init__(self, fake: "FakeDiscord") -> None:
        self.fake = fake
        self.world = fake.world

    def add_routes(self, app: web.Application, prefix: str) -> None:
        r = app.router
        api: list[tuple[str, str, Any]] = [
            ("GET", "/users/@me", self.get_me),
            ("GET", "/users/{user_id:\\d+}", self.get_user),
            ("POST", "/users/@me/channels", self.open_dm),
            ("GET", "/oauth2/applications/@me", self.get_application),
            ("GET", "/applications/@me", self.get_application),
            ("GET", "/gateway", self.get_gateway),
            ("GET", "/gateway/bot", self.get_gateway),
            ("GET", "/applications/{app_id}/commands", self.get_commands),
            ("PUT", "/applications/{app_id}/commands", self.put_commands),
            ("POST", "/applications/{app_id}/commands", self.post_command),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self.get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self.put_commands),
            ("POST", "/applications/{app_id}/guilds/{guild_id}/commands", self.post_command),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self.interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self.create_followup),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self.get_webhook_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self.edit_webhook_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self.delete_webhook_message),
            ("GET", "/channels/{channel_id}", self.get_channel),
            ("GET", "/channels/{channel_id}/messages", self.get_history),
            ("POST", "/channels/{channel_id}/messages", self.create_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message),
            ("POST", "/channels/{channel_id}/typing", self.typing),
            ("GET", "/guilds/{guild_id}", self.get_guild),
            ("GET", "/guilds/{guild_id}/channels", self.get_guild_channels),
            ("GET", "/guilds/{guild_id}/roles", self.get_roles),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member),
        ]
        for method, path, handler in api:
            r.add_route(method, prefix + path, handler)
        r.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self.download)

    # -- helpers ---------------------------------------------------------------------------

    def render(self, message: Message) -> dict[str, Any]:
        return payloads.message(self.world, message, self.fake.base_url)

    def channel(self, request: web.Request) -> Channel:
        try:
            return self.world.channels[int(request.match_info["channel_id"])]
        except (KeyError, ValueError):
            raise unknown("Channel", 10003) from None

    def require(self, channel: Channel, needed: int) -> None:
        have = self.world.permissions_in(channel, self.world.bot.id)
        if not have & perms.VIEW_CHANNEL:
            raise MISSING_ACCESS
        if have & needed != needed:
            raise MISSING_PERMISSIONS

    def interaction(self, request: web.Request, id_key: str) -> "InteractionRecord":
        """The interaction named by the URL's token: callbacks give its id, webhooks the application id."""
        record = self.fake.interactions.get(request.match_info["token"])
        webhook = id_key == "app_id"
        expected = self.world.application_id if webhook else (record.id if record else None)
        if record is None or request.match_info[id_key] != str(expected):
            raise unknown("Webhook", 10015) if webhook else unknown("interaction", 10062)
        return record

    def message_from_body(self, body: dict[str, Any], channel_id: int, uploads: list["Upload"]) -> Message:
        message = Message(new_snowflake(), channel_id, self.world.bot, body.get("content") or "",
                          flags=int(body.get("flags") or 0) & EPHEMERAL,
                          embeds=body.get("embeds") or [], components=body.get("components") or [])
        message.attachments = [Attachment(new_snowflake(), u.filename, u.data, u.content_type) for u in uploads]
        ref = body.get("message_reference")
        if ref and ref.get("message_id"):
            message.reply_to = int(ref["message_id"])
            message.type = 19
        return message

    def apply_edit(self, message: Message, body: dict[str, Any], uploads: list["Upload"]) -> None:
        if "content" in body:
            message.content = body["content"] or ""
        if "embeds" in body:
            message.embeds = body["embeds"] or []
        if "components" in body:
            message.components = body["components"] or []
        if "attachments" in body or uploads:
            # Existing attachments listed by id stay; new files are listed by upload index.
            listed = {str(a.get("id")) for a in body.get("attachments") or []}
            message.attachments = [a for a in message.attachments if str(a.id) in listed]
            message.attachments += [Attachment(new_snowflake(), u.filename, u.data, u.content_type) for u in uploads]
        if message.flags & LOADING:
            message.flags &= ~LOADING  # the deferred "thinking" message becomes the answer
        else:
            message.edited_at = datetime.now(timezone.utc)

    async def announce(self, event: str, message: Message) -> None:
        if not message.flags & EPHEMERAL:
            await self.fake.gateway.dispatch(event, payloads.message(self.world, message, self.fake.base_url,
                                                                     with_member=True))

    # -- identity and commands -------------------------------------------------------------

    async def get_me(self, request: web.Request) -> Any:
        return {**payloads.user(self.world.bot), "verified": True, "mfa_enabled": False, "flags": 0}

    async def get_user(self, request: web.Request) -> Any:
        found = self.world.users.get(int(request.match_info["user_id"]))
        if found is None:
            raise unknown("User", 10013)
        return payloads.user(found)

    async def get_application(self, request: web.Request) -> Any:
        return payloads.application(self.world)

    async def get_gateway(self, request: web.Request) -> Any:
        return {"url": self.fake.gateway_url, "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}

    def _command_list(self, request: web.Request) -> list[dict[str, Any]]:
        if request.match_info["app_id"] != str(self.world.application_id):
            raise DiscordError(403, 20012, "You are not authorized to perform this action on this application")
        guild_id = request.match_info.get("guild_id")
        if guild_id is None:
            return self.world.global_commands
        if not guild_id.isdigit() or int(guild_id) not in self.world.guilds:
            raise MISSING_ACCESS
        return self.world.guild_commands.setdefault(int(guild_id), [])

    def _register(self, request: web.Request, command: dict[str, Any], existing: list[dict[str, Any]]) -> dict:
        if not command.get("name"):
            raise DiscordError(400, 50035, "Invalid Form Body")
        previous = next((c for c in existing if c["name"] == command["name"]
                         and c.get("type", 1) == command.get("type", 1)), None)
        saved = {"type": 1, "description": "", "options": [], **command,
                 "id": previous["id"] if previous else str(new_snowflake()),
                 "application_id": str(self.world.application_id), "version": str(new_snowflake()),
                 "default_member_permissions": command.get("default_member_permissions"), "nsfw": False}
        if "guild_id" in request.match_info:
            saved["guild_id"] = request.match_info["guild_id"]
        return saved

    async def get_commands(self, request: web.Request) -> Any:
        return self._command_list(request)

    async def put_commands(self, request: web.Request) -> Any:
        existing = self._command_list(request)
        body = request[JSON_BODY]
        if not isinstance(body, list):
            raise DiscordError(400, 50035, "Invalid Form Body")
        saved = [self._register(request, c, existing) for c in body]
        existing[:] = saved
        return saved

    async def post_command(self, request: web.Request) -> Any:
        existing = self._command_list(request)
        saved = self._register(request, request[JSON_BODY], existing)
        existing[:] = [c for c in existing if c["id"] != saved["id"]] + [saved]
        return saved

    # -- interactions ----------------------------------------------------------------------

    async def interaction_callback(self, request: web.Request) -> Any:
        record = self.interaction(request, "interaction_id")
        if record.callbacks:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        body, uploads = request[JSON_BODY], request[UPLOADS]
        kind = int(body.get("type", 0))
        if kind not in (1, 4, 5, 6, 7, 8, 9):
            raise DiscordError(400, 50035, "Invalid Form Body")
        record.callbacks.append({"at": asyncio.get_running_loop().time(), "body": body})
        data = body.get("data") or {}
        answer: dict[str, Any] = {"id": str(record.id), "type": record.payload["type"]}
        resource: dict[str, Any] = {"type": kind}
        if kind in (4, 5):
            message = self.message_from_body(data, record.channel_id, uploads)
            message.type, message.webhook_id = CHAT_INPUT_COMMAND, self.world.application_id
            message.interaction_id, message.interaction_name = record.id, record.payload["data"].get("name")
            message.interaction_user = self.world.users[record.user_id]
            if kind == 5:
                message.flags |= LOADING
            self.world.store(message)
            record.original_message_id = message.id
            answer.update(response_message_id=str(message.id), response_message_loading=kind == 5,
                          response_message_ephemeral=bool(message.flags & EPHEMERAL))
            resource["message"] = self.render(message)
            await self.announce("MESSAGE_CREATE", message)
        elif kind == 7:
            message = self.world.find_message(int(record.payload["message"]["id"]))
            if message is None:
                raise unknown("Message", 10008)
            self.apply_edit(message, data, uploads)
            record.original_message_id = message.id
            resource["message"] = self.render(message)
            await self.announce("MESSAGE_UPDATE", message)
        elif kind == 6 and record.payload.get("message"):
            record.original_message_id = int(record.payload["message"]["id"])
        await self.fake.changed()
        return {"interaction": answer, "resource": resource}

    async def create_followup(self, request: web.Request) -> Any:
        record = self.interaction(request, "app_id")
        if not record.callbacks:
            raise unknown("Webhook", 10015)
        body, uploads = request[JSON_BODY], request[UPLOADS]
        record.followups.append(body)
        original = self.world.find_message(record.original_message_id or 0)
        if original is not None and original.flags & LOADING:
            # Discord: the first followup after a deferral replaces the "thinking" message.
            self.apply_edit(original, body, uploads)
            message = original
            await self.announce("MESSAGE_UPDATE", message)
        else:
            message = self.message_from_body(body, record.channel_id, uploads)
            message.webhook_id = self.world.application_id
            self.world.store(message)
            await self.announce("MESSAGE_CREATE", message)
        record.followup_message_ids.append(message.id)
        await self.fake.changed()
        if request.query.get("wait", "false").lower() != "true":
            return None
        return self.render(message)

    def _webhook_message(self, request: web.Request) -> tuple[Any, Message]:
        record = self.interaction(request, "app_id")
        raw = request.match_info["message_id"]
        message_id = record.original_message_id if raw == "@original" else int(raw)
        if raw != "@original" and message_id not in record.followup_message_ids:
            raise unknown("Message", 10008)
        message = self.world.find_message(message_id or 0)
        if message is None:
            raise unknown("Message", 10008)
        return record, message

    async def get_webhook_message(self, request: web.Request) -> Any:
        return self.render(self._webhook_message(request)[1])

    async def edit_webhook_message(self, request: web.Request) -> Any:
        record, message = self._webhook_message(request)
        self.apply_edit(message, request[JSON_BODY], request[UPLOADS])
        if request.match_info["message_id"] == "@original":
            record.edits.append(request[JSON_BODY])
        else:
            record.followups.append(request[JSON_BODY])
        await self.announce("MESSAGE_UPDATE", message)
        await self.fake.changed()
        return self.render(message)

    async def delete_webhook_message(self, request: web.Request) -> Any:
        _, message = self._webhook_message(request)
        self.world.remove_message(message.id)
        return None

    # -- channels and messages -------------------------------------------------------------

    async def get_channel(self, request: web.Request) -> Any:
        channel = self.channel(request)
        self.require(channel, perms.VIEW_CHANNEL)
        return payloads.channel(self.world, channel)

    async def get_history(self, request: web.Request) -> Any:
        """Newest first, as Discord: plain and ``before=`` pages go back in time; ``after=`` returns the
        ``limit`` oldest messages strictly after the anchor (still newest first); ``around=`` centres."""
        channel = self.channel(request)
        self.require(channel, perms.VIEW_CHANNEL)
        if not self.world.permissions_in(channel, self.world.bot.id) & perms.READ_MESSAGE_HISTORY:
            return []  # Discord answers an empty page rather than an error
        q = request.query
        try:
            limit = int(q.get("limit", "50"))
        except ValueError:
            raise DiscordError(400, 50035, "Invalid Form Body") from None
        if not 1 <= limit <= 100:
            raise DiscordError(400, 50035, "Invalid Form Body (limit: must be between 1 and 100)")
        history = self.world.messages.get(channel.id, [])  # oldest first
        if "around" in q:
            anchor = int(q["around"])
            older = [m for m in history if m.id < anchor][-(limit // 2):] if limit // 2 else []
            newer = [m for m in history if m.id >= anchor][: limit - len(older)]
            page = older + newer
        elif "after" in q:
            page = [m for m in history if m.id > int(q["after"])][:limit]
        elif "before" in q:
            page = [m for m in history if m.id < int(q["before"])][-limit:]
        else:
            page = history[-limit:]
        return [self.render(m) for m in reversed(page)]

    async def get_message(self, request: web.Request) -> Any:
        channel = self.channel(request)
        self.require(channel, perms.READ_MESSAGE_HISTORY)
        message = self.world.find_message(int(request.match_info["message_id"]))
        if message is None or message.channel_id != channel.id or message.flags & EPHEMERAL:
            raise unknown("Message", 10008)
        return self.render(message)

    async def create_message(self, request: web.Request) -> Any:
        channel = self.channel(request)
        self.require(channel, perms.SEND_MESSAGES_IN_THREADS if channel.type == 11 else perms.SEND_MESSAGES)
        body = request[JSON_BODY]
        if not (body.get("content") or body.get("embeds") or request[UPLOADS] or body.get("components")):
            raise DiscordError(400, 50006, "Cannot send an empty message")
        message = self.message_from_body(body, channel.id, request[UPLOADS])
        message.flags = 0
        if message.reply_to and self.world.find_message(message.reply_to) is None:
            raise DiscordError(400, 50035, "Invalid Form Body (message_reference: Unknown message)")
        self.world.store(message)
        await self.announce("MESSAGE_CREATE", message)
        await self.fake.changed()
        return self.render(message)

    def _own_message(self, request: web.Request) -> Message:
        channel = self.channel(request)
        message = self.world.find_message(int(request.match_info["message_id"]))
        if message is None or message.channel_id != channel.id:
            raise unknown("Message", 10008)
        return message

    async def edit_message(self, request: web.Request) -> Any:
        message = self._own_message(request)
        if message.author.id != self.world.bot.id:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        self.apply_edit(message, request[JSON_BODY], request[UPLOADS])
        await self.announce("MESSAGE_UPDATE", message)
        return self.render(message)

    async def delete_message(self, request: web.Request) -> Any:
        message = self._own_message(request)
        if message.author.id != self.world.bot.id:
            self.require(self.world.channels[message.channel_id], perms.MANAGE_MESSAGES)
        self.world.remove_message(message.id)
        await self.fake.gateway.dispatch("MESSAGE_DELETE", {"id": str(message.id), "channel_id":
                                         str(message.channel_id),
                                         "guild_id": str(self.world.channels[message.channel_id].guild_id)})
        return None

    async def typing(self, request: web.Request) -> Any:
        self.channel(request)
        return None

    async def open_dm(self, request: web.Request) -> Any:
        recipient = int(request[JSON_BODY].get("recipient_id", 0))
        if recipient not in self.world.users:
            raise unknown("User", 10013)
        return payloads.channel(self.world, self.world.open_dm(recipient))

    # -- guild -----------------------------------------------------------------------------

    def _guild(self, request: web.Request) -> int:
        raw = request.match_info["guild_id"]
        if not raw.isdigit() or int(raw) not in self.world.guilds:
            raise unknown("Guild", 10004)
        return int(raw)

    async def get_guild(self, request: web.Request) -> Any:
        data = payloads.guild(self.world, self._guild(request))
        for key in ("channels", "threads", "members", "voice_states", "presences"):
            data.pop(key)
        return data

    async def get_guild_channels(self, request: web.Request) -> Any:
        guild_id = self._guild(request)
        return [payloads.channel(self.world, c) for c in self.world.channels.values()
                if c.guild_id == guild_id and c.type not in (DM, 11)]

    async def get_roles(self, request: web.Request) -> Any:
        return [payloads.role(r) for r in self.world.roles_in(self._guild(request))]

    async def get_member(self, request: web.Request) -> Any:
        guild_id = self._guild(request)
        user_id = int(request.match_info["user_id"])
        found = self.world.members.get(user_id)
        if found is None or user_id not in self.world.guilds[guild_id].member_ids:
            raise unknown("Member", 10007)
        return payloads.guild_member(self.world, guild_id, found)

    # -- files -----------------------------------------------------------------------------

    async def download(self, request: web.Request) -> web.StreamResponse:
        found = self.world.attachment(int(request.match_info["attachment_id"]))
        if found is None or found.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=found.data, content_type=found.content_type or "application/octet-stream")
