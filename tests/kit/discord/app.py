"""``FakeDiscord``: the aiohttp application that assembles the fake's parts (world, HTTP router,
CDN, gateway, messages, interactions, commands) and the test-facing API over them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Self, TypeVar

from aiohttp import web

from .cdn import Cdn
from .commands import Commands
from .gateway import Gateway, GatewaySession
from .http import ApiRouter, RecordedCall, match_path
from .interactions import FakeInteraction, Interactions
from .messages import Messages
from .protocol import Rules
from .world import FakeChannel, FakeGuild, FakeUser, World

__all__ = ["FakeDiscord"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def _forwarded(part: str, name: str) -> Any:
    """A ``FakeDiscord`` attribute that is ``name`` of one of its parts (read and write)."""

    def get(self: FakeDiscord) -> Any:
        return getattr(getattr(self, part), name)

    def set_(self: FakeDiscord, value: Any) -> None:
        setattr(getattr(self, part), name, value)

    return property(get, set_)


def _method_of(part: str, cls: type, name: str) -> Any:
    """A ``FakeDiscord`` method that is ``name`` of one of its parts (same signature and doc)."""
    prop = property(lambda self: getattr(getattr(self, part), name))
    prop.__doc__ = getattr(cls, name).__doc__
    return prop


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

    The parts, for a test that needs more than this API: ``world`` (state and payloads),
    ``router`` (recorded calls), ``cdn``, ``gateway``, ``message_api``, ``interaction_api``,
    ``command_api``.
    """

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
        self.rules = Rules(
            token=token,
            token_lifetime=token_lifetime,
            ack_deadline=ack_deadline,
            heartbeat_interval_ms=heartbeat_interval_ms,
            disallowed_intents=disallowed_intents,
            enforce_message_content_intent=enforce_message_content_intent,
            echo_bot_messages=echo_bot_messages,
            upload_limit=upload_limit,
        )
        self.world = World(application_id=application_id, bot_name=bot_name, with_defaults=with_defaults)
        self.router = ApiRouter(lambda: self.rules.token, self.world.bump)
        self.cdn = Cdn(self.world.ids, self.router, lambda: self.base_url)
        self.gateway = Gateway(self.world, self.rules, self.router, lambda: self.gateway_url)
        self.message_api = Messages(self.world, self.rules, self.cdn, self.gateway)
        self.interaction_api = Interactions(self.world, self.rules, self.cdn, self.gateway, self.message_api)
        self.command_api = Commands(self.world, self.interaction_api)
        for part in (self.world, self.gateway, self.message_api, self.interaction_api, self.command_api):
            part.install_routes(self.router)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ the parts' state, by its old names

    token = _forwarded("rules", "token")
    token_lifetime = _forwarded("rules", "token_lifetime")
    ack_deadline = _forwarded("rules", "ack_deadline")
    heartbeat_interval_ms = _forwarded("rules", "heartbeat_interval_ms")
    disallowed_intents = _forwarded("rules", "disallowed_intents")
    enforce_message_content_intent = _forwarded("rules", "enforce_message_content_intent")
    echo_bot_messages = _forwarded("rules", "echo_bot_messages")
    upload_limit = _forwarded("rules", "upload_limit")

    application_id = _forwarded("world", "application_id")
    bot_user = _forwarded("world", "bot_user")
    owner_id = _forwarded("world", "owner_id")
    users = _forwarded("world", "users")
    guilds = _forwarded("world", "guilds")
    channels = _forwarded("world", "channels")
    messages = _forwarded("world", "messages")
    deleted_message_ids = _forwarded("world", "deleted_message_ids")
    guild = _forwarded("world", "guild")
    channel = _forwarded("world", "channel")
    dm_channel = _forwarded("world", "dm_channel")
    user = _forwarded("world", "user")
    other_user = _forwarded("world", "other_user")

    calls = _forwarded("router", "calls")
    sessions = _forwarded("gateway", "sessions")
    gateway_received = _forwarded("gateway", "received")
    gateway_queries = _forwarded("gateway", "queries")
    intents = _forwarded("gateway", "intents")
    interactions = _forwarded("interaction_api", "all")
    global_commands = _forwarded("command_api", "global_commands")
    guild_commands = _forwarded("command_api", "guild_commands")
    command_syncs = _forwarded("command_api", "syncs")

    # What a user does, and what the gateway sends on request.
    send_message = _method_of("message_api", Messages, "send_message")
    send_voice_message = _method_of("message_api", Messages, "send_voice_message")
    slash_command = _method_of("command_api", Commands, "slash_command")
    message_command = _method_of("command_api", Commands, "message_command")
    autocomplete = _method_of("command_api", Commands, "autocomplete")
    click_button = _method_of("interaction_api", Interactions, "click_button")
    submit_modal = _method_of("interaction_api", Interactions, "submit_modal")
    dispatch = _method_of("gateway", Gateway, "dispatch")
    request_reconnect = _method_of("gateway", Gateway, "request_reconnect")
    invalidate_sessions = _method_of("gateway", Gateway, "invalidate_sessions")
    # Questions about the state.
    dm_channel_for = _method_of("world", World, "dm_channel_for")
    was_downloaded = _method_of("cdn", Cdn, "was_downloaded")
    original_response = _method_of("interaction_api", Interactions, "original_response")
    followups = _method_of("interaction_api", Interactions, "followups")
    commands = _method_of("command_api", Commands, "commands")
    sync_count = _method_of("command_api", Commands, "sync_count")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Self:
        """Start serving on 127.0.0.1 (ephemeral port)."""
        if self._runner is not None:
            return self
        app = web.Application(client_max_size=max(64 * 1024 * 1024, self.rules.upload_limit * 4))
        app.router.add_route("*", "/api/v{version:[0-9]+}/{tail:.*}", self.router.handle_api)
        app.router.add_route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self.cdn.handle)
        for path in ("/gateway", "/gateway/", "/"):
            app.router.add_route("GET", path, self.gateway.handle)
        app.router.add_route("*", "/{tail:.*}", self.router.handle_unknown)
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
        await self.gateway.close_all()
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

    # ------------------------------------------------------------------ growing the world while connected

    async def add_user(
        self, username: str, *, bot: bool = False, global_name: str | None = None, guild_id: int | None = None
    ) -> FakeUser:
        """Create a user; with ``guild_id`` also a member of that guild (GUILD_MEMBER_ADD sent)."""
        user = self.world.create_user(username, bot=bot, global_name=global_name)
        if guild_id is not None:
            self.world.guilds[guild_id].members[user.id] = []
            if self.gateway.live_sessions():
                member = self.world.member_payload(guild_id, user.id)
                await self.gateway.dispatch("GUILD_MEMBER_ADD", {**member, "guild_id": str(guild_id)})
        return user

    async def add_guild(
        self, name: str, *, owner_id: int | None = None, channel_names: Sequence[str] = ("general",)
    ) -> FakeGuild:
        """Create a guild with text channels; sends GUILD_CREATE when the bot is connected."""
        owner = owner_id or (self.world.user.id if self.world.user else self.world.bot_user.id)
        guild = self.world.create_guild(name, owner_id=owner)
        for cname in channel_names:
            self.world.create_channel(guild.id, cname)
        for session in self.gateway.live_sessions():
            await self.gateway.send_guild_create(session, guild.id)
        return guild

    async def add_channel(
        self, guild_id: int, name: str, *, topic: str | None = None, nsfw: bool = False
    ) -> FakeChannel:
        """Create a text channel (``nsfw``: age-restricted); sends CHANNEL_CREATE when the bot is connected."""
        channel = self.world.create_channel(guild_id, name, topic=topic, nsfw=nsfw)
        if self.gateway.live_sessions():
            await self.gateway.dispatch("CHANNEL_CREATE", self.world.channel_payload(channel))
        return channel

    # ------------------------------------------------------------------ finding and waiting

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result is not None and result is not False:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = "\n  ".join(f"{c.method} {c.path} -> {c.status}" for c in self.router.calls[-15:])
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last calls:\n  {recent}")
            event = self.world.changed
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
            for c in self.router.calls[since:]
            if (method is None or c.method == method.upper())
            and match_path(path, c.path)
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

        return await self.wait_until(check, timeout, f"a call {method or ''} {path or route or ''}".strip())

    @property
    def unknown_calls(self) -> list[RecordedCall]:
        """Requests to routes the fake does not know (a bot calling these is a test failure)."""
        return [c for c in self.router.calls if c.kind == "unknown"]

    @property
    def downloads(self) -> list[RecordedCall]:
        """Every CDN download."""
        return self.cdn.downloads

    def find_messages(
        self,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        channel_id: int | None = None,
        from_bot: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Stored messages (current state, oldest first) matching the filters."""
        return [
            msg
            for msg in self.world.messages.values()
            if (channel_id is None or int(msg["channel_id"]) == channel_id)
            and (from_bot is None or self.world.is_bot(msg["author"]) == from_bot)
            and (predicate is None or predicate(msg))
        ]

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

        return await self.wait_until(check, timeout, "a message")

    async def wait_for_response(self, interaction: FakeInteraction, timeout: float = 5.0) -> FakeInteraction:
        """Wait until the bot has answered the interaction's callback."""
        return await self.wait_until(
            lambda: interaction if interaction.acknowledged else None,
            timeout,
            f"a callback to interaction {interaction.id}",
        )

    async def wait_until_connected(self, timeout: float = 5.0) -> GatewaySession:
        """Wait until a session has been sent READY (and its GUILD_CREATEs) and is connected."""
        return await self.wait_until(self.gateway.connected_session, timeout, "a gateway session")

    def get_message(self, message_id: int | str) -> dict[str, Any]:
        return self.world.messages[int(message_id)]

    # ------------------------------------------------------------------ making things go wrong

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
        when: Callable[[RecordedCall], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` matching API requests with ``status`` instead of handling them.

        ``path`` is relative to the API base, a glob (``"/channels/*/messages"``) or a compiled
        regex; ``when`` narrows it to the calls it accepts (e.g. ``lambda call: bool(call.files)``:
        only uploads). A 429 carries ``retry_after`` and the ``Via`` header discord.py needs to
        treat it as Discord's (without ``Via`` it assumes a Cloudflare ban and raises at once).
        Note that discord.py sleeps 1 s, 3 s, ... before retrying a 500/502/504.
        """
        self.router.fail_next(
            method,
            path,
            status=status,
            times=times,
            retry_after=retry_after,
            body=body,
            is_global=is_global,
            when=when,
        )

    def stall_next(
        self,
        method: str,
        path: str | re.Pattern[str],
        *,
        seconds: float,
        times: int = 1,
        when: Callable[[RecordedCall], bool] | None = None,
    ) -> None:
        """Handle the next ``times`` matching API requests (the message is created, the edit made)
        but hold the answer ``seconds``: the window in which a client that crashes has changed
        Discord without knowing it (kill the bot then)."""
        self.router.fail_next(
            method, path, status=0, times=times, retry_after=0, body=None, is_global=False, when=when, stall=seconds
        )

    def expire_token(self, interaction: FakeInteraction) -> None:
        """Make the interaction's webhook token invalid now (as if 15 minutes had passed)."""
        interaction.expired = True
