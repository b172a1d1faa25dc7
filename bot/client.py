"""The Discord client: a ``commands.Bot`` subclass with its dependencies injected.

The executor and (optionally) an opened store are passed in; ``setup_hook`` opens the store if
none was given, starts the executor (models warm up in the background so the bot connects at
once), builds the studio and the :class:`~.runner.JobRunner` from them, loads the cogs, registers
the persistent buttons, syncs slash commands only when they changed, and resumes jobs a previous
process left unfinished (:class:`~.recovery.Recovery`). Cogs and buttons reach the store and the
runner through :attr:`VoxCanvasBot.store` and :attr:`VoxCanvasBot.runner`, which exist from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from pipeline.errors import VoxCanvasError
from pipeline.executor import Executor
from pipeline.executor.factory import create_executor
from pipeline.settings import Settings
from pipeline.studio import Studio

from . import i18n
from .api_jobs import ApiJobs
from .i18n import _
from .ops import RestErrors
from .recovery import Recovery
from .runner import JobRunner
from .store import JobStore
from .store.files import DIR_MODE, atomic_write
from .views import DYNAMIC_ITEMS

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.imagine",
    "cogs.voice",
    "cogs.compose",
    "cogs.describe",
    "cogs.settings",
    "cogs.preferences",
)
SHUTDOWN_GRACE_S = 30.0


def configure_endpoints(settings: Settings) -> None:
    """Honour DISCORD_API_BASE / DISCORD_GATEWAY_URL (REST and gateway proxies; tests).

    discord.py reads these class attributes for every request and for the first connection.
    """
    import discord.gateway
    import discord.http

    discord.http.Route.BASE = settings.DISCORD_API_BASE.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.DISCORD_GATEWAY_URL)


def bot_intents() -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.guild_reactions = False
    # Privileged: without it, attachments of messages that don't mention the bot arrive empty.
    intents.message_content = True
    return intents


class Service(Protocol):
    """Something else the process serves from the bot's runtime (the web API): started once the
    runner exists and unfinished jobs are resumed, stopped first on close."""

    async def start(self, runner: JobRunner) -> str: ...

    async def stop(self) -> None: ...


class NotStarted(RuntimeError):
    """The store, studio and runner exist once ``setup_hook`` has run."""


class VoxCanvasBot(commands.Bot):
    def __init__(
        self,
        settings: Settings,
        *,
        executor: Executor | None = None,
        store: JobStore | None = None,
        gemini_client: Any = None,
        warm_up: bool = True,
        services: Sequence[Service] = (),
        **client_options: Any,
    ) -> None:
        rest_errors = RestErrors()  # Discord REST errors for /metrics, counted on discord.py's own session
        client_options.setdefault("http_trace", rest_errors.trace_config())
        super().__init__(
            **client_options,
            command_prefix=commands.when_mentioned,
            tree_cls=LocalisedTree,
            intents=bot_intents(),
            help_command=None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False),
            max_messages=None,
        )
        self.settings = settings
        self.rest_errors = rest_errors
        self.executor = executor or create_executor(settings)
        self._store = store
        self._gemini_client = gemini_client
        self._warm_up = warm_up
        self.services = tuple(services)
        self._studio: Studio | None = None
        self._runner: JobRunner | None = None
        self.warm_up_task: asyncio.Task[None] | None = None
        self.purge_task: asyncio.Task[None] | None = None
        self.synced: bool | None = None  # whether the last start sent the command set to Discord
        self._closing = False
        self.tree.error(self.on_app_command_error)

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise NotStarted("the job store is opened in setup_hook")
        return self._store

    @property
    def studio(self) -> Studio:
        if self._studio is None:
            raise NotStarted("the studio is built in setup_hook")
        return self._studio

    @property
    def runner(self) -> JobRunner:
        if self._runner is None:
            raise NotStarted("the job runner is built in setup_hook")
        return self._runner

    # --- start-up --------------------------------------------------------------------------
    async def setup_hook(self) -> None:
        store = self._store = self._store or await JobStore.open(self.settings.DATA_DIR)
        await self.executor.start()
        studio = self._studio = Studio(self.settings, self.executor, gemini_client=self._gemini_client)
        self._runner = JobRunner(self, store=store, executor=self.executor, studio=studio)
        ApiJobs(self._runner)  # jobs from the HTTP API (resumed here too; served by the web service)
        if self._warm_up:
            self.warm_up_task = asyncio.create_task(self._warm(), name="warm-up")
        for extension in EXTENSIONS:
            try:
                await self.load_extension(extension)
            except Exception:
                log.exception("failed to load extension %s", extension)
                raise
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        await self.tree.set_translator(i18n.CommandTranslator())  # name/description localisations
        self.synced = await self.sync_commands_if_changed()
        if self.settings.RETENTION_DAYS:
            await self.purge_expired()
            self.purge_task = asyncio.create_task(self._purge_periodically(), name="retention-purge")
        # Logged in (REST works), gateway not yet connected: no new job can have arrived, so
        # everything unfinished in the store belongs to a previous process.
        await Recovery(self._runner).resume()
        for service in self.services:  # after the resume: every unfinished job is an old one
            await service.start(self._runner)

    async def _warm(self) -> None:
        started = asyncio.get_running_loop().time()
        try:
            await self.executor.warm_up(clip=not self.settings.gemini_enabled)
            log.info("models warm in %.1fs", asyncio.get_running_loop().time() - started)
        except VoxCanvasError as exc:
            log.error("model warm-up failed: %s", exc)

    # --- retention ---------------------------------------------------------------------------
    async def purge_expired(self) -> int:
        """Delete finished jobs older than RETENTION_DAYS (rows and files); how many were removed."""
        removed = await self.store.purge(self.settings.RETENTION_DAYS)
        if removed:
            log.info("retention: removed %d job(s) older than %d days", removed, self.settings.RETENTION_DAYS)
        return removed

    async def _purge_periodically(self) -> None:
        """Apply the retention every PURGE_INTERVAL_HOURS while the bot runs (not only at start-up);
        a failed purge is logged and tried again at the next interval."""
        interval_s = self.settings.PURGE_INTERVAL_HOURS * 3600
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.purge_expired()
            except Exception:
                log.exception("retention purge failed; trying again in %.0f s", interval_s)

    async def on_ready(self) -> None:
        log.info(
            "connected as %s (id %s) to %d guild(s)", self.user, self.user.id if self.user else "?", len(self.guilds)
        )

    async def speak_to(self, interaction: discord.Interaction) -> None:
        """Every slash command is answered in its user's language (bot.i18n): set before it runs."""
        if self._runner is not None:
            await self._runner.speak_to(interaction)
        else:
            i18n.use(interaction.locale)

    # --- slash-command sync ----------------------------------------------------------------
    def _command_fingerprint(self) -> str:
        payload = sorted((cmd.to_dict(self.tree) for cmd in self.tree.get_commands()), key=lambda c: c["name"])
        scope = sorted(self.settings.DISCORD_GUILD_IDS)
        translations = i18n.catalog_fingerprint()  # a changed translation is sent too
        blob = json.dumps({"commands": payload, "guilds": scope, "i18n": translations}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    async def sync_commands_if_changed(self) -> bool:
        """Discord limits daily command creates: send the command set only when it changed
        (a fingerprint kept in DATA_DIR) — to DISCORD_GUILD_IDS instantly, else globally."""
        marker = Path(self.settings.DATA_DIR) / "commands.sha256"
        fingerprint = self._command_fingerprint()
        if marker.exists() and marker.read_text().strip() == fingerprint:
            log.info("slash commands unchanged; not syncing")
            return False
        if self.settings.DISCORD_GUILD_IDS:
            for guild_id in self.settings.DISCORD_GUILD_IDS:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
            log.info("slash commands synced to %d guild(s)", len(self.settings.DISCORD_GUILD_IDS))
        else:
            await self.tree.sync()
            log.info("slash commands synced globally (may take up to an hour to appear)")
        marker.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        atomic_write(marker, fingerprint.encode(), durable=False)  # private, like all of DATA_DIR
        return True

    # --- errors: one place turns exceptions into user messages --------------------------------
    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = getattr(error, "original", error)
        if isinstance(original, VoxCanvasError):
            text = f"🚫 {_(str(original))}"
        elif isinstance(error, app_commands.TransformerError):
            text = "🚫 " + _("I couldn't read the option `{value}` — please check it and try again.").format(
                value=error.value
            )
        elif isinstance(error, app_commands.MissingPermissions):
            text = _("🚫 Only members with the Manage Server permission can do that.")
        elif isinstance(error, app_commands.CheckFailure):
            text = _("🚫 You can't use that command here.")
        else:
            command = interaction.command.name if interaction.command else "?"
            log.error("unhandled error in /%s", command, exc_info=original)
            text = _("😵 Sorry — something broke on my side. I've logged it; please try again.")
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the user about an error", exc_info=True)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        # discord.py calls this from inside its ``except`` block: log the exception, never let an
        # event take the bot down.
        log.exception("unhandled error in %s", event_method)  # noqa: LOG004

    # --- shutdown ---------------------------------------------------------------------------
    async def close(self) -> None:
        """Graceful: stop admitting, let running jobs finish (bounded), keep the rest queued in
        the store for the next start, close the store."""
        if self._closing:
            return await super().close()
        self._closing = True
        log.info("shutting down: draining running jobs (up to %.0fs)", SHUTDOWN_GRACE_S)
        self.executor.stop_admitting()
        for service in self.services:
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", type(service).__name__)
        try:
            if self._runner is not None:
                await self._runner.drain(SHUTDOWN_GRACE_S)
            remaining = await self.executor.shutdown(timeout_s=10)
            if remaining:
                log.info("%d job(s) stay queued in the store for the next start", len(remaining))
        finally:
            if self.warm_up_task is not None:
                self.warm_up_task.cancel()
            if self.purge_task is not None:
                self.purge_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.purge_task  # a purge in progress ends before the store closes
            if self._studio is not None:
                await self._studio.aclose()
            if self._store is not None:
                await self._store.close()
            await super().close()


class LocalisedTree(app_commands.CommandTree["VoxCanvasBot"]):
    """The command tree: sets the reply language of each slash command before it runs (its
    callback runs in the same task, so it and the jobs it starts inherit it)."""

    async def interaction_check(self, interaction: discord.Interaction[VoxCanvasBot], /) -> bool:
        try:
            await self.client.speak_to(interaction)
        except Exception:  # never refuse a command because its language could not be chosen
            log.warning("could not choose the reply language; English", exc_info=True)
        return True


class ShardedVoxCanvasBot(VoxCanvasBot, commands.AutoShardedBot):
    """The same bot with every gateway shard in this one process (``SHARD_COUNT``; 0 or empty, the
    default: Discord's recommendation from GET /gateway/bot). Limits: README "Scaling out"."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        options.setdefault("shard_count", settings.SHARD_COUNT or None)
        super().__init__(settings, **options)


def bot_class(settings: Settings) -> type[VoxCanvasBot]:
    """The bot the process runs: always :class:`ShardedVoxCanvasBot` (``SHARD_COUNT`` shards, by
    default as many as Discord recommends — one below 2,500 servers)."""
    del settings  # one class for every SHARD_COUNT; kept as the seam __main__ and tests use
    return ShardedVoxCanvasBot
