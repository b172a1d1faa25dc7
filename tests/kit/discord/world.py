"""The fake Discord's world state: ids, users, guilds, channels and messages, and the JSON payloads
Discord sends for them. Also the REST routes that only read or create world objects (the bot's own
user, other users, the application, guild members, DM channels)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .http import ApiError, ApiRequest, ApiRouter, json_response
from .protocol import DEFAULT_PERMISSIONS, DISCORD_EPOCH_MS, MessageFlags

__all__ = [
    "FakeChannel",
    "FakeGuild",
    "FakeUser",
    "Snowflakes",
    "World",
    "iso",
    "number_components",
    "snowflake_time",
    "walk_components",
]


class Snowflakes:
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


def iso(moment: dt.datetime | None = None) -> str:
    return (moment or dt.datetime.now(dt.UTC)).isoformat()


def walk_components(components: Sequence[Any] | None) -> Iterator[dict[str, Any]]:
    """Every component, nested ones included (action rows, containers, sections, labels)."""
    for comp in components or ():
        if not isinstance(comp, dict):
            continue
        yield comp
        yield from walk_components(comp.get("components"))
        for key in ("accessory", "component"):
            child = comp.get(key)
            if isinstance(child, Mapping):
                yield from walk_components([child])


def number_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every component a numeric ``id`` like Discord does in its answers."""
    counter = itertools.count(1)
    taken = {c["id"] for c in walk_components(components) if isinstance(c.get("id"), int)}
    for comp in walk_components(components):
        if "id" not in comp:
            n = next(counter)
            while n in taken:
                n = next(counter)
            comp["id"] = n
    return components


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
    nsfw: bool = False  # age-restricted (Discord's "nsfw" channel flag)

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
    joined_at: str = field(default_factory=iso)


ALL_PERMISSIONS = (1 << 51) - 1


