"""Surfaces: where a job's progress and its final message are shown.

- :class:`InteractionSurface` — the interaction's original response ("thinking…") while its token
  lives (Discord gives :data:`~pipeline.limits.INTERACTION_TOKEN_LIFETIME_S`); then its fallback.
- :class:`ChannelSurface` — a message in a channel: posted on the first show, edited afterwards
  (the "Listening…" reply to a voice note, or a post after the token expired or a restart).
- :class:`RecordingSurface` — a channel surface that writes the message it shows into the job's
  store record, so a restarted process edits that message instead of posting another.

What is shown is a :class:`MessageParts`. A job's final message carries the job's delivery nonce:
edits ignore it (an edit is safe to repeat); a *new* channel message is sent with it, and
discord.py then sets ``enforce_nonce``, so Discord answers a repeated send of the same result with
the message it already created.

Files travel as :class:`~bot.render.Upload` bytes and fit the upload limit of where they go: a
surface that shows them re-encodes a picture that would not fit (WebP, then JPEG; in a worker
thread) — :func:`fit_to_upload_limit`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import discord

from pipeline.limits import INTERACTION_TOKEN_LIFETIME_S

from . import render
from .render import Upload
from .store import JobStore

log = logging.getLogger(__name__)

TOKEN_SAFETY_S = 60  # stop using a token a minute before Discord expires it
EXPIRED_TOKEN_CODES = frozenset({10015, 50027})  # Unknown Webhook, Invalid Webhook Token
ORIGINAL_RESPONSE = "@original"  # Discord's name for an interaction's original response message

MessageEdit = Callable[..., Awaitable[discord.Message]]
#: A file of a message: :class:`~bot.render.Upload` bytes (fitted to the upload limit, sendable
#: again), or a ready ``discord.File`` (sent as it is).
Attachment = Upload | discord.File


@dataclass(frozen=True, slots=True)
class MessageParts:
    """What a surface shows: text, and for a final message an embed, files and buttons.

    ``files`` replace the message's attachments; ``None`` keeps them. ``nonce`` is used only when
    the show creates a new channel message."""

    content: str
    embed: discord.Embed | None = None
    files: Sequence[Attachment] | None = None
    view: discord.ui.View | None = None
    nonce: str | None = None

    def discord_files(self) -> list[discord.File]:
        """Fresh ``discord.File`` objects for one request (none when there are no files)."""
        return [f.file() if isinstance(f, Upload) else f for f in self.files or ()]

    def edit_kwargs(self) -> dict[str, Any]:
        """Arguments for a message edit; attachments are replaced only when files are given."""
        kwargs: dict[str, Any] = {"content": self.content, "embed": self.embed, "view": self.view}
        if self.files is not None:
            kwargs["attachments"] = self.discord_files()
        return kwargs


async def fit_to_upload_limit(parts: MessageParts, limit: int) -> MessageParts:
    """``parts`` with files that fit ``limit`` bytes: a picture that would not is re-encoded in a
    worker thread (:func:`bot.render.fit_uploads`; :class:`~bot.render.UploadTooLarge` when
    nothing fits). Ready ``discord.File`` objects are left as they are."""
    uploads = [f for f in parts.files or () if isinstance(f, Upload)]
    if not uploads or len(uploads) != len(parts.files or ()) or sum(len(u.data) for u in uploads) <= limit:
        return parts
    files, embed = await asyncio.to_thread(render.fit_uploads, uploads, parts.embed, limit)
    return replace(parts, files=files, embed=embed)


class Surface(Protocol):
    async def show(self, parts: MessageParts) -> discord.Message:
        """Show ``parts``; the message they are now in."""
        ...

    @property
    def will_post(self) -> bool:
        """Whether the next show creates a new channel message rather than editing one."""
        ...


class ChannelSurface:
    """A message in a channel: posted on the first show, edited afterwards.

    ``mention_user_id`` is mentioned at the start of what is posted (the requester of a job whose
    interaction token ran out); ``reply_to`` makes the post a reply (the voice note).
    ``upload_limit`` overrides the channel's own (:attr:`upload_limit`)."""

    def __init__(
        self,
        client: discord.Client,
        channel_id: int,
        *,
        mention_user_id: int | None = None,
        reply_to: int | None = None,
        message_id: int | None = None,
        upload_limit: int | None = None,
    ) -> None:
        self.client = client
        self.channel_id = channel_id
        self.mention_user_id = mention_user_id
        self.reply_to = reply_to
        self.message_id = message_id
        self._upload_limit = upload_limit

    @property
    def will_post(self) -> bool:
        return self.message_id is None

    @property
    def upload_limit(self) -> int:
        """Bytes of files a message in this channel may carry (its guild's limit; DMs and
        channels not in the cache: Discord's default)."""
        if self._upload_limit is not None:
            return self._upload_limit
        guild = getattr(self.client.get_channel(self.channel_id), "guild", None)
        return render.upload_limit(guild if isinstance(guild, discord.Guild) else None)

    async def show(self, parts: MessageParts) -> discord.Message:
        parts = await fit_to_upload_limit(parts, self.upload_limit)
        channel = self.client.get_partial_messageable(self.channel_id)
        content = parts.content
        if self.mention_user_id is not None and not content.startswith("<@"):
            content = f"<@{self.mention_user_id}> {content}"
        if self.message_id is not None:
            try:
                message = channel.get_partial_message(self.message_id)
                return await message.edit(**{**parts.edit_kwargs(), "content": content})
            except discord.NotFound:
                self.message_id = None  # deleted: post a new one
        options: dict[str, Any] = {
            "files": parts.discord_files(),
            "allowed_mentions": discord.AllowedMentions(users=True, everyone=False, roles=False),
            # discord.py sends a nonce with ``enforce_nonce: true`` (http.handle_message_parameters);
            # without one it makes up a random nonce.
            "nonce": parts.nonce,
        }
        if parts.embed is not None:
            options["embed"] = parts.embed
        if parts.view is not None:
            options["view"] = parts.view
        if self.reply_to is not None:
            options["reference"] = discord.MessageReference(
                message_id=self.reply_to, channel_id=self.channel_id, fail_if_not_exists=False
            )
        posted = await channel.send(content, **options)
        self.message_id = posted.id
        return posted


