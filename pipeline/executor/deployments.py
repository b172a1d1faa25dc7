"""The model stages as Ray Serve deployments (``EXECUTOR=ray``; README "Scaling out").

Each replica is a Ray actor process that builds its own :class:`~.engine.Engine` from the bot's
settings (secrets removed) and loads its models once, on first use or at ``warm_up``. Every
replica runs its torch calls on ONE thread of its own, like the local executor's GPU thread.

* ``Renderer`` — diffusion; requests arriving together are gathered by ``@serve.batch`` and split
  by the same batch key as the local batcher (model, size, steps, guidance, LoRA, mode ...):
  compatible requests share one pipeline call, incompatible ones never do.
* ``Transcriber`` (Whisper), ``Critic`` (CLIP), ``Composer`` (MusicGen) — one call per request.

What crosses the wire is data: render requests (dataclasses of str/int/bytes), pictures as PNG
bytes, transcripts, reports and samples. Pipelines never leave their replica.

Progress and cancellation cross processes through one small named actor, the
:class:`ProgressBoard`: a replica reports its denoising (or decoder) step there, at most every
``REPORT_EVERY_S`` and without waiting, and reads back, as the answers come in, which of its jobs
were cancelled, so a cancelled render stops within ~0.1 s and a step; the bot polls the board for
the steps to show ("Rendering 12/25") and posts cancellations to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import io
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import ray
from ray import serve

from ..errors import JobCancelled, VoxCanvasError
from .device import free_cuda_cache_if_oom, user_facing

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from ..critic import QAReport
    from ..music import Music, MusicRequest
    from ..scene import Scene
    from ..settings import Settings
    from ..synthesis import RenderRequest
    from ..transcribe import Task, Transcript
    from ..upscaler import UpscaleRequest
    from .engine import Engine

log = logging.getLogger(__name__)

BOARD_NAME = "voxcanvas-progress"
# How often a replica tells the board its step (the bot reads the board every 0.25 s).
REPORT_EVERY_S = 0.1
STAGES = ("render", "transcribe", "review", "music")
# Settings a replica must never see: credentials of the bot and its web API.
_PRIVATE = {"DISCORD_TOKEN", "GEMINI_API_KEY", "API_KEYS"}


def app_name(namespace: str, stage: str) -> str:
    """Serve application names are cluster-wide: prefix them, so several bots can share a cluster."""
    return f"{namespace}-{stage}"


def replica_settings(settings: Settings) -> dict[str, Any]:
    """What a replica needs to build its engine: the settings without credentials."""
    values = settings.model_dump(exclude=_PRIVATE)
    values["API_PORT"] = None  # (the web API's own validator would otherwise ask for keys)
    return values


@ray.remote(num_cpus=0, max_restarts=-1)
class ProgressBoard:
    """Steps reported by replicas, cancellations posted by the bot; one per RAY_NAMESPACE."""

    def __init__(self) -> None:
        self._steps: dict[str, tuple[int, int]] = {}
        self._where: dict[str, str] = {}
        self._cancelled: set[str] = set()

    def step(self, job_ids: list[str], step: int, total: int, replica: str) -> list[str]:
        """A replica's report; returns those of ``job_ids`` that were cancelled."""
        for job_id in job_ids:
            self._steps[job_id] = (step, total)
            self._where[job_id] = replica
        return [job_id for job_id in job_ids if job_id in self._cancelled]

    def cancel(self, job_id: str) -> None:
        self._cancelled.add(job_id)

    def snapshot(self, job_ids: list[str]) -> dict[str, tuple[int, int]]:
        return {job_id: self._steps[job_id] for job_id in job_ids if job_id in self._steps}

    def where(self, job_id: str) -> str | None:
        """The replica (actor name) that last reported a step of ``job_id``."""
        return self._where.get(job_id)

    def forget(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self._steps.pop(job_id, None)
            self._where.pop(job_id, None)
            self._cancelled.discard(job_id)


def progress_board(namespace: str) -> Any:
    """The namespace's board, created when missing (it outlives bot restarts: detached)."""
    return ProgressBoard.options(  # type: ignore[attr-defined]
        name=BOARD_NAME, namespace=namespace, get_if_exists=True, lifetime="detached"
    ).remote()


class _Replica:
    """What every deployment shares: settings → engine, one model thread, the board."""

    def __init__(self, settings: dict[str, Any], namespace: str, step_delay_s: float = 0.0) -> None:
        from ..settings import Settings
        from .engine import Engine

        self.settings = Settings(**settings, _env_file=None)
        self.engine: Engine = Engine(self.settings)
        self.board: Any = ray.get_actor(BOARD_NAME, namespace=namespace)  # (Any: Ray types .remote as Never)
        self.step_delay_s = step_delay_s  # tests and benchmarks: make a tiny model's steps last
        self.name = ray.get_runtime_context().get_actor_name() or "replica"
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")

    async def _on_model_thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def _stepper(self, job_ids: list[str]) -> tuple[Callable[[int, int], None], Callable[[], bool]]:
        """``progress`` and ``should_stop`` callbacks for a model call serving ``job_ids``."""
        cancelled: set[str] = set()
        replies: list[Any] = []  # the board's answers to reports not read yet
        reported_at = -REPORT_EVERY_S

        def progress(step: int, total: int) -> None:
            nonlocal replies, reported_at
            # Reports are neither waited for nor sent every step: each one holds the model thread
            # (bench/notes/cpu.md (g)). The board is told at most every REPORT_EVERY_S (and of the
            # last step); the answers of earlier reports are read as they come in, so a cancelled
            # render stops within ~0.1 s and a step.
            if self.step_delay_s:
                time.sleep(self.step_delay_s)
            now = time.monotonic()
            if 0 < step < total and now - reported_at < REPORT_EVERY_S:
                return
            reported_at = now
            replies.append(self.board.step.remote(job_ids, step, total, self.name))
            answered, replies = ray.wait(replies, num_returns=len(replies), timeout=0)
            for reply in answered:
                cancelled.update(ray.get(reply))

        def should_stop() -> bool:
            return bool(job_ids) and cancelled >= set(job_ids)

        progress(0, 0)  # "started here": the board knows the replica before the first step
        return progress, should_stop

    async def warm_up(self) -> str:
        await self._on_model_thread(self._load)
        return self.name

    def _load(self) -> None:
        raise NotImplementedError

    async def replica_name(self) -> str:
        return self.name


@serve.deployment(name="render", max_ongoing_requests=16)
class Renderer(_Replica):
    def __init__(
        self,
        settings: dict[str, Any],
        namespace: str,
        step_delay_s: float = 0.0,
        max_batch: int = 4,
        wait_s: float = 0.01,
    ) -> None:
        super().__init__(settings, namespace, step_delay_s)
        self._batched.set_max_batch_size(max_batch)  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(wait_s)  # type: ignore[attr-defined]

    def _load(self) -> None:
        self.engine.models.use(None)

    async def render(self, job_id: str, request: RenderRequest) -> dict[str, Any]:
        """One request; requests arriving together are batched by :meth:`_batched`."""
        outcome = await self._batched((job_id, request))
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, dict)
        return outcome

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def _batched(self, calls: list[tuple[str, RenderRequest]]) -> list[dict[str, Any] | BaseException]:
        result: list[dict[str, Any] | BaseException] = await self._on_model_thread(lambda: self._render_all(calls))
        return result

    def _render_all(self, calls: list[tuple[str, RenderRequest]]) -> list[dict[str, Any] | BaseException]:
        """On the model thread: split a Serve batch by batch key, one pipeline call per group."""
        outcomes: list[dict[str, Any] | BaseException | None] = [None] * len(calls)
        groups: dict[Any, list[int]] = {}
        for i, (_, request) in enumerate(calls):
            try:
                synth = self.engine.models.use(request.model)
                key = (self.engine.models.canonical(request.model), synth.batch_key(request))
            except Exception as exc:
                outcomes[i] = user_facing(exc)
                continue
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            for i, outcome in zip(members, self._render_group([calls[i] for i in members]), strict=True):
                outcomes[i] = outcome
        return [o if o is not None else RuntimeError("not rendered") for o in outcomes]

    def _render_group(self, calls: list[tuple[str, RenderRequest]]) -> list[dict[str, Any] | BaseException]:
        from ..synthesis import RenderInterrupted

        job_ids = [job_id for job_id, _ in calls]
        progress, should_stop = self._stepper(job_ids)
        try:
            synth = self.engine.models.use(calls[0][1].model)
            images = synth.render([r for _, r in calls], progress=progress, should_stop=should_stop)
        except RenderInterrupted:
            return [JobCancelled() for _ in calls]
        except Exception as exc:
            free_cuda_cache_if_oom(exc)
            log.debug("render batch of %d failed", len(calls), exc_info=True)
            return [user_facing(exc) for _ in calls]
        return [rendered_to_wire(image) for image in images]