def _everyone_role(guild_id: int) -> dict[str, Any]:
    return {
        "id": str(guild_id),
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


class World:
    """Everything the fake Discord knows, and a change signal that wakes the test's waiters.

    With ``with_defaults`` it holds one guild ("VoxCanvas Test") with a text channel "#general",
    two users ("alice", owner of the guild and of the application, and "bob") and a DM channel
    with alice; they are ``guild``, ``channel``, ``user``, ``other_user`` and ``dm_channel``.
    """

    def __init__(self, *, application_id: int | None, bot_name: str, with_defaults: bool) -> None:
        self.ids = Snowflakes()
        self.application_id: int = application_id or self.ids.next()
        # Modern applications have the same id as their bot user.
        self.bot_user = FakeUser(id=self.application_id, username=bot_name, bot=True)
        self.owner_id: int | None = None
        self.users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.messages: dict[int, dict[str, Any]] = {}  # insertion ordered; current state
        self.deleted_message_ids: list[int] = []
        self._changed = asyncio.Event()

        self.guild: FakeGuild | None = None
        self.channel: FakeChannel | None = None
        self.dm_channel: FakeChannel | None = None
        self.user: FakeUser | None = None
        self.other_user: FakeUser | None = None
        if with_defaults:
            self.user = self.create_user("alice", global_name="Alice")
            self.other_user = self.create_user("bob", global_name="Bob")
            self.owner_id = self.user.id
            self.guild = self.create_guild("VoxCanvas Test", owner_id=self.user.id)
            self.channel = self.create_channel(self.guild.id, "general")
            for u in (self.user, self.other_user):
                self.guild.members[u.id] = []
            self.dm_channel = self.dm_channel_for(self.user.id)

    # ------------------------------------------------------------------ change signal

    def bump(self) -> None:
        """Wake every waiter (they re-check their predicate)."""
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def changed(self) -> asyncio.Event:
        """The event the next :meth:`bump` sets (take it before re-checking, then wait on it)."""
        return self._changed

    # ------------------------------------------------------------------ building

    def create_user(self, username: str, *, bot: bool = False, global_name: str | None = None) -> FakeUser:
        user = FakeUser(id=self.ids.next(), username=username, bot=bot, global_name=global_name)
        self.users[user.id] = user
        return user

    def create_guild(self, name: str, *, owner_id: int) -> FakeGuild:
        gid = self.ids.next()
        guild = FakeGuild(id=gid, name=name, owner_id=owner_id, roles=[_everyone_role(gid)])
        guild.members[self.bot_user.id] = []
        guild.members.setdefault(owner_id, [])
        self.guilds[gid] = guild
        return guild

    def create_channel(self, guild_id: int, name: str, *, topic: str | None = None, nsfw: bool = False) -> FakeChannel:
        guild = self.guilds[guild_id]
        channel = FakeChannel(
            id=self.ids.next(),
            type=0,
            name=name,
            guild_id=guild_id,
            position=len(guild.channel_ids),
            topic=topic,
            nsfw=nsfw,
        )
        guild.channel_ids.append(channel.id)
        self.channels[channel.id] = channel
        return channel

    def dm_channel_for(self, user: FakeUser | int) -> FakeChannel:
        """The DM channel between the bot and ``user`` (created on first use)."""
        user_id = self.user_id(user)
        for channel in self.channels.values():
            if channel.is_dm and channel.recipient_ids == [user_id]:
                return channel
        channel = FakeChannel(id=self.ids.next(), type=1, recipient_ids=[user_id])
        self.channels[channel.id] = channel
        return channel

    def user_id(self, user: FakeUser | int | None) -> int:
        """The id of a known user (``None``: the default user)."""
        if user is None:
            if self.user is None:
                raise ValueError("no user given and no default user")
            return self.user.id
        uid = user.id if isinstance(user, FakeUser) else int(user)
        if uid not in self.users:
            raise KeyError(f"unknown user {uid}")
        return uid

    def default_channel_id(self) -> int:
        if self.channel is None:
            raise ValueError("no channel given and no default channel")
        return self.channel.id

    def is_bot(self, user_payload: Mapping[str, Any]) -> bool:
        return bool(user_payload["id"] == str(self.bot_user.id))

    # ------------------------------------------------------------------ messages

    def store_message(
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
        reference_id: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create and store a message; ``reference_id`` makes it a reply to that message."""
        channel = self.channels[channel_id]
        mid = self.ids.next()
        mentioned = dict.fromkeys(int(m) for m in re.findall(r"<@!?(\d+)>", content or ""))
        msg: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": self.user_payload(author_id),
            "content": content or "",
            "timestamp": iso(snowflake_time(mid)),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [self.user_payload(uid) for uid in mentioned if uid in self.users],
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": embeds or [],
            "components": number_components(components or []),
            "pinned": False,
            "type": message_type,
            "flags": flags,
        }
        if reference_id is not None:
            referenced = self.messages.get(reference_id)
            msg["type"] = 19 if message_type == 0 else message_type
            msg["message_reference"] = {
                "type": 0,
                "message_id": str(reference_id),
                "channel_id": referenced["channel_id"] if referenced else str(channel_id),
                **({"guild_id": str(channel.guild_id)} if channel.guild_id else {}),
            }
            msg["referenced_message"] = dict(referenced) if referenced else None
        if extra:
            msg.update(extra)
        self.messages[mid] = msg
        if not flags & MessageFlags.EPHEMERAL:
            channel.last_message_id = mid
        self.bump()
        return msg

    def delete_message(self, mid: int) -> dict[str, Any] | None:
        msg = self.messages.pop(mid, None)
        if msg is not None:
            self.deleted_message_ids.append(mid)
            self.bump()
        return msg

    # ------------------------------------------------------------------ payloads

    def user_payload(self, user_id: int) -> dict[str, Any]:
        return self.users[user_id].to_payload()

    def member_permissions(self, guild_id: int, user_id: int) -> int:
        """A member's permissions in the guild, as Discord computes them for interactions: the
        owner has them all (Manage Server included); everyone else has @everyone's."""
        return ALL_PERMISSIONS if self.guilds[guild_id].owner_id == user_id else DEFAULT_PERMISSIONS

    def member_payload(self, guild_id: int, user_id: int, *, with_user: bool = True) -> dict[str, Any]:
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
            payload["user"] = self.user_payload(user_id)
        return payload

    def channel_payload(self, channel: FakeChannel) -> dict[str, Any]:
        last_message_id = str(channel.last_message_id) if channel.last_message_id else None
        if channel.is_dm:
            return {
                "id": str(channel.id),
                "type": 1,
                "last_message_id": last_message_id,
                "recipients": [self.user_payload(u) for u in channel.recipient_ids],
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
            "nsfw": channel.nsfw,
            "rate_limit_per_user": 0,
            "last_message_id": last_message_id,
            "flags": 0,
        }

    def guild_create_payload(self, guild: FakeGuild, *, all_members: bool = True) -> dict[str, Any]:
        """GUILD_CREATE's guild; Discord lists only the bot's own member without GUILD_MEMBERS."""
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
            "members": [self.member_payload(guild.id, uid) for uid in member_ids],
            "channels": [
                {k: v for k, v in self.channel_payload(self.channels[cid]).items() if k != "guild_id"}
                for cid in guild.channel_ids
            ],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    #: GATEWAY_MESSAGE_CONTENT, APPLICATION_COMMAND_BADGE
    APPLICATION_FLAGS = (1 << 18) | (1 << 23)

    def application_payload(self) -> dict[str, Any]:
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
            "owner": self.user_payload(self.owner_id or self.bot_user.id),
            "team": None,
            "verify_key": "0" * 64,
            "flags": self.APPLICATION_FLAGS,
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "tags": [],
            "approximate_guild_count": len(self.guilds),
        }

    def bot_user_payload(self) -> dict[str, Any]:
        return {**self.bot_user.to_payload(), "verified": True, "mfa_enabled": False, "email": None, "locale": "en-US"}

    # ------------------------------------------------------------------ REST: identity

    def install_routes(self, router: ApiRouter) -> None:
        router.add("GET", "/users/@me", self._get_me)
        router.add("GET", "/users/{user_id}", self._get_user)
        router.add("POST", "/users/@me/channels", self._create_dm)
        router.add("GET", "/oauth2/applications/@me", self._get_application)
        router.add("GET", "/applications/@me", self._get_application)
        router.add("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member)

    async def _get_me(self, req: ApiRequest) -> web.Response:
        return json_response(self.bot_user_payload())

    async def _get_user(self, req: ApiRequest) -> web.Response:
        user = self.users.get(req.int_param("user_id") or -1)
        if user is None:
            raise ApiError(404, "Unknown User", 10013)
        return json_response(user.to_payload())

    async def _get_application(self, req: ApiRequest) -> web.Response:
        return json_response(self.application_payload())

    async def _get_member(self, req: ApiRequest) -> web.Response:
        guild = self.guilds.get(int(req.params["guild_id"]))
        if guild is None:
            raise ApiError(404, "Unknown Guild", 10004)
        uid = req.int_param("user_id")
        if uid is None or uid not in guild.members:
            raise ApiError(404, "Unknown Member", 10007)
        return json_response(self.member_payload(guild.id, uid))

    async def _create_dm(self, req: ApiRequest) -> web.Response:
        try:
            uid = int(req.body["recipient_id"])
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, "Invalid Form Body", 50035) from None
        if uid not in self.users or uid == self.bot_user.id:
            raise ApiError(400, "Invalid Recipient(s)", 50033)
        return json_response(self.channel_payload(self.dm_channel_for(uid)))
