"""The local executor: an asyncio-facing queue feeding ONE thread that owns every model and every
torch call. What runs next is decided by :mod:`.policy`; this module is the thread and futures.

Promises (README "The queue" repeats them for users and operators):

* **One owner.** Whisper, the diffusion pipeline and CLIP are loaded lazily, once, on the GPU
  thread, and every stage call runs there. The event loop only submits work and awaits futures,
  so a busy GPU never blocks the Discord gateway heartbeat.
* **Admission, order, batching** as :mod:`.policy` says: caps per user and in all, started jobs
  first, per-user round robin, compatible renders in one pipeline call up to ``MAX_BATCH`` after
  a gather window of ``BATCH_WINDOW_MS``. Each batched request keeps its own seed and its own
  progress; the images equal rendering them one at a time.
* **Music** (MusicGen) is one work item per piece, never batched, with per-step progress and
  cancellation like a render. A piece can take a minute, so between two of its decoder steps the
  thread runs the next batch of other waiting work (pictures, reviews): a piece never holds
  pictures back, and its state stays on the device meanwhile.
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
import functools
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ExecutorFailure, JobCancelled, OutOfMemory, ShuttingDown, StageTimeout
from ..synthesis import RenderedImage, RenderInterrupted, RenderRequest
from . import policy
from .book import JobBook
from .device import free_cuda_cache_if_oom, is_out_of_memory, leave_a_core_for_the_event_loop, user_facing
from .engine import Engine
from .jobs import BatchKey, Job, ProgressEvent, WorkItem, WorkKind
from .metrics import MetricsRecorder, MetricsSnapshot

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from PIL import Image

    from ..critic import QAReport
    from ..families import FamilyProfile
    from ..music import Music, MusicRequest
    from ..scene import Scene
    from ..settings import Settings
    from ..transcribe import Task, Transcript
    from ..upscaler import UpscaleRequest

log = logging.getLogger(__name__)


class GPUExecutor:
    STAGE_TIMEOUT_S = 600.0

    def __init__(
        self, settings: Settings, *, engine: Engine | None = None, stage_timeout_s: float | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.stage_timeout_s = stage_timeout_s or self.STAGE_TIMEOUT_S
        self.max_batch = settings.MAX_BATCH if settings.DYNAMIC_BATCHING else 1
        self.batch_window_s = settings.BATCH_WINDOW_MS / 1000.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cond = threading.Condition()  # guards _pending, _running and the book's jobs and ring
        self._pending: list[WorkItem] = []
        self._running: list[WorkItem] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._accepting = True
        self._generation = 0
        self._metrics = MetricsRecorder()
        self._book = JobBook(self, settings, self._metrics, lock=self._cond)
        self._interleaving = False  # the GPU thread is running other work between two music steps
        self._interleaved_s = 0.0  # seconds of such work during the current item (not its own time)
        self._lora_fit_cache: dict[tuple[str, float], bool] = {}
        # Remote render backends (pipeline.backends): renders for their models never reach the
        # GPU thread. Built now, so a missing key or a broken workflow file fails at start-up.
        from ..backends.router import RenderRouter  # here: the router needs this package's policy

        self.router = RenderRouter(settings)

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
        diffusion = not self.router.is_remote(None)  # a remote default model needs nothing loaded here
        await self._submit(
            None, "warmup", functools.partial(self.engine.warm_up, whisper=whisper, clip=clip, diffusion=diffusion)
        )

    def stop_admitting(self) -> None:
        """New jobs are refused with :class:`ShuttingDown`; queued and running work goes on."""
        self._accepting = False

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
                for job in self._book:
                    job.cancelled = True
                await asyncio.to_thread(thread.join, 10)
                if thread.is_alive():
                    log.error("GPU thread did not stop")
        await self.router.close()
        return self._book.unfinished_ids()

    # --- jobs --------------------------------------------------------------------------------
    def admit(self, user_id: str | int, job_id: str | None = None, *, force: bool = False) -> Job:
        """Take a slot for a user's job or raise a user-facing error.

        ``force`` skips the caps: for jobs already accepted before a restart."""
        if not self._accepting:
            raise ShuttingDown()
        return self._book.admit(user_id, job_id, force=force)

    def get_job(self, job_id: str) -> Job | None:
        return self._book.get(job_id)

    def jobs_of(self, user_id: str | int) -> list[Job]:
        return self._book.of_user(user_id)

    def finish(self, job: Job, outcome: str = "done") -> None:
        if self._book.close(job, outcome):
            self._notify_positions()

    def cancel(self, job: Job) -> None:
        job.cancelled = True
        with self._cond:
            dropped = [it for it in self._pending if it.job is job]
            for it in dropped:
                self._pending.remove(it)
        for it in dropped:
            self._fail_item(it, JobCancelled())
        self._notify_positions()

    def position_of(self, job: Job) -> int | None:
        return self._book.position_of(job)

    def eta_of(self, job: Job) -> float | None:
        return self._book.eta_of(job)

    @property
    def recorder(self) -> MetricsRecorder:
        """The live measurements (for ``/metrics``)."""
        return self._metrics

    def metrics(self) -> MetricsSnapshot:
        return self._book.snapshot(pending_items=len(self._pending))

    # --- submission --------------------------------------------------------------------------
    async def transcribe(self, job: Job, audio: NDArray[np.float32], task: Task = "auto") -> Transcript:
        transcript: Transcript = await self._submit(
            job, "transcribe", lambda: self.engine.transcriber.transcribe(audio, task=task)
        )
        return transcript

    async def render(self, job: Job, request: RenderRequest) -> RenderedImage:
        # Validating an init image decodes it: tens of ms for a large one, so not on the loop.
        request = await asyncio.to_thread(request.validated) if request.init_image else request.validated()
        if self.router.is_remote(request.model):
            return await self._render_remote(job, request)
        image: RenderedImage = await self._submit(job, "render", None, request=request)
        return image

    async def _render_remote(self, job: Job, request: RenderRequest) -> RenderedImage:
        """A render on a remote backend: on the event loop (pipeline.backends.router), never on
        the GPU thread; bounded by the stage timeout like any work item."""

        async def local(moved: RenderRequest) -> RenderedImage:  # RENDER_FALLBACK=diffusers
            image: RenderedImage = await self._submit(job, "render", None, request=moved)
            return image

        try:
            return await self.router.render_as_stage(
                job, request, emit=self._emit, local=local, timeout_s=self.stage_timeout_s, metrics=self._metrics
            )
        finally:
            self._notify_positions()

    async def review(self, job: Job, image: Image.Image, scene: Scene, prompt: str) -> QAReport:
        report: QAReport = await self._submit(
            job, "review", functools.partial(self.engine.clip_critic.review, image, scene, prompt)
        )
        return report

    async def review_many(self, job: Job, images: Sequence[Image.Image], scene: Scene, prompt: str) -> list[QAReport]:
        reports: list[QAReport] = await self._submit(
            job, "review", functools.partial(self.engine.clip_critic.review_many, list(images), scene, prompt)
        )
        return reports

    async def compose(self, job: Job, request: MusicRequest) -> Music:
        """Compose on the GPU thread as one work item of kind "music". It is scheduled like any
        other item (started-first, per-user round robin; caps apply at admission) and never
        batched; progress is reported per decoder step, and cancelling stops it at the next step."""
        request = request.validated()
        music: Music = await self._submit(job, "music", functools.partial(self._compose, job, request))
        return music

    def _compose(self, job: Job, request: MusicRequest) -> Music:
        """Runs on the GPU thread. Between two decoder steps, waiting work of other jobs runs
        (:meth:`_run_waiting_work`), so a 30 s piece never holds pictures back."""
        from ..music import MusicInterrupted

        def progress(step: int, total: int) -> None:
            if not job.cancelled:
                self._emit(job, ProgressEvent(job.id, "music", step, total))

        try:
            return self.engine.composer.compose(
                request,
                progress=progress,
                should_stop=lambda: job.cancelled,
                between_steps=lambda: self._run_waiting_work(job),
            )
        except MusicInterrupted:
            raise JobCancelled() from None

    def _run_waiting_work(self, composing: Job) -> float:
        """On the GPU thread, between two decoder steps of ``composing``'s piece: run the next
        batch of waiting work that is not music (pictures, reviews, transcriptions), chosen by the
        same policy as always; returns the seconds it took. One batch per step, so the piece still
        advances however many pictures arrive; MusicGen's state (its KV cache) stays where it is.
        Other pieces wait for this one (one piece at a time, never nested)."""
        if self._interleaving or not self._pending or self._stopping:
            return 0.0
        began = time.monotonic()
        self._interleaving = True
        try:
            with self._cond:
                others = [it for it in self._pending if it.kind != "music" and it.job is not composing]
                to_load = next((self._model_of(it) for it in others if self._needs_load(it)), None)
            if to_load is not None and not self.engine.models.resident:
                self._load_model(to_load)  # the first diffusion model: loading it evicts nothing
            with self._cond:
                # Only work whose model is loaded: switching models mid-piece could evict one that
                # other waiting work needs; renders for another model wait for the piece to end.
                waiting = [
                    it
                    for it in self._pending
                    if it.kind != "music" and it.job is not composing and not self._needs_load(it)
                ]
                if not waiting:
                    return time.monotonic() - began
                order = policy.priority_order(waiting, self._book.ring)
                batch = policy.pick_batch(order, max_batch=self.max_batch, key_of=self._batch_key)
                for it in batch:
                    self._pending.remove(it)
                self._book.ring.served(batch)
                self._running = [*self._running, *batch]
                for it in batch:
                    if it.job is not None:
                        it.job.started = True
            self._notify_positions_threadsafe()
            started = time.monotonic()
            for it in batch:
                self._metrics.observe_wait(started - it.enqueued_at)
            self._execute(batch)
            self._metrics.observe_stage(batch[0].kind, time.monotonic() - started)
            with self._cond:
                self._running = [it for it in self._running if it not in batch]
            return time.monotonic() - began
        finally:
            self._interleaving = False
            self._interleaved_s += time.monotonic() - began

    async def upscale(self, job: Job, request: UpscaleRequest) -> tuple[bytes, int, int]:
        """UPSCALER_MODEL on the GPU thread as a "render" work item: progress per tile, Cancel
        between tiles."""

        def run() -> tuple[bytes, int, int]:
            def progress(done: int, total: int) -> None:
                if not job.cancelled:
                    self._emit(job, ProgressEvent(job.id, "render", done, total))

            return self.engine.upscaler.run(request, should_stop=lambda: job.cancelled, progress=progress)

        upscaled: tuple[bytes, int, int] = await self._submit(job, "render", run)
        return upscaled

    async def call(self, job: Job | None, kind: WorkKind, fn: Callable[..., Any], *args: Any) -> Any:
        """Run any callable on the GPU thread as a work item of ``job`` (tools, tests, CLI)."""
        return await self._submit(job, kind, functools.partial(fn, *args))

    def count_tokens(self, text: str) -> int | None:
        """CLIP tokens in ``text`` when the diffusion tokenizer is loaded (pure Python, no torch)."""
        synth = self.engine.synthesizer
        return synth.count_tokens(text) if synth.loaded else None

    def lora_choices(self, model: str | None) -> list[str]:
        """LORA_DIR's LoRAs for ``model``: those that fit it once it is loaded (a header check),
        all of them before."""
        from ..lora import compatible_names, lora_names

        lora_dir = self.settings.LORA_DIR
        try:
            synth = self.engine.models.get(model)
        except Exception:
            return lora_names(lora_dir)
        if not synth.loaded:
            return lora_names(lora_dir)
        return compatible_names(lora_dir, synth.load().text2img, self._lora_fit_cache)

    def family(self, model: str | None) -> FamilyProfile | None:
        if self.router.is_remote(model):
            return self.router.route(model).profile
        try:
            synth = self.engine.models.get(model)
        except Exception:
            return None
        return synth.family if synth.loaded else None

    async def _submit(
        self, job: Job | None, kind: WorkKind, fn: Callable[[], Any] | None, *, request: RenderRequest | None = None
    ) -> Any:
        if self._loop is None:
            raise RuntimeError("GPUExecutor.start() was not awaited")
        if job is not None and job.cancelled:
            raise JobCancelled()
        if self._stopping:
            raise ShuttingDown()
        future = self._loop.create_future()
        item = WorkItem(job=job, kind=kind, future=future, seq=next(self._seq), fn=fn, request=request)
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

    # --- the GPU thread ----------------------------------------------------------------------
    def _thread_main(self, generation: int) -> None:
        # Process signals (SIGTERM, Ctrl-C) belong to the event-loop thread. Block them here, so
        # they are never delivered into torch's worker threads (which inherit this mask) in the
        # middle of a kernel.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        leave_a_core_for_the_event_loop(self.settings.DEVICE)
        died: BaseException | None = None
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._stopping:
                        self._cond.wait()
                    if self._stopping and not self._pending:
                        return
                    to_load = self._model_to_load()
                if to_load is not None:
                    # Batch keys need the model's tokenizer: load outside the lock, never blocking submitters.
                    self._load_model(to_load)
                    continue
                with self._cond:
                    if not self._pending:
                        continue
                    batch = self._take_work()
                    if not batch:
                        continue
                    self._running = batch
                    for it in batch:
                        if it.job is not None:
                            it.job.started = True
                self._notify_positions_threadsafe()
                began = time.monotonic()
                for it in batch:
                    self._metrics.observe_wait(began - it.enqueued_at)
                self._interleaved_s = 0.0
                self._execute(batch)
                elapsed = time.monotonic() - began
                self._metrics.busy_s += elapsed
                # Work run between a piece's steps was timed as its own stage already.
                self._metrics.observe_stage(batch[0].kind, elapsed - self._interleaved_s)
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

    MODEL_WINDOW = 8  # how far down the queue work for a loaded model may be looked for …
    MODEL_MAX_BYPASS = 4  # … and how often one item may be passed over for it

    def _needs_load(self, item: WorkItem) -> bool:
        return item.request is not None and not self.engine.models.is_loaded(item.request.model)

    def _ordered(self) -> list[WorkItem]:
        """Pending work in service order, work for loaded models first (bounded). Condition held."""
        order = policy.priority_order(self._pending, self._book.ring)
        return policy.prefer_loaded(
            order,
            needs_load=self._needs_load,
            bypassed=lambda it: it.bypassed,
            window=self.MODEL_WINDOW,
            max_bypass=self.MODEL_MAX_BYPASS,
        )

    def _model_of(self, item: WorkItem) -> str | None:
        try:
            return self.engine.models.canonical(item.request.model if item.request is not None else None)
        except Exception:
            return None

    def _model_to_load(self) -> str | None:
        """The model the next render needs, when it is not loaded (condition held)."""
        if not self._pending:
            return None
        head = self._ordered()[0]
        if head.request is not None and self._needs_load(head):
            return self._model_of(head)
        return None

    def _load_model(self, name: str) -> bool:
        """Load a diffusion model on this thread (unloading the least recently used), telling the
        jobs that wait for it; on failure fail every render waiting for it."""
        models = self.engine.models
        with self._cond:
            waiting = [it for it in self._pending if it.request is not None and self._model_of(it) == name]
        for it in waiting:
            if it.job is not None:
                self._emit(it.job, ProgressEvent(it.job.id, "load", detail=name))
        started = time.monotonic()
        try:
            models.use(name)
            return True
        except Exception as exc:
            with self._cond:
                renders = [it for it in waiting if it in self._pending]
                for it in renders:
                    self._pending.remove(it)
            for it in renders:
                self._fail_item(it, exc)
            return False
        finally:
            self._metrics.busy_s += time.monotonic() - started

    def _take_work(self) -> list[WorkItem]:
        """Take the next item and its batch mates off the queue. Called with the condition held."""
        order = policy.priority_order(self._pending, self._book.ring)
        original_head = order[0]
        order = self._ordered()
        if order[0] is not original_head:
            original_head.bypassed += 1
        head = order[0]
        if head.request is not None and len(self._pending) < self.max_batch and self.batch_window_s > 0:
            # Gather window: give renders arriving in the next few ms a chance to join this one.
            self._cond.wait(self.batch_window_s)
            order = self._ordered()
            if head in order:  # (unless it was cancelled meanwhile)
                order.remove(head)
                order.insert(0, head)
            if not order:
                return []
        batch = policy.pick_batch(order, max_batch=self.max_batch, key_of=self._batch_key)
        for it in batch:
            self._pending.remove(it)
        self._book.ring.served(batch)
        return batch

    def _batch_key(self, item: WorkItem) -> BatchKey | None:
        if item.request is None:
            return None
        if item.key is None:
            try:
                synth = self.engine.models.get(item.request.model)
                if not synth.loaded:
                    return ("unloaded", item.seq)  # another model: never batched with the head
                item.key = synth.batch_key(item.request)
            except Exception:
                # A request the model refuses (prompt too long for T5, size not a multiple ...)
                # runs alone and fails with its message in render().
                item.key = ("refused", item.seq)
        return item.key

    def _on_thread_death(self, held: list[WorkItem]) -> None:
        for it in held:
            self._fail_item(it, ExecutorFailure())
        self._metrics.restarts += 1
        if not self._stopping:
            self._start_thread()

    def _execute(self, batch: list[WorkItem]) -> None:
        item = batch[0]
        if item.fn is None:
            self._execute_render(batch)
            return
        if item.job is not None:
            self._emit(item.job, ProgressEvent(item.job.id, item.kind))
        try:
            result = item.fn()
        except Exception as exc:
            log.debug("work item %s of %s failed", item.kind, item.job, exc_info=True)
            self._fail_item(item, user_facing(exc))
            free_cuda_cache_if_oom(exc)
            return
        self._settle(item, result)

    def _execute_render(self, batch: list[WorkItem]) -> None:
        requests = [it.request for it in batch if it.request is not None]
        self._metrics.observe_batch(len(batch))
        for it, req in zip(batch, requests, strict=True):
            if it.job is not None:
                self._emit(it.job, ProgressEvent(it.job.id, "render", 0, req.steps or 0))

        def progress(step: int, total: int) -> None:
            for it in batch:
                if it.job is not None and not it.job.cancelled:
                    self._emit(it.job, ProgressEvent(it.job.id, "render", step, total))

        def should_stop() -> bool:
            return all(it.job is not None and it.job.cancelled for it in batch)

        try:
            synthesizer = self.engine.models.use(requests[0].model)
            images = synthesizer.render(requests, progress=progress, should_stop=should_stop)
        except RenderInterrupted:
            for it in batch:
                self._fail_item(it, JobCancelled())
            return
        except Exception as exc:
            if is_out_of_memory(exc):
                free_cuda_cache_if_oom(exc)
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
        for it, image in zip(batch, images, strict=True):
            self._settle(it, image)

    # --- loop-side helpers (thread-safe) -----------------------------------------------------
    def _settle(self, item: WorkItem, result: Any) -> None:
        """Resolve a finished item, or fail it when its job was cancelled meanwhile."""
        if item.job is not None and item.job.cancelled:
            self._fail_item(item, JobCancelled())
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_set_result, item.future, result)

    def _fail_item(self, item: WorkItem, exc: BaseException) -> None:
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
        """Tell waiting jobs their new place in the queue."""
        for job, event in self._book.queue_events():
            self._emit(job, event)


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _call_listener(listener: Callable[[ProgressEvent], None], event: ProgressEvent) -> None:
    try:
        listener(event)
    except Exception:
        log.exception("progress listener failed")
