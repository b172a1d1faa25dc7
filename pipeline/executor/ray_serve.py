"""``EXECUTOR=ray``: the model stages run on Ray Serve deployments (:mod:`.deployments`) on a Ray
cluster; everything else stays in the bot process and behaves as with the local executor.

* **In the bot**: admission and caps, started-first order and per-user round robin (the same
  :mod:`.policy` functions as :class:`~.local.GPUExecutor`), queue positions and ETAs, progress
  events, cancellation, metrics. Work is sent to the cluster in service order, at most
  ``capacity`` calls at a time (enough to fill every replica's batches), so fairness is decided
  here and not by arrival order at the replicas.
* **On the cluster**: the models (render, transcribe, review, music, and the x4 upscaler when
  UPSCALER_MODEL is set), batching of compatible renders (``@serve.batch``, split by the
  local batcher's key), progress reports and stop checks at every step (:class:`~.deployments.ProgressBoard`).
* **Remote render backends** (RENDER_BACKEND, ``MODELS`` entries like ``xl=a1111:ckpt``) need no GPU:
  their renders stay in the bot process behind the router's fair gate, as with the local executor.
* **Faults**: a replica that dies during a call (its actor is gone) → the call is sent once more
  (Serve routes it to a live replica, or to the one it restarts); a second death fails the job
  with :class:`ExecutorFailure`. A cluster unreachable at start → :class:`RayUnreachable` naming
  RAY_ADDRESS.
* **The cluster lost later** (head restarted, network cut): told from a replica's death by a
  connection check of RAY_ADDRESS's ``host:port`` (:func:`check_reachable`) — after a call fails with
  one of Ray's own errors, and every :attr:`RayExecutor.PROBE_S` seconds. Then nothing is sent; the
  calls out are taken back into the queue (their remote results, should any come, are discarded, so
  a job is never delivered twice) and every waiting job shows ``waiting`` ("Waiting for a GPU
  worker…"); the executor reconnects (``ray.shutdown()``, ``ray.init()``, deploy or find the Serve
  applications as :meth:`RayExecutor.start` does) every :attr:`RayExecutor.RECONNECT_EVERY_S`
  seconds, and the calls resume in the same fair order (the taken-back ones first: their jobs had
  started; a warm-up call out is cancelled instead: Serve would retry it for ever). Time lost does
  not count towards a stage's timeout. Past RAY_RECONNECT_TIMEOUT_S the waiting calls fail with
  :class:`RayClusterLost` (the log and /healthz name RAY_ADDRESS), as do new ones until the cluster returns;
  ``/healthz`` is unhealthy while it is lost. Jobs are never lost: the bot's store holds them
  whatever the executor does. With Ray 2.60 a ``host:port`` driver (this process) survives its
  cluster's death (its calls fail with ``ActorUnavailableError``); the process never starts a local
  cluster of its own meanwhile (Ray's auto-``init`` is switched off once connected). A ``ray://``
  (Ray Client) address does not recover: its calls block the event loop while the client retries
  its lost connection (README "Scaling out").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..backends.router import RenderRouter
from ..errors import ExecutorFailure, JobCancelled, ShuttingDown, StageTimeout, VoxCanvasError
from . import policy
from .book import JobBook
from .jobs import Job, ProgressEvent, WorkKind
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
    from ..synthesis import RenderedImage, RenderRequest
    from ..transcribe import Task, Transcript
    from ..upscaler import UpscaleRequest

log = logging.getLogger(__name__)


class RayUnreachable(VoxCanvasError):
    """The Ray cluster named by RAY_ADDRESS cannot be reached (an operator's error, one line)."""

    default_message = "The Ray cluster (RAY_ADDRESS) cannot be reached."


class RayClusterLost(ExecutorFailure):
    """The cluster was lost after start and did not return within RAY_RECONNECT_TIMEOUT_S: the
    jobs that waited for it fail with this: a fixed, translated message for the user (the log and
    /healthz name RAY_ADDRESS)."""

    default_message = "The GPU workers have been unreachable for too long — please try again later."


class _ClusterGone(Exception):
    """Internal: a call failed because the cluster itself is gone (not one replica)."""


@dataclass(eq=False)
class _Call:
    """One remote call waiting for (or out on) the cluster; what :mod:`.policy` reads of work."""

    job: Job | None
    kind: WorkKind
    seq: int
    send: Callable[[], Awaitable[Any]]
    future: asyncio.Future[Any]
    enqueued_at: float = field(default_factory=time.monotonic)
    attempt: int = 0  # times it was sent; a send whose call was taken back since no longer counts


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast, in one line naming RAY_ADDRESS, when a ``host:port`` or ``ray://host:port``
    address refuses connections (``ray.init`` would retry for a minute first)."""
    target = address.removeprefix("ray://")
    if not address or address == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise RayUnreachable(f"The Ray cluster at RAY_ADDRESS={address} cannot be reached ({exc}).") from None


def preflight(settings: Settings) -> str | None:
    """Why EXECUTOR=ray cannot start (one line naming the setting), or None: checked before the
    bot connects to Discord."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return "EXECUTOR=ray needs Ray: pip install 'voxcanvas[ray]' (or set EXECUTOR=local)."
    try:
        if not settings.RAY_ADDRESS.strip():
            raise RayUnreachable("EXECUTOR=ray needs RAY_ADDRESS: 'auto', 'host:6379' or 'ray://host:10001'.")
        check_reachable(settings.RAY_ADDRESS.strip())
    except RayUnreachable as exc:
        return str(exc)
    return None


def connect(settings: Settings) -> bool:
    """Connect this process to the cluster (once). True when this call made the connection."""
    import ray

    if ray.is_initialized():
        return False
    address = settings.RAY_ADDRESS.strip()
    if not address:
        raise RayUnreachable("EXECUTOR=ray needs RAY_ADDRESS: 'auto', 'host:6379' or 'ray://host:10001'.")
    check_reachable(address)
    try:
        ray.init(address=address, namespace=settings.RAY_NAMESPACE, log_to_driver=False)
    except Exception as exc:  # ConnectionError, RuntimeError: Ray's own words, on one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayUnreachable(f"The Ray cluster at RAY_ADDRESS={address} cannot be reached: {first}") from None
    _no_auto_init()
    return True


def _no_auto_init() -> None:
    """Never let a Ray call made while the cluster is lost start a local cluster in this process
    (Ray's auto-``init``, read from RAY_ENABLE_AUTO_CONNECT when ray is imported: too late here)."""
    try:
        from ray._private import auto_init_hook

        auto_init_hook.enable_auto_connect = False
    except (ImportError, AttributeError):  # (a private switch: another Ray version may lack it)
        log.debug("cannot switch off Ray's auto-init", exc_info=True)


def _disconnect() -> None:
    """``ray.shutdown()``, whatever state the lost connection is in (blocking: off the loop)."""
    import ray

    try:
        ray.shutdown()
    except Exception:
        log.debug("ray.shutdown() of a lost connection failed", exc_info=True)


def _is_ray_trouble(exc: BaseException) -> bool:
    """One of Ray's own errors (not a replica's exception): the cluster may be gone."""
    import ray.exceptions as rex

    return isinstance(exc, (rex.RayError, ConnectionError)) and not isinstance(exc, rex.RayTaskError)


_REPLICA_GONE: tuple[type[BaseException], ...] = ()


def _replica_gone_errors() -> tuple[type[BaseException], ...]:
    global _REPLICA_GONE
    if not _REPLICA_GONE:
        import ray.exceptions as rex

        _REPLICA_GONE = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ActorUnavailableError)
    return _REPLICA_GONE


