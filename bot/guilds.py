"""Per-server settings and admission rules: where the bot works in a server, whether it takes
voice notes, the server's daily quota per member and cooldown, its blocklist additions, NSFW
policy and moderation log channel — stored per guild in the store (JSON, validated by
:class:`GuildConfig`), cached in memory, applied to every job at admission (:meth:`Guilds.admit`).

Quotas are counted in the store per UTC day (:meth:`bot.store.JobStore.take_quota`): globally per
user (``DAILY_QUOTA``) and per member of a server (the server's ``daily_quota``). Every admitted
job counts — /imagine, voice notes, and the Regenerate / Vary / upscale buttons alike.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from dataclasses import replace
from typing import Final, Literal

from babel.dates import format_date, format_timedelta
from pydantic import BaseModel, Field, ValidationError

from pipeline.errors import BadRequest, TooManyJobs
from pipeline.moderation import MAX_GUILD_RULES
from pipeline.studio import Idea
from pipeline.styles import (
    MAX_SERVER_STYLES,
    STYLES,
    StyleTemplate,
    check_style,
    matching_styles,
    server_styles,
    style_from_dict,
    style_to_dict,
)

from . import i18n
from .i18n import _
from .store import JobStore

log = logging.getLogger(__name__)

NsfwPolicy = Literal["withhold", "spoiler"]
MAX_ALLOWED_CHANNELS: Final = 50


class GuildConfig(BaseModel):
    """A server's settings; the defaults are what a server that never ran /settings gets."""

    allowed_channels: list[int] = Field(default_factory=list, max_length=MAX_ALLOWED_CHANNELS)  # empty: all
    voice_notes: bool = True
    style: str | None = None
    model: str | None = None
    candidates: int | None = Field(None, ge=1, le=4)
    daily_quota: int = Field(0, ge=0, le=10_000)  # per member per UTC day; 0: no limit
    cooldown_s: int = Field(0, ge=0, le=3600)
    nsfw: NsfwPolicy = "withhold"  # spoiler: flagged pictures go behind a spoiler in age-restricted channels
    blocklist: list[str] = Field(default_factory=list, max_length=MAX_GUILD_RULES)
    modlog_channel: int | None = None

    model_config = {"extra": "ignore"}


class Preferences(BaseModel):
    """A user's personal defaults (/preferences); ``None``: not set."""

    style: str | None = None
    aspect: str | None = None
    candidates: int | None = Field(None, ge=1, le=4)
    private: bool = False
    language: str | None = Field(None, max_length=10)

    model_config = {"extra": "ignore"}


def with_defaults(idea: Idea, config: GuildConfig, prefs: Preferences) -> Idea:
    """``idea`` with what the user left empty filled in: their preferences first, then the server's
    defaults (style, model, candidates). Options the user gave stay as they are."""
    return replace(
        idea,
        style=idea.style or prefs.style or config.style,
        aspect=idea.aspect or prefs.aspect,
        model=idea.model or config.model,
        candidates=idea.candidates or prefs.candidates or config.candidates,
    )


class QuotaExceeded(TooManyJobs):
    """A daily quota is used up (or the cooldown has not passed); the message says when it resets."""


class ChannelNotAllowed(BadRequest):
    default_message = "I'm not drawing in this channel — this server's admins picked other channels for me."


class VoiceNotesOff(BadRequest):
    default_message = "Voice notes are turned off in this server — use /imagine instead."


def utc_day(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d")


def next_reset(now: dt.datetime | None = None) -> dt.datetime:
    """The next UTC midnight: when daily quotas start again."""
    now = now or dt.datetime.now(dt.UTC)
    return dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)


def _span(seconds: float) -> str:
    """A wait in words in the language at hand (Babel): "5 hours 23 minutes", "5時間 23分"."""
    seconds = max(1, int(seconds + 0.999))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, 3600), (minutes, 60)] if hours else [(minutes, 60), (secs, 1)] if minutes else [(secs, 1)]
    language = i18n.current()
    return " ".join(
        format_timedelta(dt.timedelta(seconds=n * unit), threshold=1, format="long", locale=language)
        for n, unit in parts
        if n
    )


def quota_message(scope: str, value: float, now: dt.datetime | None = None) -> str:
    """Why a job is refused for a quota or a cooldown, and when it can run, in the language at hand."""
    now = now or dt.datetime.now(dt.UTC)
    if scope == "cooldown":
        return _("Easy there — this server has a cooldown between pictures. Try again in {wait}.").format(
            wait=_span(value)
        )
    reset = next_reset(now)
    count = int(value)
    if scope == "user":
        text = (
            _("You've used your daily limit of 1 picture. It resets at 00:00 UTC ({date}), in {wait}.")
            if count == 1
            else _("You've used your daily limit of {count} pictures. It resets at 00:00 UTC ({date}), in {wait}.")
        )
    else:
        text = (
            _(
                "You've used this server's daily limit per member of 1 picture. "
                "It resets at 00:00 UTC ({date}), in {wait}."
            )
            if count == 1
            else _(
                "You've used this server's daily limit per member of {count} pictures. "
                "It resets at 00:00 UTC ({date}), in {wait}."
            )
        )
    date = format_date(reset.date(), format="medium", locale=i18n.current())
    return text.format(count=count, date=date, wait=_span((reset - now).total_seconds()))