@serve.deployment(name="transcribe", max_ongoing_requests=4)
class Transcriber(_Replica):
    def _load(self) -> None:
        self.engine.transcriber.load()

    async def transcribe(self, job_id: str, audio: NDArray[np.float32], task: Task) -> Transcript:
        transcript: Transcript = await self._on_model_thread(
            lambda: self.engine.transcriber.transcribe(audio, task=task)
        )
        return transcript


@serve.deployment(name="review", max_ongoing_requests=8)
class Critic(_Replica):
    def _load(self) -> None:
        self.engine.clip_critic.load()

    async def review_many(self, job_id: str, pngs: Sequence[bytes], scene: Scene, prompt: str) -> list[QAReport]:
        images = [png_to_image(png) for png in pngs]
        reports: list[QAReport] = await self._on_model_thread(
            lambda: self.engine.clip_critic.review_many(images, scene, prompt)
        )
        return reports


@serve.deployment(name="music", max_ongoing_requests=2)
class Composer(_Replica):
    def _load(self) -> None:
        self.engine.composer.load()

    async def compose(self, job_id: str, request: MusicRequest) -> Music:
        from ..music import MusicInterrupted

        def run() -> Music:
            progress, should_stop = self._stepper([job_id])
            try:
                return self.engine.composer.compose(request, progress=progress, should_stop=should_stop)
            except MusicInterrupted:
                raise JobCancelled() from None

        music: Music = await self._on_model_thread(run)
        return music


