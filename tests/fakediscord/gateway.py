"""The gateway websocket: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, RESUME, member chunks.

Frames go out as uncompressed JSON text, which discord.py accepts even though it asks
for ``compress=zlib-stream``.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from . import payloads

if TYPE_CHECKING:
    from .server import FakeDiscord

log = logging.getLogger(__name__)

GUILD_MEMBERS_INTENT, MESSAGE_CONTENT_INTENT = 1 << 1, 1 << 15

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, VOICE, RESUME, RECONNECT, REQUEST_MEMBERS, INVALID_SESSION, HELLO, \
    HEARTBEAT_ACK = 0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11


@dataclass
class Session:
    ws: web.WebSocketResponse
    session_id: str = ""
    seq: int = 0
    identified: bool = False
    intents: int = 0
    shard: tuple[int, int] = (0, 1)  # (shard id, shard count) from IDENTIFY
    heartbeats: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # dispatches, so RESUME can replay

    async def send(self, op: int, data: Any, event: str | None = None) -> None:
        frame: dict[str, Any] = {"op": op, "d": data, "s": None, "t": event}
        if op == DISPATCH:
            self.seq += 1
            frame["s"] = self.seq
            self.sent.append(frame)
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(frame))


def on_shard(guild_id: int, shard: tuple[int, int]) -> bool:
    """Discord's rule: a server is on shard (id >> 22) % count."""
    return (guild_id >> 22) % shard[1] == shard[0]


class Gateway:
    def __init__(self, fake: "FakeDiscord", heartbeat_interval_ms: int) -> None:
        self.fake = fake
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: list[Session] = []
        self.ended: dict[str, Session] = {}  # closed sessions by id, for RESUME
        self.identifies: list[dict[str, Any]] = []  # IDENTIFY payloads (token removed)
        self.close_codes: list[int | None] = []

    @property
    def live(self) -> list[Session]:
        return [s for s in self.sessions if s.identified and not s.ws.closed]

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=0)
        await ws.prepare(request)
        session = Session(ws)
        self.sessions.append(session)
        await session.send(HELLO, {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake-gateway"]})
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                    await self._on_frame(session, frame)
                except Exception as exc:  # noqa: BLE001 - a fake bug must show in the test, not kill the socket
                    self.fake.fail(f"gateway frame {msg.data[:200]!r}: {exc!r}")
        finally:
            self.sessions.remove(session)
            self.close_codes.append(ws.close_code)
            if session.session_id:
                self.ended[session.session_id] = session
            await self.fake.changed()
        return ws

    async def _on_frame(self, session: Session, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            session.heartbeats += 1
            await session.send(HEARTBEAT_ACK, None)
        elif op == IDENTIFY:
            await self._identify(session, data)
        elif op == RESUME:
            await self._resume(session, data)
        elif op == REQUEST_MEMBERS:
            world = self.fake.world
            guild_id = int(data.get("guild_id") or world.guild_id)
            members = [payloads.guild_member(world, guild_id, m) for m in world.members_in(guild_id)]
            await session.send(DISPATCH, {"guild_id": str(guild_id), "members": members, "chunk_index": 0,
                                          "chunk_count": 1, "not_found": [], "nonce": data.get("nonce")},
                               "GUILD_MEMBERS_CHUNK")
        elif op in (PRESENCE, VOICE):
            pass
        else:
            self.fake.fail(f"gateway: unexpected op {op}")

    async def _identify(self, session: Session, data: dict[str, Any]) -> None:
        if not self.fake.token_ok(data.get("token", "")):
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
        world = self.fake.world
        session.session_id = secrets.token_hex(16)
        session.identified = True
        session.intents = int(data.get("intents", 0))
        shard = data.get("shard") or [0, 1]
        session.shard = (int(shard[0]), int(shard[1]))
        self.identifies.append({k: v for k, v in data.items() if k != "token"})
        guild_ids = [g for g in world.guilds if on_shard(g, session.shard)]
        ready = {"v": 10, "user": {**payloads.user(world.bot), "verified": True, "mfa_enabled": False, "flags": 0},
                 "session_id": session.session_id, "session_type": "normal",
                 "resume_gateway_url": self.fake.gateway_url,
                 "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids],
                 "application": {"id": str(world.application_id), "flags": 0}, "private_channels": [],
                 "relationships": [], "presences": [], "geo_ordered_rtc_regions": [], "guild_join_requests": [],
                 "user_settings": {}, "shard": list(session.shard), "_trace": ["fake-gateway"]}
        await session.send(DISPATCH, ready, "READY")
        for guild_id in guild_ids:
            guild = payloads.guild(world, guild_id)
            if not session.intents & GUILD_MEMBERS_INTENT:
                # Without the members intent Discord sends only the bot's own member.
                guild["members"] = [payloads.guild_member(world, guild_id, world.bot_member)]
            await session.send(DISPATCH, guild, "GUILD_CREATE")
        await self.fake.changed()

    async def _resume(self, session: Session, data: dict[str, Any]) -> None:
        old = self.ended.pop(data.get("session_id", ""), None)
        if old is None or not self.fake.token_ok(data.get("token", "")):
            await session.send(INVALID_SESSION, False)
            return
        session.session_id, session.seq, session.identified = old.session_id, old.seq, True
        session.intents, session.sent = old.intents, old.sent
        missed = [f for f in old.sent if f["s"] > int(data.get("seq") or 0)]
        for frame in missed:
            await session.ws.send_str(json.dumps(frame))
        await session.send(DISPATCH, {"_trace": ["fake-gateway"]}, "RESUMED")
        await self.fake.changed()

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send ``event`` to every identified session of the shard its server is on (DMs: shard 0), as
        Discord does; returns how many got it. Two sessions of one shard both get it."""
        raw = str(data.get("guild_id") or "")
        guild_id = int(raw) if raw.isdigit() else 0
        sessions = [s for s in self.live if (on_shard(guild_id, s.shard) if guild_id else s.shard[0] == 0)]
        for session in sessions:
            await session.send(DISPATCH, self._visible(session, event, data), event)
        return len(sessions)

    def _visible(self, session: Session, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Without the message content intent, other people's messages arrive without their content."""
        if event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE") or session.intents & MESSAGE_CONTENT_INTENT:
            return data
        bot_id = str(self.fake.world.bot.id)
        if data.get("author", {}).get("id") == bot_id or any(m["id"] == bot_id for m in data.get("mentions", [])):
            return data
        return {**data, "content": "", "embeds": [], "attachments": [], "components": []}

    async def disconnect_all(self, code: int = 4000) -> None:
        """Drop every connection with ``code`` (4000: the client should resume)."""
        for session in list(self.sessions):
            await session.ws.close(code=code, message=b"fake gateway closing")
