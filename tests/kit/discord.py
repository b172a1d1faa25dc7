"""A fake Discord that the real discord.py client talks to, over real HTTP and a real websocket.

``FakeDiscord`` is an ``aiohttp.web`` application on ``127.0.0.1`` (ephemeral port) inside the test
process. It serves

* the **gateway** websocket: HELLO -> IDENTIFY (token and intents checked and recorded) -> READY ->
  GUILD_CREATE per guild, heartbeat ACKs, RESUME with replay of missed events, RECONNECT /
  INVALID_SESSION on request, REQUEST_GUILD_MEMBERS answered with one chunk, ``zlib-stream``
  transport compression when the client asks for it;
* the **REST** routes a bot uses (users, application info, application commands, interaction
  callbacks, interaction webhooks, channel messages, reactions, typing, DM channels), recording
  every request, multipart bodies parsed;
* a **CDN** (``/attachments/...``) for attachments of incoming messages and of everything the bot
  uploads, recording every download.

Point discord.py at it the way the product does from its settings::

    discord.http.Route.BASE = fake.api_base                                # DISCORD_API_BASE
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)  # DISCORD_GATEWAY_URL

(or ``with fake.patch_discord_py(): ...``). Then drive it from the test: ``send_message``,
``send_voice_message``, ``slash_command``, ``click_button``, ``submit_modal``, ``dispatch``; and
assert on ``calls``, ``messages``, ``interactions``, ``downloads`` or await ``wait_for_call``,
``wait_for_message``, ``wait_for_response``.

Behaviour copied from Discord because the product must cope with it:

* interaction callbacks after ``ack_deadline`` (3 s) answer 404 "Unknown interaction" (10062); a
  second callback answers 400 (40060);
* interaction webhook tokens expire after ``token_lifetime`` (15 min; tests shorten it): webhook
  routes then answer 401 "Invalid Webhook Token" (50027);
* the first follow-up after a "thinking" defer (callback type 5) replaces the loading message;
* without the MESSAGE_CONTENT intent, content/attachments/embeds/components of other users'
  guild messages that do not mention the bot arrive empty;
* a wrong token is refused by REST (401 -> ``discord.LoginFailure``) and by the gateway (close
  4004); intents listed in ``disallowed_intents`` close the gateway with 4014;
* messages over 2000 characters, empty messages and uploads over ``upload_limit`` are refused.

This module is test infrastructure: it imports nothing from the product, and discord.py only
lazily in :meth:`FakeDiscord.patch_discord_py`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import fnmatch
import itertools
import json
import logging
import mimetypes
import re
import secrets
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar, Union
from urllib.parse import unquote

from aiohttp import WSMsgType, web

__all__ = [
    "DEFAULT_PERMISSIONS",
    "AttachmentSpec",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeUser",
    "GatewaySession",
    "Intents",
    "MessageFlags",
    "RecordedCall",
    "RecordedFile",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# ================================================================================================
# Constants
# ================================================================================================

DISCORD_EPOCH_MS = 1420070400000


class Intents:
    """Gateway intent bits the fake looks at."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15


class MessageFlags:
    """Message flag bits the fake looks at."""

    SUPPRESS_EMBEDS = 1 << 2
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_VOICE_MESSAGE = 1 << 13
    IS_COMPONENTS_V2 = 1 << 15


# VIEW_CHANNEL, SEND_MESSAGES, ADD_REACTIONS, EMBED_LINKS, ATTACH_FILES, READ_MESSAGE_HISTORY,
# USE_EXTERNAL_EMOJIS, USE_APPLICATION_COMMANDS, CREATE_PUBLIC_THREADS, SEND_MESSAGES_IN_THREADS
DEFAULT_PERMISSIONS = (
    (1 << 10) | (1 << 11) | (1 << 6) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 18) | (1 << 31) | (1 << 35) | (1 << 38)
)

# Gateway opcodes
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_VOICE_STATE = 0, 1, 2, 3, 4
OP_RESUME, OP_RECONNECT, OP_REQUEST_MEMBERS, OP_INVALID_SESSION = 6, 7, 8, 9
OP_HELLO, OP_HEARTBEAT_ACK = 10, 11

# Interaction types and callback types
INTERACTION_PING, INTERACTION_COMMAND, INTERACTION_COMPONENT = 1, 2, 3
INTERACTION_AUTOCOMPLETE, INTERACTION_MODAL_SUBMIT = 4, 5
CB_PONG, CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE = 1, 4, 5, 6
CB_UPDATE_MESSAGE, CB_AUTOCOMPLETE, CB_MODAL = 7, 8, 9

# Application command option types
OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP, OPT_STRING, OPT_INTEGER, OPT_BOOLEAN = 1, 2, 3, 4, 5
OPT_USER, OPT_CHANNEL, OPT_ROLE, OPT_MENTIONABLE, OPT_NUMBER, OPT_ATTACHMENT = 6, 7, 8, 9, 10, 11

MAX_CONTENT_LENGTH = 2000
MAX_EMBEDS = 10

#: What an incoming attachment may be given as:
#: ``(filename, data)``, ``(filename, data, content_type)``,
#: ``(filename, data, content_type, extra_fields)`` or a mapping with ``filename``, ``data`` and
#: optionally ``content_type`` plus any Discord attachment field (``duration_secs``, ``waveform``
#: -- bytes are base64-encoded --, ``description``, ``width``, ``height``, ``flags``, ...).
AttachmentSpec = Union[
    tuple[str, bytes],
    tuple[str, bytes, str],
    tuple[str, bytes, str, Mapping[str, Any]],
    Mapping[str, Any],
]


# ================================================================================================
# Small helpers
# ================================================================================================


class _Snowflakes:
    """Strictly increasing snowflakes whose timestamp part is the current time."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        if candidate <= self._last:
            candidate = self._last + 1
        self._last = candidate
        return candidate


def snowflake_time(snowflake: int) -> dt.datetime:
    """The creation time encoded in a snowflake."""
    return dt.datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, tz=dt.UTC)


def _iso(moment: dt.datetime | None = None) -> str:
    return (moment or dt.datetime.now(dt.UTC)).isoformat()


def _json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # discord.py only parses a body as JSON when Content-Type is *exactly* "application/json";
    # web.json_response() would add "; charset=utf-8" and turn every answer into a str.
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json", headers=headers)


def _error(status: int, message: str, code: int, errors: Mapping[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors:
        body["errors"] = dict(errors)
    return _json_response(body, status=status)


def _no_content() -> web.Response:
    return web.Response(status=204)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def _guess_content_type(filename: str, data: bytes = b"") -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"OggS"):
        return "audio/ogg"
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG (Discord reports them for images)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    return None


def _walk_components(components: Sequence[Mapping[str, Any]] | None) -> Iterator[dict[str, Any]]:
    """Every component, nested ones included (action rows, containers, sections, labels)."""
    for comp in components or ():
        if not isinstance(comp, Mapping):
            continue
        yield comp  # type: ignore[misc]
        yield from _walk_components(comp.get("components"))
        for key in ("accessory", "component"):
            child = comp.get(key)
            if isinstance(child, Mapping):
                yield from _walk_components([child])


def _number_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every component a numeric ``id`` like Discord does in its answers."""
    counter = itertools.count(1)
    taken = {c["id"] for c in _walk_components(components) if isinstance(c.get("id"), int)}
    for comp in _walk_components(components):
        if "id" not in comp:
            n = next(counter)
            while n in taken:
                n = next(counter)
            comp["id"] = n
    return components


def _match_path(pattern: str | re.Pattern[str] | None, path: str) -> bool:
    if pattern is None:
        return True
    if isinstance(pattern, re.Pattern):
        return pattern.fullmatch(path) is not None
    return fnmatch.fnmatchcase(path, pattern)


# ================================================================================================
# Data model
# ================================================================================================


@dataclass
class FakeUser:
    """A Discord user (the bot itself, or a person driving the tests)."""

    id: int
    username: str
    bot: bool = False
    global_name: str | None = None
    avatar: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": self.avatar,
            "bot": self.bot,
            "system": False,
            "public_flags": 0,
            "flags": 0,
        }

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass
class FakeChannel:
    """A guild text channel (type 0) or a DM channel (type 1)."""

    id: int
    type: int = 0
    name: str | None = None
    guild_id: int | None = None
    position: int = 0
    topic: str | None = None
    recipient_ids: list[int] = field(default_factory=list)
    last_message_id: int | None = None

    @property
    def is_dm(self) -> bool:
        return self.type == 1


@dataclass
class FakeGuild:
    """A guild: its channels, members (with role ids) and roles."""

    id: int
    name: str
    owner_id: int
    channel_ids: list[int] = field(default_factory=list)
    members: dict[int, list[int]] = field(default_factory=dict)  # user id -> role ids
    roles: list[dict[str, Any]] = field(default_factory=list)
    preferred_locale: str = "en-US"
    joined_at: str = field(default_factory=_iso)


@dataclass
class RecordedFile:
    """One file part of a multipart request."""

    field_name: str
    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class RecordedCall:
    """One HTTP request the fake received (REST, interaction webhook, CDN or unknown).

    ``path`` is relative to the API base for API calls (``/channels/1/messages``) and the full path
    otherwise (``/attachments/...``). ``route`` is the matched template, e.g.
    ``"POST /channels/{channel_id}/messages"`` (``None`` for unknown routes). ``json`` is the JSON
    body, or the parsed ``payload_json`` of a multipart body; ``files`` the multipart files.
    """

    index: int
    kind: str  # "rest" | "webhook" | "interaction" | "cdn" | "unknown"
    method: str
    path: str
    route: str | None
    params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    files: list[RecordedFile] = field(default_factory=list)
    multipart: bool = False
    raw_body: bytes = b""
    status: int | None = None
    response: Any = None
    at: float = field(default_factory=time.monotonic)

    @property
    def payload_json(self) -> Any:
        """The parsed ``payload_json`` part of a multipart request (``None`` otherwise)."""
        return self.json if self.multipart else None

    @property
    def audit_log_reason(self) -> str | None:
        reason = self.headers.get("X-Audit-Log-Reason")
        return unquote(reason) if reason is not None else None

    def __repr__(self) -> str:
        return f"<RecordedCall #{self.index} {self.method} {self.path} -> {self.status}>"


@dataclass
class FakeInteraction:
    """An interaction the fake dispatched, and how (and when) the bot answered it."""

    id: int
    token: str
    type: int
    payload: dict[str, Any]
    user_id: int
    channel_id: int
    guild_id: int | None
    command_name: str | None = None
    custom_id: str | None = None
    message_id: int | None = None  # the message a component was clicked on
    created_at: float = field(default_factory=time.monotonic)
    created_wall: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    response_type: int | None = None
    responded_at: float | None = None
    response_body: Any = None
    original_message_id: int | None = None
    followup_message_ids: list[int] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    autocomplete_choices: list[dict[str, Any]] | None = None
    expired: bool = False  # set by FakeDiscord.expire_token()

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    @property
    def ack_latency(self) -> float | None:
        """Seconds between the dispatch and the callback, ``None`` while unanswered."""
        return None if self.responded_at is None else self.responded_at - self.created_at

    @property
    def ephemeral(self) -> bool:
        data = (self.response_body or {}).get("data") or {}
        return bool((data.get("flags") or 0) & MessageFlags.EPHEMERAL)


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
    connection: _GatewayConnection | None = None
    invalidated: bool = False
    ready_at: float | None = None
    resumes: int = 0
    presences: list[dict[str, Any]] = field(default_factory=list)

    def has_intent(self, bit: int) -> bool:
        return self.intents is None or bool(self.intents & bit)