@serve.deployment(name="upscale", max_ongoing_requests=2)
class UpscalerReplica(_Replica):
    """UPSCALER_MODEL (deployed only when it is set): the U buttons' x4 upscaler, tile by tile."""

    def _load(self) -> None:
        self.engine.upscaler.load()

    async def upscale(self, job_id: str, request: UpscaleRequest) -> tuple[bytes, int, int]:
        def run() -> tuple[bytes, int, int]:
            progress, should_stop = self._stepper([job_id])
            return self.engine.upscaler.run(request, should_stop=should_stop, progress=progress)

        upscaled: tuple[bytes, int, int] = await self._on_model_thread(run)
        return upscaled


DEPLOYMENTS: dict[str, Any] = {
    "render": Renderer,
    "transcribe": Transcriber,
    "review": Critic,
    "music": Composer,
    "upscale": UpscalerReplica,
}


def stages_for(settings: Settings) -> tuple[str, ...]:
    """The stages a bot deploys: :data:`STAGES`, and the upscaler when UPSCALER_MODEL is set."""
    return STAGES + (("upscale",) if settings.UPSCALER_MODEL else ())


def gpus_for(settings: Settings) -> tuple[float, float]:
    """GPUs per render replica and per Whisper/CLIP/MusicGen replica: the settings, or 1 and 0.25
    when the cluster has GPUs (several small models share a card), else 0."""
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0  # type: ignore[no-untyped-call]
    render = settings.RAY_RENDER_GPUS if settings.RAY_RENDER_GPUS is not None else (1.0 if has_gpu else 0.0)
    aux = settings.RAY_AUX_GPUS if settings.RAY_AUX_GPUS is not None else (0.25 if has_gpu else 0.0)
    return render, aux


