"""Messages: the REST routes of channel messages (create with nonces, history, fetch, edit, delete,
reactions, typing), the checks Discord makes on a message body, the MESSAGE_CONTENT intent rules,
MESSAGE_CREATE/UPDATE/DELETE to the gateway, and what a (fake) user posts."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from .cdn import Cdn
from .gateway import Gateway, GatewaySession
from .http import ApiError, ApiRequest, ApiRouter, RecordedFile, json_response, no_content
from .protocol import (
    CHANNEL_MESSAGE_FLAGS,
    MAX_CONTENT_LENGTH,
    MAX_EMBEDS,
    AttachmentSpec,
    Intents,
    MessageFlags,
    Rules,
)
from .world import FakeChannel, FakeUser, World, iso, number_components

__all__ = ["Messages"]

log = logging.getLogger(__name__)

#: Flags an edit may change (components v2 may be switched on).
EDITABLE_FLAGS = MessageFlags.SUPPRESS_EMBEDS | MessageFlags.IS_COMPONENTS_V2


class Messages:
    """Creates, edits and deletes stored messages the way Discord does, and tells the gateway."""

    def __init__(self, world: World, rules: Rules, cdn: Cdn, gateway: Gateway) -> None:
        self._world = world
        self._rules = rules
        self._cdn = cdn
        self._gateway = gateway
        # (channel id, nonce) -> id of the message created with it (Discord keeps them for a few
        # minutes; the fake for its lifetime).
        self._nonces: dict[tuple[int, str], int] = {}

    # ------------------------------------------------------------------ the message store

    def check_body(self, body: Mapping[str, Any], files: Sequence[RecordedFile], *, creating: bool) -> None:
        """Raise Discord's error for a body it would refuse (too long, too many embeds, too big,
        empty when ``creating``)."""
        content = body.get("content")
        if content is not None and len(str(content)) > MAX_CONTENT_LENGTH:
            raise ApiError.invalid_field(
                "content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT_LENGTH} or fewer in length."
            )
        if len(body.get("embeds") or []) > MAX_EMBEDS:
            raise ApiError.invalid_field("embeds", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length.")
        if sum(f.size for f in files) > self._rules.upload_limit:
            raise ApiError(413, "Request entity too large", 40005)
        parts = ("embeds", "components", "sticker_ids", "poll")
        if creating and not (content or files or any(body.get(part) for part in parts)):
            raise ApiError(400, "Cannot send an empty message", 50006)

    def create_from_body(
        self,
        channel_id: int,
        body: Mapping[str, Any],
        files: Sequence[RecordedFile],
        *,
        flags_mask: int,
        extra: Mapping[str, Any] | None = None,
        message_type: int = 0,
        force_flags: int = 0,
        reference_id: int | None = None,
    ) -> dict[str, Any]:
        """Store a message the bot sent (its body and uploaded files); ``flags_mask``: the flags
        the route lets the bot set."""
        flags = (int(body.get("flags") or 0) & flags_mask) | force_flags
        ephemeral = bool(flags & MessageFlags.EPHEMERAL)
        specs = {str(a.get("id")): a for a in body.get("attachments") or []}
        attachments = [
            self._cdn.store_upload(channel_id, f, specs.get(str(i)), ephemeral=ephemeral) for i, f in enumerate(files)
        ]
        return self._world.store_message(
            channel_id,
            self._world.bot_user.id,
            content=str(body.get("content") or ""),
            embeds=list(body.get("embeds") or []),
            components=list(body.get("components") or []),
            attachments=attachments,
            flags=flags,
            message_type=message_type,
            reference_id=reference_id,
            extra=extra,
        )

    def apply_edit(self, msg: dict[str, Any], body: Mapping[str, Any], files: Sequence[RecordedFile]) -> None:
        channel_id = int(msg["channel_id"])
        ephemeral = bool(msg["flags"] & MessageFlags.EPHEMERAL)
        if "content" in body:
            msg["content"] = body["content"] or ""
        if "embeds" in body:
            msg["embeds"] = body["embeds"] or []
        if "components" in body:
            msg["components"] = number_components(list(body["components"] or []))
        if "flags" in body and body["flags"] is not None:
            msg["flags"] = (msg["flags"] & ~EDITABLE_FLAGS) | (int(body["flags"]) & EDITABLE_FLAGS)
        if "attachments" in body and body["attachments"] is not None:
            existing = {a["id"]: a for a in msg["attachments"]}
            kept: list[dict[str, Any]] = []
            for spec in body["attachments"]:
                sid = str(spec.get("id"))
                if sid in existing:
                    kept.append(existing[sid])
                elif int(spec["id"]) < len(files):
                    kept.append(self._cdn.store_upload(channel_id, files[int(spec["id"])], spec, ephemeral=ephemeral))
            msg["attachments"] = kept
        elif files:
            uploads = [self._cdn.store_upload(channel_id, f, None, ephemeral=ephemeral) for f in files]
            msg["attachments"] = msg["attachments"] + uploads
        msg["flags"] &= ~MessageFlags.LOADING
        msg["edited_timestamp"] = iso()
        self._world.bump()

    async def edit(self, msg: dict[str, Any], req: ApiRequest) -> web.Response:
        """Validate and apply an edit (channel or webhook route), then tell the gateway."""
        self.check_body(req.body, req.files, creating=False)
        self.apply_edit(msg, req.body, req.files)
        await self.dispatch_event("MESSAGE_UPDATE", msg, is_bot=True)
        return json_response(msg)

    async def delete(self, msg: Mapping[str, Any]) -> web.Response:
        """Delete a stored message (channel or webhook route), then tell the gateway."""
        self._world.delete_message(int(msg["id"]))
        if msg["flags"] & MessageFlags.EPHEMERAL or not self._rules.echo_bot_messages:
            return no_content()
        channel = self._world.channels[int(msg["channel_id"])]
        data: dict[str, Any] = {"id": msg["id"], "channel_id": msg["channel_id"]}
        if channel.guild_id is not None:
            data["guild_id"] = str(channel.guild_id)
        await self._gateway.dispatch_where("MESSAGE_DELETE", lambda _: data, intent=self._needed_intent(channel))
        return no_content()

    # ------------------------------------------------------------------ what the bot may see

    def visible(self, msg: Mapping[str, Any], session: GatewaySession | None = None) -> dict[str, Any]:
        """The message as the bot may see it (MESSAGE_CONTENT intent rules)."""
        out = dict(msg)
        intents = session.intents if session is not None else self._gateway.intents
        if not self._rules.enforce_message_content_intent or intents is None or intents & Intents.MESSAGE_CONTENT:
            return out
        channel = self._world.channels.get(int(msg["channel_id"]))
        bot_id = str(self._world.bot_user.id)
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
        payload = self.visible(msg, session)
        channel = self._world.channels[int(msg["channel_id"])]
        if channel.guild_id is not None:
            payload["guild_id"] = str(channel.guild_id)
            author_id = int(msg["author"]["id"])
            if author_id in self._world.guilds[channel.guild_id].members:
                payload["member"] = self._world.member_payload(channel.guild_id, author_id, with_user=False)
        return payload

    @staticmethod
    def _needed_intent(channel: FakeChannel) -> int:
        return Intents.DIRECT_MESSAGES if channel.is_dm else Intents.GUILD_MESSAGES

    async def dispatch_event(self, event: str, msg: Mapping[str, Any], *, is_bot: bool) -> bool:
        """MESSAGE_CREATE/UPDATE to the sessions whose intents receive it; ``False`` if none did."""
        if msg["flags"] & MessageFlags.EPHEMERAL or (is_bot and not self._rules.echo_bot_messages):
            return False
        channel = self._world.channels[int(msg["channel_id"])]
        return await self._gateway.dispatch_where(
            event, lambda session: self._gateway_message(msg, session), intent=self._needed_intent(channel)
        )

    # ------------------------------------------------------------------ REST: channels & messages

    def install_routes(self, router: ApiRouter) -> None:
        one = "/channels/{channel_id}/messages/{message_id}"
        router.add("GET", "/channels/{channel_id}", self._get_channel)
        router.add("GET", "/channels/{channel_id}/messages", self._get_messages)
        router.add("POST", "/channels/{channel_id}/messages", self._post_message)
        router.add("GET", one, self._get_message)
        router.add("PATCH", one, self._patch_message)
        router.add("DELETE", one, self._delete_message)
        router.add("PUT", one + "/reactions/{emoji}/@me", self._add_reaction)
        router.add("DELETE", one + "/reactions/{emoji}/@me", self._remove_reaction)
        router.add("POST", "/channels/{channel_id}/typing", self._typing)

    def _channel(self, req: ApiRequest) -> FakeChannel:
        channel = self._world.channels.get(req.int_param("channel_id") or -1)
        if channel is None:
            raise ApiError(404, "Unknown Channel", 10003)
        return channel

    def _channel_message(self, req: ApiRequest) -> dict[str, Any]:
        channel = self._channel(req)
        msg = self._world.messages.get(req.int_param("message_id") or -1)
        if msg is None or int(msg["channel_id"]) != channel.id or msg["flags"] & MessageFlags.EPHEMERAL:
            raise ApiError(404, "Unknown Message", 10008)
        return msg

    async def _get_channel(self, req: ApiRequest) -> web.Response:
        return json_response(self._world.channel_payload(self._channel(req)))

    async def _get_messages(self, req: ApiRequest) -> web.Response:
        channel = self._channel(req)
        limit = max(1, min(100, int(req.query.get("limit", 50))))
        found = [
            m
            for m in self._world.messages.values()
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
        return json_response([self.visible(m) for m in found[:limit]])

    async def _get_message(self, req: ApiRequest) -> web.Response:
        return json_response(self.visible(self._channel_message(req)))

    async def _post_message(self, req: ApiRequest) -> web.Response:
        channel = self._channel(req)
        body = req.body
        self.check_body(body, req.files, creating=True)
        nonce = str(body["nonce"]) if body.get("nonce") is not None else None
        if nonce is not None and body.get("enforce_nonce"):
            # Discord: a message created before in this channel with the same nonce is returned
            # as it is, and no new message is created.
            earlier = self._world.messages.get(self._nonces.get((channel.id, nonce), -1))
            if earlier is not None:
                return json_response(earlier)
        reference_id = self._reference_id(body.get("message_reference"))
        extra = {"nonce": body["nonce"]} if nonce is not None else None
        msg = self.create_from_body(
            channel.id, body, req.files, flags_mask=CHANNEL_MESSAGE_FLAGS, reference_id=reference_id, extra=extra
        )
        if nonce is not None:
            self._nonces[(channel.id, nonce)] = int(msg["id"])
        await self.dispatch_event("MESSAGE_CREATE", msg, is_bot=True)
        return json_response(msg)

    def _reference_id(self, reference: Mapping[str, Any] | None) -> int | None:
        """The id of the message a reply refers to (``None``: not a reply, or an unknown message
        with ``fail_if_not_exists: false``)."""
        if not reference or not reference.get("message_id"):
            return None
        ref_id = int(reference["message_id"])
        if ref_id in self._world.messages:
            return ref_id
        if reference.get("fail_if_not_exists", True):
            raise ApiError.invalid_field("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
        return None

    async def _patch_message(self, req: ApiRequest) -> web.Response:
        msg = self._channel_message(req)
        if not self._world.is_bot(msg["author"]) and set(req.body) - {"flags"}:
            raise ApiError(403, "Cannot edit a message authored by another user", 50005)
        return await self.edit(msg, req)

    async def _delete_message(self, req: ApiRequest) -> web.Response:
        return await self.delete(self._channel_message(req))

    @staticmethod
    def _emoji_payload(emoji: str) -> dict[str, Any]:
        if ":" in emoji:
            name, _, eid = emoji.partition(":")
            return {"id": eid, "name": name}
        return {"id": None, "name": emoji}

    async def _add_reaction(self, req: ApiRequest) -> web.Response:
        msg = self._channel_message(req)
        emoji = self._emoji_payload(req.params["emoji"])
        reactions = msg.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["emoji"] == emoji), None)
        if reaction is None:
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
        elif not reaction["me"]:
            self._count_own_reaction(reaction, +1)
        self._world.bump()
        return no_content()

    async def _remove_reaction(self, req: ApiRequest) -> web.Response:
        msg = self._channel_message(req)
        emoji = self._emoji_payload(req.params["emoji"])
        for reaction in list(msg.get("reactions", [])):
            if reaction["emoji"] == emoji and reaction["me"]:
                self._count_own_reaction(reaction, -1)
                if reaction["count"] <= 0:
                    msg["reactions"].remove(reaction)
        self._world.bump()
        return no_content()

    @staticmethod
    def _count_own_reaction(reaction: dict[str, Any], change: int) -> None:
        reaction["me"] = change > 0
        reaction["count"] += change
        reaction["count_details"]["normal"] += change

    async def _typing(self, req: ApiRequest) -> web.Response:
        self._channel(req)
        return no_content()

    # ------------------------------------------------------------------ driver: what users post

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
        world = self._world
        channel_id = channel_id if channel_id is not None else world.default_channel_id()
        uid = world.user_id(author)
        if not self._gateway.live_sessions():
            raise RuntimeError("cannot deliver a message: no gateway session (is the bot connected?)")
        atts = [self._cdn.store_incoming(channel_id, spec) for spec in attachments]
        reference_id = None
        if reply_to is not None:
            reference_id = int(reply_to["id"]) if isinstance(reply_to, Mapping) else int(reply_to)
        msg = world.store_message(
            channel_id,
            uid,
            content=content,
            attachments=atts,
            embeds=[dict(e) for e in embeds],
            flags=flags,
            reference_id=reference_id,
        )
        if not await self.dispatch_event("MESSAGE_CREATE", msg, is_bot=False):
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
