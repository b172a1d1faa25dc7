"""The GPU executor: an asyncio-facing queue feeding ONE thread that owns every model and every
torch call.

Promises (README "The queue" repeats them for users and operators):

* **One owner.** Whisper, the diffusion pipeline and CLIP are loaded lazily, once, on the GPU
  thread, and every stage call runs there. The event loop only submits work and awaits futures,
  so a busy GPU never blocks the Discord gateway heartbeat.
* **Admission.** :meth:`GPUExecutor.admit` enforces ``MAX_JOBS_PER_USER`` (queued + running) and
  ``MAX_QUEUE`` (all unfinished jobs) with :class:`TooManyJobs` / :class:`QueueFull`.
* **Order.** Work of a job that has already started (its review, its correction round) runs
  before work of jobs that have not, so started jobs finish first; among jobs that have not
  started, users are served round-robin, so one user's burst cannot starve anybody else.
* **Dynamic batching.** Render requests waiting at the same time that share mode, size, steps,
  guidance (and strength / prompt-window count) go through one pipeline call, up to
  ``MAX_BATCH``, after a gather window of ``BATCH_WINDOW_MS``. Each keeps its own seed and its
  own progress; the images equal rendering them one at a time.
* **Progress and cancellation.** Per-step progress reaches the job's listener on the event loop
  (``call_soon_threadsafe``). Cancelling removes queued work at once and interrupts a running
  render at the next step (a batch keeps going for the jobs that still want it).
* **Failures.** An exception fails only the work item that raised it. CUDA out-of-memory empties
  the cache and retries a batch split in halves; a single request that still does not fit fails
  with :class:`OutOfMemory`. If the thread dies anyway it is restarted and the work it held fails
  with :class:`ExecutorFailure`. Every await is bounded by ``STAGE_TIMEOUT_S``.
* **Shutdown.** Stop admitting, let the running batch finish (bounded), fail what is still queued
  with :class:`ShuttingDown`, and return the ids of the unfinished jobs so the store keeps them.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import (
    ExecutorFailure,
    JobCancelled,
    OutOfMemory,
    QueueFull,
    ShuttingDown,
    StageTimeout,
    TooManyJobs,
)
from .synthesis import RenderedImage, RenderInterrupted, RenderRequest

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from .critic import QAReport
    from .director import Scene
    from .settings import Settings
    from .transcribe import Transcript

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# Models: owned by the GPU thread
# ------------------------------------------------------------------------------------------------
class Engine:
    """The models. Constructed anywhere; loaded and used only on the GPU thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._transcriber = None
        self._synthesizer = None
        self._clip_critic = None

    @property
    def transcriber(self):
        if self._transcriber is None:
            from .transcribe import Transcriber

            self._transcriber = Transcriber(self.settings.WHISPER_MODEL, self.settings.DEVICE)
        return self._transcriber

    @property
    def synthesizer(self):
        if self._synthesizer is None:
            from .synthesis import Synthesizer

            self._synthesizer = Synthesizer(
                self.settings.DIFFUSION_MODEL,
                self.settings.DEVICE,
                safety_checker=self.settings.SAFETY_CHECKER,
            )
        return self._synthesizer

    @property
    def clip_critic(self):
        if self._clip_critic is None:
            from .critic import ClipCritic

            self._clip_critic = ClipCritic(self.settings.CLIP_MODEL, self.settings.DEVICE)
        return self._clip_critic

    def warm_up(self, *, whisper: bool = True, clip: bool = True) -> None:
        """Load the models a job will need (runs on the GPU thread)."""
        self.synthesizer.load()
        if clip:
            self.clip_critic.load()
        if whisper:
            self.transcriber.load()


# ------------------------------------------------------------------------------------------------
# Jobs, progress, metrics
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProgressEvent:
    job_id: str
    stage: str  # "queued" | "transcribe" | "render" | "review" | ...
    step: int = 0
    total: int = 0
    position: int | None = None  # place in the queue while waiting (1 = next)
    eta_s: float | None = None


