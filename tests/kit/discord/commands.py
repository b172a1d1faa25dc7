"""Application commands: the REST routes that sync them (global and per guild, bulk overwrite
recorded), and a user running a slash command against the synced schema."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .http import ApiError, ApiRequest, ApiRouter, json_response, no_content
from .interactions import FakeInteraction, Interactions
from .protocol import (
    INTERACTION_AUTOCOMPLETE,
    INTERACTION_COMMAND,
    OPT_SUB_COMMAND,
    OPT_SUB_COMMAND_GROUP,
    AttachmentSpec,
)
from .world import FakeUser, World

__all__ = ["Commands"]


def _command_defaults() -> dict[str, Any]:
    """What Discord fills in for fields a synced command leaves out."""
    return {
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


class Commands:
    """The synced application commands and the slash commands users run."""

    def __init__(self, world: World, interactions: Interactions) -> None:
        self._world = world
        self._interactions = interactions
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.syncs: list[tuple[int | None, int]] = []  # (guild id or None, command count)

    def commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """The synced application commands (global, or of one guild)."""
        return self.global_commands if guild_id is None else self.guild_commands.get(guild_id, [])

    def sync_count(self, guild_id: int | None = None) -> int:
        """How many bulk-overwrite syncs were made (global, or to one guild)."""
        return sum(1 for g, _ in self.syncs if g == guild_id)

    def find_synced(self, name: str, guild_id: int | None) -> dict[str, Any] | None:
        """The chat-input command ``name`` as the guild sees it (its own first, then global)."""
        candidates = [*(self.guild_commands.get(guild_id, []) if guild_id is not None else []), *self.global_commands]
        return next((c for c in candidates if c["name"] == name and c.get("type", 1) == 1), None)

    # ------------------------------------------------------------------ REST

    def install_routes(self, router: ApiRouter) -> None:
        for prefix in ("/applications/{application_id}", "/applications/{application_id}/guilds/{guild_id}"):
            router.add("GET", prefix + "/commands", self._get_commands)
            router.add("PUT", prefix + "/commands", self._put_commands)
            router.add("POST", prefix + "/commands", self._post_command)
            router.add("GET", prefix + "/commands/{command_id}", self._get_command)
            router.add("PATCH", prefix + "/commands/{command_id}", self._patch_command)
            router.add("DELETE", prefix + "/commands/{command_id}", self._delete_command)

    def _store(self, req: ApiRequest) -> tuple[list[dict[str, Any]], int | None]:
        """The command list a route addresses, and its guild id (``None``: global)."""
        if req.params["application_id"] != str(self._world.application_id):
            raise ApiError(403, "Missing Access", 50001)
        if "guild_id" not in req.params:
            return self.global_commands, None
        gid = int(req.params["guild_id"])
        if gid not in self._world.guilds:
            raise ApiError(403, "Missing Access", 50001)
        return self.guild_commands.setdefault(gid, []), gid

    def _index(self, store: list[dict[str, Any]], req: ApiRequest) -> int:
        found = next((i for i, c in enumerate(store) if c["id"] == req.params["command_id"]), None)
        if found is None:
            raise ApiError(404, "Unknown application command", 10063)
        return found

    def _stored(self, body: Mapping[str, Any], guild_id: int | None, old: Mapping[str, Any] | None) -> dict[str, Any]:
        keep_none = ("default_member_permissions", "contexts")
        cmd = {**_command_defaults(), **{k: v for k, v in body.items() if v is not None or k in keep_none}}
        cmd["id"] = old["id"] if old else str(self._world.ids.next())
        cmd["application_id"] = str(self._world.application_id)
        cmd["version"] = str(self._world.ids.next())
        if guild_id is not None:
            cmd["guild_id"] = str(guild_id)
        return cmd

    async def _get_commands(self, req: ApiRequest) -> web.Response:
        return json_response(self._store(req)[0])

    async def _put_commands(self, req: ApiRequest) -> web.Response:
        store, gid = self._store(req)
        if not isinstance(req.json, list):
            raise ApiError(400, "Invalid Form Body", 50035)
        old = {(c["name"], c.get("type", 1)): c for c in store}
        store[:] = [self._stored(c, gid, old.get((c["name"], c.get("type", 1)))) for c in req.json]
        self.syncs.append((gid, len(store)))
        return json_response(store)

    async def _post_command(self, req: ApiRequest) -> web.Response:
        store, gid = self._store(req)
        body = req.body
        for i, existing in enumerate(store):
            if existing["name"] == body.get("name") and existing.get("type", 1) == body.get("type", 1):
                store[i] = self._stored(body, gid, existing)
                return json_response(store[i])
        store.append(self._stored(body, gid, None))
        return json_response(store[-1], status=201)

    async def _get_command(self, req: ApiRequest) -> web.Response:
        store, _ = self._store(req)
        return json_response(store[self._index(store, req)])

    async def _patch_command(self, req: ApiRequest) -> web.Response:
        store, gid = self._store(req)
        i = self._index(store, req)
        store[i] = self._stored({**store[i], **req.body}, gid, store[i])
        return json_response(store[i])

    async def _delete_command(self, req: ApiRequest) -> web.Response:
        store, _ = self._store(req)
        del store[self._index(store, req)]
        return no_content()

    # ------------------------------------------------------------------ driver

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
        world = self._world
        channel = world.channels[channel_id if channel_id is not None else world.default_channel_id()]
        if guild_id is not None and guild_id != channel.guild_id:
            raise ValueError(f"channel {channel.id} is not in guild {guild_id}")
        uid = world.user_id(user)
        values: dict[str, Any] = {**(options or {}), **(attachments or {})}
        synced = self.find_synced(name, channel.guild_id)
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
        tree = [self._interactions.option_value(k, v, types.get(k), channel, resolved) for k, v in values.items()]
        kinds = [OPT_SUB_COMMAND_GROUP] * (len(path) - 1) + [OPT_SUB_COMMAND] if path else []
        for part, kind in reversed(list(zip(path, kinds, strict=True))):
            tree = [{"name": part, "type": kind, "options": tree}]

        data: dict[str, Any] = {
            "id": synced["id"] if synced else str(world.ids.next()),
            "name": name,
            "type": 1,
            "options": tree,
        }
        if resolved:
            data["resolved"] = resolved
        if synced is not None and synced.get("guild_id"):
            data["guild_id"] = synced["guild_id"]
        inter = self._interactions.build(
            INTERACTION_COMMAND, data, user_id=uid, channel=channel, locale=locale, app_permissions=app_permissions
        )
        inter.command_name = name if not path else f"{name} {' '.join(path)}"
        return await self._interactions.send(inter)

    async def message_command(
        self,
        name: str,
        message_id: int | str,
        *,
        user: FakeUser | int | None = None,
        locale: str = "en-US",
        app_permissions: int | None = None,
    ) -> FakeInteraction:
        """A user picks the message context-menu command ``name`` ("Apps → name") on message
        ``message_id``: INTERACTION_CREATE type 2 with command type 3 (MESSAGE), ``target_id`` and
        the message in ``resolved.messages``, as Discord sends it."""
        world = self._world
        message = world.messages[int(message_id)]
        channel = world.channels[int(message["channel_id"])]
        candidates = [
            *(self.guild_commands.get(channel.guild_id, []) if channel.guild_id is not None else []),
            *self.global_commands,
        ]
        synced = next((c for c in candidates if c["name"] == name and c.get("type", 1) == 3), None)
        if synced is None:
            raise ValueError(f"no message command {name!r} is synced")
        data: dict[str, Any] = {
            "id": synced["id"],
            "name": name,
            "type": 3,
            "target_id": str(message["id"]),
            "resolved": {"messages": {str(message["id"]): dict(message)}},
        }
        if synced.get("guild_id"):
            data["guild_id"] = synced["guild_id"]
        inter = self._interactions.build(
            INTERACTION_COMMAND,
            data,
            user_id=world.user_id(user),
            channel=channel,
            locale=locale,
            app_permissions=app_permissions,
        )
        inter.command_name = name
        return await self._interactions.send(inter)

    async def autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        timeout: float = 10.0,
        channel_id: int | None = None,
        subcommand: str | None = None,
    ) -> list[dict[str, Any]]:
        """A user types into option ``focused`` of ``/name`` (``subcommand``: ``"sub"`` or ``"group
        sub"``) in ``channel_id`` (default: the default text channel): INTERACTION_CREATE type 4
        (APPLICATION_COMMAND_AUTOCOMPLETE) is dispatched; returns the choices the bot answered."""
        world = self._world
        channel = world.channels[channel_id if channel_id is not None else world.default_channel_id()]
        synced = self.find_synced(name, channel.guild_id)
        schema: list[dict[str, Any]] = list((synced or {}).get("options") or [])
        path = subcommand.split() if subcommand else []
        for part in path:
            node = next((o for o in schema if o["name"] == part), None)
            schema = list((node or {}).get("options") or [])
        types = {o["name"]: o["type"] for o in schema}
        tree: list[dict[str, Any]] = []
        for key, value in options.items():
            option = {"name": key, "type": types.get(key, 3), "value": value}
            if key == focused:
                option["focused"] = True
            tree.append(option)
        kinds = [OPT_SUB_COMMAND_GROUP] * (len(path) - 1) + [OPT_SUB_COMMAND] if path else []
        for part, kind in reversed(list(zip(path, kinds, strict=True))):
            tree = [{"name": part, "type": kind, "options": tree}]
        data: dict[str, Any] = {"id": synced["id"] if synced else str(world.ids.next()), "name": name, "type": 1}
        data["options"] = tree
        if synced is not None and synced.get("guild_id"):
            data["guild_id"] = synced["guild_id"]
        inter = self._interactions.build(
            INTERACTION_AUTOCOMPLETE,
            data,
            user_id=world.user_id(None),
            channel=channel,
            locale="en-US",
            app_permissions=None,
        )
        inter.command_name = name
        await self._interactions.send(inter)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while inter.autocomplete_choices is None:
            if loop.time() > deadline:
                raise TimeoutError(f"/{name} {focused}: no autocomplete answer")
            await asyncio.sleep(0.02)
        return inter.autocomplete_choices
