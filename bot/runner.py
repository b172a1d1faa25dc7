"""The job runner: the one way a job starts, runs and is delivered.

Every job — ``/imagine``, a voice note, a Regenerate / Vary button, a job resumed after a restart —
becomes an :class:`AdmittedJob` before it runs:

1. **admit**: a queue slot for the user from the executor, or a refusal that says why;
2. **acknowledge** within Discord's 3 s (Discord's "thinking…", or a 👂 and a "Listening…" reply)
   and gather what the job needs (the voice note's audio, the reworked picture's start image);
3. **store**: the job's record, so a restart finds it.

If anything after step 1 fails, the slot is given back. Then the job runs in the background: its
progress is shown on its :class:`~.surfaces.Surface`, its result (or a message saying why there is
none) is delivered there, and the delivery is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import discord

from pipeline.errors import BadRequest, VoxCanvasError
from pipeline.executor import Executor, Job, ProgressEvent
from pipeline.studio import Idea, Output, Result, Studio, new_job_id

from . import render
from .progress import ProgressReporter
from .store import JobKind, JobRecord, JobStore
from .surfaces import ChannelSurface, InteractionSurface, MessageParts, RecordingSurface, Surface
from .views import result_view

log = logging.getLogger(__name__)

PICTURE_GONE = (
    "🗑️ That picture is no longer in my history (it was deleted or has expired), so I can't rework it. "
    "Start a new one with /imagine."
)
PICTURE_GONE_DETAILS = "🗑️ That picture is no longer in my history (it was deleted or has expired)."
PARENT_GONE = "The picture this was based on has been deleted, so I can't rework it."
DOWNLOAD_FAILED = "📥 I couldn't download that voice note — please send it again."

Work = Callable[[Job], Awaitable[Output]]
Refuse = Callable[[str], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class JobOrigin:
    """Who asked for a job and where: the message or interaction it came from."""

    user_id: int
    channel_id: int
    guild_id: int | None
    source_message_id: int | None = None
    interaction: discord.Interaction | None = None

    @classmethod
    def of_interaction(cls, interaction: discord.Interaction) -> JobOrigin:
        if interaction.channel_id is None:  # slash commands and buttons always come from a channel
            raise BadRequest("I can't tell which channel this came from.")
        guild_id = interaction.guild.id if interaction.guild is not None else None
        return cls(interaction.user.id, interaction.channel_id, guild_id, interaction=interaction)

    @classmethod
    def of_message(cls, message: discord.Message) -> JobOrigin:
        guild_id = message.guild.id if message.guild is not None else None
        return cls(message.author.id, message.channel.id, guild_id, source_message_id=message.id)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a job makes: a picture from an idea, or a rework (regenerate / vary) of ``previous``."""

    kind: JobKind
    idea: Idea
    previous: Result | None = None  # the picture a regenerate / vary reworks

    @property
    def parent_job_id(self) -> str | None:
        return self.previous.job_id if self.previous is not None else None


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The user has been answered: where the job will show up, and what it is to make.
    ``progress_message_id``: the bot message already showing the job (a voice note's reply)."""

    surface: Surface
    request: JobRequest
    progress_message_id: int | None = None


@dataclass(frozen=True, slots=True)
class AdmittedJob:
    """A job ready to run: it holds a queue slot, the user knows it is coming, it is stored."""

    job: Job
    surface: Surface
    record: JobRecord
    request: JobRequest


class JobRunner:
    """Admits, runs and delivers jobs. One per bot, built once its store, executor and studio exist."""

    def __init__(self, client: discord.Client, *, store: JobStore, executor: Executor, studio: Studio) -> None:
        self.client = client
        self.store = store
        self.executor = executor
        self.studio = studio
        self.tasks: set[asyncio.Task[None]] = set()

    # --- entry points ------------------------------------------------------------------------
    async def start_imagine(self, interaction: discord.Interaction, idea: Idea) -> None:
        """/imagine: admit (or refuse privately), acknowledge, then run in the background."""

        async def request() -> JobRequest:
            return JobRequest("text", idea)

        await self._start_from_interaction(interaction, request)

    async def start_follow_up(
        self, interaction: discord.Interaction, parent_id: str, *, kind: Literal["regenerate", "vary"]
    ) -> None:
        """Regenerate / Vary buttons: a new job for whoever pressed, from a stored job."""
        parent = await self.store.get(parent_id)
        if parent is None or not parent.result_json:
            await interaction.response.send_message(PICTURE_GONE, ephemeral=True)
            return
        previous = Result.model_validate_json(parent.result_json)

        async def request() -> JobRequest:
            idea = idea_from_record(parent)
            idea.init_image = await self.store.read_init_image(parent_id)
            return JobRequest(kind, idea, previous)

        await self._start_from_interaction(interaction, request)

    async def start_voice(self, message: discord.Message, attachment: discord.Attachment) -> None:
        """A voice note (already checked from its metadata): admit (or refuse in a reply),
        acknowledge with 👂 and a "Listening…" reply — which then shows the progress and finally
        becomes the result — download it, then run in the background."""
        origin = JobOrigin.of_message(message)

        async def refuse(text: str) -> None:
            await message.reply(text, mention_author=False)

        async def acknowledge(job: Job) -> Acknowledged | None:
            with contextlib.suppress(discord.HTTPException):
                await message.add_reaction("👂")  # no permission to react: the reply is enough
            reply = await message.reply("👂 Listening…", mention_author=False)
            try:
                audio = await attachment.read()
            except discord.HTTPException:
                await reply.edit(content=DOWNLOAD_FAILED)
                return None
            surface = self.channel_surface(job.id, origin.channel_id, reply_to=message.id, message_id=reply.id)
            request = JobRequest("voice", Idea(audio=audio, audio_filename=attachment.filename))
            return Acknowledged(surface, request, progress_message_id=reply.id)

        admitted = await self._admit(origin, refuse, acknowledge)
        if admitted is not None:
            self.spawn(admitted)

    async def show_details(self, interaction: discord.Interaction, job_id: str) -> None:
        """The Details button: the full scene and every round, privately."""
        record = await self.store.get(job_id)
        if record is None or not record.result_json:
            await interaction.response.send_message(PICTURE_GONE_DETAILS, ephemeral=True)
            return
        result = Result.model_validate_json(record.result_json)
        await interaction.response.send_message(render.details_text(result), ephemeral=True)

    # --- admission: the one path every new job takes -----------------------------------------
    async def _start_from_interaction(
        self, interaction: discord.Interaction, request: Callable[[], Awaitable[JobRequest]]
    ) -> None:
        """A slash command or a button: refuse privately, or defer ("thinking…") and run; the
        result goes into the interaction's response, or to the channel once its token runs out."""
        origin = JobOrigin.of_interaction(interaction)

        async def refuse(text: str) -> None:
            await interaction.response.send_message(text, ephemeral=True)

        async def acknowledge(job: Job) -> Acknowledged:
            await interaction.response.defer(thinking=True)
            fallback = self.channel_surface(job.id, origin.channel_id, mention_user_id=origin.user_id)
            return Acknowledged(InteractionSurface.live(interaction, fallback), await request())

        admitted = await self._admit(origin, refuse, acknowledge)
        if admitted is not None:
            self.spawn(admitted)

    async def _admit(
        self, origin: JobOrigin, refuse: Refuse, acknowledge: Callable[[Job], Awaitable[Acknowledged | None]]
    ) -> AdmittedJob | None:
        """Admit → acknowledge → store. ``None`` when the user was refused (caps, queue full,
        shutting down: ``refuse`` tells them why) or ``acknowledge`` already answered them."""
        try:
            job = self.executor.admit(origin.user_id, new_job_id())
        except VoxCanvasError as exc:
            await refuse(f"🚫 {exc}")
            return None
        try:
            acknowledged = await acknowledge(job)
            if acknowledged is None:
                job.finish("failed")
                return None
            record = await self._store_new(job, origin, acknowledged)
        except BaseException:
            job.finish("failed")
            raise
        return AdmittedJob(job, acknowledged.surface, record, acknowledged.request)

    async def _store_new(self, job: Job, origin: JobOrigin, acknowledged: Acknowledged) -> JobRecord:
        request, interaction = acknowledged.request, origin.interaction
        idea = request.idea
        return await self.store.create_job(
            job_id=job.id,
            user_id=origin.user_id,
            guild_id=origin.guild_id,
            channel_id=origin.channel_id,
            kind=request.kind,
            idea=idea_to_dict(idea),
            parent_job_id=request.parent_job_id,
            source_message_id=origin.source_message_id,
            interaction_id=interaction.id if interaction is not None else None,
            interaction_token=interaction.token if interaction is not None else None,
            interaction_created_at=interaction.created_at.timestamp() if interaction is not None else None,
            progress_message_id=acknowledged.progress_message_id,
            audio=idea.audio,
            audio_ext=audio_ext(idea.audio_filename),
            init_image=idea.init_image,
        )

    def channel_surface(
        self,
        job_id: str,
        channel_id: int,
        *,
        mention_user_id: int | None = None,
        reply_to: int | None = None,
        message_id: int | None = None,
    ) -> RecordingSurface:
        """A channel message for the job, recorded in its store record whenever it changes."""
        channel = ChannelSurface(
            self.client, channel_id, mention_user_id=mention_user_id, reply_to=reply_to, message_id=message_id
        )
        return RecordingSurface(channel, self.store, job_id)

    # --- running -----------------------------------------------------------------------------
    def spawn(self, admitted: AdmittedJob) -> None:
        """Run the job in the background (tracked, so shutdown can drain it)."""
        self.track(asyncio.create_task(self._run(admitted), name=f"job-{admitted.job.id}"))

    def track(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _work(self, request: JobRequest) -> Work:
        """The studio call that makes the request's picture."""
        idea, previous = request.idea, request.previous
        if request.kind not in ("regenerate", "vary"):
            return lambda job: self.studio.run(job, idea)
        if previous is None:

            async def parent_gone(job: Job) -> Output:
                raise BadRequest(PARENT_GONE)

            return parent_gone
        rework = self.studio.regenerate if request.kind == "regenerate" else self.studio.vary
        return lambda job: rework(job, previous, init_image=idea.init_image)

    async def _run(self, admitted: AdmittedJob) -> None:
        job, surface = admitted.job, admitted.surface
        work = self._work(admitted.request)
        reporter = ProgressReporter(surface)
        corrections = 0

        def on_progress(event: ProgressEvent) -> None:
            nonlocal corrections
            if event.stage == "correct":
                corrections += 1
            reporter.push(render.progress_line(event, corrections=corrections))

        job.listener = on_progress
        on_progress(ProgressEvent(job.id, "queued", position=job.position(), eta_s=job.eta_s()))
        outcome: Literal["done", "failed", "cancelled"] = "failed"
        try:
            await self.store.mark_running(job.id)
            output = await work(job)
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
            await self.deliver_result(job.id, surface, output.result, output.image_png, output.palette_png)
        except VoxCanvasError as exc:
            outcome = "cancelled" if job.cancelled else "failed"
            log.info("job %s refused: %s", job.id, exc)
            await self.store.fail(job.id, str(exc), state=outcome)
            job.finish(outcome)
            await reporter.close()
            await self.deliver_text(job.id, surface, f"⚠️ {exc}")
        except asyncio.CancelledError:
            await reporter.close()
            raise  # shutting down: the store still says queued/running, so it is resumed
        except Exception:
            log.exception("job %s failed unexpectedly", job.id)
            with contextlib.suppress(Exception):
                await self.store.fail(job.id, render.apology(job.id))
            await reporter.close()
            with contextlib.suppress(Exception):
                await self.deliver_text(job.id, surface, render.apology(job.id))
        finally:
            job.listener = None
            await reporter.close()
            job.finish(outcome)

    # --- delivery ----------------------------------------------------------------------------
    async def deliver_result(
        self, job_id: str, surface: Surface, result: Result, image_png: bytes, palette_png: bytes
    ) -> None:
        await self._deliver(
            job_id,
            surface,
            MessageParts(
                render.result_content(result),  # a channel surface adds the user's mention itself
                embed=render.result_embed(result),
                files=render.result_files(image_png, palette_png),
                view=result_view(job_id),
            ),
        )

    async def deliver_text(self, job_id: str, surface: Surface, text: str) -> None:
        await self._deliver(job_id, surface, MessageParts(text, files=[]))

    async def _deliver(self, job_id: str, surface: Surface, parts: MessageParts) -> None:
        """Show the job's final message and record where it landed.

        ``begin_delivery`` first marks the send and hands out the job's delivery nonce: a new
        channel message carries it, so if this process dies before ``record_delivery``, the
        next one's repeated send is answered by Discord with this very message (see
        :mod:`.recovery`). Edits — of the interaction's response or of the job's progress
        message — land in the same message however often they are repeated."""
        record = await self.store.begin_delivery(job_id)
        message = await surface.show(replace(parts, nonce=record.delivery_nonce))
        await self.store.record_delivery(job_id, message_id=message.id, channel_id=message.channel.id)

    # --- shutdown ------------------------------------------------------------------------------
    async def drain(self, timeout_s: float) -> None:
        """Graceful shutdown: give running jobs ``timeout_s`` to finish, then cancel the rest
        (the store keeps them queued; the next start resumes them)."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)


# --- ideas as stored -----------------------------------------------------------------------------
def idea_to_dict(idea: Idea) -> dict[str, Any]:
    """The idea's options for the store record; the audio and start image are stored as files."""
    data = asdict(idea)
    data.pop("audio", None)
    data.pop("init_image", None)
    return data


def idea_from_record(record: JobRecord) -> Idea:
    """The idea's options from a store record (without its audio and start image)."""
    fields = set(Idea.__dataclass_fields__) - {"audio", "init_image"}
    return Idea(**{k: v for k, v in record.idea.items() if k in fields})


def audio_ext(filename: str | None) -> str:
    if filename and "." in filename:
        ext = filename.rsplit(".", 1)[1].lower()
        if ext.isalnum() and len(ext) <= 5:
            return ext
    return "ogg"
