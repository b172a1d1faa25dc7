"""Interactions: building and dispatching INTERACTION_CREATE (component clicks, modal submits; slash
commands are in :mod:`.commands`), the callback route with Discord's 3-second deadline, and the
interaction webhook routes (follow-ups, the original response) with the 15-minute token."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .cdn import Cdn
from .gateway import Gateway
from .http import ApiError, ApiRequest, ApiRouter, json_response, no_content, truthy
from .messages import Messages
from .protocol import (
    CB_AUTOCOMPLETE,
    CB_DEFERRED_MESSAGE,
    CB_DEFERRED_UPDATE,
    CB_MESSAGE,
    CB_MODAL,
    CB_PONG,
    CB_UPDATE_MESSAGE,
    DEFAULT_PERMISSIONS,
    INTERACTION_AUTOCOMPLETE,
    INTERACTION_COMMAND,
    INTERACTION_COMPONENT,
    INTERACTION_MESSAGE_FLAGS,
    INTERACTION_MODAL_SUBMIT,
    INTERACTION_PING,
    MESSAGE_CHAT_INPUT_COMMAND,
    MESSAGE_DEFAULT,
    OPT_ATTACHMENT,
    OPT_BOOLEAN,
    OPT_CHANNEL,
    OPT_INTEGER,
    OPT_MENTIONABLE,
    OPT_NUMBER,
    OPT_ROLE,
    OPT_STRING,
    OPT_USER,
    MessageFlags,
    Rules,
)
from .world import FakeChannel, FakeUser, World, number_components, walk_components

__all__ = ["FakeInteraction", "Interactions"]

#: Select menu component types -> the option type of their values.
_SELECT_VALUE_TYPES = {5: OPT_USER, 6: OPT_ROLE, 7: OPT_MENTIONABLE, 8: OPT_CHANNEL}


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


class Interactions:
    """The interactions the fake dispatched, the bot's answers to them, and the user's side."""

    def __init__(self, world: World, rules: Rules, cdn: Cdn, gateway: Gateway, messages: Messages) -> None:
        self._world = world
        self._rules = rules
        self._cdn = cdn
        self._gateway = gateway
        self._messages = messages
        self.all: list[FakeInteraction] = []
        self._by_id: dict[int, FakeInteraction] = {}
        self._by_token: dict[str, FakeInteraction] = {}

    def original_response(self, interaction: FakeInteraction) -> dict[str, Any] | None:
        """The interaction's original response message (current state), if any."""
        mid = interaction.original_message_id
        return self._world.messages.get(mid) if mid is not None else None

    def followups(self, interaction: FakeInteraction) -> list[dict[str, Any]]:
        return [self._world.messages[m] for m in interaction.followup_message_ids if m in self._world.messages]

    # ------------------------------------------------------------------ building and dispatching

    def build(
        self,
        itype: int,
        data: Mapping[str, Any],
        *,
        user_id: int,
        channel: FakeChannel,
        locale: str,
        app_permissions: int | None,
        message: Mapping[str, Any] | None = None,
        member_permissions: int | None = None,
    ) -> FakeInteraction:
        world = self._world
        iid = world.ids.next()
        token = "fake-interaction-" + secrets.token_urlsafe(32)
        perms = str(DEFAULT_PERMISSIONS if app_permissions is None else app_permissions)
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(world.application_id),
            "type": itype,
            "data": dict(data),
            "token": token,
            "version": 1,
            "locale": locale,
            "app_permissions": perms,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self._rules.upload_limit,
            "channel_id": str(channel.id),
            "channel": world.channel_payload(channel),
        }
        if channel.guild_id is not None:
            guild = world.guilds[channel.guild_id]
            if user_id not in guild.members:
                raise ValueError(f"user {user_id} is not a member of guild {guild.id}")
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {"id": str(guild.id), "locale": guild.preferred_locale, "features": []}
            payload["guild_locale"] = guild.preferred_locale
            member_perms = (
                world.member_permissions(guild.id, user_id) if member_permissions is None else member_permissions
            )
            payload["member"] = {**world.member_payload(guild.id, user_id), "permissions": str(member_perms)}
            payload["authorizing_integration_owners"] = {"0": str(guild.id)}
            payload["context"] = 0
        else:
            payload["user"] = world.user_payload(user_id)
            payload["authorizing_integration_owners"] = {"0": str(world.owner_id or user_id)}
            payload["context"] = 1
        if message is not None:
            payload["message"] = dict(message)
        return FakeInteraction(
            id=iid,
            token=token,
            type=itype,
            payload=payload,
            user_id=user_id,
            channel_id=channel.id,
            guild_id=channel.guild_id,
        )

    async def send(self, inter: FakeInteraction) -> FakeInteraction:
        if not self._gateway.live_sessions():
            raise RuntimeError("cannot send an interaction: no gateway session (is the bot connected?)")
        self.all.append(inter)
        self._by_id[inter.id] = inter
        self._by_token[inter.token] = inter
        inter.created_at = time.monotonic()
        inter.created_wall = dt.datetime.now(dt.UTC)
        await self._gateway.dispatch("INTERACTION_CREATE", inter.payload)
        self._world.bump()
        return inter

    def option_value(
        self, name: str, value: Any, opt_type: int | None, channel: FakeChannel, resolved: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """One command option (or select value) ``{"name", "type", "value"}``; users, members,
        channels, roles and attachments it names are added to ``resolved``. Without ``opt_type``
        the type is inferred from the Python value."""
        world = self._world
        opt_type = opt_type if opt_type is not None else _infer_option_type(value)
        option: dict[str, Any] = {"name": name, "type": opt_type}
        if opt_type == OPT_ATTACHMENT:
            att = self._cdn.store_incoming(channel.id, value)
            att["ephemeral"] = True  # attachments of slash commands are ephemeral uploads
            resolved.setdefault("attachments", {})[att["id"]] = att
            option["value"] = att["id"]
        elif opt_type in (OPT_USER, OPT_MENTIONABLE):
            uid = world.user_id(value)
            resolved.setdefault("users", {})[str(uid)] = world.user_payload(uid)
            if channel.guild_id is not None and uid in world.guilds[channel.guild_id].members:
                member = world.member_payload(channel.guild_id, uid, with_user=False)
                member["permissions"] = str(DEFAULT_PERMISSIONS)
                resolved.setdefault("members", {})[str(uid)] = member
            option["value"] = str(uid)
        elif opt_type == OPT_CHANNEL:
            target = value if isinstance(value, FakeChannel) else world.channels[int(value)]
            shown = ("id", "type", "name", "parent_id")
            resolved.setdefault("channels", {})[str(target.id)] = {
                **{k: v for k, v in world.channel_payload(target).items() if k in shown},
                "permissions": str(DEFAULT_PERMISSIONS),
            }
            option["value"] = str(target.id)
        elif opt_type == OPT_ROLE:
            role = next(r for r in world.guilds[channel.guild_id or 0].roles if r["id"] == str(value))
            resolved.setdefault("roles", {})[role["id"]] = role
            option["value"] = role["id"]
        else:
            convert = {OPT_INTEGER: int, OPT_NUMBER: float, OPT_BOOLEAN: bool}.get(opt_type, str)
            option["value"] = convert(value)
        return option

    # ------------------------------------------------------------------ driver: components and modals

    async def click_button(
        self,
        message: int | str | Mapping[str, Any] | Any,
        custom_id: str,
        user: FakeUser | int | None = None,
        *,
        values: Sequence[str] | None = None,
        locale: str = "en-US",
        app_permissions: int | None = None,
        member_permissions: int | None = None,
    ) -> FakeInteraction:
        """A user clicks the component ``custom_id`` on a stored message (a message id, payload or
        any object with ``.id`` such as a discord.py Message): INTERACTION_CREATE type 3.
        For select menus pass ``values``; ``member_permissions`` (a bit field, e.g. with
        MANAGE_MESSAGES ``1 << 13``) replaces the member's default permissions in the channel."""
        if isinstance(message, Mapping):
            mid = int(message["id"])
        elif isinstance(message, (int, str)):
            mid = int(message)
        else:
            mid = int(message.id)
        msg = self._world.messages.get(mid)
        if msg is None:
            raise KeyError(f"no stored message {mid}")
        component = next((c for c in walk_components(msg["components"]) if c.get("custom_id") == custom_id), None)
        if component is None:
            available = [c.get("custom_id") for c in walk_components(msg["components"]) if c.get("custom_id")]
            raise ValueError(f"message {mid} has no component {custom_id!r}; it has {available}")
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled")
        channel = self._world.channels[int(msg["channel_id"])]
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"], "id": component.get("id")}
        if component["type"] == 3:  # string select: plain values
            data["values"] = [str(v) for v in values or []]
        elif component["type"] in _SELECT_VALUE_TYPES:  # user / role / mentionable / channel selects
            opt_type = _SELECT_VALUE_TYPES[component["type"]]
            resolved: dict[str, dict[str, Any]] = {}
            data["values"] = [self.option_value("v", v, opt_type, channel, resolved)["value"] for v in values or []]
            data["resolved"] = resolved
        inter = self.build(
            INTERACTION_COMPONENT,
            data,
            user_id=self._world.user_id(user),
            channel=channel,
            locale=locale,
            app_permissions=app_permissions,
            message=msg,
            member_permissions=member_permissions,
        )
        inter.custom_id = custom_id
        inter.message_id = mid
        return await self.send(inter)

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
        known = {c["custom_id"] for c in walk_components(interaction.modal.get("components")) if c.get("custom_id")}
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
        message = self._world.messages.get(interaction.message_id) if interaction.message_id else None
        inter = self.build(
            INTERACTION_MODAL_SUBMIT,
            data,
            user_id=self._world.user_id(user if user is not None else interaction.user_id),
            channel=self._world.channels[interaction.channel_id],
            locale=locale,
            app_permissions=None,
            message=message,
        )
        inter.custom_id = interaction.modal["custom_id"]
        inter.message_id = interaction.message_id
        return await self.send(inter)

    # ------------------------------------------------------------------ REST: callback and webhooks

    def install_routes(self, router: ApiRouter) -> None:
        one = "/webhooks/{application_id}/{token}/messages/{message_id}"
        router.add("POST", "/interactions/{interaction_id}/{token}/callback", self._callback)
        router.add("POST", "/webhooks/{application_id}/{token}", self._webhook_execute)
        router.add("GET", one, self._webhook_get_message)
        router.add("PATCH", one, self._webhook_edit_message)
        router.add("DELETE", one, self._webhook_delete_message)

    def _valid_callbacks(self, inter: FakeInteraction) -> set[int]:
        if inter.type == INTERACTION_PING:
            return {CB_PONG}
        if inter.type == INTERACTION_COMMAND:
            return {CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_MODAL}
        if inter.type == INTERACTION_COMPONENT:
            return {CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE, CB_MODAL}
        if inter.type == INTERACTION_AUTOCOMPLETE:
            return {CB_AUTOCOMPLETE}
        # A modal submitted from a component may update that component's message.
        on_message = inter.message_id is not None
        return {CB_MESSAGE, CB_DEFERRED_MESSAGE} | ({CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE} if on_message else set())

    async def _callback(self, req: ApiRequest) -> web.Response:
        inter = self._by_id.get(req.int_param("interaction_id") or -1)
        if inter is None or inter.token != req.params["token"]:
            raise ApiError(404, "Unknown interaction", 10062)
        if inter.acknowledged:
            raise ApiError(400, "Interaction has already been acknowledged.", 40060)
        if time.monotonic() - inter.created_at > self._rules.ack_deadline:
            raise ApiError(404, "Unknown interaction", 10062)
        body = req.body
        cb_type = body.get("type")
        data = body.get("data") or {}
        if cb_type not in self._valid_callbacks(inter):
            raise ApiError(400, "Interaction callback type is not valid for this interaction", 50035)
        if cb_type in (CB_MESSAGE, CB_UPDATE_MESSAGE):
            self._messages.check_body(data, req.files, creating=cb_type == CB_MESSAGE)

        inter.response_type = cb_type
        inter.responded_at = time.monotonic()
        inter.response_body = body
        info: dict[str, Any] = {"id": str(inter.id), "type": inter.type}
        resource: dict[str, Any] | None = None
        msg: dict[str, Any] | None = None
        if cb_type in (CB_MESSAGE, CB_DEFERRED_MESSAGE):
            deferred = cb_type == CB_DEFERRED_MESSAGE
            msg = self._messages.create_from_body(
                inter.channel_id,
                {"flags": data.get("flags")} if deferred else data,
                [] if deferred else req.files,
                flags_mask=MessageFlags.EPHEMERAL if deferred else INTERACTION_MESSAGE_FLAGS,
                extra=self._message_extra(inter),
                message_type=MESSAGE_CHAT_INPUT_COMMAND if inter.type == INTERACTION_COMMAND else MESSAGE_DEFAULT,
                force_flags=MessageFlags.LOADING if deferred else 0,
            )
            inter.original_message_id = int(msg["id"])
            resource = {"type": cb_type, "message": msg}
            await self._messages.dispatch_event("MESSAGE_CREATE", msg, is_bot=True)
        elif cb_type in (CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE):
            inter.original_message_id = inter.message_id
            msg = self._world.messages.get(inter.message_id or 0)
            if cb_type == CB_UPDATE_MESSAGE and msg is not None:
                self._messages.apply_edit(msg, data, req.files)
                await self._messages.dispatch_event("MESSAGE_UPDATE", msg, is_bot=True)
                resource = {"type": cb_type, "message": msg}
        elif cb_type == CB_MODAL:
            modal = json.loads(json.dumps(data))  # a copy: the recorded call keeps what was sent
            modal["components"] = number_components(list(modal.get("components") or []))
            inter.modal = modal
        elif cb_type == CB_AUTOCOMPLETE:
            inter.autocomplete_choices = list(data.get("choices") or [])
        if msg is not None:
            info.update(
                response_message_id=msg["id"],
                response_message_loading=cb_type == CB_DEFERRED_MESSAGE,
                response_message_ephemeral=bool(msg["flags"] & MessageFlags.EPHEMERAL),
            )
        self._world.bump()

        if not truthy(req.query.get("with_response")):
            return no_content()
        answer: dict[str, Any] = {"interaction": info}
        if resource is not None:
            answer["resource"] = resource
        return json_response(answer)

    def _message_extra(self, inter: FakeInteraction) -> dict[str, Any]:
        """The fields of a message sent in answer to an interaction (webhook, metadata)."""
        world = self._world
        owners = {"0": str(inter.guild_id)} if inter.guild_id else {"1": str(inter.user_id)}
        metadata: dict[str, Any] = {
            "id": str(inter.id),
            "type": inter.type,
            "user": world.user_payload(inter.user_id),
            "authorizing_integration_owners": owners,
        }
        if inter.command_name:
            metadata["name"] = inter.command_name
        if inter.message_id is not None:
            metadata["interacted_message_id"] = str(inter.message_id)
        extra: dict[str, Any] = {
            "webhook_id": str(world.application_id),
            "application_id": str(world.application_id),
            "interaction_metadata": metadata,
        }
        if inter.command_name:
            extra["interaction"] = {
                "id": str(inter.id),
                "type": inter.type,
                "name": inter.command_name,
                "user": world.user_payload(inter.user_id),
            }
        return extra

    def _webhook_interaction(self, req: ApiRequest) -> FakeInteraction:
        if req.params["application_id"] != str(self._world.application_id):
            raise ApiError(404, "Unknown Webhook", 10015)
        inter = self._by_token.get(req.params["token"])
        if inter is None or inter.expired or time.monotonic() - inter.created_at > self._rules.token_lifetime:
            raise ApiError(401, "Invalid Webhook Token", 50027)
        return inter

    def _webhook_message(self, req: ApiRequest) -> dict[str, Any]:
        """The message a webhook route names: ``@original`` or one of the interaction's own."""
        inter = self._webhook_interaction(req)
        mid_param = req.params["message_id"]
        if mid_param == "@original":
            mid = inter.original_message_id
        else:
            mid = req.int_param("message_id")
            if mid not in inter.followup_message_ids and mid != inter.original_message_id:
                mid = None
        msg = self._world.messages.get(mid) if mid is not None else None
        if msg is None:
            raise ApiError(404, "Unknown Message", 10008)
        return msg

    async def _webhook_execute(self, req: ApiRequest) -> web.Response:
        inter = self._webhook_interaction(req)
        if not inter.acknowledged:
            raise ApiError(404, "Unknown Webhook", 10015)
        body = req.body
        self._messages.check_body(body, req.files, creating=True)
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
            self._messages.apply_edit(original, {**body, "attachments": specs}, req.files)
            if body.get("flags"):
                kept = MessageFlags.SUPPRESS_EMBEDS | MessageFlags.SUPPRESS_NOTIFICATIONS
                original["flags"] |= int(body["flags"]) & kept
            inter.followup_message_ids.append(int(original["id"]))
            msg = original
            await self._messages.dispatch_event("MESSAGE_UPDATE", msg, is_bot=True)
        else:
            msg = self._messages.create_from_body(
                inter.channel_id,
                body,
                req.files,
                flags_mask=INTERACTION_MESSAGE_FLAGS,
                extra=self._message_extra(inter),
            )
            inter.followup_message_ids.append(int(msg["id"]))
            await self._messages.dispatch_event("MESSAGE_CREATE", msg, is_bot=True)
        self._world.bump()
        return json_response(msg) if truthy(req.query.get("wait")) else no_content()

    async def _webhook_get_message(self, req: ApiRequest) -> web.Response:
        return json_response(self._webhook_message(req))

    async def _webhook_edit_message(self, req: ApiRequest) -> web.Response:
        return await self._messages.edit(self._webhook_message(req), req)

    async def _webhook_delete_message(self, req: ApiRequest) -> web.Response:
        return await self._messages.delete(self._webhook_message(req))


def _infer_option_type(value: Any) -> int:
    if isinstance(value, bool):
        return OPT_BOOLEAN
    if isinstance(value, int):
        return OPT_INTEGER
    if isinstance(value, float):
        return OPT_NUMBER
    if isinstance(value, FakeUser):
        return OPT_USER
    if isinstance(value, FakeChannel):
        return OPT_CHANNEL
    if isinstance(value, (tuple, Mapping)):
        return OPT_ATTACHMENT
    return OPT_STRING
