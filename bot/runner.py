"""The job runner: the one way a job starts, runs and is delivered.

Every job — ``/imagine``, a voice note, a Regenerate / Vary button, a job resumed after a restart —
becomes an :class:`AdmittedJob` before it runs:

1. **admit**: a queue slot for the user from the executor, or a refusal that says why;
2. **acknowledge** within Discord's 3 s (Discord's "thinking…", or a 👂 and a "Listening…" reply)
   and gather what the job needs (the voice note's audio, ``/imagine``'s attached start image, the
   reworked picture's start image) — downloads come after the acknowledgement, never before;
3. **store**: the job's record, so a restart finds it.

If anything after step 1 fails, the slot is given back. Then the job runs in the background: its
progress is shown on its :class:`~.surfaces.Surface`, its result (or a message saying why there is
none) is delivered there, and the delivery is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import discord
from PIL import Image

from pipeline import moderation
from pipeline.errors import BadRequest, JobCancelled, ModelUnavailable, UnsafeImage, VoxCanvasError
from pipeline.executor import Executor, Job, ProgressEvent
from pipeline.images import check_image_bytes, inspect_init_image
from pipeline.limits import MAX_SEED, RESULT_SAVE_ATTEMPTS, RESULT_SAVE_RETRY_DELAY_S
from pipeline.music import wav_to_ogg_opus
from pipeline.studio import Idea, MusicOutput, MusicResult, Output, Result, Studio, new_job_id
from pipeline.styles import check_style

from . import i18n, render, safety
from .guilds import GuildConfig, Guilds, with_defaults
from .i18n import N_, _
from .progress import ProgressReporter
from .store import JobKind, JobNotFound, JobRecord, JobStateError, JobStore, StoreError
from .store.records import EndState
from .surfaces import ChannelSurface, InteractionSurface, MessageParts, RecordingSurface, Surface
from .views import RemixModal, progress_view, result_view

if TYPE_CHECKING:
    from .api_jobs import ApiJobs

log = logging.getLogger(__name__)

PICTURE_GONE = N_(
    "🗑️ That picture is no longer in my history (it was deleted or has expired), so I can't rework it. "
    "Start a new one with /imagine."
)
CANCELLED = N_("🛑 Cancelled.")
CANCEL_NOT_YOURS = N_("🚫 Only the person who asked for this can cancel it.")
CANCEL_TOO_LATE = N_("That job has already finished — there's nothing to cancel.")
CANCELLING = N_("🛑 Cancelling…")
DELETE_NOT_YOURS = N_(
    "🚫 Only the person who asked for this picture, or a member who can manage messages, can delete it."
)
DELETE_GONE = N_("That picture is already gone.")
DELETE_RUNNING = N_("That job is still in progress — cancel it first.")
DELETED = N_("🗑️ Deleted: the post, its pictures and its record are gone.")
NO_SUCH_CANDIDATE = N_("🤔 That picture has no such candidate.")
NOT_A_PICTURE = N_("🎵 That's a piece of music, not a picture — there's nothing to rework.")
PICTURE_GONE_DETAILS = N_("🗑️ That picture is no longer in my history (it was deleted or has expired).")
PARENT_GONE = N_("The picture this was based on has been deleted, so I can't rework it.")
DOWNLOAD_FAILED = N_("📥 I couldn't download that voice note — please send it again.")
IMAGE_DOWNLOAD_FAILED = N_("I couldn't download that image — please attach it again.")
UNSAVED = N_("The picture was made but could not be saved (the disk or the database failed).")
UNSAVED_NOTE = N_("⚠️ I couldn't save this picture, so its buttons won't work — download it if you want to keep it.")
RESULT_REFUSED = N_(
    "😵 Your picture is ready, but Discord refused to show it (job `{job_id}`). I've logged it; please try again."
)
WITHHELD = N_(
    "🙈 The safety checker flagged this picture, so I'm not showing it here. Try rephrasing your idea "
    "(a server can allow such pictures behind a spoiler in age-restricted channels: /settings nsfw)."
)
PARTLY_WITHHELD = N_("🙈 The safety checker flagged some of these pictures; they are blacked out.")
SPOILERED = N_("⚠️ The safety checker flagged this picture; it is behind a spoiler.")
REDUCED_IMAGE_NAME = "image.jpg"
JPEG_QUALITY = 90
MUSIC_REFUSED = N_(
    "😵 Your music is ready, but Discord refused to show it (job `{job_id}`). I've logged it; please try again."
)
MODEL_UNAVAILABLE = N_(
    "A model I need couldn't be loaded, so I can't make pictures right now. I've logged the details "
    "for the operator (job `{job_id}`); please try again later."
)

Work = Callable[[Job], Awaitable[Output | MusicOutput]]
Refuse = Callable[[VoxCanvasError], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class JobOrigin:
    """Who asked for a job and where: the message or interaction it came from."""

    user_id: int
    channel_id: int
    guild_id: int | None
    source_message_id: int | None = None
    interaction: discord.Interaction | None = None
    age_restricted: bool = False  # Discord marks the channel age-restricted (NSFW policy: bot.safety)

    @classmethod
    def of_interaction(cls, interaction: discord.Interaction) -> JobOrigin:
        if interaction.channel_id is None:  # slash commands and buttons always come from a channel
            raise BadRequest("I can't tell which channel this came from.")
        guild_id = interaction.guild.id if interaction.guild is not None else None
        return cls(
            interaction.user.id,
            interaction.channel_id,
            guild_id,
            interaction=interaction,
            age_restricted=safety.age_restricted(interaction.channel),
        )

    @classmethod
    def of_message(cls, message: discord.Message) -> JobOrigin:
        guild_id = message.guild.id if message.guild is not None else None
        return cls(
            message.author.id,
            message.channel.id,
            guild_id,
            source_message_id=message.id,
            age_restricted=safety.age_restricted(message.channel),
        )


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a job makes: a picture from an idea, a rework (regenerate / vary) of ``previous``, music
    from a description (compose), or a soundtrack for ``previous``."""

    kind: JobKind
    idea: Idea
    previous: Result | None = None  # the picture a regenerate / vary reworks, or a soundtrack scores

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
    """Admits, runs and delivers jobs. One per process, built once its store, executor and studio
    exist. ``client`` is ``None`` when no Discord bot runs (the web API alone); :attr:`api` runs
    the jobs that came from the HTTP API (:class:`~.api_jobs.ApiJobs` attaches itself)."""

    def __init__(self, client: discord.Client | None, *, store: JobStore, executor: Executor, studio: Studio) -> None:
        self._client = client
        self.store = store
        self.executor = executor
        self.studio = studio
        self.tasks: set[asyncio.Task[None]] = set()
        self.api: ApiJobs | None = None
        self.guilds = Guilds(store, daily_quota=studio.settings.DAILY_QUOTA)  # server settings, quotas

    @property
    def client(self) -> discord.Client:
        if self._client is None:
            raise RuntimeError("no Discord client in this process (web API only)")
        return self._client

    # --- entry points ------------------------------------------------------------------------
    async def start_imagine(
        self,
        interaction: discord.Interaction,
        idea: Idea,
        *,
        image: discord.Attachment | None = None,
        control_image: discord.Attachment | None = None,
    ) -> None:
        """/imagine: admit (or refuse privately), acknowledge, then download the start ``image``
        (if any, checked from its metadata already: downloading only after the acknowledgement
        keeps Discord's 3 s off the CDN), then run in the background."""

        async def request() -> JobRequest:
            ready = idea
            if control_image is not None:  # ControlNet's source (#18): checked like a start image
                ready = replace(ready, control_image=await download_init_image(control_image))
            if image is None:
                return JobRequest("text", ready)
            return JobRequest("text", replace(ready, init_image=await download_init_image(image)))

        await self._start_from_interaction(interaction, request)

    async def start_compose(self, interaction: discord.Interaction, description: str, seconds: float) -> None:
        """/compose: music from a description, queued, capped and delivered like a picture."""

        async def request() -> JobRequest:
            return JobRequest("compose", Idea(text=description, seconds=seconds))

        await self._start_from_interaction(interaction, request)

    async def start_follow_up(
        self,
        interaction: discord.Interaction,
        parent_id: str,
        *,
        kind: Literal["regenerate", "vary", "soundtrack"],
        candidate: int | None = None,
        upscale: bool = False,
    ) -> None:
        """Regenerate / Vary / Soundtrack buttons: a new job for whoever pressed, from a stored job.
        U/V buttons (``candidate``, 0-based; ``upscale`` for U): a "vary" job whose idea names the
        candidate, started from that candidate's stored picture (stored as the new job's start
        image, so a restart resumes it)."""
        await self.speak_to(interaction)
        parent = await self.store.get(parent_id)
        if parent is None or not parent.result_json:
            await interaction.response.send_message(_(PICTURE_GONE), ephemeral=True)
            return
        if parent.is_music:
            await interaction.response.send_message(_(NOT_A_PICTURE), ephemeral=True)
            return
        previous = Result.model_validate_json(parent.result_json)
        if candidate is not None and not 0 <= candidate < max(1, len(previous.candidates)):
            await interaction.response.send_message(_(NO_SUCH_CANDIDATE), ephemeral=True)
            return

        async def request() -> JobRequest:
            if candidate is not None:
                idea = replace(idea_from_record(parent), candidate=candidate, upscale=upscale, candidates=None)
                idea.init_image = await self.store.read_candidate(parent_id, candidate)
                idea.control_image = await self.store.read_control_input(parent_id)  # the same control (#18)
                return JobRequest("vary", idea, previous)
            if kind == "soundtrack":  # from the picture's scene; no start image, the default length
                return JobRequest(kind, Idea(), previous)
            idea = idea_from_record(parent)
            idea.init_image = await self.store.read_init_image(parent_id)
            idea.control_image = await self.store.read_control_input(parent_id)
            return JobRequest(kind, idea, previous)

        await self._start_from_interaction(interaction, request)

    async def start_voice(self, message: discord.Message, attachment: discord.Attachment) -> None:
        """A voice note (already checked from its metadata): admit (or refuse in a reply),
        acknowledge with 👂 and a "Listening…" reply — which then shows the progress and finally
        becomes the result — download it, then run in the background."""
        origin = JobOrigin.of_message(message)
        # Their /preferences language, else (until Whisper has heard the language) the server's.
        prefs = await self.guilds.preferences(origin.user_id)
        server_locale = message.guild.preferred_locale if message.guild is not None else None
        i18n.use(i18n.reply_language(prefs.language, locale=server_locale))

        async def refuse(exc: VoxCanvasError) -> None:
            await message.reply(f"🚫 {_(str(exc))}", mention_author=False)

        async def acknowledge(job: Job) -> Acknowledged | None:
            with contextlib.suppress(discord.HTTPException):
                await message.add_reaction("👂")  # no permission to react: the reply is enough
            reply = await message.reply(_("👂 Listening…"), mention_author=False)
            try:
                audio = await attachment.read()
            except discord.HTTPException:
                await reply.edit(content=_(DOWNLOAD_FAILED))
                return None
            surface = self.channel_surface(job.id, origin.channel_id, reply_to=message.id, message_id=reply.id)
            request = JobRequest("voice", Idea(audio=audio, audio_filename=attachment.filename))
            return Acknowledged(surface, request, progress_message_id=reply.id)

        admitted = await self._admit(origin, refuse, acknowledge)
        if admitted is not None:
            self.spawn(admitted)

    async def show_details(self, interaction: discord.Interaction, job_id: str) -> None:
        """The Details button: the full scene and every round, privately."""
        await self.speak_to(interaction)
        record = await self.store.get(job_id)
        if record is None or not record.result_json:
            await interaction.response.send_message(_(PICTURE_GONE_DETAILS), ephemeral=True)
            return
        if record.is_music:
            await interaction.response.send_message(_(NOT_A_PICTURE), ephemeral=True)
            return
        result = Result.model_validate_json(record.result_json)
        control = await self.store.read_control(job_id) if result.best.control else None
        if control is not None:  # the control image the picture was rendered with (#18)
            await interaction.response.send_message(
                render.details_text(result), file=discord.File(io.BytesIO(control), "control.png"), ephemeral=True
            )
            return
        await interaction.response.send_message(render.details_text(result), ephemeral=True)

    async def open_remix(self, interaction: discord.Interaction, job_id: str) -> None:
        """The Remix button: a modal prefilled from the stored job (answered at once: type 9)."""
        await self.speak_to(interaction)
        parent = await self.store.get(job_id)
        if parent is None or not parent.result_json:
            await interaction.response.send_message(_(PICTURE_GONE), ephemeral=True)
            return
        if parent.is_music:
            await interaction.response.send_message(_(NOT_A_PICTURE), ephemeral=True)
            return
        result = Result.model_validate_json(parent.result_json)
        best = result.best
        seed = result.candidates[0].seed if result.candidates else best.seed
        modal = RemixModal(
            job_id,
            prompt=best.correction_prompt or best.prompt,
            negative_prompt=best.negative_prompt,
            style=result.style or "",
            seed=seed,
        )
        await interaction.response.send_modal(modal)

    async def start_remix(
        self,
        interaction: discord.Interaction,
        parent_id: str,
        *,
        prompt: str,
        negative_prompt: str,
        style: str,
        seed: str,
    ) -> None:
        """The Remix modal was submitted: a new job (the submitter's) with the edited text."""
        await self.speak_to(interaction)
        parent = await self.store.get(parent_id)
        if parent is None or not parent.result_json:
            await interaction.response.send_message(_(PICTURE_GONE), ephemeral=True)
            return
        previous = Result.model_validate_json(parent.result_json)
        try:
            seed_value = int(seed.strip()) if seed.strip() else None
            if seed_value is not None and not 0 <= seed_value <= MAX_SEED:
                raise ValueError(seed)
        except ValueError:
            await interaction.response.send_message(
                _("🚫 The seed must be a whole number from 0 to {max}.").format(max=MAX_SEED), ephemeral=True
            )
            return
        try:
            check_style(style or None)
        except BadRequest as exc:
            await interaction.response.send_message(f"🚫 {_(exc.user_message)}", ephemeral=True)
            return
        if not prompt.strip():
            await interaction.response.send_message(_("🚫 The prompt is empty — tell me what to draw."), ephemeral=True)
            return
        idea = replace(
            idea_from_record(parent),
            text=prompt.strip(),
            negative_prompt=negative_prompt.strip() or None,
            style=style.strip() or None,
            seed=seed_value,
            remix=True,
            candidates=None,
            candidate=None,
            upscale=False,
        )

        async def request() -> JobRequest:
            idea.control_image = await self.store.read_control_input(parent_id)  # keeps its control (#18)
            return JobRequest("vary", idea, previous)

        await self._start_from_interaction(interaction, request)

    async def cancel_from_button(self, interaction: discord.Interaction, job_id: str) -> None:
        """The Cancel button (its owner only): a queued job leaves the queue at once, a running
        render stops at its next step; the job's message then says "Cancelled"."""
        await self.speak_to(interaction)
        record = await self.store.get(job_id)
        if record is None or not record.active:
            await interaction.response.send_message(_(CANCEL_TOO_LATE), ephemeral=True)
            return
        if record.user_id != interaction.user.id:
            await interaction.response.send_message(_(CANCEL_NOT_YOURS), ephemeral=True)
            return
        job = self.executor.get_job(job_id)
        if job is None or job.finished:
            await interaction.response.send_message(_(CANCEL_TOO_LATE), ephemeral=True)
            return
        job.cancel()
        log.info("job %s: cancelled by its owner", job_id)
        await interaction.response.send_message(_(CANCELLING), ephemeral=True)

    async def delete_from_button(self, interaction: discord.Interaction, job_id: str) -> None:
        """The Delete button (the owner, or members with Manage Messages): the post, the job's
        files and its record go."""
        await self.speak_to(interaction)
        record = await self.store.get(job_id)
        if record is None:
            await interaction.response.send_message(_(DELETE_GONE), ephemeral=True)
            return
        moderator = interaction.guild is not None and interaction.permissions.manage_messages
        if record.user_id != interaction.user.id and not moderator:
            await interaction.response.send_message(_(DELETE_NOT_YOURS), ephemeral=True)
            return
        if record.active:
            await interaction.response.send_message(_(DELETE_RUNNING), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        if interaction.message is not None:
            try:
                await interaction.message.delete()
            except discord.NotFound:
                pass
            except discord.HTTPException as exc:
                log.warning("job %s: could not delete its post: %s", job_id, exc)
        await self.store.delete(job_id, user_id=record.user_id)
        log.info(
            "job %s: deleted by %s", job_id, "its owner" if record.user_id == interaction.user.id else "a moderator"
        )
        await interaction.followup.send(_(DELETED), ephemeral=True)

    # --- languages and preferences ----------------------------------------------------------
    async def speak_to(self, interaction: discord.Interaction) -> str:
        """Answer ``interaction`` in its user's language from now on (this task and the jobs it
        starts): their /preferences language, else their Discord client's (bot.i18n)."""
        prefs = await self.guilds.preferences(interaction.user.id)
        return i18n.use(i18n.reply_language(prefs.language, locale=interaction.locale))

    # --- admission: the one path every new job takes -----------------------------------------
    async def _start_from_interaction(
        self, interaction: discord.Interaction, request: Callable[[], Awaitable[JobRequest]]
    ) -> None:
        """A slash command or a button: refuse privately, or defer ("thinking…") and run; the
        result goes into the interaction's response, or to the channel once its token runs out."""
        await self.speak_to(interaction)
        origin = JobOrigin.of_interaction(interaction)

        async def refuse(exc: VoxCanvasError) -> None:
            await interaction.response.send_message(f"🚫 {_(str(exc))}", ephemeral=True)

        # /preferences private: a slash command's result only its user sees (buttons answer in the open).
        command = interaction.type == discord.InteractionType.application_command
        private = command and (await self.guilds.preferences(origin.user_id)).private

        async def acknowledge(job: Job) -> Acknowledged | None:
            await interaction.response.defer(thinking=True, ephemeral=private)
            try:
                job_request = await request()
            except VoxCanvasError as exc:  # e.g. a start image that could not be downloaded or read
                await interaction.edit_original_response(content=f"🚫 {_(exc.user_message)}")
                return None
            fallback = self.channel_surface(job.id, origin.channel_id, mention_user_id=origin.user_id)
            return Acknowledged(InteractionSurface.live(interaction, fallback), job_request)

        admitted = await self._admit(origin, refuse, acknowledge)
        if admitted is not None:
            self.spawn(admitted)

    async def _admit(
        self, origin: JobOrigin, refuse: Refuse, acknowledge: Callable[[Job], Awaitable[Acknowledged | None]]
    ) -> AdmittedJob | None:
        """Admit → acknowledge → store. ``None`` when the user was refused (caps, queue full,
        shutting down: ``refuse`` is given the reason) or ``acknowledge`` already answered them."""
        try:
            job = self.executor.admit(origin.user_id, new_job_id())
        except VoxCanvasError as exc:
            await refuse(exc)
            return None
        try:
            voice = origin.interaction is None and origin.source_message_id is not None
            config = await self.guilds.admit(
                user_id=origin.user_id, guild_id=origin.guild_id, channel_id=origin.channel_id, voice=voice
            )
        except VoxCanvasError as exc:
            job.finish("failed")
            await refuse(exc)
            return None
        try:
            acknowledged = await acknowledge(job)
            if acknowledged is None:
                job.finish("failed")
                return None
            if acknowledged.request.kind in ("text", "voice"):  # personal and server defaults
                request = acknowledged.request
                idea = with_defaults(
                    request.idea, await self.guilds.get(origin.guild_id), await self.guilds.preferences(origin.user_id)
                )
                idea = await self.guilds.with_server_style(idea, origin.guild_id)  # recorded with the job
                acknowledged = replace(acknowledged, request=replace(request, idea=idea))
            keep = safety.keeps_flagged(config, guild_id=origin.guild_id, age_restricted=origin.age_restricted)
            # The reply language, kept with the job (a restart resumes it in the same language); a
            # voice note without a /preferences language is answered in the language heard.
            if origin.interaction is not None:
                language: str | None = i18n.current()
            else:
                language = i18n.language_of((await self.guilds.preferences(origin.user_id)).language)
            request = acknowledged.request
            idea = replace(request.idea, keep_flagged=keep, reply_language=language)
            acknowledged = replace(acknowledged, request=replace(request, idea=idea))
            record = await self._store_new(job, origin, acknowledged)
        except BaseException:
            job.finish("failed")
            raise
        return AdmittedJob(job, acknowledged.surface, record, self.audio_on_disk(acknowledged.request, record))

    def audio_on_disk(self, request: JobRequest, record: JobRecord) -> JobRequest:
        """``request`` with its voice note read from the store's copy when the job runs, not held in
        memory while it waits (a queued job keeps its idea until then)."""
        if record.audio_file is None:
            return request
        on_disk = replace(request.idea, audio=None, audio_path=self.store.job_dir(record.id) / record.audio_file)
        return replace(request, idea=on_disk)

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
            control_image=idea.control_image,
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
        run = self.api.run(admitted) if self.api is not None and self.api.owns(admitted) else self._run(admitted)
        self.track(asyncio.create_task(self._moderated(admitted, run), name=f"job-{admitted.job.id}"))

    async def _moderated(self, admitted: AdmittedJob, run: Awaitable[None]) -> None:
        """Run the job under its server's blocklist (the default list plus the server's entries)."""
        try:
            config = await self.guilds.get(admitted.record.guild_id)
        except Exception:
            log.warning("job %s: server settings unreadable; the default blocklist applies", admitted.job.id)
            config = GuildConfig()
        with moderation.job_rules(config.blocklist, functools.partial(self._log_refusal, admitted, config)):
            await run

    def _log_refusal(self, admitted: AdmittedJob, config: GuildConfig, refusal: moderation.PromptBlocked) -> None:
        """Tell the server's moderation log channel (who, which rule, the job id; never the words)."""
        record = admitted.record
        if config.modlog_channel is None or self._client is None:
            return
        text = (
            f"🛡️ Refused job `{record.id}` from <@{record.user_id}> in <#{record.channel_id}>: the "
            f"{refusal.where} broke the rule “{refusal.rule}”."
        )
        self.track(asyncio.create_task(self._post_modlog(config.modlog_channel, text), name=f"modlog-{record.id}"))

    async def _post_modlog(self, channel_id: int, text: str) -> None:
        try:
            channel = self.client.get_channel(channel_id) or await self.client.fetch_channel(channel_id)
            if isinstance(channel, discord.abc.Messageable):
                await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException:
            log.warning("could not post to the moderation log channel %d", channel_id, exc_info=True)

    async def _safety_modlog(self, admitted: AdmittedJob, flagged: Result | None) -> None:
        """Log ``flagged``'s withheld / spoilered pictures (``None``: a refused start image) to the
        server's moderation log channel."""
        record = admitted.record
        if record.guild_id is None or self._client is None:
            return
        try:
            config = await self.guilds.get(record.guild_id)
        except Exception:
            log.warning("job %s: server settings unreadable; no moderation log entry", record.id)
            return
        if config.modlog_channel is None:
            return
        if flagged is None:
            text = safety.modlog_refused(record.id, user_id=record.user_id, channel_id=record.channel_id)
        else:
            text = safety.modlog_flagged(flagged, user_id=record.user_id, channel_id=record.channel_id)
        await self._post_modlog(config.modlog_channel, text)

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep ``task`` (named after its job) until it ends; its exception, if any, is retrieved
        and logged with that name, never left for asyncio's "never retrieved" warning."""
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s died: %s", task.get_name(), exc, exc_info=exc)

    def _work(self, request: JobRequest) -> Work:
        """The studio call that makes the request's picture (or music)."""
        idea, previous = request.idea, request.previous
        if request.kind == "compose":
            return lambda job: self.studio.compose(job, idea.text or "", seconds=idea.seconds, seed=idea.seed)
        if request.kind == "voice":  # a spoken idea that asks for music is composed, not drawn
            return lambda job: self.studio.listen(job, idea, music_seconds=idea.seconds)
        if request.kind not in ("regenerate", "vary", "soundtrack"):
            return lambda job: self.studio.run(job, idea)
        if previous is None:

            async def parent_gone(job: Job) -> Output:
                raise BadRequest(PARENT_GONE)

            return parent_gone
        if request.kind == "soundtrack":
            return lambda job: self.studio.soundtrack(job, previous, seconds=idea.seconds, seed=idea.seed)
        if request.kind == "vary" and idea.remix:
            return lambda job: self.studio.remix(
                job,
                previous,
                prompt=idea.text or "",
                negative_prompt=idea.negative_prompt,
                style=idea.style,
                seed=idea.seed,
                control_image=idea.control_image,
            )
        if request.kind == "vary" and idea.upscale:
            return lambda job: self.studio.upscale(job, previous, init_image=idea.init_image, candidate=idea.candidate)
        if request.kind == "vary" and idea.candidate is not None:
            return lambda job: self.studio.vary(
                job, previous, init_image=idea.init_image, candidate=idea.candidate, control_image=idea.control_image
            )
        if request.kind == "regenerate":
            return lambda job: self.studio.regenerate(
                job, previous, init_image=idea.init_image, control_image=idea.control_image
            )
        return lambda job: self.studio.vary(job, previous, init_image=idea.init_image, control_image=idea.control_image)

    async def _run(self, admitted: AdmittedJob) -> None:
        """Run the job and always end it with a message to its user, whatever part fails: the
        studio, saving the picture, the store, or Discord refusing the result."""
        job, surface, nonce = admitted.job, admitted.surface, admitted.record.delivery_nonce
        work = self._work(admitted.request)
        reporter = ProgressReporter(surface, view=progress_view(job.id))
        corrections = 0

        def on_progress(event: ProgressEvent) -> None:
            nonlocal corrections
            if event.stage == "correct":
                corrections += 1
            # Called from the executor's thread or tasks, whose context is not this job's.
            with i18n.speaking(language):
                reporter.push(render.progress_line(event, corrections=corrections, candidates=job.candidates))

        job.listener = on_progress
        job.keep_flagged = admitted.request.idea.keep_flagged
        # This job's task only (a restart resumes it so too); its progress lines too.
        language = i18n.use(admitted.request.idea.reply_language)
        on_progress(ProgressEvent(job.id, "queued", position=job.position(), eta_s=job.eta_s()))
        try:
            try:
                await self.store.mark_running(job.id)
                output = await work(job)
            except VoxCanvasError as exc:
                outcome: EndState = "cancelled" if job.cancelled else "failed"
                text = _(CANCELLED) if isinstance(exc, JobCancelled) and job.cancelled else user_error_text(exc, job.id)
                if isinstance(exc, ModelUnavailable):  # the operator's problem: the details go to the log
                    log.error("job %s failed: %s", job.id, exc)
                else:
                    log.info("job %s refused: %s", job.id, exc)
                if isinstance(exc, UnsafeImage):
                    await self._safety_modlog(admitted, None)
                job.finish(outcome)
                await reporter.close()
                shown = text if text == _(CANCELLED) else f"⚠️ {text}"
                await self._end_without_picture(job.id, surface, nonce, shown, error=text, state=outcome)
                return
            except asyncio.CancelledError:
                raise  # shutting down: the store still says queued/running, so it is resumed
            except Exception:
                log.exception("job %s failed unexpectedly", job.id)
                job.finish("failed")
                await reporter.close()
                apology = render.apology(job.id)
                await self._end_without_picture(job.id, surface, nonce, apology, error=apology)
                return
            job.finish("done")  # the GPU part is over: free the user's slot before saving and delivery
            heard = getattr(output.result, "language", None)
            if admitted.request.kind == "voice" and admitted.request.idea.reply_language is None and heard:
                i18n.use(heard)  # answered in the language the voice note was spoken in
            if isinstance(output, MusicOutput):
                await self._save_and_deliver_music(job.id, surface, nonce, output, reporter)
                return
            saved = await self._save(job.id, output)
            await reporter.close()
            if saved is not True:
                if saved is not None:  # the job was cancelled or deleted meanwhile: say that instead
                    await self._end_without_picture(
                        job.id, surface, nonce, f"⚠️ {saved.user_message}", error=saved.user_message
                    )
                    return
                log.warning("job %s: delivering its picture from memory; it could not be saved", job.id)
            await self.deliver_result(
                job.id, surface, output.result, output.shown_png, output.palette_png, nonce=nonce, saved=bool(saved)
            )
            if output.result.flagged:
                await self._safety_modlog(admitted, output.result)
        finally:
            job.listener = None
            await reporter.close()
            job.finish("failed")  # no-op unless the job ended on an error or was cancelled

    async def _save(self, job_id: str, output: Output) -> Literal[True] | StoreError | None:
        """Save the finished picture: ``True``; ``None`` when it could not be saved (the disk or
        the database failing, after one retry: the job is then marked failed with
        :data:`UNSAVED`, if the store allows it); the :class:`StoreError` when the job was
        cancelled or deleted while rendering."""
        for attempt in range(1, RESULT_SAVE_ATTEMPTS + 1):
            try:
                await self.store.complete(
                    job_id,
                    result_json=output.result.model_dump_json(),
                    score=output.result.score,
                    title=output.result.scene.title,
                    image_png=output.image_png,
                    palette_png=output.palette_png,
                    candidate_pngs=output.candidate_pngs,
                    grid_png=output.grid_png,
                    control_png=output.control_png,
                )
                return True
            except (JobStateError, JobNotFound) as exc:
                return exc
            except Exception:
                log.exception(
                    "job %s: saving the picture failed (attempt %d of %d)", job_id, attempt, RESULT_SAVE_ATTEMPTS
                )
                if attempt < RESULT_SAVE_ATTEMPTS:
                    await asyncio.sleep(RESULT_SAVE_RETRY_DELAY_S)
        await self._record_failure(job_id, UNSAVED)
        return None

    async def _save_music(self, job_id: str, output: MusicOutput) -> Literal[True] | StoreError | None:
        """Save a composed piece like :meth:`_save` saves a picture (same answers): OGG/Opus (what
        Discord plays; encoded now if the studio made WAV only) and the WAV (the HTTP API's).
        ``output.ogg`` is filled in, so the caller can deliver it even when saving failed."""
        if output.ogg is None:
            output.ogg = await asyncio.to_thread(wav_to_ogg_opus, output.wav)
        for attempt in range(1, RESULT_SAVE_ATTEMPTS + 1):
            try:
                await self.store.complete_music(
                    job_id,
                    result_json=output.result.model_dump_json(),
                    title=f"🎵 {output.result.music_prompt}"[:200],
                    music_ogg=output.ogg,
                    music_wav=output.wav,
                )
                return True
            except (JobStateError, JobNotFound) as exc:
                return exc
            except Exception:
                log.exception(
                    "job %s: saving the music failed (attempt %d of %d)", job_id, attempt, RESULT_SAVE_ATTEMPTS
                )
                if attempt < RESULT_SAVE_ATTEMPTS:
                    await asyncio.sleep(RESULT_SAVE_RETRY_DELAY_S)
        await self._record_failure(job_id, UNSAVED)
        return None

    async def _save_and_deliver_music(
        self, job_id: str, surface: Surface, nonce: str, output: MusicOutput, reporter: ProgressReporter
    ) -> None:
        """Save a composed piece (:meth:`_save_music`), then deliver it."""
        try:
            saved = await self._save_music(job_id, output)
        except VoxCanvasError as exc:  # the OGG/Opus encoding failed
            await reporter.close()
            await self._end_without_picture(job_id, surface, nonce, f"⚠️ {exc.user_message}", error=exc.user_message)
            return
        await reporter.close()
        if isinstance(saved, StoreError):
            await self._end_without_picture(job_id, surface, nonce, f"⚠️ {saved.user_message}", error=saved.user_message)
            return
        if saved is None:
            log.warning("job %s: delivering its music from memory; it could not be saved", job_id)
        assert output.ogg is not None
        await self.deliver_music(job_id, surface, output.result, output.ogg, nonce=nonce)

    async def deliver_music(
        self, job_id: str, surface: Surface, result: MusicResult, ogg: bytes, *, nonce: str
    ) -> None:
        """Show a composed piece: the OGG/Opus attachment (Discord plays it inline) and its embed.
        If Discord refuses it, an apology; the store's ``error`` says so."""
        parts = MessageParts(
            render.music_content(result), embed=render.music_embed(result), files=render.music_files(ogg)
        )
        refused = await self._try_deliver(job_id, surface, parts, nonce=nonce)
        if refused is None:
            return
        log.error("job %s: the music was refused (%s)", job_id, refused)
        note = f"Discord refused the music ({refused}); an apology was shown."
        await self.deliver_text(job_id, surface, _(MUSIC_REFUSED).format(job_id=job_id), nonce=nonce, note=note)

    async def _record_failure(self, job_id: str, error: str, *, state: EndState = "failed") -> None:
        """Mark the job failed (or cancelled) with ``error``; a store that can't is logged, never raised."""
        try:
            await self.store.fail(job_id, error, state=state)
        except Exception:
            log.exception("job %s: the store could not record that it %s", job_id, state)

    async def _end_without_picture(
        self, job_id: str, surface: Surface, nonce: str, shown: str, *, error: str, state: EndState = "failed"
    ) -> None:
        """A job with no picture to show: record ``error`` (if the store can) and tell the user ``shown``."""
        await self._record_failure(job_id, error, state=state)
        await self.deliver_text(job_id, surface, shown, nonce=nonce)

    # --- delivery ----------------------------------------------------------------------------
    async def deliver_result(
        self,
        job_id: str,
        surface: Surface,
        result: Result,
        image_png: bytes,
        palette_png: bytes,
        *,
        nonce: str,
        saved: bool = True,
    ) -> None:
        """Show the result. If Discord refuses it, show it once more in a reduced form (no embed,
        no palette, the picture as JPEG), then an apology; the store's ``error`` says which was
        shown and why. Unsaved (``saved=False``): no buttons, and the user is told why."""
        content = render.result_content(result)  # a channel surface adds the user's mention itself
        view: discord.ui.View | None = result_view(job_id, candidates=len(result.candidates), kind=result.kind)
        if not saved:
            content, view = f"{_(UNSAVED_NOTE)}\n{content}", None
        embed, files = render.result_embed(result), render.result_files(image_png, palette_png)
        if result.flagged_kept:  # an age-restricted channel whose server allows it: behind a spoiler
            content = f"{_(SPOILERED)}\n{content}"
            embed, files = safety.without_image(embed), safety.spoilered(files)
        elif safety.withheld_all(result):  # nothing left to show: say so, no picture
            content = f"{_(WITHHELD)}\n{content}"
            embed, files = safety.without_image(embed), []
        elif result.flagged:  # a grid with some cells blacked out
            content = f"{_(PARTLY_WITHHELD)}\n{content}"
        full = MessageParts(content, embed=embed, files=files, view=view)
        first_refusal = await self._try_deliver(job_id, surface, full, nonce=nonce)
        if first_refusal is None:
            return
        log.warning("job %s: the result was refused (%s); trying a reduced form", job_id, first_refusal)
        jpeg = await asyncio.to_thread(png_to_jpeg, image_png)
        reduced_name = (safety.SPOILER_PREFIX if result.flagged_kept else "") + REDUCED_IMAGE_NAME
        reduced = MessageParts(
            reduced_content(result, content),
            files=[] if safety.withheld_all(result) else [discord.File(io.BytesIO(jpeg), filename=reduced_name)],
            view=view,
        )
        note = f"Discord refused the full result ({first_refusal}); a reduced one was shown."
        second_refusal = await self._try_deliver(job_id, surface, reduced, nonce=nonce, note=note)
        if second_refusal is None:
            return
        log.error("job %s: the reduced result was refused too (%s)", job_id, second_refusal)
        note = (
            f"Discord refused the result ({first_refusal}) and a reduced one ({second_refusal}); an apology was shown."
        )
        await self.deliver_text(job_id, surface, _(RESULT_REFUSED).format(job_id=job_id), nonce=nonce, note=note)

    async def deliver_text(
        self, job_id: str, surface: Surface, text: str, *, nonce: str, note: str | None = None
    ) -> None:
        """Show a text-only final message; if even that fails, log it (nothing else can reach the user)."""
        refused = await self._try_deliver(job_id, surface, MessageParts(text, files=[]), nonce=nonce, note=note)
        if refused is not None:
            log.error("job %s: its final message was refused too (%s); the user was not told", job_id, refused)

    async def _try_deliver(
        self, job_id: str, surface: Surface, parts: MessageParts, *, nonce: str, note: str | None = None
    ) -> str | None:
        """:meth:`_deliver`; ``None`` once shown, else why it was not (Discord's refusal, or the
        error that stopped the send — logged with its traceback)."""
        try:
            await self._deliver(job_id, surface, parts, nonce=nonce, note=note)
        except discord.HTTPException as exc:
            return refusal(exc)
        except Exception as exc:
            log.exception("job %s: showing its final message failed", job_id)
            return type(exc).__name__
        return None

    async def _deliver(
        self, job_id: str, surface: Surface, parts: MessageParts, *, nonce: str, note: str | None = None
    ) -> None:
        """Show the job's final message and record where it landed.

        ``begin_delivery`` first marks the send; a new channel message carries the job's delivery
        nonce, so if this process dies before ``record_delivery``, the next one's repeated send is
        answered by Discord with this very message (see :mod:`.recovery`). Edits — of the
        interaction's response or of the job's progress message — land in the same message
        however often they are repeated. The job is recorded as delivered only once Discord
        accepted the message; a store failing around the send is logged and does not stop it."""
        try:
            await self.store.begin_delivery(job_id)
        except Exception:
            log.exception("job %s: the store could not mark the send; sending anyway", job_id)
        message = await surface.show(replace(parts, nonce=nonce))
        try:
            await self.store.record_delivery(job_id, message_id=message.id, channel_id=message.channel.id, note=note)
        except Exception:
            log.exception("job %s: delivered as message %s, but the store could not record it", job_id, message.id)

    # --- shutdown ------------------------------------------------------------------------------
    async def drain(self, timeout_s: float) -> None:
        """Graceful shutdown: give running jobs ``timeout_s`` to finish, then cancel the rest
        (the store keeps them queued; the next start resumes them)."""
        if not self.tasks:
            return
        _done, pending = await asyncio.wait(set(self.tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)


# --- what the user is told ------------------------------------------------------------------------
def user_error_text(exc: BaseException, job_id: str) -> str:
    """What the user reads about a failed job: a :class:`VoxCanvasError`'s own message, written
    for them — except a model-loading error, whose message names settings and filesystem paths
    for the operator (it is logged) — and a generic apology with the job id for anything else."""
    if isinstance(exc, ModelUnavailable):
        return _(MODEL_UNAVAILABLE).format(job_id=job_id)
    if isinstance(exc, VoxCanvasError):
        return _(exc.user_message)  # a fixed message has its translation in the catalogs
    return render.apology(job_id)


# --- ideas as stored -----------------------------------------------------------------------------
def idea_to_dict(idea: Idea) -> dict[str, Any]:
    """The idea's options for the store record; the audio and start image are stored as files."""
    data = asdict(idea)
    data.pop("audio", None)
    data.pop("audio_path", None)
    data.pop("init_image", None)
    data.pop("control_image", None)
    return data


def idea_from_record(record: JobRecord) -> Idea:
    """The idea's options from a store record (without its audio and start image)."""
    fields = set(Idea.__dataclass_fields__) - {"audio", "audio_path", "init_image", "control_image"}
    idea = Idea(**{k: v for k, v in record.idea.items() if k in fields})
    idea.loras = tuple((str(name), float(weight)) for name, weight in idea.loras)  # JSON lists → pairs
    return idea


async def download_init_image(attachment: discord.Attachment) -> bytes:
    """The start image of ``/imagine image:``, downloaded and checked from its header (too many
    bytes or pixels, not PNG/JPEG/WebP: :class:`BadRequest` now, before the job is queued; no
    pixel is decoded here, on the event loop)."""
    check_image_bytes(attachment.size)
    try:
        data = await attachment.read()
    except discord.HTTPException as exc:
        log.info("downloading start image %s failed: %s", attachment.id, exc)
        raise BadRequest(IMAGE_DOWNLOAD_FAILED) from exc
    inspect_init_image(data)
    return data


def audio_ext(filename: str | None) -> str:
    if filename and "." in filename:
        ext = filename.rsplit(".", 1)[1].lower()
        if ext.isalnum() and len(ext) <= 5:
            return ext
    return "ogg"


# --- a result Discord refused, reduced ------------------------------------------------------------
def refusal(exc: discord.HTTPException) -> str:
    """Discord's refusal in a few words for the log and the store: ``"400 (50035): Invalid Form Body"``."""
    return f"{exc.status} ({exc.code}): {exc.text or exc.response.reason}"[:200]


def png_to_jpeg(png: bytes) -> bytes:
    """The picture as a JPEG: smaller, and a different upload than the one refused."""
    with Image.open(io.BytesIO(png)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue()


def reduced_content(result: Result, content: str) -> str:
    """The result as plain text (no embed): title, score, and the job id recovery looks for."""
    score = f" · alignment {result.score}/100" if result.score is not None else ""
    return f"{content}\n**{result.scene.title[:200]}**{score} · job `{result.job_id}`"