def _unwrap(exc: BaseException) -> BaseException:
    """A replica's own exception (a user-facing one) out of Ray's wrapper."""
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause
        if isinstance(cause, BaseException):
            return cause
    return exc


class RayExecutor:
    """The :class:`~.base.Executor` interface over Ray Serve (see the module docs)."""

    STAGE_TIMEOUT_S = 600.0
    POLL_S = 0.25  # how often step progress is read from the board while work is out
    PROBE_S = 2.0  # how often the cluster's address is checked (a TCP connect)
    PROBE_TIMEOUT_S = 2.0
    RECONNECT_EVERY_S = 3.0  # while the cluster is lost: how often to try to reconnect

    def __init__(
        self,
        settings: Settings,
        *,
        stage_timeout_s: float | None = None,
        step_delay_s: float = 0.0,
        stages: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.stage_timeout_s = stage_timeout_s or self.STAGE_TIMEOUT_S
        self.step_delay_s = step_delay_s
        self.stages = tuple(stages) if stages is not None else None
        max_batch = settings.MAX_BATCH if settings.DYNAMIC_BATCHING else 1
        # Calls out at once: every render replica's batch twice over (one running, one gathering).
        self.capacity = max(2, 2 * settings.RAY_MAX_REPLICAS * max_batch)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handles: dict[str, Any] = {}
        self._board: Any = None
        self._pending: list[_Call] = []
        self._out: dict[_Call, asyncio.Task[None]] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._accepting = True
        self._stopping = False
        self._owns_connection = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._metrics = MetricsRecorder()
        # Render replicas serve batches side by side: the ETA counts at least RAY_MIN_REPLICAS.
        self._book = JobBook(self, settings, self._metrics, parallel=settings.RAY_MIN_REPLICAS)
        self._shown: dict[str, tuple[int, int]] = {}
        self.retries = 0  # calls sent again after their replica died
        # The cluster lost after start (see the module docs).
        self._probe_address = ""  # host:port checked for the cluster (RAY_ADDRESS, or the GCS for "auto")
        self._watcher: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self._give_up_timer: asyncio.TimerHandle | None = None
        self._lost_since: float | None = None  # monotonic time the cluster was found gone
        self._lost_total = 0.0  # seconds lost in earlier outages
        self._gave_up = False  # lost past RAY_RECONNECT_TIMEOUT_S: calls fail until it returns
        self.outages = 0  # times the cluster was lost (and reconnects tried)
        self._side_calls: set[asyncio.Future[Any]] = set()  # warm-up calls, outside the queue
        # Remote render backends (pipeline.backends) need no GPU: their renders stay in this
        # process, behind the router's per-backend fair gate, as with the local executor.
        self.router = RenderRouter(settings)

    # --- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (:class:`RayUnreachable` naming RAY_ADDRESS), deploy or find the stages."""

        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._owns_connection = await asyncio.to_thread(connect, self.settings)
        self._probe_address = self._address_to_probe()
        self._handles, self._board = await asyncio.to_thread(self._deploy)
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="ray-dispatch")
        self._poller = asyncio.create_task(self._progress_loop(), name="ray-progress")
        self._watcher = asyncio.create_task(self._watch_loop(), name="ray-watch")

    def _deploy(self) -> tuple[dict[str, Any], Any]:
        """Deploy or find the stages' Serve applications, and the progress board (blocking)."""
        from . import deployments

        stages = self.stages or deployments.stages_for(self.settings)
        handles = deployments.deploy(self.settings, stages=stages, step_delay_s=self.step_delay_s)
        return handles, deployments.progress_board(self.settings.RAY_NAMESPACE)

    def _address_to_probe(self) -> str:
        """RAY_ADDRESS, or for ``auto`` the cluster's GCS address (``host:port``) found by Ray."""
        address = self.settings.RAY_ADDRESS.strip()
        if address and address != "auto":
            return address
        import ray

        try:
            return str(ray.get_runtime_context().gcs_address or "")
        except Exception:
            return ""

    async def warm_up(self, *, whisper: bool = True, clip: bool = True) -> None:
        """Load the models in one replica of each stage (the others load on first use)."""
        render = [] if self.router.is_remote(None) else ["render"]  # a remote default model needs no replica
        wanted = render + (["transcribe"] if whisper else []) + (["review"] if clip else [])
        calls = [asyncio.ensure_future(self._handles[s].warm_up.remote()) for s in wanted if s in self._handles]
        # Not queued work, but cancelled when the cluster is lost: Serve would retry a request of the
        # lost cluster's handle for ever.
        self._side_calls.update(calls)
        try:
            await asyncio.gather(*calls)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._lost_since is None or (task is not None and task.cancelling()):
                raise
            raise VoxCanvasError(
                f"The model warm-up was cut short: the Ray cluster at RAY_ADDRESS={self.settings.RAY_ADDRESS.strip()} "
                "was lost (the models load on first use once it is back)."
            ) from None
        finally:
            self._side_calls.difference_update(calls)

    def stop_admitting(self) -> None:
        self._accepting = False

    async def shutdown(self, timeout_s: float = 30.0) -> list[str]:
        """Stop admitting, let calls out finish (bounded), fail queued work with ShuttingDown.
        The deployments keep running: a restarted bot finds them (:func:`.deployments.deploy`)."""
        self._accepting = False
        self._stopping = True
        if self._give_up_timer is not None:
            self._give_up_timer.cancel()
        dropped, self._pending = self._pending, []
        for call in dropped:
            _set_exception(call.future, ShuttingDown())
        if self._out:
            await asyncio.wait(list(self._out.values()), timeout=timeout_s)
        for call in list(self._out):
            # Out of patience: the job stays in the store for the next start (its remote call
            # finishes on the cluster and is discarded).
            _set_exception(call.future, ShuttingDown())
        for task in (self._dispatcher, self._poller, self._watcher, self._reconnector, *self._out.values()):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self.router.close()
        if self._owns_connection:
            import ray

            await asyncio.to_thread(ray.shutdown)
        return self._book.unfinished_ids()

    def health(self) -> tuple[bool, str]:
        """For /healthz: the dispatcher runs and the cluster is reachable (the replicas have Serve's
        own health checks)."""
        if self._dispatcher is None or self._dispatcher.done():
            return False, "the Ray dispatcher is not running"
        if self._lost_since is not None:
            lost_for = time.monotonic() - self._lost_since
            waiting = (
                "waiting jobs failed after RAY_RECONNECT_TIMEOUT_S"
                if self._gave_up
                else f"{len(self._pending)} calls wait for it"
            )
            return (
                False,
                f"the Ray cluster at RAY_ADDRESS={self.settings.RAY_ADDRESS.strip()} is unreachable "
                f"({lost_for:.0f} s); reconnecting, {waiting}",
            )
        return (
            True,
            f"Ray Serve ({self.settings.RAY_NAMESPACE}): {len(self._out)} calls out, {len(self._pending)} waiting",
        )

    # --- jobs (the JobBook both executors share) -------------------------------------------------
    def admit(self, user_id: str | int, job_id: str | None = None, *, force: bool = False) -> Job:
        if not self._accepting:
            raise ShuttingDown()
        return self._book.admit(user_id, job_id, force=force)

    def get_job(self, job_id: str) -> Job | None:
        return self._book.get(job_id)

    def jobs_of(self, user_id: str | int) -> list[Job]:
        return self._book.of_user(user_id)

    def finish(self, job: Job, outcome: str = "done") -> None:
        if not self._book.close(job, outcome):
            return
        self._shown.pop(job.id, None)
        self._tell_board("forget", [job.id])
        self._notify_positions()

    def cancel(self, job: Job) -> None:
        job.cancelled = True
        dropped = [c for c in self._pending if c.job is job]
        for call in dropped:
            self._pending.remove(call)
            _set_exception(call.future, JobCancelled())
        self._tell_board("cancel", job.id)  # the replica stops a step or two later
        self._notify_positions()

    def _tell_board(self, method: str, *args: Any) -> None:
        """A fire-and-forget call to the progress board; none while the cluster is lost."""
        if self._board is None or self._lost_since is not None:
            return
        try:
            getattr(self._board, method).remote(*args)
        except Exception:
            log.debug("progress board %s failed", method, exc_info=True)

    def position_of(self, job: Job) -> int | None:
        return self._book.position_of(job)

    def eta_of(self, job: Job) -> float | None:
        return self._book.eta_of(job)

    @property
    def recorder(self) -> MetricsRecorder:
        return self._metrics

    def metrics(self) -> MetricsSnapshot:
        return self._book.snapshot(pending_items=len(self._pending))

    # --- model stages --------------------------------------------------------------------------
    async def transcribe(self, job: Job, audio: NDArray[np.float32], task: Task = "auto") -> Transcript:
        transcript: Transcript = await self._submit(
            job, "transcribe", lambda: self._handles["transcribe"].transcribe.remote(job.id, audio, task)
        )
        return transcript

    async def render(self, job: Job, request: RenderRequest) -> RenderedImage:
        request = await asyncio.to_thread(request.validated) if request.init_image else request.validated()
        if self.router.is_remote(request.model):
            return await self._render_remote(job, request)
        return await self._render_on_cluster(job, request)

    async def _render_on_cluster(self, job: Job, request: RenderRequest) -> RenderedImage:
        from .deployments import rendered_from_wire

        wire = await self._submit(job, "render", lambda: self._handles["render"].render.remote(job.id, request))
        self._metrics.observe_batch(int(wire["batch_size"]))  # (counted once per picture of the batch)
        image: RenderedImage = await asyncio.to_thread(rendered_from_wire, wire)
        return image

    async def _render_remote(self, job: Job, request: RenderRequest) -> RenderedImage:
        """A render on a remote backend (RENDER_BACKEND, a MODELS entry like ``xl=a1111:ckpt``):
        on the event loop of the bot (pipeline.backends.router), never on the cluster; a
        RENDER_FALLBACK=diffusers render goes to the Render replicas."""

        async def local(moved: RenderRequest) -> RenderedImage:
            return await self._render_on_cluster(job, moved)

        try:
            return await self.router.render_as_stage(
                job, request, emit=self._emit, local=local, timeout_s=self.stage_timeout_s, metrics=self._metrics
            )
        finally:
            self._notify_positions()

    async def review(self, job: Job, image: Image.Image, scene: Scene, prompt: str) -> QAReport:
        return (await self.review_many(job, [image], scene, prompt))[0]

    async def review_many(self, job: Job, images: Sequence[Image.Image], scene: Scene, prompt: str) -> list[QAReport]:
        from .deployments import image_to_png

        pngs = await asyncio.to_thread(lambda: [image_to_png(image) for image in images])
        reports: list[QAReport] = await self._submit(
            job, "review", lambda: self._handles["review"].review_many.remote(job.id, pngs, scene, prompt)
        )
        return reports

    async def compose(self, job: Job, request: MusicRequest) -> Music:
        request = request.validated()
        music: Music = await self._submit(job, "music", lambda: self._handles["music"].compose.remote(job.id, request))
        return music

    async def upscale(self, job: Job, request: UpscaleRequest) -> tuple[bytes, int, int]:
        upscaled: tuple[bytes, int, int] = await self._submit(
            job, "render", lambda: self._handles["upscale"].upscale.remote(job.id, request)
        )
        return upscaled

    async def call(self, job: Job | None, kind: WorkKind, fn: Callable[..., Any], *args: Any) -> Any:
        """Any callable, in a thread of the bot process (an arbitrary callable cannot be assumed
        picklable; the model stages above are the ones that go to the cluster)."""

        async def run() -> Any:
            return await asyncio.to_thread(fn, *args)

        return await self._submit(job, kind, run)

    def count_tokens(self, text: str) -> int | None:
        return None  # the tokenizer lives in the replicas

    def lora_choices(self, model: str | None) -> list[str]:
        from ..lora import lora_names

        return lora_names(self.settings.LORA_DIR)

    def family(self, model: str | None) -> FamilyProfile | None:
        if self.router.is_remote(model):
            return self.router.route(model).profile
        return None  # nothing is loaded in this process

    # --- dispatch ------------------------------------------------------------------------------
    async def _submit(self, job: Job | None, kind: WorkKind, send: Callable[[], Awaitable[Any]]) -> Any:
        if self._loop is None:
            raise RuntimeError("RayExecutor.start() was not awaited")
        if job is not None and job.cancelled:
            raise JobCancelled()
        if self._stopping:
            raise ShuttingDown()
        if self._gave_up:
            raise RayClusterLost()
        future: asyncio.Future[Any] = self._loop.create_future()
        call = _Call(job=job, kind=kind, seq=next(self._seq), send=send, future=future)
        self._pending.append(call)
        self._wake.set()
        self._notify_positions()
        # The stage's timeout counts the time the cluster was there: an outage is bounded on its own.
        lost_before = self._lost_seconds()
        deadline = self._loop.time() + self.stage_timeout_s
        try:
            while True:
                await asyncio.wait([future], timeout=max(0.0, deadline - self._loop.time()))
                if future.done():
                    return future.result()
                lost = self._lost_seconds() - lost_before
                if lost <= 0:
                    break
                deadline += lost
                lost_before += lost
        except asyncio.CancelledError:
            if call in self._pending:
                self._pending.remove(call)
            raise
        if job is not None:
            job.cancel()
        raise StageTimeout()

    async def _dispatch_loop(self) -> None:
        """Send pending calls in service order while fewer than ``capacity`` are out."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and len(self._out) < self.capacity and self._lost_since is None:
                call = policy.priority_order(self._pending, self._book.ring)[0]
                self._pending.remove(call)
                self._book.ring.served([call])
                if call.job is not None:
                    call.job.started = True
                call.attempt += 1
                self._out[call] = asyncio.create_task(self._run(call, call.attempt), name=f"ray-{call.kind}")
                self._notify_positions()

    async def _run(self, call: _Call, attempt: int) -> None:
        began = time.monotonic()
        if attempt == 1:
            self._metrics.observe_wait(began - call.enqueued_at)
        if call.job is not None:
            self._emit(call.job, ProgressEvent(call.job.id, call.kind))
        try:
            result = await self._send_with_retry(call)
        except _ClusterGone as exc:
            if call.attempt == attempt:
                self._lose(str(exc))  # takes this call (and every other one out) back into the queue
        except BaseException as exc:
            if call.attempt != attempt:  # taken back when the cluster was lost: it is sent again
                return
            _set_exception(call.future, exc if isinstance(exc, Exception) else ExecutorFailure())
            if not isinstance(exc, Exception):
                raise
        else:
            if call.attempt != attempt:
                log.info("%s of %s: a result from the lost cluster, discarded (sent again)", call.kind, call.job)
            elif call.job is not None and call.job.cancelled:
                _set_exception(call.future, JobCancelled())
            else:
                _set_result(call.future, result)
        finally:
            if call.attempt == attempt:
                self._metrics.observe_stage(call.kind, time.monotonic() - began)
                self._out.pop(call, None)
            self._wake.set()

    async def _send_with_retry(self, call: _Call) -> Any:
        gone = _replica_gone_errors()
        for attempt in (1, 2):
            try:
                return await call.send()
            except gone as exc:
                if not await self._reachable():
                    raise _ClusterGone(f"{type(exc).__name__} and RAY_ADDRESS refuses connections") from None
                self._metrics.restarts += 1
                if attempt == 2:
                    log.error("%s of %s: the replica died again (%s); failing it", call.kind, call.job, exc)
                    raise ExecutorFailure(
                        "The GPU worker failed twice while working on this job — please try again."
                    ) from None
                self.retries += 1
                log.warning("%s of %s: the replica died (%s); sending it once more", call.kind, call.job, exc)
                if call.job is not None and call.job.cancelled:
                    raise JobCancelled() from None
            except Exception as exc:
                if _is_ray_trouble(exc) and not await self._reachable():
                    raise _ClusterGone(f"{type(exc).__name__} and RAY_ADDRESS refuses connections") from None
                raise _unwrap(exc) from None
        raise AssertionError("unreachable")

    # --- the cluster lost and found ------------------------------------------------------------
    def _lost_seconds(self) -> float:
        """Seconds the cluster has been lost since start (all outages, the current one too)."""
        current = time.monotonic() - self._lost_since if self._lost_since is not None else 0.0
        return self._lost_total + current

    async def _reachable(self) -> bool:
        """Whether the cluster's address accepts connections (twice refused: it does not)."""
        for check in (1, 2):
            try:
                await asyncio.to_thread(check_reachable, self._probe_address, self.PROBE_TIMEOUT_S)
                return True
            except RayUnreachable:
                if check == 1:
                    await asyncio.sleep(0.2)
        return False

    async def _watch_loop(self) -> None:
        """Check the cluster's address every PROBE_S: a call out may hang rather than fail when
        the cluster goes away."""
        while True:
            await asyncio.sleep(self.PROBE_S)
            if self._lost_since is None and not self._stopping and not await self._reachable():
                self._lose("RAY_ADDRESS refuses connections")

    def _lose(self, reason: str) -> None:
        """The cluster is gone: stop sending, take the calls out back, tell the waiting jobs,
        reconnect in the background and fail the waiting calls past RAY_RECONNECT_TIMEOUT_S."""
        if self._lost_since is not None or self._stopping or self._loop is None:
            return
        self._lost_since = time.monotonic()
        self.outages += 1
        taken_back = list(self._out.items())
        self._out.clear()
        for call, task in taken_back:
            call.attempt += 1  # whatever that send still yields is discarded
            self._pending.append(call)
            if task is not asyncio.current_task():
                task.cancel()
        for side in list(self._side_calls):
            side.cancel()
        bound = self.settings.RAY_RECONNECT_TIMEOUT_S
        log.warning(
            "The Ray cluster at RAY_ADDRESS=%s is lost (%s): %d calls taken back, %d waiting; reconnecting "
            "every %g s for up to %g s (RAY_RECONNECT_TIMEOUT_S)",
            self.settings.RAY_ADDRESS.strip(),
            reason,
            len(taken_back),
            len(self._pending),
            self.RECONNECT_EVERY_S,
            bound,
        )
        self._give_up_timer = self._loop.call_later(bound, self._give_up)
        self._reconnector = asyncio.create_task(self._reconnect_loop(), name="ray-reconnect")
        self._notify_positions()

    def _give_up(self) -> None:
        """RAY_RECONNECT_TIMEOUT_S is over: the waiting calls fail (so do new ones until the
        cluster returns); reconnecting goes on."""
        if self._lost_since is None or self._gave_up:
            return
        self._gave_up = True
        dropped, self._pending = self._pending, []
        log.error(
            "The Ray cluster at RAY_ADDRESS=%s has not answered for %g s (RAY_RECONNECT_TIMEOUT_S): "
            "%d waiting calls fail; reconnecting goes on",
            self.settings.RAY_ADDRESS.strip(),
            self.settings.RAY_RECONNECT_TIMEOUT_S,
            len(dropped),
        )
        for call in dropped:
            _set_exception(call.future, RayClusterLost())

    async def _reconnect_loop(self) -> None:
        if self._owns_connection:
            await asyncio.to_thread(_disconnect)
        while not self._stopping:
            if await self._reachable():
                try:
                    if self._owns_connection:
                        await asyncio.to_thread(connect, self.settings)
                    handles, board = await asyncio.to_thread(self._deploy)
                except Exception as exc:
                    log.warning(
                        "reconnecting to the Ray cluster at RAY_ADDRESS=%s failed: %s",
                        self.settings.RAY_ADDRESS.strip(),
                        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                    )
                    if self._owns_connection:
                        await asyncio.to_thread(_disconnect)
                else:
                    self._found(handles, board)
                    return
            await asyncio.sleep(self.RECONNECT_EVERY_S)

    def _found(self, handles: dict[str, Any], board: Any) -> None:
        """Reconnected: new handles and board; the waiting calls go out again in fair order."""
        assert self._lost_since is not None
        lost_for = time.monotonic() - self._lost_since
        self._lost_total += lost_for
        self._lost_since = None
        self._gave_up = False
        if self._give_up_timer is not None:
            self._give_up_timer.cancel()
            self._give_up_timer = None
        self._handles, self._board = handles, board
        self._shown.clear()
        log.warning(
            "Reconnected to the Ray cluster at RAY_ADDRESS=%s after %.0f s: %d calls resume",
            self.settings.RAY_ADDRESS.strip(),
            lost_for,
            len(self._pending),
        )
        self._wake.set()
        self._notify_positions()

    # --- progress ------------------------------------------------------------------------------
    async def _progress_loop(self) -> None:
        """Read the steps replicas reported for the jobs whose renders or music are out."""
        while True:
            await asyncio.sleep(self.POLL_S)
            watched = {c.job.id: c for c in self._out if c.job is not None and c.kind in ("render", "music")}
            if not watched or self._board is None or self._lost_since is not None:
                continue
            try:
                steps: dict[str, tuple[int, int]] = await self._board.snapshot.remote(list(watched))
            except Exception:
                log.debug("progress board unreachable", exc_info=True)
                continue
            for job_id, (step, total) in steps.items():
                call = watched[job_id]
                if call.job is None or call.job.cancelled or self._shown.get(job_id) == (step, total) or not total:
                    continue
                self._shown[job_id] = (step, total)
                self._emit(call.job, ProgressEvent(job_id, call.kind, step, total))

    def _emit(self, job: Job, event: ProgressEvent) -> None:
        job.stage = event.stage
        if job.listener is not None:
            try:
                job.listener(event)
            except Exception:
                log.exception("progress listener failed")

    def _notify_positions(self) -> None:
        if self._lost_since is not None:
            # Cluster lost: every job waiting for it (not begun, or with a call taken back) says so.
            waiting = {c.job.id for c in self._pending if c.job is not None}
            for job in self._book:
                if job.listener is not None and not job.finished and (not job.started or job.id in waiting):
                    self._emit(job, ProgressEvent(job.id, "waiting"))
            return
        for job, event in self._book.queue_events():
            self._emit(job, event)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