class Guilds:
    """Server settings (cached) and the admission rules built on them."""

    def __init__(self, store: JobStore, *, daily_quota: int = 0) -> None:
        self.store = store
        self.daily_quota = daily_quota
        self._cache: dict[int, GuildConfig] = {}
        self._prefs: dict[int, Preferences] = {}
        self._styles: dict[int, dict[str, StyleTemplate]] = {}

    # --- server styles (/settings style) ----------------------------------------------------------
    async def styles(self, guild_id: int | None) -> dict[str, StyleTemplate]:
        """A server's own styles by name (none in DMs); a stored one that no longer reads is skipped."""
        if guild_id is None:
            return {}
        cached = self._styles.get(guild_id)
        if cached is not None:
            return cached
        found: dict[str, StyleTemplate] = {}
        for name, raw in await self.store.guild_styles(guild_id):
            try:
                found[name] = style_from_dict(json.loads(raw))
            except (ValueError, TypeError):
                log.warning("server %d: stored style %r is invalid; skipped", guild_id, name)
        self._styles[guild_id] = found
        return found

    async def style_choices(self, guild_id: int | None, current: str) -> list[str]:
        """The style names ``/imagine style:`` and the defaults offer for what is typed: this
        server's own first, then the styles file's."""
        return matching_styles(current, extra=list(await self.styles(guild_id)))

    async def add_style(self, guild_id: int, template: StyleTemplate, *, by: int | None) -> None:
        """Add (or replace) a server style; :class:`BadRequest` when the server has too many."""
        data = json.dumps(style_to_dict(template), ensure_ascii=False)
        if not await self.store.add_guild_style(guild_id, template.name, data, limit=MAX_SERVER_STYLES, by=by):
            raise BadRequest(f"A server may have at most {MAX_SERVER_STYLES} styles — remove one first.")
        self._styles.pop(guild_id, None)

    async def remove_style(self, guild_id: int, name: str) -> bool:
        removed = await self.store.remove_guild_style(guild_id, name)
        self._styles.pop(guild_id, None)
        return removed

    async def with_server_style(self, idea: Idea, guild_id: int | None) -> Idea:
        """``idea`` with the server style its ``style`` names recorded in it (the job keeps it even
        if the style is removed later); the deployment's styles win over a server's of the same name.
        A style that is neither (a default naming another server's style, or a removed one) is dropped."""
        if idea.style is None or idea.style in STYLES.deployment:
            return idea
        template = (await self.styles(guild_id)).get(idea.style)
        if template is not None:
            return replace(idea, server_style=style_to_dict(template))
        try:
            check_style(idea.style)  # an alias of a deployment style
        except BadRequest:
            # A default (a /preferences or /settings style) naming a server style that this server
            # doesn't have, or has removed: the job goes on without it (a typed one was refused already).
            log.info("server %s: style %r is not one of its styles; not applied", guild_id, idea.style)
            return replace(idea, style=None)
        return idea

    async def style_context(self, guild_id: int | None) -> contextlib.AbstractContextManager[None]:
        """A ``with`` block in which :data:`~pipeline.styles.STYLES` includes this server's styles."""
        return server_styles(await self.styles(guild_id))

    async def preferences(self, user_id: int) -> Preferences:
        cached = self._prefs.get(user_id)
        if cached is not None:
            return cached
        raw = await self.store.preferences(user_id)
        prefs = Preferences()
        if raw is not None:
            try:
                prefs = Preferences.model_validate_json(raw)
            except ValidationError:
                log.warning("user %d: stored preferences are invalid; using none", user_id)
        self._prefs[user_id] = prefs
        return prefs

    async def set_preferences(self, user_id: int, prefs: Preferences) -> Preferences:
        prefs = Preferences.model_validate(prefs.model_dump())
        await self.store.set_preferences(user_id, prefs.model_dump_json())
        self._prefs[user_id] = prefs
        return prefs

    async def get(self, guild_id: int | None) -> GuildConfig:
        if guild_id is None:
            return GuildConfig()
        cached = self._cache.get(guild_id)
        if cached is not None:
            return cached
        raw = await self.store.guild_settings(guild_id)
        config = GuildConfig()
        if raw is not None:
            try:
                config = GuildConfig.model_validate_json(raw)
            except ValidationError:
                log.warning("server %d: stored settings are invalid; using the defaults", guild_id)
        self._cache[guild_id] = config
        return config

    async def update(self, guild_id: int, config: GuildConfig, *, by: int | None) -> GuildConfig:
        config = GuildConfig.model_validate(config.model_dump())  # validated again, whoever built it
        await self.store.set_guild_settings(guild_id, config.model_dump_json(), updated_by=by)
        self._cache[guild_id] = config
        return config

    async def admit(
        self, *, user_id: int, guild_id: int | None, channel_id: int, voice: bool, now: dt.datetime | None = None
    ) -> GuildConfig:
        """Raise a user-facing :class:`~pipeline.errors.VoxCanvasError` if this job may not run here now; else count
        it against the quotas and return the server's settings."""
        config = await self.get(guild_id)
        if guild_id is not None:
            if config.allowed_channels and channel_id not in config.allowed_channels:
                raise ChannelNotAllowed()
            if voice and not config.voice_notes:
                raise VoiceNotesOff()
        now = now or dt.datetime.now(dt.UTC)
        refused = await self.store.take_quota(
            day=utc_day(now),
            user_id=user_id,
            guild_id=guild_id,
            user_limit=self.daily_quota,
            member_limit=config.daily_quota if guild_id is not None else 0,
            cooldown_s=config.cooldown_s if guild_id is not None else 0,
        )
        if refused is not None:
            raise QuotaExceeded(quota_message(*refused, now=now))
        return config


__all__ = [
    "ChannelNotAllowed",
    "GuildConfig",
    "Guilds",
    "NsfwPolicy",
    "Preferences",
    "QuotaExceeded",
    "VoiceNotesOff",
    "next_reset",
    "quota_message",
    "utc_day",
    "with_defaults",
]