class _GatewayConnection:
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


@dataclass
class _InjectedFailure:
    method: str
    path: str | re.Pattern[str]
    status: int
    remaining: int
    retry_after: float
    body: Mapping[str, Any] | None
    is_global: bool


@dataclass
class _CdnFile:
    data: bytes
    content_type: str
    filename: str


# ================================================================================================
# The fake
# ================================================================================================

_Handler = Callable[["_Request"], Any]


@dataclass
class _Request:
    """What a route handler gets: the aiohttp request, the parsed body and the recording."""

    raw: web.Request
    params: dict[str, str]
    query: dict[str, str]
    call: RecordedCall

    @property
    def json(self) -> Any:
        return self.call.json

    @property
    def files(self) -> list[RecordedFile]:
        return self.call.files


class FakeDiscord:
    """A fake Discord (REST + gateway + CDN) for the real discord.py client.

    Parameters
    ----------
    token:
        The bot token the fake accepts (REST ``Authorization: Bot <token>`` and gateway IDENTIFY).
    token_lifetime:
        Seconds an interaction token stays valid for webhook routes (Discord: 15 minutes).
    ack_deadline:
        Seconds within which an interaction callback is accepted (Discord: 3 s).
    heartbeat_interval_ms:
        Sent in HELLO.
    disallowed_intents:
        Intent bits the "developer portal" has not enabled; IDENTIFY asking for one of them is
        closed with 4014 (discord.py raises ``PrivilegedIntentsRequired``).
    enforce_message_content_intent:
        Blank content/attachments/embeds/components of messages the bot may not read.
    echo_bot_messages:
        Dispatch MESSAGE_CREATE/UPDATE/DELETE for the bot's own (non-ephemeral) messages, as
        Discord does.
    upload_limit:
        Total bytes of files one message may carry (413 / 40005 beyond).
    with_defaults:
        Create one guild ("VoxCanvas Test") with a text channel "#general", two users ("alice",
        owner of the guild and of the application, and "bob") and a DM channel with alice.
    """

    # ------------------------------------------------------------------ construction & lifecycle

    def __init__(
        self,
        token: str = "fake-bot-token",
        *,
        token_lifetime: float = 15 * 60,
        ack_deadline: float = 3.0,
        heartbeat_interval_ms: int = 41250,
        disallowed_intents: int = 0,
        enforce_message_content_intent: bool = True,
        echo_bot_messages: bool = True,
        upload_limit: int = 10 * 1024 * 1024,
        application_id: int | None = None,
        bot_name: str = "VoxCanvas",
        with_defaults: bool = True,
    ) -> None:
        self.token = token
        self.token_lifetime = token_lifetime
        self.ack_deadline = ack_deadline
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.disallowed_intents = disallowed_intents
        self.enforce_message_content_intent = enforce_message_content_intent
        self.echo_bot_messages = echo_bot_messages
        self.upload_limit = upload_limit

        self._ids = _Snowflakes()
        self.application_id: int = application_id or self._ids.next()
        # Modern applications have the same id as their bot user.
        self.bot_user = FakeUser(id=self.application_id, username=bot_name, bot=True)
        self.owner_id: int | None = None

        # World
        self.users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}

        # State
        self.messages: dict[int, dict[str, Any]] = {}  # insertion ordered; current state
        self.deleted_message_ids: list[int] = []
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.command_syncs: list[tuple[int | None, int]] = []  # (guild id or None, command count)
        self.interactions: list[FakeInteraction] = []
        self._interactions_by_id: dict[int, FakeInteraction] = {}
        self._interactions_by_token: dict[str, FakeInteraction] = {}
        self._cdn: dict[str, _CdnFile] = {}

        # Recording
        self.calls: list[RecordedCall] = []
        self.gateway_received: list[dict[str, Any]] = []  # every payload the client sent
        self.gateway_queries: list[dict[str, str]] = []  # query string of every ws connection
        self.sessions: dict[str, GatewaySession] = {}
        self._failures: list[_InjectedFailure] = []

        self._changed = asyncio.Event()
        self._routes: list[tuple[str, str, re.Pattern[str], _Handler]] = []
        self._install_routes()
        self._runner: web.AppRunner | None = None
        self._connections: set[_GatewayConnection] = set()
        self.port: int | None = None

        # Default world (synchronous: no gateway yet)
        self.guild: FakeGuild | None = None
        self.channel: FakeChannel | None = None
        self.dm_channel: FakeChannel | None = None
        self.user: FakeUser | None = None
        self.other_user: FakeUser | None = None
        if with_defaults:
            self.user = self._add_user("alice", global_name="Alice")
            self.other_user = self._add_user("bob", global_name="Bob")
            self.owner_id = self.user.id
            self.guild = self._add_guild("VoxCanvas Test", owner_id=self.user.id)
            self.channel = self._add_channel(self.guild.id, "general")
            for u in (self.user, self.other_user):
                self.guild.members[u.id] = []
            self.dm_channel = self._dm_channel_for(self.user.id)

    async def start(self) -> FakeDiscord:
        """Start serving on 127.0.0.1 (ephemeral port)."""
        if self._runner is not None:
            return self
        app = web.Application(client_max_size=max(64 * 1024 * 1024, self.upload_limit * 4))
        app.router.add_route("*", "/api/v{version:[0-9]+}/{tail:.*}", self._handle_api)
        app.router.add_route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self._handle_cdn)
        app.router.add_route("GET", "/gateway", self._handle_gateway)
        app.router.add_route("GET", "/gateway/", self._handle_gateway)
        app.router.add_route("GET", "/", self._handle_gateway)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.debug("fake Discord listening on %s", self.base_url)
        return self

    async def stop(self) -> None:
        """Close every websocket and stop serving."""
        if self._runner is None:
            return
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"fake Discord stopping")
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ URLs

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeDiscord is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """Value for ``discord.http.Route.BASE`` / DISCORD_API_BASE."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Value for ``DiscordWebSocket.DEFAULT_GATEWAY`` / DISCORD_GATEWAY_URL (also in READY's
        ``resume_gateway_url`` and GET /gateway/bot)."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    @contextlib.contextmanager
    def patch_discord_py(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway at this fake, restoring them after."""
        import discord.gateway
        import discord.http
        import yarl

        old_base = discord.http.Route.BASE
        old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    # ------------------------------------------------------------------ world building

    def _add_user(self, username: str, *, bot: bool = False, global_name: str | None = None) -> FakeUser:
        user = FakeUser(id=self._ids.next(), username=username, bot=bot, global_name=global_name)
        self.users[user.id] = user
        return user

    def _add_guild(self, name: str, *, owner_id: int) -> FakeGuild:
        gid = self._ids.next()
        everyone = {
            "id": str(gid),
            "name": "@everyone",
            "permissions": str(DEFAULT_PERMISSIONS),
            "position": 0,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
            "icon": None,
            "unicode_emoji": None,
        }
        guild = FakeGuild(id=gid, name=name, owner_id=owner_id, roles=[everyone])
        guild.members[self.bot_user.id] = []
        guild.members.setdefault(owner_id, [])
        self.guilds[gid] = guild
        return guild

    def _add_channel(self, guild_id: int, name: str, *, topic: str | None = None) -> FakeChannel:
        guild = self.guilds[guild_id]
        channel = FakeChannel(
            id=self._ids.next(),
            type=0,
            name=name,
            guild_id=guild_id,
            position=len(guild.channel_ids),
            topic=topic,
        )
        guild.channel_ids.append(channel.id)
        self.channels[channel.id] = channel
        return channel

    def _dm_channel_for(self, user_id: int) -> FakeChannel:
        for channel in self.channels.values():
            if channel.is_dm and channel.recipient_ids == [user_id]:
                return channel
        channel = FakeChannel(id=self._ids.next(), type=1, recipient_ids=[user_id])
        self.channels[channel.id] = channel
        return channel

    async def add_user(
        self, username: str, *, bot: bool = False, global_name: str | None = None, guild_id: int | None = None
    ) -> FakeUser:
        """Create a user; with ``guild_id`` also a member of that guild (GUILD_MEMBER_ADD sent)."""
        user = self._add_user(username, bot=bot, global_name=global_name)
        if guild_id is not None:
            self.guilds[guild_id].members[user.id] = []
            if self._live_sessions():
                await self.dispatch(
                    "GUILD_MEMBER_ADD", {**self._member_payload(guild_id, user.id), "guild_id": str(guild_id)}
                )
        return user

    async def add_guild(
        self, name: str, *, owner_id: int | None = None, channel_names: Sequence[str] = ("general",)
    ) -> FakeGuild:
        """Create a guild with text channels; sends GUILD_CREATE when the bot is connected."""
        owner = owner_id or (self.user.id if self.user else self.bot_user.id)
        guild = self._add_guild(name, owner_id=owner)
        for cname in channel_names:
            self._add_channel(guild.id, cname)
        for session in self._live_sessions():
            await self._session_dispatch(session, "GUILD_CREATE", self._guild_create_payload(guild, session))
        return guild

    async def add_channel(self, guild_id: int, name: str, *, topic: str | None = None) -> FakeChannel:
        """Create a text channel; sends CHANNEL_CREATE when the bot is connected."""
        channel = self._add_channel(guild_id, name, topic=topic)
        if self._live_sessions():
            await self.dispatch("CHANNEL_CREATE", self._channel_payload(channel))
        return channel

    def dm_channel_for(self, user: FakeUser | int) -> FakeChannel:
        """The DM channel between the bot and ``user`` (created on first use)."""
        return self._dm_channel_for(self._user_id(user))

    def _user_id(self, user: FakeUser | int | None) -> int:
        if user is None:
            if self.user is None:
                raise ValueError("no user given and no default user")
            return self.user.id
        uid = user.id if isinstance(user, FakeUser) else int(user)
        if uid not in self.users:
            raise KeyError(f"unknown user {uid}")
        return uid

    # ------------------------------------------------------------------ payload builders

    def _user_payload(self, user_id: int) -> dict[str, Any]:
        return self.users[user_id].to_payload()

    def _member_payload(self, guild_id: int, user_id: int, *, with_user: bool = True) -> dict[str, Any]:
        guild = self.guilds[guild_id]
        payload: dict[str, Any] = {
            "roles": [str(r) for r in guild.members.get(user_id, [])],
            "joined_at": guild.joined_at,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "communication_disabled_until": None,
        }
        if with_user:
            payload["user"] = self._user_payload(user_id)
        return payload

    def _channel_payload(self, channel: FakeChannel) -> dict[str, Any]:
        if channel.is_dm:
            return {
                "id": str(channel.id),
                "type": 1,
                "last_message_id": str(channel.last_message_id) if channel.last_message_id else None,
                "recipients": [self._user_payload(u) for u in channel.recipient_ids],
                "flags": 0,
            }
        return {
            "id": str(channel.id),
            "type": channel.type,
            "guild_id": str(channel.guild_id),
            "name": channel.name,
            "position": channel.position,
            "permission_overwrites": [],
            "parent_id": None,
            "topic": channel.topic,
            "nsfw": False,
            "rate_limit_per_user": 0,
            "last_message_id": str(channel.last_message_id) if channel.last_message_id else None,
            "flags": 0,
        }

    def _guild_create_payload(self, guild: FakeGuild, session: GatewaySession | None = None) -> dict[str, Any]:
        # Like Discord: without the GUILD_MEMBERS intent only the bot's own member is listed.
        all_members = session is None or session.has_intent(Intents.GUILD_MEMBERS)
        member_ids = list(guild.members) if all_members else [self.bot_user.id]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": guild.roles,
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(guild.channel_ids[0]) if guild.channel_ids else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": guild.preferred_locale,
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            # GUILD_CREATE-only fields
            "joined_at": guild.joined_at,
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),  # == len(members) with GUILD_MEMBERS: "chunked"
            "voice_states": [],
            "members": [self._member_payload(guild.id, uid) for uid in member_ids],
            "channels": [
                {k: v for k, v in self._channel_payload(self.channels[cid]).items() if k != "guild_id"}
                for cid in guild.channel_ids
            ],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def _application_payload(self) -> dict[str, Any]:
        owner_id = self.owner_id or self.bot_user.id
        return {
            "id": str(self.application_id),
            "name": self.bot_user.username,
            "icon": None,
            "description": "VoxCanvas (fake application)",
            "summary": "",
            "type": None,
            "hook": True,
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "bot": self.bot_user.to_payload(),
            "owner": self._user_payload(owner_id),
            "team": None,
            "verify_key": "0" * 64,
            "flags": (1 << 18) | (1 << 23),  # GATEWAY_MESSAGE_CONTENT, APPLICATION_COMMAND_BADGE
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "tags": [],
            "approximate_guild_count": len(self.guilds),
        }

    def _bot_user_payload(self) -> dict[str, Any]:
        return {
            **self.bot_user.to_payload(),
            "verified": True,
            "mfa_enabled": False,
            "email": None,
            "locale": "en-US",
        }

    # ------------------------------------------------------------------ recording & waiting

    def _bump(self) -> None:
        """Wake every waiter (they re-check their predicate)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self,
        check: Callable[[], T | None],
        timeout: float = 5.0,
        what: str = "a condition",
        *,
        poll: float | None = None,
    ) -> T:
        """Wait until ``check()`` returns something truthy, and return it.

        ``check`` is re-run whenever the fake's state changes (a call, message, interaction or
        gateway payload), so it should look at the fake's state; pass ``poll`` (seconds) to also
        re-run it periodically when it looks at something else (such as the bot's own state).
        """
        return await self._wait_until(check, timeout, what, poll=poll)

    async def _wait_until(
        self, check: Callable[[], T | None], timeout: float, what: str, *, poll: float | None = None
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result is not None and result is not False:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = "\n  ".join(f"{c.method} {c.path} -> {c.status}" for c in self.calls[-15:])
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last calls:\n  {recent}")
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining if poll is None else min(poll, remaining))

    def find_calls(
        self,
        predicate: Callable[[RecordedCall], bool] | None = None,
        *,
        method: str | None = None,
        path: str | re.Pattern[str] | None = None,
        route: str | None = None,
        kind: str | None = None,
        since: int = 0,
    ) -> list[RecordedCall]:
        """Recorded calls matching every given filter (``path``: glob or compiled regex;
        ``route``: template such as ``"POST /channels/{channel_id}/messages"``; ``since``: index)."""
        return [
            c
            for c in self.calls[since:]
            if (method is None or c.method == method.upper())
            and _match_path(path, c.path)
            and (route is None or c.route == route)
            and (kind is None or c.kind == kind)
            and (predicate is None or predicate(c))
            and c.status is not None
        ]

    async def wait_for_call(
        self,
        predicate: Callable[[RecordedCall], bool] | None = None,
        *,
        method: str | None = None,
        path: str | re.Pattern[str] | None = None,
        route: str | None = None,
        kind: str | None = None,
        since: int = 0,
        timeout: float = 5.0,
    ) -> RecordedCall:
        """The first (answered) call matching the filters, waiting for it if needed."""

        def check() -> RecordedCall | None:
            found = self.find_calls(predicate, method=method, path=path, route=route, kind=kind, since=since)
            return found[0] if found else None

        return await self._wait_until(check, timeout, f"a call {method or ''} {path or route or ''}".strip())

    @property
    def unknown_calls(self) -> list[RecordedCall]:
        """Requests to routes the fake does not know (a bot calling these is a test failure)."""
        return [c for c in self.calls if c.kind == "unknown"]

    @property
    def downloads(self) -> list[RecordedCall]:
        """Every CDN download."""
        return [c for c in self.calls if c.kind == "cdn"]

    def was_downloaded(self, url_or_attachment: str | int | Mapping[str, Any]) -> bool:
        """Whether an attachment (its URL, id or payload) was fetched from the CDN."""
        if isinstance(url_or_attachment, Mapping):
            url_or_attachment = url_or_attachment["url"]
        if isinstance(url_or_attachment, int) or str(url_or_attachment).isdigit():
            return any(c.params.get("attachment_id") == str(url_or_attachment) for c in self.downloads)
        path = str(url_or_attachment).replace(self.base_url, "").split("?")[0]
        return any(c.path == unquote(path) for c in self.downloads)

    def find_messages(
        self,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        channel_id: int | None = None,
        from_bot: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Stored messages (current state, oldest first) matching the filters."""
        out = []
        for msg in self.messages.values():
            if channel_id is not None and int(msg["channel_id"]) != channel_id:
                continue
            if from_bot is not None and (msg["author"]["id"] == str(self.bot_user.id)) != from_bot:
                continue
            if predicate is not None and not predicate(msg):
                continue
            out.append(msg)
        return out

    async def wait_for_message(
        self,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        channel_id: int | None = None,
        from_bot: bool | None = True,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """The first stored message (bot's by default) matching ``predicate``, waiting for it.

        Messages are checked in their current state, so a predicate on the content of an edited
        progress message is satisfied once the edit arrives.
        """

        def check() -> dict[str, Any] | None:
            found = self.find_messages(predicate, channel_id=channel_id, from_bot=from_bot)
            return found[0] if found else None

        return await self._wait_until(check, timeout, "a message")

    async def wait_for_response(self, interaction: FakeInteraction, timeout: float = 5.0) -> FakeInteraction:
        """Wait until the bot has answered the interaction's callback."""
        return await self._wait_until(
            lambda: interaction if interaction.acknowledged else None,
            timeout,
            f"a callback to interaction {interaction.id}",
        )

    def get_message(self, message_id: int | str) -> dict[str, Any]:
        return self.messages[int(message_id)]

    def original_response(self, interaction: FakeInteraction) -> dict[str, Any] | None:
        """The interaction's original response message (current state), if any."""
        mid = interaction.original_message_id
        return self.messages.get(mid) if mid is not None else None

    def followups(self, interaction: FakeInteraction) -> list[dict[str, Any]]:
        return [self.messages[m] for m in interaction.followup_message_ids if m in self.messages]

    def commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """The synced application commands (global, or of one guild)."""
        return self.global_commands if guild_id is None else self.guild_commands.get(guild_id, [])

    def sync_count(self, guild_id: int | None = None) -> int:
        """How many bulk-overwrite syncs were made (global, or to one guild)."""
        return sum(1 for g, _ in self.command_syncs if g == guild_id)

    def fail_next(
        self,
        method: str,
        path: str | re.Pattern[str],
        *,
        status: int = 429,
        times: int = 1,
        retry_after: float = 0.05,
        body: Mapping[str, Any] | None = None,
        is_global: bool = False,
    ) -> None:
        """Answer the next ``times`` matching API requests with ``status`` instead of handling them.

        ``path`` is relative to the API base, a glob (``"/channels/*/messages"``) or a compiled
        regex. A 429 carries ``retry_after`` and the ``Via`` header discord.py needs to treat it as
        Discord's (without ``Via`` it assumes a Cloudflare ban and raises at once). Note that
        discord.py sleeps 1 s, 3 s, ... before retrying a 500/502/504.
        """
        self._failures.append(_InjectedFailure(method.upper(), path, status, times, retry_after, body, is_global))

    def expire_token(self, interaction: FakeInteraction) -> None:
        """Make the interaction's webhook token invalid now (as if 15 minutes had passed)."""
        interaction.expired = True

    # ------------------------------------------------------------------ gateway

    def _live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if not s.invalidated and s.ready_at is not None]

    @property
    def intents(self) -> int | None:
        """Intents of the newest live session (``None`` before IDENTIFY)."""
        live = self._live_sessions()
        return live[-1].intents if live else None

    async def wait_until_connected(self, timeout: float = 5.0) -> GatewaySession:
        """Wait until a session has been sent READY (and its GUILD_CREATEs) and is connected."""

        def check() -> GatewaySession | None:
            for s in self._live_sessions():
                if s.connection is not None:
                    return s
            return None

        return await self._wait_until(check, timeout, "a gateway session")

    async def dispatch(self, event: str, data: Mapping[str, Any]) -> int:
        """Send a DISPATCH (op 0) event to every live session; returns its sequence number.

        Events for a session whose socket is down are buffered and replayed on RESUME.
        """
        sessions = self._live_sessions()
        if not sessions:
            raise RuntimeError(f"cannot dispatch {event}: no gateway session (is the bot connected?)")
        seq = 0
        for session in sessions:
            seq = await self._session_dispatch(session, event, data)
        return seq

    async def _session_dispatch(self, session: GatewaySession, event: str, data: Mapping[str, Any]) -> int:
        session.seq += 1
        frame = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.buffer.append(frame)
        del session.buffer[:-2000]
        if session.connection is not None:
            await session.connection.send(frame)
        return session.seq

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: discord.py closes the socket and RESUMEs on resume_gateway_url."""
        for conn in list(self._connections):
            await conn.send({"op": OP_RECONNECT, "d": None})

    async def invalidate_sessions(self, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION (non-resumable: the client IDENTIFYs again after ~5 s)."""
        for conn in list(self._connections):
            if conn.session is not None and not resumable:
                conn.session.invalidated = True
            await conn.send({"op": OP_INVALID_SESSION, "d": resumable})

    async def _handle_gateway(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return await self._handle_unknown(request)
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=0)
        await ws.prepare(request)
        conn = _GatewayConnection(ws, request.query)
        self.gateway_queries.append(dict(request.query))
        self._connections.add(conn)
        self._bump()
        try:
            await conn.send(
                {
                    "op": OP_HELLO,
                    "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake-gateway"]},
                }
            )
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    payload = json.loads(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    payload = json.loads(msg.data.decode())
                else:
                    break
                self.gateway_received.append(payload)
                self._bump()
                if not await self._gateway_op(conn, payload):
                    break
        finally:
            self._connections.discard(conn)
            session = conn.session
            if session is not None and session.connection is conn:
                session.connection = None
                # A client closing with 1000/1001 ends its session (discord.py does so on close()).
                if ws.close_code in (1000, 1001):
                    session.invalidated = True
            self._bump()
        return ws

    async def _gateway_op(self, conn: _GatewayConnection, payload: Mapping[str, Any]) -> bool:
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
            pass  # recorded in gateway_received; no voice support
        else:
            log.warning("fake gateway: unknown opcode %r", op)
            await conn.ws.close(code=4001, message=b"Unknown opcode.")
            return False
        return True

    async def _identify(self, conn: _GatewayConnection, data: Mapping[str, Any]) -> bool:
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return False
        intents = data.get("intents")
        if intents is not None and intents & self.disallowed_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
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
        self.sessions[session.session_id] = session
        session.connection = conn
        conn.session = session
        ready = {
            "v": 10,
            "user": self._bot_user_payload(),
            "user_settings": {},
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "relationships": [],
            "private_channels": [],
            "presences": [],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "shard": session.shard or [0, 1],
            "application": {"id": str(self.application_id), "flags": self._application_payload()["flags"]},
            "auth": {},
            "_trace": ["fake-gateway"],
        }
        await self._session_dispatch(session, "READY", ready)
        for guild in self.guilds.values():
            await self._session_dispatch(session, "GUILD_CREATE", self._guild_create_payload(guild, session))
        session.ready_at = time.monotonic()
        self._bump()
        return True

    async def _resume(self, conn: _GatewayConnection, data: Mapping[str, Any]) -> bool:
        session = self.sessions.get(str(data.get("session_id")))
        if data.get("token") != self.token:
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
        await self._session_dispatch(session, "RESUMED", {"_trace": ["fake-gateway"]})
        self._bump()
        return True

    async def _request_members(self, conn: _GatewayConnection, data: Mapping[str, Any]) -> None:
        if conn.session is None:
            return
        guild = self.guilds.get(int(data.get("guild_id") or 0))
        if guild is None:
            return
        wanted = {int(u) for u in data.get("user_ids") or []}
        query = (data.get("query") or "").lower()
        members = [
            self._member_payload(guild.id, uid)
            for uid in guild.members
            if (not wanted or uid in wanted) and self.users[uid].username.lower().startswith(query)
        ]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self._session_dispatch(conn.session, "GUILD_MEMBERS_CHUNK", chunk)

    # ------------------------------------------------------------------ HTTP plumbing

    def _route(self, method: str, template: str, handler: _Handler) -> None:
        regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
        self._routes.append((method, template, re.compile(regex), handler))

    async def _record(self, request: web.Request, kind: str, path: str) -> RecordedCall:
        call = RecordedCall(
            index=len(self.calls),
            kind=kind,
            method=request.method,
            path=path,
            route=None,
            params={},
            query=dict(request.query),
            headers=dict(request.headers),
        )
        self.calls.append(call)
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("multipart/"):
            call.multipart = True
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                data = await part.read()  # type: ignore[union-attr]
                name = part.name or ""  # type: ignore[union-attr]
                if name == "payload_json":
                    call.json = json.loads(data.decode())
                elif part.filename is not None:  # type: ignore[union-attr]
                    call.files.append(
                        RecordedFile(
                            field_name=name,
                            filename=part.filename,  # type: ignore[union-attr]
                            content_type=part.headers.get("Content-Type", "application/octet-stream"),  # type: ignore[union-attr]
                            data=bytes(data),
                        )
                    )
        elif request.can_read_body:
            call.raw_body = await request.read()
            if call.raw_body and "json" in content_type:
                try:
                    call.json = json.loads(call.raw_body)
                except ValueError:
                    call.json = None
        return call

    def _finish(self, call: RecordedCall, response: web.StreamResponse) -> web.StreamResponse:
        call.status = response.status
        if (
            isinstance(response, web.Response)
            and response.body is not None
            and response.content_type == "application/json"
        ):
            try:
                call.response = json.loads(response.body)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                call.response = None
        self._bump()
        return response

    def _take_failure(self, method: str, path: str) -> _InjectedFailure | None:
        for failure in self._failures:
            if failure.remaining > 0 and failure.method == method and _match_path(failure.path, path):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                return failure
        return None

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        call = await self._record(request, "unknown", request.path)
        log.warning("fake Discord: unknown route %s %s", request.method, request.path)
        return self._finish(call, _error(404, "Unknown route", 0))

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        for method, template, regex, handler in self._routes:
            match = regex.match(path)
            if match is None or method != request.method:
                continue
            kind = (
                "interaction"
                if template.startswith("/interactions/")
                else ("webhook" if template.startswith("/webhooks/") else "rest")
            )
            call = await self._record(request, kind, path)
            call.route = f"{method} {template}"
            call.params = {k: unquote(v) for k, v in match.groupdict().items()}
            failure = self._take_failure(request.method, path)
            if failure is not None:
                return self._finish(call, self._failure_response(failure))
            if kind == "rest" and request.headers.get("Authorization") != f"Bot {self.token}":
                return self._finish(call, _error(401, "401: Unauthorized", 0))
            req = _Request(raw=request, params=call.params, query=dict(request.query), call=call)
            try:
                response = await handler(req)
            except Exception:  # a bug in the fake must be visible, not a hang in the bot
                log.exception("fake Discord: handler for %s %s crashed", method, template)
                response = _error(500, "fake Discord crashed (see log)", 0)
            return self._finish(call, response)
        call = await self._record(request, "unknown", path)
        log.warning("fake Discord: unknown API route %s %s", request.method, path)
        return self._finish(call, _error(404, "Unknown route", 0))

    def _failure_response(self, failure: _InjectedFailure) -> web.Response:
        if failure.status == 429:
            body = dict(
                failure.body
                or {
                    "message": "You are being rate limited.",
                    "retry_after": failure.retry_after,
                    "global": failure.is_global,
                }
            )
            headers = {
                "Via": "1.1 google",  # discord.py treats a 429 without Via as a Cloudflare ban
                "Retry-After": str(max(1, int(failure.retry_after + 0.999))),
                "X-RateLimit-Scope": "global" if failure.is_global else "user",
            }
            if failure.is_global:
                headers["X-RateLimit-Global"] = "true"
            return _json_response(body, status=429, headers=headers)
        body = dict(failure.body or {"message": f"{failure.status}: injected failure", "code": 0})
        return _json_response(body, status=failure.status)

    async def _handle_cdn(self, request: web.Request) -> web.StreamResponse:
        call = await self._record(request, "cdn", request.path)
        call.params = dict(request.match_info)
        stored = self._cdn.get(request.path)
        if stored is None:
            return self._finish(call, web.Response(status=404, text="Not Found"))
        return self._finish(call, web.Response(body=stored.data, content_type=stored.content_type))

    def _install_routes(self) -> None:
        r = self._route
        r("GET", "/gateway", self._get_gateway)
        r("GET", "/gateway/bot", self._get_gateway_bot)
        r("GET", "/users/@me", self._get_me)
        r("GET", "/users/{user_id}", self._get_user)
        r("POST", "/users/@me/channels", self._create_dm)
        r("GET", "/oauth2/applications/@me", self._get_application)
        r("GET", "/applications/@me", self._get_application)
        for prefix in ("/applications/{application_id}", "/applications/{application_id}/guilds/{guild_id}"):
            r("GET", prefix + "/commands", self._get_commands)
            r("PUT", prefix + "/commands", self._put_commands)
            r("POST", prefix + "/commands", self._post_command)
            r("GET", prefix + "/commands/{command_id}", self._get_command)
            r("PATCH", prefix + "/commands/{command_id}", self._patch_command)
            r("DELETE", prefix + "/commands/{command_id}", self._delete_command)
        r("POST", "/interactions/{interaction_id}/{token}/callback", self._interaction_callback)
        r("POST", "/webhooks/{application_id}/{token}", self._webhook_execute)
        r("GET", "/webhooks/{application_id}/{token}/messages/{message_id}", self._webhook_get_message)
        r("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}", self._webhook_edit_message)
        r("DELETE", "/webhooks/{application_id}/{token}/messages/{message_id}", self._webhook_delete_message)
        r("GET", "/channels/{channel_id}", self._get_channel)
        r("GET", "/channels/{channel_id}/messages", self._get_messages)
        r("POST", "/channels/{channel_id}/messages", self._post_message)
        r("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message)
        r("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message)
        r("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._add_reaction)
        r(
            "DELETE",
            "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
            self._remove_reaction,
        )
        r("POST", "/channels/{channel_id}/typing", self._typing)
        r("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member)

    # ------------------------------------------------------------------ REST: identity

    async def _get_gateway(self, req: _Request) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, req: _Request) -> web.Response:
        return _json_response(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 86400000,
                    "max_concurrency": 1,
                },
            }
        )

    async def _get_me(self, req: _Request) -> web.Response:
        return _json_response(self._bot_user_payload())

    async def _get_user(self, req: _Request) -> web.Response:
        user = self.users.get(int(req.params["user_id"])) if req.params["user_id"].isdigit() else None
        if user is None:
            return _error(404, "Unknown User", 10013)
        return _json_response(user.to_payload())

    async def _get_application(self, req: _Request) -> web.Response:
        return _json_response(self._application_payload())

    async def _get_member(self, req: _Request) -> web.Response:
        guild = self.guilds.get(int(req.params["guild_id"]))
        uid = int(req.params["user_id"]) if req.params["user_id"].isdigit() else -1
        if guild is None:
            return _error(404, "Unknown Guild", 10004)
        if uid not in guild.members:
            return _error(404, "Unknown Member", 10007)
        return _json_response(self._member_payload(guild.id, uid))

    async def _create_dm(self, req: _Request) -> web.Response:
        try:
            uid = int((req.json or {})["recipient_id"])
        except (KeyError, TypeError, ValueError):
            return _error(400, "Invalid Form Body", 50035)
        if uid not in self.users or uid == self.bot_user.id:
            return _error(400, "Invalid Recipient(s)", 50033)
        return _json_response(self._channel_payload(self._dm_channel_for(uid)))

    # ------------------------------------------------------------------ REST: application commands

    def _command_store(self, req: _Request) -> list[dict[str, Any]] | web.Response:
        if req.params["application_id"] != str(self.application_id):
            return _error(403, "Missing Access", 50001)
        if "guild_id" in req.params:
            gid = int(req.params["guild_id"])
            if gid not in self.guilds:
                return _error(403, "Missing Access", 50001)
            return self.guild_commands.setdefault(gid, [])
        return self.global_commands

    def _stored_command(
        self, body: Mapping[str, Any], guild_id: int | None, old: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        cmd: dict[str, Any] = {
            "type": 1,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "dm_permission": True,
            "nsfw": False,
            "contexts": None,
            "integration_types": [0],
            "name_localizations": None,
            "description_localizations": None,
        }
        cmd.update({k: v for k, v in body.items() if v is not None or k in ("default_member_permissions", "contexts")})
        cmd["id"] = old["id"] if old else str(self._ids.next())
        cmd["application_id"] = str(self.application_id)
        cmd["version"] = str(self._ids.next())
        if guild_id is not None:
            cmd["guild_id"] = str(guild_id)
        return cmd

    async def _get_commands(self, req: _Request) -> web.Response:
        store = self._command_store(req)
        return store if isinstance(store, web.Response) else _json_response(store)

    async def _put_commands(self, req: _Request) -> web.Response:
        store = self._command_store(req)
        if isinstance(store, web.Response):
            return store
        body = req.json
        if not isinstance(body, list):
            return _error(400, "Invalid Form Body", 50035)
        gid = int(req.params["guild_id"]) if "guild_id" in req.params else None
        old = {(c["name"], c.get("type", 1)): c for c in store}
        new = [self._stored_command(c, gid, old.get((c["name"], c.get("type", 1)))) for c in body]
        store[:] = new
        self.command_syncs.append((gid, len(new)))
        return _json_response(new)

    async def _post_command(self, req: _Request) -> web.Response:
        store = self._command_store(req)
        if isinstance(store, web.Response):
            return store
        body = req.json or {}
        gid = int(req.params["guild_id"]) if "guild_id" in req.params else None
        for i, existing in enumerate(store):
            if existing["name"] == body.get("name") and existing.get("type", 1) == body.get("type", 1):
                store[i] = self._stored_command(body, gid, existing)
                return _json_response(store[i])
        cmd = self._stored_command(body, gid, None)
        store.append(cmd)
        return _json_response(cmd, status=201)

    def _find_command(self, store: list[dict[str, Any]], command_id: str) -> int | None:
        return next((i for i, c in enumerate(store) if c["id"] == command_id), None)

    async def _get_command(self, req: _Request) -> web.Response:
        store = self._command_store(req)
        if isinstance(store, web.Response):
            return store
        i = self._find_command(store, req.params["command_id"])
        return _error(404, "Unknown application command", 10063) if i is None else _json_response(store[i])

    async def _patch_command(self, req: _Request) -> web.Response:
        store = self._command_store(req)
        if isinstance(store, web.Response):
            return store
        i = self._find_command(store, req.params["command_id"])
        if i is None:
            return _error(404, "Unknown application command", 10063)
        gid = int(req.params["guild_id"]) if "guild_id" in req.params else None
        store[i] = self._stored_command({**store[i], **(req.json or {})}, gid, store[i])
        return _json_response(store[i])

    async def _delete_command(self, req: _Request) -> web.Response:
        store = self._command_store(req)
        if isinstance(store, web.Response):
            return store
        i = self._find_command(store, req.params["command_id"])
        if i is None:
            return _error(404, "Unknown application command", 10063)
        del store[i]
        return _no_content()

    # ------------------------------------------------------------------ message store

    def _check_message_body(
        self, body: Mapping[str, Any], files: Sequence[RecordedFile], *, creating: bool
    ) -> web.Response | None:
        content = body.get("content")
        if content is not None and len(str(content)) > MAX_CONTENT_LENGTH:
            return _error(
                400,
                "Invalid Form Body",
                50035,
                {
                    "content": {
                        "_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]
                    }
                },
            )
        if len(body.get("embeds") or []) > MAX_EMBEDS:
            return _error(
                400,
                "Invalid Form Body",
                50035,
                {
                    "embeds": {
                        "_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 10 or fewer in length."}]
                    }
                },
            )
        if sum(f.size for f in files) > self.upload_limit:
            return _error(413, "Request entity too large", 40005)
        if creating and not (
            content
            or body.get("embeds")
            or files
            or body.get("components")
            or body.get("sticker_ids")
            or body.get("poll")
        ):
            return _error(400, "Cannot send an empty message", 50006)
        return None

    def _upload(
        self, channel_id: int, file: RecordedFile, spec: Mapping[str, Any] | None, *, ephemeral: bool
    ) -> dict[str, Any]:
        filename = (spec or {}).get("filename") or file.filename
        content_type = _guess_content_type(filename, file.data)
        return self._store_attachment(
            channel_id,
            filename,
            file.data,
            content_type,
            {"description": (spec or {}).get("description"), "ephemeral": ephemeral or None},
        )

    def _store_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        att_id = self._ids.next()
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "file"
        path = f"/attachments/{channel_id}/{att_id}/{safe_name}"
        content_type = content_type or _guess_content_type(filename, data)
        self._cdn[path] = _CdnFile(data=data, content_type=content_type, filename=filename)
        payload: dict[str, Any] = {
            "id": str(att_id),
            "filename": safe_name,
            "size": len(data),
            "url": f"{self.base_url}{path}",
            "proxy_url": f"{self.base_url}{path}",
            "content_type": content_type,
        }
        size = _image_size(data)
        if size:
            payload["width"], payload["height"] = size
        for key, value in (extra or {}).items():
            if value is None:
                continue
            if key == "waveform" and isinstance(value, (bytes, bytearray)):
                value = base64.b64encode(bytes(value)).decode()
            payload[key] = value
        return payload

    def _new_message(
        self,
        channel_id: int,
        author_id: int,
        *,
        content: str = "",
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        flags: int = 0,
        message_type: int = 0,
        reference: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        channel = self.channels[channel_id]
        mid = self._ids.next()
        mentions = []
        for uid in dict.fromkeys(int(m) for m in re.findall(r"<@!?(\d+)>", content or "")):
            if uid in self.users:
                mentions.append(self._user_payload(uid))
        msg: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": self._user_payload(author_id),
            "content": content or "",
            "timestamp": _iso(snowflake_time(mid)),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": embeds or [],
            "components": _number_components(components or []),
            "pinned": False,
            "type": message_type,
            "flags": flags,
        }
        if reference is not None:
            ref_id = int(reference["message_id"])
            msg["type"] = 19 if message_type == 0 else message_type
            msg["message_reference"] = {
                "type": 0,
                "message_id": str(ref_id),
                "channel_id": str(channel_id),
                **({"guild_id": str(channel.guild_id)} if channel.guild_id else {}),
            }
            referenced = self.messages.get(ref_id)
            msg["referenced_message"] = dict(referenced) if referenced else None
        if extra:
            msg.update(extra)
        self.messages[mid] = msg
        if not flags & MessageFlags.EPHEMERAL:
            channel.last_message_id = mid
        self._bump()
        return msg

    def _apply_edit(self, msg: dict[str, Any], body: Mapping[str, Any], files: Sequence[RecordedFile]) -> None:
        channel_id = int(msg["channel_id"])
        ephemeral = bool(msg["flags"] & MessageFlags.EPHEMERAL)
        if "content" in body:
            msg["content"] = body["content"] or ""
        if "embeds" in body:
            msg["embeds"] = body["embeds"] or []
        if "components" in body:
            msg["components"] = _number_components(list(body["components"] or []))
        if "flags" in body and body["flags"] is not None:
            # Only SUPPRESS_EMBEDS can be changed by an edit; components v2 can be switched on.
            editable = MessageFlags.SUPPRESS_EMBEDS | MessageFlags.IS_COMPONENTS_V2
            msg["flags"] = (msg["flags"] & ~editable) | (int(body["flags"]) & editable)
        if "attachments" in body and body["attachments"] is not None:
            existing = {a["id"]: a for a in msg["attachments"]}
            kept: list[dict[str, Any]] = []
            for spec in body["attachments"]:
                sid = str(spec.get("id"))
                if sid in existing:
                    kept.append(existing[sid])
                else:
                    index = int(spec["id"])
                    if index < len(files):
                        kept.append(self._upload(channel_id, files[index], spec, ephemeral=ephemeral))
            msg["attachments"] = kept
        elif files:
            msg["attachments"] = msg["attachments"] + [
                self._upload(channel_id, f, None, ephemeral=ephemeral) for f in files
            ]
        msg["flags"] &= ~MessageFlags.LOADING
        msg["edited_timestamp"] = _iso()
        self._bump()

    def _message_from_body(
        self,
        channel_id: int,
        body: Mapping[str, Any],
        files: Sequence[RecordedFile],
        *,
        flags_mask: int,
        extra: Mapping[str, Any] | None = None,
        message_type: int = 0,
        force_flags: int = 0,
    ) -> dict[str, Any]:
        flags = (int(body.get("flags") or 0) & flags_mask) | force_flags
        ephemeral = bool(flags & MessageFlags.EPHEMERAL)
        specs = {str(a.get("id")): a for a in body.get("attachments") or []}
        attachments = [self._upload(channel_id, f, specs.get(str(i)), ephemeral=ephemeral) for i, f in enumerate(files)]
        return self._new_message(
            channel_id,
            self.bot_user.id,
            content=str(body.get("content") or ""),
            embeds=list(body.get("embeds") or []),
            components=list(body.get("components") or []),
            attachments=attachments,
            flags=flags,
            message_type=message_type,
            reference=None,
            extra=extra,
        )

    def _visible(self, msg: Mapping[str, Any], session: GatewaySession | None = None) -> dict[str, Any]:
        """The message as the bot may see it (MESSAGE_CONTENT intent rules)."""
        out = dict(msg)
        intents = session.intents if session is not None else self.intents
        if not self.enforce_message_content_intent or intents is None or intents & Intents.MESSAGE_CONTENT:
            return out
        channel = self.channels.get(int(msg["channel_id"]))
        bot_id = str(self.bot_user.id)
        if (
            channel is None
            or channel.is_dm
            or msg["author"]["id"] == bot_id
            or any(m["id"] == bot_id for m in msg.get("mentions", []))
        ):
            return out
        out.update(content="", embeds=[], attachments=[], components=[])
        out.pop("poll", None)
        return out

    def _gateway_message(self, msg: Mapping[str, Any], session: GatewaySession) -> dict[str, Any]:
        payload = self._visible(msg, session)
        channel = self.channels[int(msg["channel_id"])]
        if channel.guild_id is not None:
            payload["guild_id"] = str(channel.guild_id)
            author_id = int(msg["author"]["id"])
            if author_id in self.guilds[channel.guild_id].members:
                payload["member"] = self._member_payload(channel.guild_id, author_id, with_user=False)
        return payload

    async def _dispatch_message_event(self, event: str, msg: Mapping[str, Any], *, is_bot: bool) -> bool:
        """MESSAGE_CREATE/UPDATE to the sessions whose intents receive it; ``False`` if none did."""
        if msg["flags"] & MessageFlags.EPHEMERAL or (is_bot and not self.echo_bot_messages):
            return False
        channel = self.channels[int(msg["channel_id"])]
        needed = Intents.DIRECT_MESSAGES if channel.is_dm else Intents.GUILD_MESSAGES
        delivered = False
        for session in self._live_sessions():
            if session.has_intent(needed):
                await self._session_dispatch(session, event, self._gateway_message(msg, session))
                delivered = True
        return delivered

    async def _dispatch_message_delete(self, msg: Mapping[str, Any]) -> None:
        if msg["flags"] & MessageFlags.EPHEMERAL or not self.echo_bot_messages:
            return
        channel = self.channels[int(msg["channel_id"])]
        needed = Intents.DIRECT_MESSAGES if channel.is_dm else Intents.GUILD_MESSAGES
        data: dict[str, Any] = {"id": msg["id"], "channel_id": msg["channel_id"]}
        if channel.guild_id is not None:
            data["guild_id"] = str(channel.guild_id)
        for session in self._live_sessions():
            if session.has_intent(needed):
                await self._session_dispatch(session, "MESSAGE_DELETE", data)

    def _delete_stored(self, mid: int) -> dict[str, Any] | None:
        msg = self.messages.pop(mid, None)
        if msg is not None:
            self.deleted_message_ids.append(mid)
            self._bump()
        return msg

    # ------------------------------------------------------------------ REST: channels & messages

    def _channel_or_404(self, req: _Request) -> FakeChannel | web.Response:
        cid = req.params["channel_id"]
        channel = self.channels.get(int(cid)) if cid.isdigit() else None
        return channel if channel is not None else _error(404, "Unknown Channel", 10003)

    def _message_or_404(self, req: _Request, channel: FakeChannel) -> dict[str, Any] | web.Response:
        mid = req.params["message_id"]
        msg = self.messages.get(int(mid)) if mid.isdigit() else None
        if msg is None or int(msg["channel_id"]) != channel.id or msg["flags"] & MessageFlags.EPHEMERAL:
            return _error(404, "Unknown Message", 10008)
        return msg

    async def _get_channel(self, req: _Request) -> web.Response:
        channel = self._channel_or_404(req)
        return channel if isinstance(channel, web.Response) else _json_response(self._channel_payload(channel))

    async def _get_messages(self, req: _Request) -> web.Response:
        channel = self._channel_or_404(req)
        if isinstance(channel, web.Response):
            return channel
        limit = max(1, min(100, int(req.query.get("limit", 50))))
        found = [
            m
            for m in self.messages.values()
            if int(m["channel_id"]) == channel.id and not m["flags"] & MessageFlags.EPHEMERAL
        ]
        if "before" in req.query:
            found = [m for m in found if int(m["id"]) < int(req.query["before"])]
        if "after" in req.query:
            found = [m for m in found if int(m["id"]) > int(req.query["after"])]
            found = found[:limit]
        if "around" in req.query:
            around = int(req.query["around"])
            found.sort(key=lambda m: abs(int(m["id"]) - around))
            found = found[:limit]
        found.sort(key=lambda m: int(m["id"]), reverse=True)
        return _json_response([self._visible(m) for m in found[:limit]])

    async def _get_message(self, req: _Request) -> web.Response:
        channel = self._channel_or_404(req)
        if isinstance(channel, web.Response):
            return channel
        msg = self._message_or_404(req, channel)
        return msg if isinstance(msg, web.Response) else _json_response(self._visible(msg))

    async def _post_message(self, req: _Request) -> web.Response:
        channel = self._channel_or_404(req)
        if isinstance(channel, web.Response):
            return channel
        body = req.json or {}
        problem = self._check_message_body(body, req.files, creating=True)
        if problem is not None:
            return problem
        reference = body.get("message_reference")
        if reference and reference.get("message_id"):
            if int(reference["message_id"]) not in self.messages and reference.get("fail_if_not_exists", True):
                return _error(
                    400,
                    "Invalid Form Body",
                    50035,
                    {
                        "message_reference": {
                            "_errors": [{"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}]
                        }
                    },
                )
        else:
            reference = None
        allowed = MessageFlags.SUPPRESS_EMBEDS | MessageFlags.SUPPRESS_NOTIFICATIONS | MessageFlags.IS_COMPONENTS_V2
        msg = self._message_from_body(channel.id, body, req.files, flags_mask=allowed)
        if reference is not None and int(reference["message_id"]) in self.messages:
            ref_msg = self.messages[int(reference["message_id"])]
            msg["type"] = 19
            msg["message_reference"] = {
                "type": 0,
                "message_id": ref_msg["id"],
                "channel_id": ref_msg["channel_id"],
                **({"guild_id": str(channel.guild_id)} if channel.guild_id else {}),
            }
            msg["referenced_message"] = dict(ref_msg)
        if body.get("nonce") is not None:
            msg["nonce"] = body["nonce"]
        await self._dispatch_message_event("MESSAGE_CREATE", msg, is_bot=True)
        return _json_response(msg)

    async def _patch_message(self, req: _Request) -> web.Response:
        channel = self._channel_or_404(req)
        if isinstance(channel, web.Response):
            return channel
        msg = self._message_or_404(req, channel)
        if isinstance(msg, web.Response):
            return msg
        body = req.json or {}
        if msg["author"]["id"] != str(self.bot_user.id) and set(body) - {"flags"}:
            return _error(403, "Cannot edit a message authored by another user", 50005)
        return await self._edit_stored(msg, req)

    async def _delete_message(self, req: _Request) -> web.Response:
        channel = self._channel_or_404(req)
        if isinstance(channel, web.Response):
            return channel
        msg = self._message_or_404(req, channel)
        if isinstance(msg, web.Response):
            return msg
        self._delete_stored(int(msg["id"]))
        await self._dispatch_message_delete(msg)
        return _no_content()

    def _emoji_payload(self, emoji: str) -> dict[str, Any]:
        if ":" in emoji:
            name, _, eid = emoji.partition(":")
            return {"id": eid, "name": name}
        return {"id": None, "name": emoji}

    async def _add_reaction(self, req: _Request) -> web.Response:
        channel = self._channel_or_404(req)
        if isinstance(channel, web.Response):
            return channel
        msg = self._message_or_404(req, channel)
        if isinstance(msg, web.Response):
            return msg
        emoji = self._emoji_payload(req.params["emoji"])
        reactions = msg.setdefault("reactions", [])
        for reaction in reactions:
            if reaction["emoji"] == emoji:
                if not reaction["me"]:
                    reaction["me"] = True
                    reaction["count"] += 1
                    reaction["count_details"]["normal"] += 1
                break
        else:
            reactions.append(
                {
                    "emoji": emoji,
                    "count": 1,
                    "count_details": {"burst": 0, "normal": 1},
                    "me": True,
                    "me_burst": False,
                    "burst_colors": [],
                }
            )
        self._bump()
        return _no_content()

    async def _remove_reaction(self, req: _Request) -> web.Response:
        channel = self._channel_or_404(req)
        if isinstance(channel, web.Response):
            return channel
        msg = self._message_or_404(req, channel)
        if isinstance(msg, web.Response):
            return msg
        emoji = self._emoji_payload(req.params["emoji"])
        for reaction in list(msg.get("reactions", [])):
            if reaction["emoji"] == emoji and reaction["me"]:
                reaction["me"] = False
                reaction["count"] -= 1
                reaction["count_details"]["normal"] -= 1
                if reaction["count"] <= 0:
                    msg["reactions"].remove(reaction)
        self._bump()
        return _no_content()

    async def _typing(self, req: _Request) -> web.Response:
        channel = self._channel_or_404(req)
        return channel if isinstance(channel, web.Response) else _no_content()

    # ------------------------------------------------------------------ REST: interactions

    async def _interaction_callback(self, req: _Request) -> web.Response:
        iid = req.params["interaction_id"]
        inter = self._interactions_by_id.get(int(iid)) if iid.isdigit() else None
        if inter is None or inter.token != req.params["token"]:
            return _error(404, "Unknown interaction", 10062)
        if inter.acknowledged:
            return _error(400, "Interaction has already been acknowledged.", 40060)
        if time.monotonic() - inter.created_at > self.ack_deadline:
            return _error(404, "Unknown interaction", 10062)
        body = req.json or {}
        cb_type = body.get("type")
        data = body.get("data") or {}
        is_component = inter.type in (INTERACTION_COMPONENT, INTERACTION_MODAL_SUBMIT) and inter.message_id is not None
        valid = {
            INTERACTION_PING: {CB_PONG},
            INTERACTION_COMMAND: {CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_MODAL},
            INTERACTION_COMPONENT: {
                CB_MESSAGE,
                CB_DEFERRED_MESSAGE,
                CB_DEFERRED_UPDATE,
                CB_UPDATE_MESSAGE,
                CB_MODAL,
            },
            INTERACTION_AUTOCOMPLETE: {CB_AUTOCOMPLETE},
            INTERACTION_MODAL_SUBMIT: {CB_MESSAGE, CB_DEFERRED_MESSAGE}
            | ({CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE} if is_component else set()),
        }[inter.type]
        if cb_type not in valid:
            return _error(400, "Interaction callback type is not valid for this interaction", 50035)
        if cb_type in (CB_MESSAGE, CB_UPDATE_MESSAGE):
            problem = self._check_message_body(data, req.files, creating=cb_type == CB_MESSAGE)
            if problem is not None:
                return problem

        inter.response_type = cb_type
        inter.responded_at = time.monotonic()
        inter.response_body = body
        interaction_info: dict[str, Any] = {"id": str(inter.id), "type": inter.type}
        resource: dict[str, Any] | None = None

        if cb_type in (CB_MESSAGE, CB_DEFERRED_MESSAGE):
            flags_mask = (
                MessageFlags.EPHEMERAL
                | MessageFlags.SUPPRESS_EMBEDS
                | MessageFlags.SUPPRESS_NOTIFICATIONS
                | MessageFlags.IS_COMPONENTS_V2
            )
            if cb_type == CB_MESSAGE:
                msg = self._message_from_body(
                    inter.channel_id,
                    data,
                    req.files,
                    flags_mask=flags_mask,
                    extra=self._interaction_message_extra(inter),
                    message_type=self._response_message_type(inter),
                )
            else:
                msg = self._message_from_body(
                    inter.channel_id,
                    {"flags": data.get("flags")},
                    [],
                    flags_mask=MessageFlags.EPHEMERAL,
                    extra=self._interaction_message_extra(inter),
                    message_type=self._response_message_type(inter),
                    force_flags=MessageFlags.LOADING,
                )
            inter.original_message_id = int(msg["id"])
            interaction_info.update(
                response_message_id=msg["id"],
                response_message_loading=cb_type == CB_DEFERRED_MESSAGE,
                response_message_ephemeral=bool(msg["flags"] & MessageFlags.EPHEMERAL),
            )
            resource = {"type": cb_type, "message": msg}
            await self._dispatch_message_event("MESSAGE_CREATE", msg, is_bot=True)
        elif cb_type in (CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE):
            inter.original_message_id = inter.message_id
            msg = self.messages.get(inter.message_id or 0)
            if cb_type == CB_UPDATE_MESSAGE and msg is not None:
                self._apply_edit(msg, data, req.files)
                await self._dispatch_message_event("MESSAGE_UPDATE", msg, is_bot=True)
                resource = {"type": cb_type, "message": msg}
            if msg is not None:
                interaction_info.update(
                    response_message_id=msg["id"],
                    response_message_loading=False,
                    response_message_ephemeral=bool(msg["flags"] & MessageFlags.EPHEMERAL),
                )
        elif cb_type == CB_MODAL:
            modal = json.loads(json.dumps(data))  # a copy: the recorded call keeps what was sent
            modal["components"] = _number_components(list(modal.get("components") or []))
            inter.modal = modal
        elif cb_type == CB_AUTOCOMPLETE:
            inter.autocomplete_choices = list(data.get("choices") or [])
        self._bump()

        if not _truthy(req.query.get("with_response")):
            return _no_content()
        answer: dict[str, Any] = {"interaction": interaction_info}
        if resource is not None:
            answer["resource"] = resource
        return _json_response(answer)

    def _response_message_type(self, inter: FakeInteraction) -> int:
        return 20 if inter.type == INTERACTION_COMMAND else 0

    def _interaction_message_extra(self, inter: FakeInteraction) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "id": str(inter.id),
            "type": inter.type,
            "user": self._user_payload(inter.user_id),
            "authorizing_integration_owners": {"0": str(inter.guild_id)}
            if inter.guild_id
            else {"1": str(inter.user_id)},
        }
        if inter.command_name:
            metadata["name"] = inter.command_name
        if inter.message_id is not None:
            metadata["interacted_message_id"] = str(inter.message_id)
        extra: dict[str, Any] = {
            "webhook_id": str(self.application_id),
            "application_id": str(self.application_id),
            "interaction_metadata": metadata,
        }
        if inter.command_name:
            extra["interaction"] = {
                "id": str(inter.id),
                "type": inter.type,
                "name": inter.command_name,
                "user": self._user_payload(inter.user_id),
            }
        return extra

    def _webhook_interaction(self, req: _Request) -> FakeInteraction | web.Response:
        if req.params["application_id"] != str(self.application_id):
            return _error(404, "Unknown Webhook", 10015)
        inter = self._interactions_by_token.get(req.params["token"])
        if inter is None or inter.expired or time.monotonic() - inter.created_at > self.token_lifetime:
            return _error(401, "Invalid Webhook Token", 50027)
        return inter

    def _webhook_message(self, req: _Request, inter: FakeInteraction) -> dict[str, Any] | web.Response:
        mid_param = req.params["message_id"]
        if mid_param == "@original":
            mid = inter.original_message_id
        elif mid_param.isdigit() and (
            int(mid_param) in inter.followup_message_ids or int(mid_param) == inter.original_message_id
        ):
            mid = int(mid_param)
        else:
            mid = None
        msg = self.messages.get(mid) if mid is not None else None
        return msg if msg is not None else _error(404, "Unknown Message", 10008)

    async def _webhook_execute(self, req: _Request) -> web.Response:
        inter = self._webhook_interaction(req)
        if isinstance(inter, web.Response):
            return inter
        if not inter.acknowledged:
            return _error(404, "Unknown Webhook", 10015)
        body = req.json or {}
        problem = self._check_message_body(body, req.files, creating=True)
        if problem is not None:
            return problem
        original = self.original_response(inter)
        if (
            inter.response_type == CB_DEFERRED_MESSAGE
            and original is not None
            and original["flags"] & MessageFlags.LOADING
        ):
            # Discord: the first follow-up after a "thinking" defer becomes the original response.
            specs = body.get("attachments")
            if specs is None:
                specs = [{"id": i} for i in range(len(req.files))]
            self._apply_edit(original, {**body, "attachments": specs}, req.files)
            if body.get("flags"):
                original["flags"] |= int(body["flags"]) & (
                    MessageFlags.SUPPRESS_EMBEDS | MessageFlags.SUPPRESS_NOTIFICATIONS
                )
            inter.followup_message_ids.append(int(original["id"]))
            msg = original
            await self._dispatch_message_event("MESSAGE_UPDATE", msg, is_bot=True)
        else:
            flags_mask = (
                MessageFlags.EPHEMERAL
                | MessageFlags.SUPPRESS_EMBEDS
                | MessageFlags.SUPPRESS_NOTIFICATIONS
                | MessageFlags.IS_COMPONENTS_V2
            )
            msg = self._message_from_body(
                inter.channel_id,
                body,
                req.files,
                flags_mask=flags_mask,
                extra=self._interaction_message_extra(inter),
            )
            inter.followup_message_ids.append(int(msg["id"]))
            await self._dispatch_message_event("MESSAGE_CREATE", msg, is_bot=True)
        self._bump()
        return _json_response(msg) if _truthy(req.query.get("wait")) else _no_content()

    async def _webhook_get_message(self, req: _Request) -> web.Response:
        inter = self._webhook_interaction(req)
        if isinstance(inter, web.Response):
            return inter
        msg = self._webhook_message(req, inter)
        return msg if isinstance(msg, web.Response) else _json_response(msg)

    async def _webhook_edit_message(self, req: _Request) -> web.Response:
        inter = self._webhook_interaction(req)
        if isinstance(inter, web.Response):
            return inter
        msg = self._webhook_message(req, inter)
        if isinstance(msg, web.Response):
            return msg
        return await self._edit_stored(msg, req)

    async def _edit_stored(self, msg: dict[str, Any], req: _Request) -> web.Response:
        """Validate and apply an edit (channel or webhook route), then tell the gateway."""
        body = req.json or {}
        problem = self._check_message_body(body, req.files, creating=False)
        if problem is not None:
            return problem
        self._apply_edit(msg, body, req.files)
        await self._dispatch_message_event("MESSAGE_UPDATE", msg, is_bot=True)
        return _json_response(msg)

    async def _webhook_delete_message(self, req: _Request) -> web.Response:
        inter = self._webhook_interaction(req)
        if isinstance(inter, web.Response):
            return inter
        msg = self._webhook_message(req, inter)
        if isinstance(msg, web.Response):
            return msg
        self._delete_stored(int(msg["id"]))
        await self._dispatch_message_delete(msg)
        return _no_content()

    # ------------------------------------------------------------------ driver: incoming messages

    def _incoming_attachment(self, channel_id: int, spec: AttachmentSpec) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if isinstance(spec, Mapping):
            spec = dict(spec)
            filename = spec.pop("filename")
            data = spec.pop("data")
            content_type = spec.pop("content_type", None)
            extra = spec
        else:
            filename, data = spec[0], spec[1]
            content_type = spec[2] if len(spec) > 2 else None  # type: ignore[misc]
            if len(spec) > 3:
                extra = dict(spec[3])  # type: ignore[misc]
        return self._store_attachment(channel_id, filename, bytes(data), content_type, extra)

    async def send_message(
        self,
        channel_id: int | None = None,
        author: FakeUser | int | None = None,
        content: str = "",
        *,
        attachments: Sequence[AttachmentSpec] = (),
        flags: int = 0,
        reply_to: int | Mapping[str, Any] | None = None,
        embeds: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """A user posts a message: stored, and MESSAGE_CREATE dispatched (intents permitting).

        Returns the stored message payload (with CDN URLs for its attachments).
        """
        channel_id = channel_id if channel_id is not None else self._default_channel_id()
        uid = self._user_id(author)
        if not self._live_sessions():
            raise RuntimeError("cannot deliver a message: no gateway session (is the bot connected?)")
        atts = [self._incoming_attachment(channel_id, spec) for spec in attachments]
        ref = None
        if reply_to is not None:
            ref_id = int(reply_to["id"]) if isinstance(reply_to, Mapping) else int(reply_to)
            ref = {"message_id": ref_id}
        msg = self._new_message(
            channel_id,
            uid,
            content=content,
            attachments=atts,
            embeds=[dict(e) for e in embeds],
            flags=flags,
            reference=ref,
        )
        if not await self._dispatch_message_event("MESSAGE_CREATE", msg, is_bot=False):
            log.warning("message %s not delivered: the bot did not ask for the needed intent", msg["id"])
        return msg

    async def send_voice_message(
        self,
        channel_id: int | None = None,
        author: FakeUser | int | None = None,
        audio: bytes = b"",
        *,
        duration_secs: float = 1.0,
        waveform: bytes | str | None = None,
        filename: str = "voice-message.ogg",
        content_type: str = "audio/ogg",
    ) -> dict[str, Any]:
        """A user posts a voice message (flags IS_VOICE_MESSAGE, one audio/ogg attachment with
        ``duration_secs`` and ``waveform``, no content), the way Discord clients do."""
        if waveform is None:
            waveform = bytes((i * 37) % 256 for i in range(max(1, min(256, int(duration_secs * 10)))))
        spec = {
            "filename": filename,
            "data": audio,
            "content_type": content_type,
            "duration_secs": duration_secs,
            "waveform": waveform,
        }
        return await self.send_message(channel_id, author, "", attachments=[spec], flags=MessageFlags.IS_VOICE_MESSAGE)

    def _default_channel_id(self) -> int:
        if self.channel is None:
            raise ValueError("no channel given and no default channel")
        return self.channel.id

    # ------------------------------------------------------------------ driver: interactions

    def _build_interaction(
        self,
        itype: int,
        data: Mapping[str, Any],
        *,
        user_id: int,
        channel: FakeChannel,
        locale: str,
        app_permissions: int | None,
        message: Mapping[str, Any] | None = None,
    ) -> FakeInteraction:
        iid = self._ids.next()
        token = "fake-interaction-" + secrets.token_urlsafe(32)
        perms = str(DEFAULT_PERMISSIONS if app_permissions is None else app_permissions)
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "data": dict(data),
            "token": token,
            "version": 1,
            "locale": locale,
            "app_permissions": perms,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.upload_limit,
            "channel_id": str(channel.id),
            "channel": self._channel_payload(channel),
        }
        if channel.guild_id is not None:
            guild = self.guilds[channel.guild_id]
            if user_id not in guild.members:
                raise ValueError(f"user {user_id} is not a member of guild {guild.id}")
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {"id": str(guild.id), "locale": guild.preferred_locale, "features": []}
            payload["guild_locale"] = guild.preferred_locale
            payload["member"] = {
                **self._member_payload(guild.id, user_id),
                "permissions": str(DEFAULT_PERMISSIONS),
            }
            payload["authorizing_integration_owners"] = {"0": str(guild.id)}
            payload["context"] = 0
        else:
            payload["user"] = self._user_payload(user_id)
            payload["authorizing_integration_owners"] = {"0": str(self.owner_id or user_id)}
            payload["context"] = 1
        if message is not None:
            payload["message"] = dict(message)
        inter = FakeInteraction(
            id=iid,
            token=token,
            type=itype,
            payload=payload,
            user_id=user_id,
            channel_id=channel.id,
            guild_id=channel.guild_id,
        )
        return inter

    async def _send_interaction(self, inter: FakeInteraction) -> FakeInteraction:
        if not self._live_sessions():
            raise RuntimeError("cannot send an interaction: no gateway session (is the bot connected?)")
        self.interactions.append(inter)
        self._interactions_by_id[inter.id] = inter
        self._interactions_by_token[inter.token] = inter
        inter.created_at = time.monotonic()
        inter.created_wall = dt.datetime.now(dt.UTC)
        await self.dispatch("INTERACTION_CREATE", inter.payload)
        self._bump()
        return inter

    def _find_synced_command(self, name: str, guild_id: int | None) -> dict[str, Any] | None:
        if guild_id is not None:
            for cmd in self.guild_commands.get(guild_id, []):
                if cmd["name"] == name and cmd.get("type", 1) == 1:
                    return cmd
        for cmd in self.global_commands:
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd
        return None

    def _option_value(
        self,
        name: str,
        value: Any,
        opt_type: int | None,
        channel: FakeChannel,
        resolved: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        if opt_type is None:  # infer from the Python value
            if isinstance(value, bool):
                opt_type = OPT_BOOLEAN
            elif isinstance(value, int):
                opt_type = OPT_INTEGER
            elif isinstance(value, float):
                opt_type = OPT_NUMBER
            elif isinstance(value, FakeUser):
                opt_type = OPT_USER
            elif isinstance(value, FakeChannel):
                opt_type = OPT_CHANNEL
            elif isinstance(value, (tuple, Mapping)):
                opt_type = OPT_ATTACHMENT
            else:
                opt_type = OPT_STRING
        option: dict[str, Any] = {"name": name, "type": opt_type}
        if opt_type == OPT_ATTACHMENT:
            att = self._incoming_attachment(channel.id, value)
            att["ephemeral"] = True  # attachments of slash commands are ephemeral uploads
            resolved.setdefault("attachments", {})[att["id"]] = att
            option["value"] = att["id"]
        elif opt_type in (OPT_USER, OPT_MENTIONABLE):
            uid = self._user_id(value)
            resolved.setdefault("users", {})[str(uid)] = self._user_payload(uid)
            if channel.guild_id is not None and uid in self.guilds[channel.guild_id].members:
                member = self._member_payload(channel.guild_id, uid, with_user=False)
                member["permissions"] = str(DEFAULT_PERMISSIONS)
                resolved.setdefault("members", {})[str(uid)] = member
            option["value"] = str(uid)
        elif opt_type == OPT_CHANNEL:
            target = value if isinstance(value, FakeChannel) else self.channels[int(value)]
            resolved.setdefault("channels", {})[str(target.id)] = {
                **{k: v for k, v in self._channel_payload(target).items() if k in ("id", "type", "name", "parent_id")},
                "permissions": str(DEFAULT_PERMISSIONS),
            }
            option["value"] = str(target.id)
        elif opt_type == OPT_ROLE:
            role = next(r for r in self.guilds[channel.guild_id or 0].roles if r["id"] == str(value))
            resolved.setdefault("roles", {})[role["id"]] = role
            option["value"] = role["id"]
        elif opt_type == OPT_INTEGER:
            option["value"] = int(value)
        elif opt_type == OPT_NUMBER:
            option["value"] = float(value)
        elif opt_type == OPT_BOOLEAN:
            option["value"] = bool(value)
        else:
            option["value"] = str(value)
        return option

    async def slash_command(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user: FakeUser | int | None = None,
        channel_id: int | None = None,
        guild_id: int | None = None,
        attachments: Mapping[str, AttachmentSpec] | None = None,
        subcommand: str | None = None,
        locale: str = "en-US",
        app_permissions: int | None = None,
    ) -> FakeInteraction:
        """A user runs ``/name [subcommand] options...``: INTERACTION_CREATE type 2 is dispatched.

        Option types come from the synced command's schema (``bot.tree.sync()``), else they are
        inferred from the Python values (str, int, float, bool, FakeUser, FakeChannel, attachment
        spec). Attachment options (values given in ``options`` or ``attachments``) are uploaded to
        the fake CDN and sent through ``resolved.attachments``. ``subcommand`` is ``"sub"`` or
        ``"group sub"``. ``channel_id`` defaults to the default text channel; ``guild_id``, when
        given, must be the channel's guild.
        """
        channel = self.channels[channel_id if channel_id is not None else self._default_channel_id()]
        if guild_id is not None and guild_id != channel.guild_id:
            raise ValueError(f"channel {channel.id} is not in guild {guild_id}")
        uid = self._user_id(user)
        values: dict[str, Any] = {**(options or {}), **(attachments or {})}
        synced = self._find_synced_command(name, channel.guild_id)
        schema: list[dict[str, Any]] = list(synced.get("options") or []) if synced else []

        path = subcommand.split() if subcommand else []
        for part in path:
            node = next(
                (o for o in schema if o["name"] == part and o["type"] in (OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP)),
                None,
            )
            if synced is not None and node is None:
                raise ValueError(f"/{name} has no subcommand {part!r}")
            schema = list((node or {}).get("options") or [])
        types = {o["name"]: o["type"] for o in schema}
        if synced is not None:
            unknown = set(values) - set(types)
            if unknown:
                raise ValueError(
                    f"/{name} {subcommand or ''} has no option(s) {sorted(unknown)}; it has {sorted(types)}"
                )
            missing = [o["name"] for o in schema if o.get("required") and o["name"] not in values]
            if missing:
                raise ValueError(f"/{name} {subcommand or ''} is missing required option(s) {missing}")

        resolved: dict[str, dict[str, Any]] = {}
        leaf = [self._option_value(k, v, types.get(k), channel, resolved) for k, v in values.items()]
        tree: list[dict[str, Any]] = leaf
        kinds = [OPT_SUB_COMMAND_GROUP] * (len(path) - 1) + [OPT_SUB_COMMAND] if path else []
        for part, kind in reversed(list(zip(path, kinds, strict=True))):
            tree = [{"name": part, "type": kind, "options": tree}]

        data: dict[str, Any] = {
            "id": synced["id"] if synced else str(self._ids.next()),
            "name": name,
            "type": 1,
            "options": tree,
        }
        if resolved:
            data["resolved"] = resolved
        if synced is not None and synced.get("guild_id"):
            data["guild_id"] = synced["guild_id"]
        inter = self._build_interaction(
            INTERACTION_COMMAND,
            data,
            user_id=uid,
            channel=channel,
            locale=locale,
            app_permissions=app_permissions,
        )
        inter.command_name = name if not path else f"{name} {' '.join(path)}"
        return await self._send_interaction(inter)

    async def click_button(
        self,
        message: int | str | Mapping[str, Any] | Any,
        custom_id: str,
        user: FakeUser | int | None = None,
        *,
        values: Sequence[str] | None = None,
        locale: str = "en-US",
        app_permissions: int | None = None,
    ) -> FakeInteraction:
        """A user clicks the component ``custom_id`` on a stored message (a message id, payload or
        any object with ``.id`` such as a discord.py Message): INTERACTION_CREATE type 3.
        For select menus pass ``values``."""
        if isinstance(message, Mapping):
            mid = int(message["id"])
        elif isinstance(message, (int, str)):
            mid = int(message)
        else:
            mid = int(message.id)
        msg = self.messages.get(mid)
        if msg is None:
            raise KeyError(f"no stored message {mid}")
        component = next((c for c in _walk_components(msg["components"]) if c.get("custom_id") == custom_id), None)
        if component is None:
            available = [c.get("custom_id") for c in _walk_components(msg["components"]) if c.get("custom_id")]
            raise ValueError(f"message {mid} has no component {custom_id!r}; it has {available}")
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled")
        channel = self.channels[int(msg["channel_id"])]
        data: dict[str, Any] = {
            "custom_id": custom_id,
            "component_type": component["type"],
            "id": component.get("id"),
        }
        if component["type"] == 3:  # string select: plain values
            data["values"] = [str(v) for v in values or []]
        elif component["type"] in (5, 6, 7, 8):  # user / role / mentionable / channel selects
            opt_type = {5: OPT_USER, 6: OPT_ROLE, 7: OPT_MENTIONABLE, 8: OPT_CHANNEL}[component["type"]]
            resolved: dict[str, dict[str, Any]] = {}
            data["values"] = [self._option_value("v", v, opt_type, channel, resolved)["value"] for v in values or []]
            data["resolved"] = resolved
        inter = self._build_interaction(
            INTERACTION_COMPONENT,
            data,
            user_id=self._user_id(user),
            channel=channel,
            locale=locale,
            app_permissions=app_permissions,
            message=msg,
        )
        inter.custom_id = custom_id
        inter.message_id = mid
        return await self._send_interaction(inter)

    async def submit_modal(
        self,
        interaction: FakeInteraction,
        values: Mapping[str, str | Sequence[str]],
        user: FakeUser | int | None = None,
        *,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Submit the modal the bot opened in answer to ``interaction`` (callback type 9):
        INTERACTION_CREATE type 5 carrying each input's value by custom_id (a string for text
        inputs, a list of strings for selects), in the modal's own layout (action rows or labels)."""
        if interaction.modal is None:
            raise ValueError(f"interaction {interaction.id} was not answered with a modal")
        known = {c["custom_id"] for c in _walk_components(interaction.modal.get("components")) if c.get("custom_id")}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"modal has no input(s) {sorted(unknown)}; it has {sorted(known)}")

        def submitted(comp: Mapping[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {"type": comp["type"], "id": comp.get("id"), "custom_id": comp["custom_id"]}
            value = values.get(comp["custom_id"])
            if comp["type"] == 4:
                out["value"] = "" if value is None else str(value)
            else:
                out["values"] = [] if value is None else ([value] if isinstance(value, str) else list(value))
            return out

        rows: list[dict[str, Any]] = []
        for top in interaction.modal.get("components") or []:
            if top.get("type") == 1:
                children = [submitted(c) for c in top.get("components") or [] if c.get("custom_id")]
                rows.append({"type": 1, "id": top.get("id"), "components": children})
            elif (
                top.get("type") == 18
                and isinstance(top.get("component"), Mapping)
                and top["component"].get("custom_id")
            ):
                rows.append({"type": 18, "id": top.get("id"), "component": submitted(top["component"])})
            else:
                rows.append({"type": top.get("type"), "id": top.get("id")})
        data = {"custom_id": interaction.modal["custom_id"], "components": rows}
        channel = self.channels[interaction.channel_id]
        message = self.messages.get(interaction.message_id) if interaction.message_id else None
        inter = self._build_interaction(
            INTERACTION_MODAL_SUBMIT,
            data,
            user_id=self._user_id(user if user is not None else interaction.user_id),
            channel=channel,
            locale=locale,
            app_permissions=None,
            message=message,
        )
        inter.custom_id = interaction.modal["custom_id"]
        inter.message_id = interaction.message_id
        return await self._send_interaction(inter)