def deploy(
    settings: Settings, *, stages: Sequence[str] = STAGES, step_delay_s: float = 0.0, redeploy: bool = False
) -> dict[str, Any]:
    """Deploy (or find, when already running: a restarted bot reuses the replicas) the stages'
    applications; returns their handles by stage. Blocking: call it off the event loop."""
    namespace = settings.RAY_NAMESPACE
    progress_board(namespace)
    render_gpus, aux_gpus = gpus_for(settings)
    serve.start(proxy_location="Disabled")  # no HTTP: the bot calls through handles (a no-op when running)
    running = serve.status().applications
    values = replica_settings(settings)
    handles: dict[str, Any] = {}
    for stage in stages:
        name = app_name(namespace, stage)
        if name in running and not redeploy and running[name].status == "RUNNING":  # (a str enum)
            log.info("Ray Serve application %s is running: reusing its replicas", name)
            handles[stage] = serve.get_app_handle(name)
            continue
        deployment = DEPLOYMENTS[stage]
        if stage == "render":
            bounds = (settings.RAY_MIN_REPLICAS, settings.RAY_MAX_REPLICAS)
            gpus = render_gpus
            args: tuple[Any, ...] = (
                values,
                namespace,
                step_delay_s,
                settings.MAX_BATCH if settings.DYNAMIC_BATCHING else 1,
                settings.BATCH_WINDOW_MS / 1000.0,
            )
        else:
            bounds = (1, settings.RAY_MAX_REPLICAS)
            gpus = aux_gpus
            args = (values, namespace, step_delay_s)
        scaling: dict[str, Any] = (
            {"num_replicas": bounds[0]}
            if bounds[0] == bounds[1]
            else {"autoscaling_config": {"min_replicas": bounds[0], "max_replicas": bounds[1]}}
        )
        if stage == "render":  # one batch running, one gathering: more would pile up on one replica
            scaling["max_ongoing_requests"] = 2 * args[3]
        app = deployment.options(ray_actor_options={"num_gpus": gpus, "num_cpus": 0 if gpus else 1}, **scaling)
        log.info("deploying %s on Ray Serve (%s, %g GPU per replica)", name, scaling, gpus)
        handles[stage] = serve.run(app.bind(*args), name=name, route_prefix=None, blocking=False)
    for stage in stages:
        _wait_running(app_name(namespace, stage))
    return handles


def _wait_running(name: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(name)
        state = str(status.status) if status is not None else "MISSING"
        if state.endswith("RUNNING"):
            return
        if state.endswith(("DEPLOY_FAILED", "UNHEALTHY")) or time.monotonic() > deadline:
            message = status.message if status is not None else ""
            raise VoxCanvasError(f"The Ray Serve application {name} did not start ({state}): {message}")
        time.sleep(0.2)


# --- wire formats ---------------------------------------------------------------------------------
def rendered_to_wire(rendered: Any) -> dict[str, Any]:
    """A :class:`~pipeline.synthesis.RenderedImage` as plain data, its picture as PNG bytes."""
    buffer = io.BytesIO()
    rendered.image.save(buffer, format="PNG")
    values = {f.name: getattr(rendered, f.name) for f in dataclasses.fields(rendered) if f.name != "image"}
    values["png"] = buffer.getvalue()
    return values


def rendered_from_wire(values: dict[str, Any]) -> Any:
    from ..synthesis import RenderedImage

    fields = dict(values)
    image = png_to_image(fields.pop("png"))
    return RenderedImage(image=image, **fields)


def png_to_image(png: bytes) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as opened:
        opened.load()
        return opened.copy()


def image_to_png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
