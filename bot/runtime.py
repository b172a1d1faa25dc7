"""The bot's runtime: admit a job, show its progress, run it, deliver its result exactly once.

Where a result goes is a *surface*: the interaction's original response while its token lives
(Discord gives 15 minutes), a bot message we edit (the "listening…" reply to a voice note), or a
new message in the channel (after the token expired, or after a restart). Every job records its
progress message in the store *before* the result is put into it, so a redelivery after a crash
edits the same message again instead of posting a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import discord

from pipeline.errors import BadRequest, VoxCanvasError
from pipeline.executor import Job, ProgressEvent
from pipeline.studio import Idea, Output, Result, new_job_id

from . import render
from .views import result_view

if TYPE_CHECKING:
    from .client import VoxCanvasBot

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 15 * 60
TOKEN_SAFETY_S = 60  # stop using a token a minute before Discord expires it
PROGRESS_INTERVAL_S = 2.0
FIRST_PROGRESS_DELAY_S = 1.0
EXPIRED_TOKEN_CODES = {10015, 50027}  # Unknown Webhook, Invalid Webhook Token
MAX_ATTEMPTS = 3  # a job that took the process down this often is failed, not re-queued
GAVE_UP = "I tried this picture several times but the renderer kept crashing on it. Please try a different idea or smaller settings."


# ------------------------------------------------------------------------------------------------
# Surfaces: where a job's progress and result are shown
# ------------------------------------------------------------------------------------------------
class ChannelSurface:
    """A message in a channel: posted on the first show, edited afterwards."""

    def __init__(
        self,
        bot: VoxCanvasBot,
        channel_id: int,
        *,
        user_id: int | None = None,
        reply_to: int | None = None,
        message_id: int | None = None,
    ) -> None:
        self.bot = bot
        self.channel_id = channel_id
        self.user_id = user_id
        self.reply_to = reply_to
        self.message_id = message_id
        self.mention = True

    async def show(self, content: str, *, embed=None, files=None, view=None) -> discord.Message | None:
        channel = self.bot.get_partial_messageable(self.channel_id)
        if self.mention and self.user_id is not None and not content.startswith("<@"):
            content = f"<@{self.user_id}> {content}"
        if self.message_id is not None:
            try:
                message = channel.get_partial_message(self.message_id)
                return await message.edit(**_edit_kwargs(content, embed, files, view))
            except discord.NotFound:
                self.message_id = None  # deleted: post a new one
        reference = None
        if self.reply_to is not None:
            reference = discord.MessageReference(
                message_id=self.reply_to, channel_id=self.channel_id, fail_if_not_exists=False
            )
        message = await channel.send(
            content,
            embed=embed,
            files=files or [],
            view=view or discord.utils.MISSING,
            reference=reference,
            allowed_mentions=discord.AllowedMentions(users=True, everyone=False, roles=False),
        )
        self.message_id = message.id
        return message


class InteractionSurface:
    """An interaction's original response while its token lives (Discord gives 15 minutes);
    then the channel. Built for a live interaction, or — after a restart — from the token a
    previous process stored; edits are idempotent, so a redelivery replaces, never duplicates."""

    def __init__(
        self, edit: Callable[..., Awaitable[discord.Message]], created_at: float, fallback: ChannelSurface
    ) -> None:
        self._edit = edit
        self.created_at = created_at
        self.fallback = fallback
        self.expired = False

    @classmethod
    def live(cls, interaction: discord.Interaction, fallback: ChannelSurface) -> InteractionSurface:
        return cls(interaction.edit_original_response, interaction.created_at.timestamp(), fallback)

    @classmethod
    def stored(cls, bot: VoxCanvasBot, token: str, created_at: float, fallback: ChannelSurface) -> InteractionSurface:
        webhook = discord.Webhook.partial(bot.application_id, token, client=bot)
        return cls(functools.partial(webhook.edit_message, "@original"), created_at, fallback)

    @property
    def token_alive(self) -> bool:
        return not self.expired and time.time() - self.created_at < TOKEN_LIFETIME_S - TOKEN_SAFETY_S

    async def show(self, content: str, *, embed=None, files=None, view=None) -> discord.Message | None:
        if self.token_alive:
            try:
                return await self._edit(**_edit_kwargs(content, embed, files, view))
            except discord.HTTPException as exc:
                if not (isinstance(exc, discord.NotFound) or exc.code in EXPIRED_TOKEN_CODES or exc.status == 401):
                    raise
                log.info("interaction token expired; delivering to the channel instead")
                self.expired = True
        return await self.fallback.show(content, embed=embed, files=files, view=view)


def _edit_kwargs(content: str, embed, files, view) -> dict[str, Any]:
    """Arguments for a message edit; attachments are replaced only when files are given."""
    kwargs: dict[str, Any] = {"content": content, "embed": embed, "view": view}
    if files is not None:
        kwargs["attachments"] = files
    return kwargs


class ProgressReporter:
    """Coalesces progress lines and edits the surface at most every ``interval`` seconds.

    The first edit waits ``first_delay``: a job that finishes sooner goes straight from Discord's
    "thinking…" (or the "Listening…" reply) to its result, with no progress edits at all."""

    def __init__(
        self, surface, interval: float = PROGRESS_INTERVAL_S, first_delay: float = FIRST_PROGRESS_DELAY_S
    ) -> None:
        self.surface = surface
        self.interval = interval
        self.first_delay = first_delay
        self._latest: str | None = None
        self._shown: str | None = None
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def push(self, text: str) -> None:
        self._latest = text
        self._wake.set()

    async def _run(self) -> None:
        await asyncio.sleep(self.first_delay)
        while True:
            await self._wake.wait()
            self._wake.clear()
            text = self._latest
            if text is not None and text != self._shown:
                try:
                    await self.surface.show(text)
                    self._shown = text
                except discord.HTTPException as exc:
                    log.info("progress edit failed: %s", exc)
                await asyncio.sleep(self.interval)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# ------------------------------------------------------------------------------------------------
class JobRunner:
    """Admits, runs and delivers jobs. One per bot."""

    def __init__(self, bot: VoxCanvasBot) -> None:
        self.bot = bot
        self.settings = bot.settings
        self.tasks: set[asyncio.Task] = set()

    @property
    def store(self):
        return self.bot.store

    @property
    def executor(self):
        return self.bot.executor

    @property
    def studio(self):
        return self.bot.studio

    # --- entry points ----------------------------------------------------------------------
    async def _admit(self, interaction: discord.Interaction) -> Job | None:
        """A queue slot for the user, or a private refusal that says why (then None)."""
        try:
            return self.executor.admit(interaction.user.id, new_job_id())
        except VoxCanvasError as exc:
            await interaction.response.send_message(f"🚫 {exc}", ephemeral=True)
            return None

    async def start_imagine(self, interaction: discord.Interaction, idea: Idea) -> None:
        """/imagine: admit (or refuse privately), acknowledge, then run in the background."""
        job = await self._admit(interaction)
        if job is None:
            return
        try:
            await interaction.response.defer(thinking=True)
            await self._store_new(job, interaction=interaction, idea=idea, kind="text")
        except BaseException:
            job.finish("failed")
            raise
        surface = InteractionSurface.live(interaction, self._channel_surface(job, interaction.channel_id, None))
        self._spawn(job, surface, lambda j: self.studio.run(j, idea))

    async def start_voice(
        self, message: discord.Message, audio: bytes, filename: str, job: Job, reply: discord.Message
    ) -> None:
        """A voice note, already admitted and acknowledged with ``reply`` (the progress message)."""
        idea = Idea(audio=audio, audio_filename=filename)
        try:
            await self._store_new(job, message=message, idea=idea, kind="voice", progress_message_id=reply.id)
        except BaseException:
            job.finish("failed")
            raise
        surface = ChannelSurface(self.bot, message.channel.id, user_id=None, reply_to=message.id, message_id=reply.id)
        self._spawn(job, surface, lambda j: self.studio.run(j, idea))

    async def start_follow_up(self, interaction: discord.Interaction, parent_id: str, *, kind: str) -> None:
        """Regenerate / Vary buttons: a new job for whoever pressed, from a stored job."""
        record = await self.store.get(parent_id)
        if record is None or not record.result_json:
            await interaction.response.send_message(
                "🗑️ That picture is no longer in my history (it was deleted or has expired), so I "
                "can't rework it. Start a new one with /imagine.",
                ephemeral=True,
            )
            return
        job = await self._admit(interaction)
        if job is None:
            return
        try:
            await interaction.response.defer(thinking=True)
            previous = Result.model_validate_json(record.result_json)
            init_image = await self.store.read_init_image(parent_id)
            idea = _idea_from_record(record)
            await self._store_new(
                job,
                interaction=interaction,
                idea=idea,
                kind=kind,
                parent_job_id=parent_id,
                init_image=init_image,
            )
        except BaseException:
            job.finish("failed")
            raise
        surface = InteractionSurface.live(interaction, self._channel_surface(job, interaction.channel_id, None))
        if kind == "regenerate":
            self._spawn(job, surface, lambda j: self.studio.regenerate(j, previous, init_image=init_image))
        else:
            self._spawn(job, surface, lambda j: self.studio.vary(j, previous, init_image=init_image))

    async def show_details(self, interaction: discord.Interaction, job_id: str) -> None:
        record = await self.store.get(job_id)
        if record is None or not record.result_json:
            await interaction.response.send_message(
                "🗑️ That picture is no longer in my history (it was deleted or has expired).", ephemeral=True
            )
            return
        result = Result.model_validate_json(record.result_json)
        await interaction.response.send_message(render.details_text(result), ephemeral=True)

    # --- running -----------------------------------------------------------------------------
    def _channel_surface(self, job: Job, channel_id: int, reply_to: int | None) -> ChannelSurface:
        return ChannelSurface(self.bot, channel_id, user_id=int(job.user_id), reply_to=reply_to)

    async def _store_new(
        self,
        job: Job,
        *,
        idea: Idea,
        kind: str,
        interaction: discord.Interaction | None = None,
        message: discord.Message | None = None,
        parent_job_id: str | None = None,
        progress_message_id: int | None = None,
        init_image: bytes | None = None,
    ) -> None:
        source = interaction or message
        channel_id = source.channel_id if interaction is not None else message.channel.id
        await self.store.create_job(
            job_id=job.id,
            user_id=int(job.user_id),
            guild_id=source.guild.id if source.guild else None,
            channel_id=channel_id,
            kind=kind,
            idea=_idea_to_dict(idea),
            parent_job_id=parent_job_id,
            source_message_id=message.id if message is not None else None,
            interaction_id=interaction.id if interaction is not None else None,
            interaction_token=interaction.token if interaction is not None else None,
            interaction_created_at=interaction.created_at.timestamp() if interaction is not None else None,
            audio=idea.audio,
            audio_ext=_audio_ext(idea.audio_filename),
            init_image=init_image if init_image is not None else idea.init_image,
        )
        if progress_message_id is not None:
            await self.store.set_progress_message(job.id, progress_message_id)

    def _spawn(self, job: Job, surface, work) -> asyncio.Task:
        task = asyncio.create_task(self._run(job, surface, work), name=f"job-{job.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _run(self, job: Job, surface, work) -> None:
        reporter = ProgressReporter(surface)
        corrections = 0

        def on_progress(event: ProgressEvent) -> None:
            nonlocal corrections
            if event.stage == "correct":
                corrections += 1
            reporter.push(render.progress_line(event, corrections=corrections))

        job.listener = on_progress
        on_progress(ProgressEvent(job.id, "queued", position=job.position(), eta_s=job.eta_s()))
        outcome = "failed"
        try:
            await self.store.mark_running(job.id)
            output: Output = await work(job)
            await self.store.complete(
                job.id,
                result_json=output.result.model_dump_json(),
                score=output.result.score,
                title=output.result.scene.title,
                image_png=output.image_png,
                palette_png=output.palette_png,
            )
            outcome = "done"
            job.finish(outcome)  # the GPU part is over: free the user's slot before delivery
            await reporter.close()
            await self._deliver(job.id, surface, output.result, output.image_png, output.palette_png)
        except VoxCanvasError as exc:
            outcome = "cancelled" if job.cancelled else "failed"
            log.info("job %s refused: %s", job.id, exc)
            await self.store.fail(job.id, str(exc), state="cancelled" if job.cancelled else "failed")
            job.finish(outcome)
            await reporter.close()
            await self._deliver_text(job.id, surface, f"⚠️ {exc}")
        except asyncio.CancelledError:
            await reporter.close()
            raise  # shutting down: the store still says queued/running, so it is resumed
        except Exception:
            log.exception("job %s failed unexpectedly", job.id)
            with contextlib.suppress(Exception):
                await self.store.fail(job.id, render.apology(job.id))
            await reporter.close()
            with contextlib.suppress(Exception):
                await self._deliver_text(job.id, surface, render.apology(job.id))
        finally:
            job.listener = None
            await reporter.close()
            job.finish(outcome)

    async def _deliver(self, job_id: str, surface, result: Result, image_png: bytes, palette_png: bytes) -> None:
        message = await surface.show(
            render.result_content(result),  # a ChannelSurface adds the user's mention itself
            embed=render.result_embed(result),
            files=render.result_files(image_png, palette_png),
            view=result_view(job_id),
        )
        if message is not None:
            await self.store.record_delivery(job_id, message_id=message.id, channel_id=message.channel.id)

    async def _deliver_text(self, job_id: str, surface, text: str) -> None:
        message = await surface.show(text, embed=None, files=[], view=None)
        if message is not None:
            await self.store.record_delivery(job_id, message_id=message.id, channel_id=message.channel.id)

    # --- restart: resume what the last process left ------------------------------------------
    async def resume(self) -> int:
        """Re-queue jobs that were queued or running when the process died, and deliver finished
        jobs whose delivery was never recorded. Returns how many jobs were picked up."""
        picked = 0
        for record in await self.store.undelivered():
            picked += 1
            self._track(asyncio.create_task(self._redeliver(record), name=f"redeliver-{record.id}"))
        for record in await self.store.unfinished():
            if record.attempts >= MAX_ATTEMPTS:
                # It was started this often and the process died each time: don't crash-loop.
                log.error("job %s died with the process %d times; giving up", record.id, record.attempts)
                await self.store.fail(record.id, GAVE_UP)
                self._track(asyncio.create_task(self._redeliver(await self.store.get(record.id))))
                picked += 1
                continue
            try:
                job = self.executor.admit(record.user_id, record.id, force=True)
            except VoxCanvasError as exc:
                log.warning("could not resume job %s: %s", record.id, exc)
                continue
            picked += 1
            self._spawn(job, self._surface_for(record), await self._work_for(record))
        if picked:
            log.info("resumed %d job(s) from the store", picked)
        return picked

    async def _work_for(self, record):
        idea = _idea_from_record(record)
        if record.kind in ("regenerate", "vary") and record.parent_job_id:
            parent = await self.store.get(record.parent_job_id)
            init_image = await self.store.read_init_image(record.id)
            if parent is not None and parent.result_json:
                previous = Result.model_validate_json(parent.result_json)
                if record.kind == "regenerate":
                    return lambda j: self.studio.regenerate(j, previous, init_image=init_image)
                return lambda j: self.studio.vary(j, previous, init_image=init_image)

            async def gone(j):
                raise BadRequest("The picture this was based on has been deleted, so I can't rework it.")

            return gone
        idea.audio = await self.store.read_audio(record.id)
        idea.init_image = await self.store.read_init_image(record.id)
        return lambda j: self.studio.run(j, idea)

    def _surface_for(self, record):
        """Where a job from a previous process shows up: its interaction's original response while
        the token lives, else its progress message (voice notes), else a new channel message."""
        channel = _RecordingSurface(
            ChannelSurface(
                self.bot,
                record.channel_id,
                user_id=record.user_id,
                reply_to=record.source_message_id,
                message_id=record.progress_message_id if record.interaction_id is None else None,
            ),
            self.store,
            record.id,
        )
        if record.interaction_token and record.interaction_created_at:
            return InteractionSurface.stored(self.bot, record.interaction_token, record.interaction_created_at, channel)
        return channel

    async def _redeliver(self, record) -> None:
        surface = self._surface_for(record)
        try:
            if isinstance(surface, _RecordingSurface) and surface.surface.message_id is None:
                found = await self._find_delivered(record)
                if found is not None:
                    await self.store.record_delivery(record.id, message_id=found.id, channel_id=found.channel.id)
                    return
            if record.state == "done" and record.result_json:
                result = Result.model_validate_json(record.result_json)
                await self._deliver(
                    record.id,
                    surface,
                    result,
                    await self.store.read_image(record.id),
                    await self.store.read_palette(record.id),
                )
            else:
                await self._deliver_text(record.id, surface, f"⚠️ {record.error or render.apology(record.id)}")
        except Exception:
            log.exception("redelivery of job %s failed", record.id)

    async def _find_delivered(self, record) -> discord.Message | None:
        """A crash between posting a result and recording it: look for the post (its footer
        carries the job id) among the channel's recent messages."""
        channel = self.bot.get_partial_messageable(record.channel_id)
        marker = f"job {record.id}"
        try:
            async for message in channel.history(limit=50):
                if message.author.id != self.bot.user.id:
                    continue
                if any(e.footer and e.footer.text == marker for e in message.embeds) or record.id in (
                    message.content or ""
                ):
                    return message
        except discord.HTTPException as exc:
            log.info("could not read channel history for job %s: %s", record.id, exc)
        return None

    def _track(self, task: asyncio.Task) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self, timeout_s: float) -> None:
        """Graceful shutdown: give running jobs ``timeout_s`` to finish, then cancel the rest
        (the store keeps them queued; the next start resumes them)."""
        if not self.tasks:
            return
        done, pending = await asyncio.wait(set(self.tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)


class _RecordingSurface:
    """Records the message a resumed job shows its progress in, before any result goes there."""

    def __init__(self, surface: ChannelSurface, store, job_id: str) -> None:
        self.surface = surface
        self.store = store
        self.job_id = job_id
        self.recorded = surface.message_id

    @property
    def token_alive(self) -> bool:
        return False

    async def show(self, content: str, **kwargs):
        message = await self.surface.show(content, **kwargs)
        if message is not None and message.id != self.recorded:
            self.recorded = message.id
            await self.store.set_progress_message(self.job_id, message.id)
        return message


def _idea_to_dict(idea: Idea) -> dict:
    data = asdict(idea)
    data.pop("audio", None)
    data.pop("init_image", None)
    data["has_audio"] = idea.audio is not None
    data["has_init_image"] = idea.init_image is not None
    return data


def _idea_from_record(record) -> Idea:
    fields = set(Idea.__dataclass_fields__) - {"audio", "init_image"}
    return Idea(**{k: v for k, v in record.idea.items() if k in fields})


def _audio_ext(filename: str | None) -> str:
    if filename and "." in filename:
        ext = filename.rsplit(".", 1)[1].lower()
        if ext.isalnum() and len(ext) <= 5:
            return ext
    return "ogg"