class RecordingSurface:
    """A :class:`ChannelSurface` whose message is written into the job's record
    (``progress_message_id``) as soon as it changes, before anything else is shown in it."""

    def __init__(self, channel: ChannelSurface, store: JobStore, job_id: str) -> None:
        self.channel = channel
        self.store = store
        self.job_id = job_id
        self.recorded = channel.message_id

    @property
    def will_post(self) -> bool:
        return self.channel.will_post

    async def show(self, parts: MessageParts) -> discord.Message:
        """Show ``parts``; the message is shown even when the store can't record it (a restart
        then posts a new message instead of editing this one — the user still gets an answer)."""
        message = await self.channel.show(parts)
        if message.id != self.recorded:
            self.recorded = message.id
            try:
                await self.store.set_progress_message(self.job_id, message.id)
            except Exception:
                log.exception("job %s: showed message %s but could not record it", self.job_id, message.id)
        return message


class InteractionSurface:
    """An interaction's original response while its token lives; then the fallback channel surface.

    Built for a live interaction, or — after a restart — from the token a previous process stored.
    Showing is an edit of the original response, so a redelivery replaces, never duplicates.
    Files fit ``upload_limit`` (what the interaction allows; else the fallback channel's)."""

    def __init__(
        self, edit: MessageEdit, created_at: float, fallback: RecordingSurface, *, upload_limit: int | None = None
    ) -> None:
        self._edit = edit
        self.created_at = created_at
        self.fallback = fallback
        self.expired = False
        self._upload_limit = upload_limit

    @classmethod
    def live(cls, interaction: discord.Interaction, fallback: RecordingSurface) -> InteractionSurface:
        limit = render.upload_limit(interaction.guild, interaction.filesize_limit)
        return cls(interaction.edit_original_response, interaction.created_at.timestamp(), fallback, upload_limit=limit)

    @property
    def upload_limit(self) -> int:
        if self._upload_limit is not None:
            return self._upload_limit
        return self.fallback.channel.upload_limit

    @classmethod
    def stored(
        cls, client: discord.Client, application_id: int, token: str, created_at: float, fallback: RecordingSurface
    ) -> InteractionSurface:
        webhook = discord.Webhook.partial(application_id, token, client=client)
        # Discord accepts "@original" for the message id (discord.py types the id as int).
        edit: MessageEdit = functools.partial(webhook.edit_message, ORIGINAL_RESPONSE)
        return cls(edit, created_at, fallback)

    @property
    def token_alive(self) -> bool:
        age_s = time.time() - self.created_at
        return not self.expired and age_s < INTERACTION_TOKEN_LIFETIME_S - TOKEN_SAFETY_S

    @property
    def will_post(self) -> bool:
        return not self.token_alive and self.fallback.will_post

    async def show(self, parts: MessageParts) -> discord.Message:
        if self.token_alive:
            try:
                fitted = await fit_to_upload_limit(parts, self.upload_limit)
                return await self._edit(**fitted.edit_kwargs())
            except discord.HTTPException as exc:
                if not (isinstance(exc, discord.NotFound) or exc.code in EXPIRED_TOKEN_CODES or exc.status == 401):
                    raise
                log.info("interaction token expired; delivering to the channel instead")
                self.expired = True
        return await self.fallback.show(parts)
