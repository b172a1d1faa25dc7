"""Jobs from the HTTP API: admitted, run and finished by the same runtime as Discord's.

An API job takes the one admission path (:meth:`.runner.JobRunner._admit`: caps, queue, store),
the one executor queue and the one studio. What differs is where it shows up: not on a Discord
surface but in its :class:`EventLog` — the ordered events (``queued``, ``stage``, ``done`` /
``failed``) that the web layer streams as Server-Sent Events — and in its store record, which a
client polls. An API job is delivered when its result (or failure) is stored.

Identity: an API key is a user. Its user id is a stable negative number derived from a hash of
the key (Discord's ids are positive snowflakes, so the two never meet, and the raw key is never
stored); without keys every local client is the one anonymous user :data:`ANONYMOUS_USER_ID`.
API jobs carry :data:`API_CHANNEL_ID` as their channel.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pipeline.errors import BadRequest, JobCancelled, ModelUnavailable, VoxCanvasError
from pipeline.executor import Job, ProgressEvent
from pipeline.studio import Idea, MusicOutput, MusicResult, Result

from . import render
from .runner import (
    NOT_A_PICTURE,
    UNSAVED,
    Acknowledged,
    AdmittedJob,
    JobOrigin,
    JobRequest,
    JobRunner,
    idea_from_record,
)
from .runner import user_error_text as job_error_text
from .store import JobRecord, JobStateError
from .store.records import EndState
from .surfaces import MessageParts

log = logging.getLogger(__name__)

API_CHANNEL_ID: Final = 0
ANONYMOUS_USER_ID: Final = -1
MAX_KEPT_LOGS: Final = 1000  # event logs of finished jobs kept in memory (older ones are rebuilt from the store)

EventName = Literal["queued", "stage", "done", "failed"]
TERMINAL: Final = frozenset({"done", "failed"})


def api_user_id(key: str | None) -> int:
    """The user id of an API key: negative, stable across restarts, not reversible."""
    if key is None:
        return ANONYMOUS_USER_ID
    digest = hashlib.sha256(b"voxcanvas-api-key:" + key.encode()).digest()
    return -(int.from_bytes(digest[:7], "big") + 2)  # never -1 (anonymous), fits SQLite's INTEGER


def is_api_user(user_id: int) -> bool:
    return user_id < 0


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event of a job: ``seq`` orders them (SSE ``id``), ``t`` is seconds since admission."""

    seq: int
    name: EventName
    data: dict[str, Any]
    t: float


@dataclass
class EventLog:
    """A job's events in order; any number of followers read them, live."""

    job_id: str
    started: float = field(default_factory=time.monotonic)
    events: list[JobEvent] = field(default_factory=list)
    error: VoxCanvasError | None = None  # why a failed job failed (the web layer picks a status from it)
    _waker: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1].name in TERMINAL

    @property
    def latest_stage(self) -> dict[str, Any] | None:
        for event in reversed(self.events):
            if event.name in ("stage", "queued"):
                return {"stage": event.data.get("stage", event.name), **event.data}
        return None

    def publish(self, name: EventName, data: dict[str, Any]) -> None:
        if self.finished:
            return
        self.events.append(JobEvent(len(self.events), name, data, round(time.monotonic() - self.started, 3)))
        waker, self._waker = self._waker, asyncio.Event()
        waker.set()

    async def follow(self, after: int = -1) -> AsyncIterator[JobEvent]:
        """The events after ``after`` (an SSE ``Last-Event-ID``), then live ones until the job ends."""
        index = max(after + 1, 0)
        while True:
            waker = self._waker
            while index < len(self.events):
                event = self.events[index]
                index += 1
                yield event
                if event.name in TERMINAL:
                    return
            await waker.wait()

    async def wait_finished(self) -> None:
        async for _ in self.follow(len(self.events) - 1):
            pass


def done_data(result: Result | MusicResult) -> dict[str, Any]:
    """A ``done`` event's data: the result, and what it is (``media``: "image" or "music")."""
    return {"media": "music" if isinstance(result, MusicResult) else "image", "result": result.model_dump(mode="json")}