class Job:
    """A user's job as the executor sees it: admission slot, priority, progress, cancellation."""

    def __init__(self, executor: GPUExecutor, job_id: str, user_id: str, seq: int) -> None:
        self.executor = executor
        self.id = job_id
        self.user_id = user_id
        self.seq = seq  # admission order
        self.admitted_at = time.monotonic()
        self.started = False  # some of its work has begun on the GPU thread
        self.cancelled = False
        self.finished = False
        self.listener: Callable[[ProgressEvent], None] | None = None
        self.stage = "queued"

    # --- for the caller ---
    def position(self) -> int | None:
        """1-based place among unfinished jobs in service order; None once started."""
        return self.executor.position_of(self)

    def eta_s(self) -> float | None:
        return self.executor.eta_of(self)

    def cancel(self) -> None:
        """Drop queued work now; a running render stops at its next step."""
        self.executor._cancel(self)

    def finish(self, outcome: str = "done") -> None:
        """Give the admission slot back; ``outcome`` is "done", "failed" or "cancelled"."""
        self.executor._finish(self, outcome)

    def __repr__(self) -> str:
        return f"<Job {self.id} user={self.user_id} started={self.started} cancelled={self.cancelled}>"


@dataclass
class MetricsSnapshot:
    queue_depth: int  # unfinished jobs that have not started
    running_jobs: int  # unfinished jobs that have started
    pending_items: int  # work items waiting for the GPU thread
    jobs_done: int
    jobs_failed: int
    jobs_cancelled: int
    wait_p50_s: float | None  # enqueue → start of work items
    wait_p95_s: float | None
    stage_mean_s: dict[str, float]  # per stage kind: mean wall time of recent calls
    batch_sizes: dict[int, int]  # batch size → number of pipeline calls
    busy_fraction: float  # time the GPU thread spent working / time since start
    thread_restarts: int
    uptime_s: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(eq=False)
class _Item:
    job: Job | None
    kind: str
    fn: Callable[..., Any]  # called on the GPU thread
    args: tuple
    future: asyncio.Future
    seq: int
    key: tuple | None = None  # batch key for renders
    request: RenderRequest | None = None
    enqueued_at: float = field(default_factory=time.monotonic)


