"""After a restart: resume what the previous process left, and deliver what it never delivered.

Called from ``setup_hook``, once logged in (REST works) and before the gateway connects, so every
unfinished job in the store belongs to a previous process.

Exactly once, across crashes: a finished job whose delivery was never recorded is delivered again
into the same place when that place is a message we edit — the interaction's original response
while its token lives, or the job's recorded progress message. Otherwise the delivery is a new
channel message sent with the job's delivery nonce (see :meth:`.runner.JobRunner._deliver`): if
the crashed process had already posted it, Discord answers with that message instead of posting a
second one. The nonce does not cover everything: Discord keeps it for a few minutes only, and a
result that went into an interaction response just before its token ran out carries none. So when
a send had begun (``delivery_started_at``) and the redelivery would post a new message, the
channel's last :data:`HISTORY_SEARCH_LIMIT` messages are first searched for the job's footer; a
busy channel can hide it there, which is what the nonce is for.
"""

from __future__ import annotations

import asyncio
import logging

import discord

from pipeline.errors import VoxCanvasError
from pipeline.studio import MusicResult, Result

from . import render
from .api_jobs import NO_SURFACE, is_api_user
from .runner import AdmittedJob, JobRequest, JobRunner, idea_from_record
from .store import JobRecord
from .surfaces import InteractionSurface, Surface

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # a job that took the process down this often is failed, not re-queued
HISTORY_SEARCH_LIMIT = 50  # recent channel messages searched for a result posted before a crash
GAVE_UP = (
    "I tried this picture several times but the renderer kept crashing on it. "
    "Please try a different idea or smaller settings."
)


class Recovery:
    """Resumes and redelivers the jobs a previous process left, through the runner."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self.store = runner.store

    async def resume(self) -> int:
        """Re-queue jobs that were queued or running when the process died, and deliver finished
        jobs whose delivery was never recorded. Returns how many jobs were picked up."""
        picked = 0
        for record in await self.store.undelivered():
            picked += 1
            self._redeliver_in_background(record)
        for record in await self.store.unfinished():
            if is_api_user(record.user_id) and self.runner.api is None:
                continue  # an HTTP API job: resumed by a process that serves the API
            if record.attempts >= MAX_ATTEMPTS:
                # It was started this often and the process died each time: don't crash-loop.
                log.error("job %s died with the process %d times; giving up", record.id, record.attempts)
                self._redeliver_in_background(await self.store.fail(record.id, GAVE_UP))
                picked += 1
                continue
            try:
                request = await self._request_for(record)
            except VoxCanvasError as exc:  # its files are unreadable: say so rather than fail the start
                log.error("job %s can't be resumed: %s", record.id, exc)
                self._redeliver_in_background(await self.store.fail(record.id, str(exc)))
                picked += 1
                continue
            try:
                job = self.runner.executor.admit(record.user_id, record.id, force=True)
            except VoxCanvasError as exc:
                log.warning("could not resume job %s: %s", record.id, exc)
                continue
            picked += 1
            self.runner.spawn(AdmittedJob(job, self.surface_for(record), record, request))
        if picked:
            log.info("resumed %d job(s) from the store", picked)
        return picked

    async def _request_for(self, record: JobRecord) -> JobRequest:
        """The stored job's request: its idea with its audio and start image, and for a
        regenerate / vary the picture it reworks (``None`` if that has been deleted since)."""
        idea = idea_from_record(record)
        idea.init_image = await self.store.read_init_image(record.id)
        idea.control_image = await self.store.read_control_input(record.id)  # ControlNet's source (#18)
        previous = None
        if record.parent_job_id is not None:
            parent = await self.store.get(record.parent_job_id)
            if parent is not None and parent.result_json:
                previous = Result.model_validate_json(parent.result_json)
        # The voice note stays on disk until the job runs (read by the studio then).
        return self.runner.audio_on_disk(JobRequest(record.kind, idea, previous), record)

    def surface_for(self, record: JobRecord) -> Surface:
        """Where a job from a previous process shows up: its interaction's original response while
        the token lives, else its recorded progress message, else a new channel message (an API
        job: its event log, through the runner's API side)."""
        if is_api_user(record.user_id):
            return NO_SURFACE
        channel = self.runner.channel_surface(
            record.id,
            record.channel_id,
            mention_user_id=record.user_id,
            reply_to=record.source_message_id,
            message_id=record.progress_message_id,
        )
        client = self.runner.client
        application_id = client.application_id
        if record.interaction_token and record.interaction_created_at and application_id is not None:
            return InteractionSurface.stored(
                client, application_id, record.interaction_token, record.interaction_created_at, channel
            )
        return channel

    def _redeliver_in_background(self, record: JobRecord) -> None:
        self.runner.track(asyncio.create_task(self._redeliver(record), name=f"redeliver-{record.id}"))

    async def _redeliver(self, record: JobRecord) -> None:
        """Deliver a finished job's result (or its failure) that was never delivered. The runner's
        delivery never raises for Discord or the store; a result whose files are gone is told as such.
        An API job's ending is in its record already: it is only marked delivered."""
        if is_api_user(record.user_id):
            if self.runner.api is not None:
                await self.runner.api._mark_delivered(record.id)
            return
        surface = self.surface_for(record)
        nonce = record.delivery_nonce
        try:
            if record.delivery_started_at is not None and surface.will_post:
                found = await self._find_delivered(record)
                if found is not None:
                    await self.store.record_delivery(record.id, message_id=found.id, channel_id=found.channel.id)
                    return
            if record.state == "done" and record.result_json and record.is_music:
                music = MusicResult.model_validate_json(record.result_json)
                try:
                    ogg = await self.store.read_music(record.id)
                except VoxCanvasError as exc:
                    await self.runner.deliver_text(record.id, surface, f"⚠️ {exc}", nonce=nonce)
                    return
                await self.runner.deliver_music(record.id, surface, music, ogg, nonce=nonce)
            elif record.state == "done" and record.result_json:
                result = Result.model_validate_json(record.result_json)
                try:
                    image_png = await self.store.read_grid(record.id) or await self.store.read_image(record.id)
                    palette_png = await self.store.read_palette(record.id)
                except VoxCanvasError as exc:
                    await self.runner.deliver_text(record.id, surface, f"⚠️ {exc}", nonce=nonce)
                    return
                await self.runner.deliver_result(record.id, surface, result, image_png, palette_png, nonce=nonce)
            else:
                text = f"⚠️ {record.error or render.apology(record.id)}"
                await self.runner.deliver_text(record.id, surface, text, nonce=nonce)
        except Exception:
            log.exception("redelivery of job %s failed", record.id)

    async def _find_delivered(self, record: JobRecord) -> discord.Message | None:
        """The job's final message among the channel's recent messages (its embed footer, or for a
        text reply its content, carries the job id), if the bot posted it."""
        me = self.runner.client.user
        if me is None:
            return None
        channel = self.runner.client.get_partial_messageable(record.channel_id)
        marker = f"job {record.id}"
        try:
            async for message in channel.history(limit=HISTORY_SEARCH_LIMIT):
                if message.author.id != me.id:
                    continue
                if any(e.footer.text == marker for e in message.embeds) or record.id in (message.content or ""):
                    return message
        except discord.HTTPException as exc:
            log.info("could not read channel history for job %s: %s", record.id, exc)
        return None