def progress_data(event: ProgressEvent, round_index: int) -> tuple[EventName, dict[str, Any]]:
    """A progress event as an API event: ``queued`` (position, ETA) or ``stage``."""
    if event.stage == "queued":
        eta = round(event.eta_s, 1) if event.eta_s is not None else None
        return "queued", {"position": event.position, "eta_s": eta}
    data: dict[str, Any] = {"stage": event.stage, "round": round_index}
    if event.detail:  # e.g. the model being loaded
        data["detail"] = event.detail
    if event.total:
        data.update(step=event.step, total=event.total)
    return "stage", data


class ApiJobs:
    """The API's side of the runtime. Built with the runner (it attaches itself as ``runner.api``)."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self.store = runner.store
        self.executor = runner.executor
        self._logs: collections.OrderedDict[str, EventLog] = collections.OrderedDict()
        runner.api = self

    # --- admission -----------------------------------------------------------------------------
    async def submit(self, user_id: int, request: JobRequest) -> JobRecord:
        """Admit (caps, queue, store) and start the job; its record. Raises the refusal
        (:class:`~pipeline.errors.TooManyJobs`, :class:`~pipeline.errors.QueueFull`, ...)."""
        refused: list[VoxCanvasError] = []

        async def refuse(exc: VoxCanvasError) -> None:
            refused.append(exc)

        async def acknowledge(job: Job) -> Acknowledged:
            self._log(job.id)
            return Acknowledged(NO_SURFACE, request)

        origin = JobOrigin(user_id, API_CHANNEL_ID, None)
        admitted = await self.runner._admit(origin, refuse, acknowledge)
        if admitted is None:
            raise refused[0] if refused else BadRequest()
        self.runner.spawn(admitted)
        return admitted.record

    async def follow_up(
        self,
        user_id: int,
        parent: JobRecord,
        kind: Literal["regenerate", "vary", "soundtrack"],
        *,
        seconds: float | None = None,
    ) -> JobRecord:
        """Regenerate / vary one of the user's finished pictures, or compose its soundtrack
        (``seconds`` long; the MUSIC_SECONDS setting without it)."""
        if not parent.result_json:
            raise JobStateError("That picture isn't ready yet.")
        if parent.is_music:
            raise JobStateError(NOT_A_PICTURE)
        previous = Result.model_validate_json(parent.result_json)
        if kind == "soundtrack":  # from the picture's scene, as the Discord button does
            return await self.submit(user_id, JobRequest(kind, Idea(seconds=seconds), previous))
        idea = idea_from_record(parent)
        idea.init_image = await self.store.read_init_image(parent.id)
        idea.control_image = await self.store.read_control_input(parent.id)
        return await self.submit(user_id, JobRequest(kind, idea, previous))

    def owns(self, admitted: AdmittedJob) -> bool:
        return is_api_user(admitted.record.user_id)

    # --- events --------------------------------------------------------------------------------
    def _log(self, job_id: str) -> EventLog:
        log_ = self._logs.get(job_id)
        if log_ is None:
            log_ = self._logs[job_id] = EventLog(job_id)
            while len(self._logs) > MAX_KEPT_LOGS:
                oldest_id, oldest = next(iter(self._logs.items()))
                if not oldest.finished:
                    break
                del self._logs[oldest_id]
        return log_

    def events_of(self, record: JobRecord) -> EventLog:
        """The job's event log; for a job finished before this process (or long ago), one rebuilt
        from its record (just its ending)."""
        found = self._logs.get(record.id)
        if found is not None:
            return found
        log_ = EventLog(record.id)
        if record.state == "done" and record.result_json:
            result = MusicResult if record.is_music else Result
            log_.publish("done", done_data(result.model_validate_json(record.result_json)))
        elif record.finished:
            log_.publish("failed", {"message": record.error or render.apology(record.id), "state": record.state})
        else:
            log_.publish("queued", {"position": None, "eta_s": None})
            self._logs[record.id] = log_  # the resumed run publishes into it
        return log_

    def position(self, job_id: str) -> tuple[int | None, float | None]:
        job = self.executor.get_job(job_id)
        if job is None:
            return None, None
        return job.position(), job.eta_s()

    # --- cancelling ----------------------------------------------------------------------------
    async def cancel(self, record: JobRecord) -> JobRecord:
        """Cancel a queued or running job: its queued work is dropped, a running render stops at
        its next step, its slot is given back, and the record says ``cancelled``."""
        job = self.executor.get_job(record.id)
        if job is not None:
            job.cancel()
            job.finish("cancelled")  # the user's slot is free now; a running render stops at its next step
        try:
            return await self.store.fail(record.id, JobCancelled.default_message, state="cancelled")
        except JobStateError:
            current = await self.store.get(record.id)
            return current or record
        finally:
            self._log(record.id).publish("failed", {"message": JobCancelled.default_message, "state": "cancelled"})

    # --- running -------------------------------------------------------------------------------
    async def run(self, admitted: AdmittedJob) -> None:
        """Run an API job: progress into its event log; the result (or why there is none) into its
        record and, last, its ``done`` / ``failed`` event."""
        job, events = admitted.job, self._log(admitted.job.id)
        work = self.runner._work(admitted.request)
        round_index = 0

        def on_progress(event: ProgressEvent) -> None:
            nonlocal round_index
            if event.stage == "correct":
                round_index += 1
            name, data = progress_data(event, round_index)
            same = [e for e in events.events if e.name == name][-1:] if name == "queued" else events.events[-1:]
            if same and same[0].name == name and same[0].data == data:
                return  # the same place in the queue, or the same stage, again
            events.publish(name, data)

        job.listener = on_progress
        on_progress(ProgressEvent(job.id, "queued", position=job.position(), eta_s=job.eta_s()))
        try:
            try:
                await self.store.mark_running(job.id)
                output = await work(job)
            except VoxCanvasError as exc:
                outcome: EndState = "cancelled" if job.cancelled else "failed"
                if isinstance(exc, ModelUnavailable):
                    log.error("job %s failed: %s", job.id, exc)
                else:
                    log.info("job %s refused: %s", job.id, exc)
                job.finish(outcome)
                await self._end(job.id, events, job_error_text(exc, job.id), state=outcome, error=exc)
                return
            except asyncio.CancelledError:
                raise  # shutting down: the store still says queued/running, so it is resumed
            except Exception:
                log.exception("job %s failed unexpectedly", job.id)
                job.finish("failed")
                await self._end(job.id, events, render.apology(job.id))
                return
            job.finish("done")
            if isinstance(output, MusicOutput):
                try:
                    saved = await self.runner._save_music(job.id, output)
                except VoxCanvasError as exc:  # the OGG/Opus encoding failed
                    await self._end(job.id, events, job_error_text(exc, job.id), error=exc)
                    return
            else:
                saved = await self.runner._save(job.id, output)
            if saved is not True:
                text = UNSAVED if saved is None else saved.user_message
                events.error = saved if saved is not None else None
                events.publish("failed", {"message": text, "state": "failed"})
                await self._mark_delivered(job.id)
                return
            await self._mark_delivered(job.id)
            events.publish("done", done_data(output.result))
        finally:
            job.listener = None
            job.finish("failed")  # no-op unless the job ended on an error or was cancelled
            if not events.finished:  # cancelled task (shutdown): followers hear it rather than hang
                events.publish(
                    "failed", {"message": "The server is restarting; the job will resume.", "state": "queued"}
                )

    async def _end(
        self,
        job_id: str,
        events: EventLog,
        text: str,
        *,
        state: EndState = "failed",
        error: VoxCanvasError | None = None,
    ) -> None:
        current = await self.store.get(job_id) if state == "cancelled" else None
        if current is None or current.active:  # a cancel through the API has recorded it already
            await self.runner._record_failure(job_id, text, state=state)
        await self._mark_delivered(job_id)
        events.error = error
        events.publish("failed", {"message": text, "state": state})

    async def _mark_delivered(self, job_id: str) -> None:
        """An API job is delivered once its ending is stored: nothing for a restart to send."""
        try:
            await self.store.record_delivery(job_id, message_id=0, channel_id=API_CHANNEL_ID)
        except Exception:
            log.exception("job %s: could not record its end as delivered", job_id)


class _NoSurface:
    """API jobs have no Discord surface: they report through their :class:`EventLog`."""

    will_post = False

    async def show(self, parts: MessageParts) -> Any:
        raise RuntimeError("an API job is not shown on Discord")


NO_SURFACE: Final = _NoSurface()