# ------------------------------------------------------------------------------------------------
# The executor
# ------------------------------------------------------------------------------------------------
class GPUExecutor:
    STAGE_TIMEOUT_S = 600.0

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        stage_timeout_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.stage_timeout_s = stage_timeout_s or self.STAGE_TIMEOUT_S
        self.max_batch = settings.MAX_BATCH if settings.DYNAMIC_BATCHING else 1
        self.batch_window_s = settings.BATCH_WINDOW_MS / 1000.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cond = threading.Condition()
        self._pending: list[_Item] = []
        self._running: list[_Item] = []
        self._jobs: dict[str, Job] = {}
        self._user_order: list[str] = []  # round-robin ring of users with unfinished jobs
        self._last_user: str | None = None
        self._seq = itertools.count()
        self._job_seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._accepting = True
        self._generation = 0
        # metrics
        self._started_at = time.monotonic()
        self._busy_s = 0.0
        self._waits: collections.deque[float] = collections.deque(maxlen=500)
        self._stage_times: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=50)
        )
        self._job_times: collections.deque[float] = collections.deque(maxlen=50)
        self._batch_sizes: collections.Counter[int] = collections.Counter()
        self._done = self._failed = self._cancelled = 0
        self._restarts = 0

    # --- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._start_thread()

    def _start_thread(self) -> None:
        self._generation += 1
        self._thread = threading.Thread(
            target=self._thread_main, args=(self._generation,), name=f"gpu-{self._generation}", daemon=True
        )
        self._thread.start()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    async def warm_up(self, *, whisper: bool = True, clip: bool = True) -> None:
        """Load models on the GPU thread (start it in the background at start-up)."""
        await self._submit(None, "warmup", self.engine.warm_up, (), kwargs={"whisper": whisper, "clip": clip})

    async def shutdown(self, timeout_s: float = 30.0) -> list[str]:
        """Stop admitting, let running work finish (bounded), and return the ids of jobs that were
        admitted but not finished (their queued work fails with :class:`ShuttingDown`)."""
        self._accepting = False
        with self._cond:
            dropped = list(self._pending)
            self._pending.clear()
            self._stopping = True
            self._cond.notify_all()
        for item in dropped:
            self._fail_item(item, ShuttingDown())
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, timeout_s)
            if thread.is_alive():
                # Out of patience: interrupt running renders at their next step.
                log.warning("GPU thread still busy after %.0fs at shutdown; interrupting", timeout_s)
                for job in list(self._jobs.values()):
                    job.cancelled = True
                await asyncio.to_thread(thread.join, 10)
                if thread.is_alive():
                    log.error("GPU thread did not stop")
        return [job.id for job in self._jobs.values() if not job.finished]

    # --- admission ---------------------------------------------------------------------------
    def stop_admitting(self) -> None:
        """New jobs are refused with :class:`ShuttingDown`; queued and running work goes on."""
        self._accepting = False

    def admit(self, user_id: str | int, job_id: str | None = None, *, force: bool = False) -> Job:
        """Take a slot for a user's job or raise a user-facing error.

        ``force`` skips the caps: for jobs already accepted before a restart."""
        user = str(user_id)
        if not self._accepting:
            raise ShuttingDown()
        active = [j for j in self._jobs.values() if not j.finished]
        mine = sum(1 for j in active if j.user_id == user)
        if force:
            pass
        elif mine >= self.settings.MAX_JOBS_PER_USER:
            raise TooManyJobs(
                f"You already have {mine} picture{'s' if mine != 1 else ''} in progress "
                f"(the limit is {self.settings.MAX_JOBS_PER_USER}). Wait for one to finish, "
                "then try again."
            )
        elif len(active) >= self.settings.MAX_QUEUE:
            raise QueueFull(
                f"The queue is full ({self.settings.MAX_QUEUE} pictures waiting) — please try again in a few minutes."
            )
        if job_id is not None and job_id in self._jobs:
            raise ValueError(f"job {job_id} is already admitted")
        job = Job(self, job_id or uuid.uuid4().hex[:12], user, next(self._job_seq))
        with self._cond:
            self._jobs[job.id] = job
            if user not in self._user_order:
                self._user_order.append(user)
        return job

    def get_job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs_of(self, user_id: str | int) -> list[Job]:
        return [j for j in self._jobs.values() if j.user_id == str(user_id) and not j.finished]

    def _finish(self, job: Job, outcome: str = "done") -> None:
        if job.finished:
            return
        job.finished = True
        self._job_times.append(time.monotonic() - job.admitted_at)
        with self._cond:
            self._jobs.pop(job.id, None)
            if not any(j.user_id == job.user_id for j in self._jobs.values()):
                if job.user_id in self._user_order:
                    self._user_order.remove(job.user_id)
        if job.cancelled or outcome == "cancelled":
            self._cancelled += 1
        elif outcome == "done":
            self._done += 1
        else:
            self._failed += 1
        self._notify_positions()

    # --- submission --------------------------------------------------------------------------
    async def transcribe(self, job: Job, audio: np.ndarray, task: str = "auto") -> Transcript:
        return await self._submit(job, "transcribe", lambda: self.engine.transcriber.transcribe(audio, task=task), ())

    async def render(self, job: Job, request: RenderRequest) -> RenderedImage:
        # Validating an init image decodes it: tens of ms for a large one, so not on the loop.
        request = await asyncio.to_thread(request.validated) if request.init_image else request.validated()
        return await self._submit(job, "render", None, (), request=request)

    async def review(self, job: Job, image: Image.Image, scene: Scene, prompt: str) -> QAReport:
        return await self._submit(job, "review", self.engine.clip_critic.review, (image, scene, prompt))

    async def call(self, job: Job | None, kind: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run any callable on the GPU thread as a work item of ``job`` (tools, tests, CLI)."""
        return await self._submit(job, kind, fn, args)

    def count_tokens(self, text: str) -> int | None:
        """CLIP tokens in ``text`` when the diffusion tokenizer is loaded (pure Python, no torch)."""
        synth = self.engine.synthesizer
        return synth.count_tokens(text) if synth.loaded else None

    async def _submit(
        self,
        job: Job | None,
        kind: str,
        fn: Callable[..., Any] | None,
        args: tuple,
        *,
        request: RenderRequest | None = None,
        kwargs: dict | None = None,
    ) -> Any:
        if self._loop is None:
            raise RuntimeError("GPUExecutor.start() was not awaited")
        if job is not None and job.cancelled:
            raise JobCancelled()
        if self._stopping:
            raise ShuttingDown()
        if kwargs:
            fn = _bind(fn, kwargs)
        future = self._loop.create_future()
        item = _Item(job=job, kind=kind, fn=fn, args=args, future=future, seq=next(self._seq), request=request)
        with self._cond:
            self._pending.append(item)
            self._cond.notify_all()
        self._notify_positions()
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.stage_timeout_s)
        except TimeoutError:
            if job is not None:
                job.cancel()
            raise StageTimeout() from None
        except asyncio.CancelledError:
            # The awaiting task was cancelled: drop the work if it has not started.
            with self._cond:
                if item in self._pending:
                    self._pending.remove(item)
            raise

    # --- cancellation ------------------------------------------------------------------------
    def _cancel(self, job: Job) -> None:
        job.cancelled = True
        with self._cond:
            dropped = [it for it in self._pending if it.job is job]
            for it in dropped:
                self._pending.remove(it)
        for it in dropped:
            self._fail_item(it, JobCancelled())
        self._notify_positions()

    # --- scheduling (GPU thread, under self._cond) -------------------------------------------
    def _priority_order(self) -> list[_Item]:
        """Pending items in the order they would be served (without batching)."""
        started = sorted((it for it in self._pending if it.job is None or it.job.started), key=lambda it: it.seq)
        fresh = [it for it in self._pending if not (it.job is None or it.job.started)]
        fresh.sort(key=lambda it: (it.job.seq, it.seq))
        return started + self._round_robin(fresh, user_of=lambda it: it.job.user_id)

    def _round_robin(self, entries: list, *, user_of: Callable[[Any], str]) -> list:
        """``entries`` (already in each user's own order) interleaved one per user per round,
        starting with the user after the one served last."""
        by_user: dict[str, list] = collections.defaultdict(list)
        for entry in entries:
            by_user[user_of(entry)].append(entry)
        queues = [collections.deque(by_user[u]) for u in self._rotated_users(by_user.keys())]
        ordered: list = []
        while any(queues):
            for q in queues:
                if q:
                    ordered.append(q.popleft())
        return ordered

    def _rotated_users(self, users) -> list[str]:
        ring = [u for u in self._user_order if u in users]
        ring += [u for u in users if u not in ring]
        if self._last_user in ring:
            i = ring.index(self._last_user)
            ring = ring[i + 1 :] + ring[: i + 1]
        return ring

    def _take_work(self) -> list[_Item]:
        """Pick the next item (and its batch mates). Called with the condition held."""
        order = self._priority_order()
        head = order[0]
        if head.request is None or self.max_batch <= 1:
            self._pending.remove(head)
            self._rotate_past([head])
            return [head]
        synth = self.engine.synthesizer
        head.key = head.key or synth.batch_key(head.request)
        if self.batch_window_s > 0 and len(self._pending) < self.max_batch:
            # Gather window: give requests arriving in the next few ms a chance to join.
            self._cond.wait(self.batch_window_s)
            order = [it for it in self._priority_order() if it is not head]
            order.insert(0, head)
        batch = [head]
        for it in order[1:]:
            if len(batch) >= self.max_batch:
                break
            if it.request is not None:
                it.key = it.key or synth.batch_key(it.request)
                if it.key == head.key:
                    batch.append(it)
        for it in batch:
            self._pending.remove(it)
        self._rotate_past(batch)
        return batch

    def _rotate_past(self, batch: list[_Item]) -> None:
        """Round-robin: the next fresh job comes from the user after the last one served."""
        for it in batch:
            if it.job is not None and not it.job.started:
                self._last_user = it.job.user_id

    # --- the GPU thread ----------------------------------------------------------------------
    def _thread_main(self, generation: int) -> None:
        # Process signals (SIGTERM, Ctrl-C) belong to the event-loop thread. Block them here, so
        # they are never delivered into torch's worker threads (which inherit this mask) in the
        # middle of a kernel.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        _leave_a_core_for_the_event_loop(self.settings.DEVICE)
        died: BaseException | None = None
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._stopping:
                        self._cond.wait()
                    if self._stopping and not self._pending:
                        return
                    needs_model = any(it.request is not None for it in self._pending)
                if needs_model and self.max_batch > 1 and not self.engine.synthesizer.loaded:
                    # Batch keys need the tokenizer: load outside the lock, never blocking submitters.
                    if not self._load_synthesizer():
                        continue
                with self._cond:
                    if not self._pending:
                        continue
                    batch = self._take_work()
                    self._running = batch
                    for it in batch:
                        if it.job is not None:
                            it.job.started = True
                self._notify_positions_threadsafe()
                began = time.monotonic()
                for it in batch:
                    self._waits.append(began - it.enqueued_at)
                self._execute(batch)
                elapsed = time.monotonic() - began
                self._busy_s += elapsed
                self._stage_times[batch[0].kind].append(elapsed)
                with self._cond:
                    self._running = []
        except BaseException as exc:
            died = exc
            raise
        finally:
            if died is not None and self._loop is not None and not self._loop.is_closed():
                log.error("GPU thread %s died: %r — restarting it", generation, died)
                held = list(self._running)
                self._running = []
                self._loop.call_soon_threadsafe(self._on_thread_death, held)

    def _load_synthesizer(self) -> bool:
        """Load the diffusion model on this thread; on failure fail every waiting render."""
        started = time.monotonic()
        try:
            self.engine.synthesizer.load()
            return True
        except Exception as exc:
            with self._cond:
                renders = [it for it in self._pending if it.request is not None]
                for it in renders:
                    self._pending.remove(it)
            for it in renders:
                self._fail_item(it, exc)
            return False
        finally:
            self._busy_s += time.monotonic() - started

    def _on_thread_death(self, held: list[_Item]) -> None:
        for it in held:
            self._fail_item(it, ExecutorFailure())
        self._restarts += 1
        if not self._stopping:
            self._start_thread()

    def _execute(self, batch: list[_Item]) -> None:
        if batch[0].request is not None:
            self._execute_render(batch)
            return
        item = batch[0]
        if item.job is not None:
            self._emit(item.job, ProgressEvent(item.job.id, item.kind))
        try:
            result = item.fn(*item.args)
        except Exception as exc:
            log.debug("work item %s of %s failed", item.kind, item.job, exc_info=True)
            self._fail_item(item, _translate_oom(exc))
            _free_cuda_cache_if_oom(exc)
            return
        if item.job is not None and item.job.cancelled:
            self._fail_item(item, JobCancelled())
        else:
            self._resolve_item(item, result)

    def _execute_render(self, batch: list[_Item]) -> None:
        synth = self.engine.synthesizer
        self._batch_sizes[len(batch)] += 1
        for it in batch:
            if it.job is not None:
                self._emit(it.job, ProgressEvent(it.job.id, "render", 0, it.request.steps))

        def progress(step: int, total: int) -> None:
            for it in batch:
                if it.job is not None and not it.job.cancelled:
                    self._emit(it.job, ProgressEvent(it.job.id, "render", step, total))

        def should_stop() -> bool:
            return all(it.job is not None and it.job.cancelled for it in batch)

        try:
            images = synth.render([it.request for it in batch], progress=progress, should_stop=should_stop)
        except RenderInterrupted:
            for it in batch:
                self._fail_item(it, JobCancelled())
            return
        except Exception as exc:
            if _is_oom(exc):
                _free_cuda_cache_if_oom(exc)
                if len(batch) > 1:
                    half = len(batch) // 2
                    log.warning(
                        "CUDA out of memory on a batch of %d: retrying as %d + %d", len(batch), half, len(batch) - half
                    )
                    self._execute_render(batch[:half])
                    self._execute_render(batch[half:])
                    return
                self._fail_item(batch[0], OutOfMemory())
                return
            log.debug("render batch of %d failed", len(batch), exc_info=True)
            for it in batch:
                self._fail_item(it, exc)
            return
        for it, image in zip(batch, images):
            if it.job is not None and it.job.cancelled:
                self._fail_item(it, JobCancelled())
            else:
                self._resolve_item(it, image)

    # --- loop-side helpers (thread-safe) -----------------------------------------------------
    def _resolve_item(self, item: _Item, value: Any) -> None:
        self._loop.call_soon_threadsafe(_set_result, item.future, value)

    def _fail_item(self, item: _Item, exc: BaseException) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _in_loop(loop):
            _set_exception(item.future, exc)
        else:
            loop.call_soon_threadsafe(_set_exception, item.future, exc)

    def _emit(self, job: Job, event: ProgressEvent) -> None:
        job.stage = event.stage
        listener = job.listener
        if listener is None or self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(_call_listener, listener, event)

    def _notify_positions_threadsafe(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._notify_positions)

    def _notify_positions(self) -> None:
        """Tell waiting jobs their new place in the queue (the order is computed once)."""
        for pos, job in enumerate(self._service_order(), start=1):
            if job.listener is not None:
                self._emit(job, ProgressEvent(job.id, "queued", position=pos, eta_s=self._eta_at(pos)))

    # --- queue positions and ETAs ------------------------------------------------------------
    def _service_order(self) -> list[Job]:
        """Unfinished jobs that have not started, in the order they will be served."""
        waiting = sorted((j for j in self._jobs.values() if not j.finished and not j.started), key=lambda j: j.seq)
        return self._round_robin(waiting, user_of=lambda j: j.user_id)

    def position_of(self, job: Job) -> int | None:
        if job.started or job.finished:
            return None
        order = self._service_order()
        return order.index(job) + 1 if job in order else None

    def mean_job_seconds(self) -> float:
        if self._job_times:
            return statistics.fmean(self._job_times)
        per_stage = {k: statistics.fmean(v) for k, v in self._stage_times.items() if v}
        return per_stage.get("render", 5.0) + per_stage.get("review", 0.5)

    def eta_of(self, job: Job) -> float | None:
        pos = self.position_of(job)
        return None if pos is None else self._eta_at(pos)

    def _eta_at(self, pos: int) -> float:
        running = sum(1 for j in self._jobs.values() if j.started and not j.finished)
        # Jobs ahead (and the ones running) share the GPU; batches serve several at once.
        mean_batch = self._mean_batch_size()
        return (pos - 1 + min(running, 1)) * self.mean_job_seconds() / mean_batch + self.mean_job_seconds()

    def _mean_batch_size(self) -> float:
        total = sum(self._batch_sizes.values())
        if not total:
            return 1.0
        return sum(size * n for size, n in self._batch_sizes.items()) / total

    # --- metrics -----------------------------------------------------------------------------
    def metrics(self) -> MetricsSnapshot:
        waits = sorted(self._waits)

        def pct(p: float) -> float | None:
            if not waits:
                return None
            return waits[min(len(waits) - 1, int(p * len(waits)))]

        uptime = time.monotonic() - self._started_at
        active = [j for j in self._jobs.values() if not j.finished]
        return MetricsSnapshot(
            queue_depth=sum(1 for j in active if not j.started),
            running_jobs=sum(1 for j in active if j.started),
            pending_items=len(self._pending),
            jobs_done=self._done,
            jobs_failed=self._failed,
            jobs_cancelled=self._cancelled,
            wait_p50_s=pct(0.5),
            wait_p95_s=pct(0.95),
            stage_mean_s={k: statistics.fmean(v) for k, v in self._stage_times.items() if v},
            batch_sizes=dict(sorted(self._batch_sizes.items())),
            busy_fraction=min(1.0, self._busy_s / uptime) if uptime > 0 else 0.0,
            thread_restarts=self._restarts,
            uptime_s=uptime,
        )


# ------------------------------------------------------------------------------------------------
def _bind(fn: Callable[..., Any], kwargs: dict) -> Callable[..., Any]:
    def bound(*args: Any) -> Any:
        return fn(*args, **kwargs)

    return bound


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _call_listener(listener: Callable[[ProgressEvent], None], event: ProgressEvent) -> None:
    try:
        listener(event)
    except Exception:
        log.exception("progress listener failed")


def _leave_a_core_for_the_event_loop(device_setting: str) -> None:
    """On the CPU, torch's OpenMP team would take every core; its threads spin at barriers, and
    when the machine is oversubscribed (the event loop, other processes) every barrier waits for
    a descheduled thread — renders slow down by orders of magnitude. Keep one core free."""
    try:
        import torch

        if device_setting == "cpu" or not torch.cuda.is_available():
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            threads = max(1, cores - 1)
            if torch.get_num_threads() > threads:
                torch.set_num_threads(threads)
                log.info("CPU inference: %d torch thread(s) on %d core(s)", threads, cores)
    except Exception:  # pragma: no cover - never fatal
        log.debug("could not set torch threads", exc_info=True)


def _is_oom(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except Exception:  # pragma: no cover
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _translate_oom(exc: Exception) -> Exception:
    return OutOfMemory() if _is_oom(exc) else exc


def _free_cuda_cache_if_oom(exc: BaseException) -> None:
    if not _is_oom(exc):
        return
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass
