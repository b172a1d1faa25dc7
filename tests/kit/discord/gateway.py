"""The fake gateway websocket: HELLO -> IDENTIFY (token and intents checked) -> READY ->
GUILD_CREATE per guild, heartbeat ACKs, RESUME with replay of missed events, RECONNECT /
INVALID_SESSION on request, REQUEST_GUILD_MEMBERS answered with one chunk, ``zlib-stream``
transport compression when the client asks for it, and DISPATCH of events to live sessions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .http import ApiRequest, ApiRouter, json_response
from .protocol import (
    OP_DISPATCH,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    OP_HELLO,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_PRESENCE,
    OP_RECONNECT,
    OP_REQUEST_MEMBERS,
    OP_RESUME,
    OP_VOICE_STATE,
    Intents,
    Rules,
)
from .world import World

__all__ = ["Gateway", "GatewayConnection", "GatewaySession"]

log = logging.getLogger(__name__)

#: Dispatched frames a session keeps for RESUME.
REPLAY_BUFFER = 2000


@dataclass
class GatewaySession:
    """One IDENTIFY'd gateway session (survives reconnects through RESUME)."""

    session_id: str
    token: str
    intents: int | None
    shard: list[int] | None
    properties: dict[str, Any]
    identify: dict[str, Any]
    seq: int = 0
    buffer: list[dict[str, Any]] = field(default_factory=list)
    connection: GatewayConnection | None = None
    invalidated: bool = False
    ready_at: float | None = None
    resumes: int = 0
    presences: list[dict[str, Any]] = field(default_factory=list)

    def has_intent(self, bit: int) -> bool:
        return self.intents is None or bool(self.intents & bit)

    def owns(self, guild_id: int | None) -> bool:
        """Whether this session's shard receives the events of ``guild_id`` (``None``: DMs and
        other guild-less events, which Discord sends on shard 0): ``(guild_id >> 22) % count``."""
        shard_id, count = self.shard or (0, 1)
        if guild_id is None:
            return shard_id == 0
        return (guild_id >> 22) % max(count, 1) == shard_id


class GatewayConnection:
    """One websocket connection; serialises sends so the zlib stream stays in order."""

    def __init__(self, ws: web.WebSocketResponse, query: Mapping[str, str]) -> None:
        self.ws = ws
        self.query = dict(query)
        self.compress = query.get("compress")
        self._zlib = zlib.compressobj() if self.compress == "zlib-stream" else None
        self._lock = asyncio.Lock()
        self.session: GatewaySession | None = None
        self.heartbeats = 0
        self.opened_at = time.monotonic()

    async def send(self, frame: Mapping[str, Any]) -> bool:
        text = json.dumps(frame)
        async with self._lock:
            if self.ws.closed:
                return False
            try:
                if self._zlib is not None:
                    data = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                    await self.ws.send_bytes(data)
                else:
                    # zstd-stream is not implemented: plain text frames are always accepted.
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return False
        return True


