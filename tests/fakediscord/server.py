"""``FakeDiscord``: the aiohttp app on 127.0.0.1 that a real, unpatched discord.py client talks to.

Every HTTP request is recorded with its JSON body (and uploaded files) so tests can
assert on exactly what the bot sent. Exceptions inside the fake are kept in ``errors``
rather than swallowed, so a broken fake fails the test that hit it.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from aiohttp import web

from . import interactions, payloads
from .gateway import Gateway
from .interactions import InteractionRecord
from .request_keys import JSON_BODY, UPLOADS, Upload
from .rest import DiscordError, RestApi
from .snowflake import new_snowflake
from .world import Channel, Member, Message, World

API_PREFIX = "/api/v10"

T = TypeVar("T")

# Interaction callbacks and webhook messages authenticate with the interaction token, not the bot token.
_TOKEN_FREE = re.compile(r"^/(interactions|webhooks)/\d+/[^/]+")


@dataclass
class Recorded:
    """One HTTP request the bot made. ``path`` is relative to ``/api/v10`` for API calls."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    uploads: list[Upload] = field(default_factory=list)
    status: int = 0
    at: float = 0.0

    def __repr__(self) -> str:
        return f"<{self.method} {self.path} {self.query or ''} -> {self.status}>"


def _json(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json": discord.py does not parse a body labelled with a charset.
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def _parse_multipart(content_type: str, raw: bytes) -> tuple[Any, list[Upload]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    body: Any = {}
    uploads: list[Upload] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition") or ""
        data = part.get_payload(decode=True) or b""
        if name == "payload_json":
            body = json.loads(data)
        else:
            uploads.append(Upload(str(name), part.get_filename() or str(name), data, part.get_content_type()))
    return body, uploads


class FakeDiscord:
    def __init__(self, world: World | None = None, *, token: str | None = None,
                 heartbeat_interval_ms: int = 41_250) -> None:
        self.world = world or World()
        self.token = token  # None: any non-empty token is accepted
        self.requests: list[Recorded] = []
        self.unhandled: list[Recorded] = []
        self.errors: list[str] = []
        self.interactions: dict[str, InteractionRecord] = {}
        self.gateway = Gateway(self, heartbeat_interval_ms)
        self.rest = RestApi(self)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "FakeDiscord":
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/", self.gateway.handle)
        self.rest.add_routes(app, API_PREFIX)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.host = host
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self.gateway.disconnect_all(code=1001)
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeDiscord":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    # -- bookkeeping -----------------------------------------------------------------------

    def token_ok(self, token: str | None) -> bool:
        if not token:
            return False
        return token == self.token if self.token is not None else True

    def fail(self, message: str) -> None:
        self.errors.append(message)

    async def changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], T], *, timeout: float, what: str) -> T:
        """Wait until ``predicate()`` is truthy (re-checked on every request and gateway event)."""
        async with self._changed:
            try:
                return await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                recent = ", ".join(repr(r) for r in self.requests[-8:])
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; recent requests: "
                                     f"[{recent}]; fake errors: {self.errors}") from None

    def requests_to(self, method: str, path_pattern: str) -> list[Recorded]:
        rx = re.compile(path_pattern)
        return [r for r in self.requests if r.method == method and rx.fullmatch(r.path)]

    async def wait_for_request(self, method: str, path_pattern: str, *, timeout: float,
                               since: int = 0) -> Recorded:
        """The first request matching, counting only requests recorded after index ``since``."""
        rx = re.compile(path_pattern)

        def found() -> Recorded | None:
            return next((r for r in self.requests[since:] if r.method == method and rx.fullmatch(r.path)), None)

        return await self.wait_for(found, timeout=timeout, what=f"{method} {path_pattern}")

    async def wait_identified(self, *, timeout: float, count: int = 1) -> None:
        await self.wait_for(lambda: len(self.gateway.identifies) >= count, timeout=timeout,
                            what=f"IDENTIFY #{count}")

    def message_bodies(self) -> list[dict[str, Any]]:
        """Every body the bot sent that can show a message (send, reply, edit, followup)."""
        out: list[dict[str, Any]] = []
        for r in self.requests:
            if not isinstance(r.body, dict):
                continue
            if r.method == "POST" and r.path.endswith("/callback"):
                if r.body.get("type") in (4, 7) and r.body.get("data"):
                    out.append(r.body["data"])
            elif (r.method == "POST" and re.fullmatch(r"/(channels/\d+/messages|webhooks/\d+/[^/]+)", r.path)) or (
                    r.method == "PATCH" and re.fullmatch(r"/(channels/\d+|webhooks/\d+/[^/]+)/messages/[^/]+", r.path)):
                out.append(r.body)
        return out

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/":
            return await handler(request)  # the gateway websocket
        api = request.path.startswith(API_PREFIX + "/")
        record = Recorded(request.method, request.path[len(API_PREFIX):] if api else request.path,
                          dict(request.query), None, at=asyncio.get_running_loop().time())
        try:
            raw = await request.read()
            if request.content_type == "multipart/form-data":
                record.body, record.uploads = _parse_multipart(request.headers["Content-Type"], raw)
            elif raw:
                record.body = json.loads(raw)
            request[JSON_BODY] = record.body if record.body is not None else {}
            request[UPLOADS] = record.uploads
            if api and not _TOKEN_FREE.match(record.path):
                auth = request.headers.get("Authorization", "")
                if not (auth.startswith("Bot ") and self.token_ok(auth[4:])):
                    raise DiscordError(401, 0, "401: Unauthorized")
            result = await handler(request)
            response = result if isinstance(result, web.StreamResponse) else (
                web.Response(status=204) if result is None else _json(result))
        except DiscordError as exc:
            response = _json({"message": exc.message, "code": exc.code}, exc.status)
        except web.HTTPException as exc:  # no such route or method
            response = _json({"message": f"{exc.status}: {exc.reason}", "code": 0}, exc.status)
            self.unhandled.append(record)
        except Exception as exc:  # noqa: BLE001 - reported through ``errors``; the bot sees a 500
            self.fail(f"{request.method} {request.path}: {exc!r}")
            response = _json({"message": "500: Internal Server Error", "code": 0}, 500)
        record.status = response.status
        self.requests.append(record)
        await self.changed()
        return response

    # -- acting as users -------------------------------------------------------------------

    async def slash(self, command: str, options: dict[str, Any] | None = None, *, invoker: Member | None = None,
                    channel: Channel | None = None) -> InteractionRecord:
        """Dispatch ``/command [sub ...]`` with ``options`` as ``invoker`` in ``channel``.

        ``command`` may name a subcommand path: ``"settings set"``. The command must have been
        synced: a guild command when one by that name exists in the channel's server, else a global one.
        """
        name, *path = command.split()
        world = self.world
        channel = channel or world.general
        guild_id = channel.guild_id or world.guild_id
        guild_scoped = any(c["name"] == name for c in world.guild_commands.get(guild_id, []))
        record = interactions.slash_command(world, name=name, path=path, values=options or {},
                                            invoker=invoker or world.member, channel=channel,
                                            guild_scoped=guild_scoped)
        return await self._send_interaction(record)

    async def click(self, message: Message, custom_id: str, *, invoker: Member | None = None) -> InteractionRecord:
        """Press the button ``custom_id`` on ``message`` (a component interaction)."""
        world = self.world
        invoker = invoker or world.member
        channel = world.channels[message.channel_id]
        guild_id = channel.guild_id or world.guild_id
        record = InteractionRecord(new_snowflake(), "Y29tcG9uZW50" + secrets.token_urlsafe(48), {}, channel.id,
                                   invoker.user.id)
        member = payloads.guild_member(world, guild_id, invoker)
        member["permissions"] = str(world.permissions_in(channel, invoker.user.id))
        record.payload = {
            "id": str(record.id), "application_id": str(world.application_id), "type": 3, "token": record.token,
            "version": 1, "guild_id": str(guild_id), "channel_id": str(channel.id),
            "guild": {"id": str(guild_id), "locale": "en-US", "features": []},
            "channel": payloads.channel(world, channel), "member": member,
            "message": payloads.message(world, message, self.base_url),
            "data": {"custom_id": custom_id, "component_type": 2},
            "app_permissions": str(world.permissions_in(channel, world.bot.id)), "locale": "en-US",
            "entitlements": [], "authorizing_integration_owners": {"0": str(guild_id)}, "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        return await self._send_interaction(record)

    async def _send_interaction(self, record: InteractionRecord) -> InteractionRecord:
        self.interactions[record.token] = record
        record.sent_at = asyncio.get_running_loop().time()
        if not await self.gateway.dispatch("INTERACTION_CREATE", record.payload):
            raise AssertionError("no identified gateway session to receive the interaction")
        return record

    async def post_message(self, channel: Channel, author: Member, content: str, **kwargs: Any) -> Message:
        """A member posts now: stored in history and sent to the bot as MESSAGE_CREATE."""
        message = self.world.add_message(channel.id, author, content, **kwargs)

        await self.gateway.dispatch("MESSAGE_CREATE", payloads.message(self.world, message, self.base_url,
                                                                       with_member=True))
        return message

    async def wait_answered(self, record: InteractionRecord, predicate: Callable[[InteractionRecord], bool],
                            *, timeout: float, what: str) -> InteractionRecord:
        await self.wait_for(lambda: predicate(record), timeout=timeout, what=what)
        return record