class Gateway:
    """Gateway sessions and connections, and what the client sent over them."""

    def __init__(self, world: World, rules: Rules, router: ApiRouter, url: Callable[[], str]) -> None:
        self._world = world
        self._rules = rules
        self._router = router
        self._url = url
        self.sessions: dict[str, GatewaySession] = {}
        self.received: list[dict[str, Any]] = []  # every payload the client sent
        self.queries: list[dict[str, str]] = []  # query string of every ws connection
        self.connections: set[GatewayConnection] = set()
        self.refusing = False  # while True, new websocket connections get HTTP 503 (see cut())

    # ------------------------------------------------------------------ sessions and dispatch

    def live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if not s.invalidated and s.ready_at is not None]

    @property
    def intents(self) -> int | None:
        """Intents of the newest live session (``None`` before IDENTIFY)."""
        live = self.live_sessions()
        return live[-1].intents if live else None

    def connected_session(self) -> GatewaySession | None:
        """A live session that has been sent READY (and its GUILD_CREATEs) and is connected."""
        return next((s for s in self.live_sessions() if s.connection is not None), None)

    def connected_sessions(self) -> list[GatewaySession]:
        """Every live, connected session (one per shard), by shard id."""
        live = [s for s in self.live_sessions() if s.connection is not None]
        return sorted(live, key=lambda s: (s.shard or [0, 1])[0])

    def shard_of(self, guild_id: int | None) -> GatewaySession | None:
        """The live session whose shard receives ``guild_id``'s events (``None``: DMs, shard 0)."""
        return next((s for s in self.live_sessions() if s.owns(guild_id)), None)

    async def dispatch(self, event: str, data: Mapping[str, Any]) -> int:
        """Send a DISPATCH (op 0) event to the live session(s) of the shard it belongs to (by its
        ``guild_id``; guild-less events such as DMs go to shard 0); returns its sequence number.

        Events for a session whose socket is down are buffered and replayed on RESUME.
        """
        guild_id = _guild_of(data)
        sessions = [s for s in self.live_sessions() if s.owns(guild_id)]
        if not sessions:
            raise RuntimeError(f"cannot dispatch {event}: no gateway session (is the bot connected?)")
        seq = 0
        for session in sessions:
            seq = await self.session_dispatch(session, event, data)
        return seq

    async def dispatch_where(
        self, event: str, data: Callable[[GatewaySession], Mapping[str, Any]], *, intent: int
    ) -> bool:
        """Send an event to the live sessions that have ``intent`` (``data`` built per session);
        ``False`` when no session received it."""
        delivered = False
        for session in self.live_sessions():
            if session.has_intent(intent):
                payload = data(session)
                if not session.owns(_guild_of(payload)):
                    continue
                await self.session_dispatch(session, event, payload)
                delivered = True
        return delivered

    async def session_dispatch(self, session: GatewaySession, event: str, data: Mapping[str, Any]) -> int:
        session.seq += 1
        frame = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.buffer.append(frame)
        del session.buffer[:-REPLAY_BUFFER]
        if session.connection is not None:
            await session.connection.send(frame)
        return session.seq

    async def send_guild_create(self, session: GatewaySession, guild_id: int) -> None:
        """GUILD_CREATE for ``guild_id`` when ``session``'s shard owns that guild."""
        if not session.owns(guild_id):
            return
        guild = self._world.guilds[guild_id]
        payload = self._world.guild_create_payload(guild, all_members=session.has_intent(Intents.GUILD_MEMBERS))
        await self.session_dispatch(session, "GUILD_CREATE", payload)

    async def request_reconnect(self, shards: Collection[int] | None = None) -> None:
        """Send op 7 RECONNECT (to the connections of ``shards``; ``None``: all): discord.py closes
        the socket and RESUMEs on resume_gateway_url."""
        for conn in list(self.connections):
            if shards is not None and (conn.session is None or (conn.session.shard or [0, 1])[0] not in shards):
                continue
            await conn.send({"op": OP_RECONNECT, "d": None})

    async def invalidate_sessions(self, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION (non-resumable: the client IDENTIFYs again after ~5 s)."""
        for conn in list(self.connections):
            if conn.session is not None and not resumable:
                conn.session.invalidated = True
            await conn.send({"op": OP_INVALID_SESSION, "d": resumable})

    async def cut(self, shards: Collection[int] | None = None) -> None:
        """An outage: every connection (of ``shards``; ``None``: all) is told to reconnect (op 7;
        the session stays resumable) and new connections are refused (HTTP 503 on the upgrade)
        until :meth:`restore`. discord.py's AutoShardedClient IDENTIFYs again after a refused
        attempt (its plain Client keeps trying to RESUME)."""
        self.refusing = True
        await self.request_reconnect(shards)

    def restore(self) -> None:
        """End the outage: the client's next attempt connects (and RESUMEs)."""
        self.refusing = False

    async def close_all(self) -> None:
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"fake Discord stopping")

    # ------------------------------------------------------------------ REST: where the gateway is

    def install_routes(self, router: ApiRouter) -> None:
        router.add("GET", "/gateway", self._get_gateway)
        router.add("GET", "/gateway/bot", self._get_gateway_bot)

    async def _get_gateway(self, req: ApiRequest) -> web.Response:
        return json_response({"url": self._url()})

    async def _get_gateway_bot(self, req: ApiRequest) -> web.Response:
        shards = self._rules.recommended_shards
        limit = {"total": 1000, "remaining": 999, "reset_after": 86400000, "max_concurrency": 1}
        return json_response({"url": self._url(), "shards": shards, "session_start_limit": limit})

    # ------------------------------------------------------------------ the websocket

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler for the gateway URL (a plain GET there is an unknown route)."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return await self._router.handle_unknown(request)
        if self.refusing:
            return web.Response(status=503, text="fake Discord outage")
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(ws, request.query)
        self.queries.append(dict(request.query))
        self.connections.add(conn)
        self._world.bump()
        try:
            hello = {"heartbeat_interval": self._rules.heartbeat_interval_ms, "_trace": ["fake-gateway"]}
            await conn.send({"op": OP_HELLO, "d": hello})
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    payload = json.loads(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    payload = json.loads(msg.data.decode())
                else:
                    break
                self.received.append(payload)
                self._world.bump()
                if not await self._on_payload(conn, payload):
                    break
        finally:
            self.connections.discard(conn)
            session = conn.session
            if session is not None and session.connection is conn:
                session.connection = None
                # A client closing with 1000/1001 ends its session (discord.py does so on close()).
                if ws.close_code in (1000, 1001):
                    session.invalidated = True
            self._world.bump()
        return ws

    async def _on_payload(self, conn: GatewayConnection, payload: Mapping[str, Any]) -> bool:
        """Handle one client payload; ``False`` ends the connection."""
        op = payload.get("op")
        data = payload.get("d")
        if op == OP_HEARTBEAT:
            conn.heartbeats += 1
            await conn.send({"op": OP_HEARTBEAT_ACK})
        elif op == OP_IDENTIFY:
            return await self._identify(conn, data or {})
        elif op == OP_RESUME:
            return await self._resume(conn, data or {})
        elif op == OP_PRESENCE:
            if conn.session is not None:
                conn.session.presences.append(dict(data or {}))
        elif op == OP_REQUEST_MEMBERS:
            await self._request_members(conn, data or {})
        elif op == OP_VOICE_STATE:
            pass  # recorded in `received`; no voice support
        else:
            log.warning("fake gateway: unknown opcode %r", op)
            await conn.ws.close(code=4001, message=b"Unknown opcode.")
            return False
        return True

    async def _identify(self, conn: GatewayConnection, data: Mapping[str, Any]) -> bool:
        if data.get("token") != self._rules.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return False
        intents = data.get("intents")
        if intents is not None and intents & self._rules.disallowed_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return False
        shard = data.get("shard")
        if shard is not None and not (
            isinstance(shard, list) and len(shard) == 2 and 0 <= int(shard[0]) < int(shard[1])
        ):
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return False
        session = GatewaySession(
            session_id=secrets.token_hex(16),
            token=data["token"],
            intents=intents,
            shard=list(data["shard"]) if data.get("shard") else None,
            properties=dict(data.get("properties") or {}),
            identify=dict(data),
        )
        if data.get("presence"):
            session.presences.append(dict(data["presence"]))
        if session.shard is not None:  # a new IDENTIFY of a shard ends its earlier, disconnected session
            for old in self.sessions.values():
                if old.shard == session.shard and old.connection is None:
                    old.invalidated = True
        self.sessions[session.session_id] = session
        session.connection = conn
        conn.session = session
        world = self._world
        ready = {
            "v": 10,
            "user": world.bot_user_payload(),
            "user_settings": {},
            "guilds": [{"id": str(g), "unavailable": True} for g in world.guilds if session.owns(g)],
            "relationships": [],
            "private_channels": [],
            "presences": [],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self._url(),
            "shard": session.shard or [0, 1],
            "application": {"id": str(world.application_id), "flags": world.APPLICATION_FLAGS},
            "auth": {},
            "_trace": ["fake-gateway"],
        }
        await self.session_dispatch(session, "READY", ready)
        for guild_id in list(world.guilds):
            await self.send_guild_create(session, guild_id)
        session.ready_at = time.monotonic()
        world.bump()
        return True

    async def _resume(self, conn: GatewayConnection, data: Mapping[str, Any]) -> bool:
        session = self.sessions.get(str(data.get("session_id")))
        if data.get("token") != self._rules.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return False
        if session is None or session.invalidated:
            await conn.send({"op": OP_INVALID_SESSION, "d": False})
            return True
        if session.connection is not None and session.connection is not conn:
            with contextlib.suppress(Exception):
                await session.connection.ws.close(code=4000)
        session.connection = conn
        conn.session = session
        session.resumes += 1
        last = data.get("seq") or 0
        for frame in [f for f in session.buffer if f["s"] > last]:
            await conn.send(frame)
        await self.session_dispatch(session, "RESUMED", {"_trace": ["fake-gateway"]})
        self._world.bump()
        return True

    async def _request_members(self, conn: GatewayConnection, data: Mapping[str, Any]) -> None:
        world = self._world
        guild = world.guilds.get(int(data.get("guild_id") or 0))
        if conn.session is None or guild is None:
            return
        wanted = {int(u) for u in data.get("user_ids") or []}
        query = (data.get("query") or "").lower()
        members = [
            world.member_payload(guild.id, uid)
            for uid in guild.members
            if (not wanted or uid in wanted) and world.users[uid].username.lower().startswith(query)
        ]
        chunk: dict[str, Any] = {"guild_id": str(guild.id), "members": members, "chunk_index": 0, "chunk_count": 1}
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self.session_dispatch(conn.session, "GUILD_MEMBERS_CHUNK", chunk)


def _guild_of(data: Mapping[str, Any]) -> int | None:
    """The guild an event belongs to (its ``guild_id``); ``None`` for DMs and other guild-less events."""
    guild_id = data.get("guild_id")
    return int(guild_id) if guild_id else None
