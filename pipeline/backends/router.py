"""Which backend renders a request, and the asyncio-side path remote renders take.

``RENDER_BACKEND`` is where the default model (``/imagine`` without ``model:``) renders:
``diffusers`` (this machine's GPU thread, the default) or ``a1111`` / ``comfyui`` / ``stability``
/ ``replicate`` with that backend's own model setting (``A1111_MODEL``, ``COMFYUI_CHECKPOINT``,
``STABILITY_MODEL``, ``REPLICATE_MODEL``). A ``MODELS`` entry whose source starts with a backend
name renders there: ``MODELS=xl=comfyui:sd_xl_base_1.0.safetensors;width=1024;height=1024,
sd35=stability:sd3.5-large, local=stabilityai/sdxl-turbo`` (the last one on the GPU thread).

A remote render never occupies the GPU thread. It waits for a slot of its backend's
:class:`FairGate` (``REMOTE_CONCURRENCY`` per backend; started jobs first, then one job per user
in turn, as the GPU queue does), reports the backend's progress as the job's ``render`` stage,
and stops when the job is cancelled. When the backend fails after its retries and
``RENDER_FALLBACK`` names another backend, the picture is rendered there instead (the default
model of that backend) and the result says so (:attr:`RenderedImage.fallback_from`).

A job's candidates (``count: 4``) reach the router as concurrent renders of one request with
consecutive seeds (``Job.candidates`` > 1). On a backend that renders several pictures in one request
(``Capabilities.max_batch`` > 1 and a ``render_many`` method: A1111/Forge's ``batch_size``) they
are coalesced: the first waits :data:`BATCH_WINDOW_S` for its siblings (same job, same options
but the seed), then one request renders them all and each gets its own picture and seed. Seeds
that are not consecutive, or other backends, render one request per picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from PIL import Image

from .. import families
from ..errors import BadRequest, JobCancelled, StageTimeout
from ..executor import policy
from .base import (
    LABELS,
    POLL_INTERVAL_S,
    BackendError,
    HttpBackend,
    RemoteControl,
    RemoteJob,
    RemoteResult,
    family_profile,
    remote_source,
)

#: The longest the first candidate of a job waits for its siblings before its request goes out
#: (they arrive in the same event-loop turn; this only bridges an init image's validation). It
#: goes out as soon as all ``Job.candidates`` are there; a one-picture job never waits.
BATCH_WINDOW_S = 0.02

if TYPE_CHECKING:
    from ..control import ControlSpec
    from ..executor.jobs import Job, ProgressEvent
    from ..executor.metrics import MetricsRecorder
    from ..families import FamilyProfile, ModelDefaults
    from ..settings import Settings
    from ..synthesis import RenderedImage, RenderRequest

log = logging.getLogger(__name__)

LocalRender = Callable[["RenderRequest"], Awaitable["RenderedImage"]]
Emit = Callable[["Job", "ProgressEvent"], None]


def guess_architecture(model: str, backend: str) -> str:
    """The family of a remote model from its name (no pipeline to look at)."""
    name = model.lower()
    if "flux" in name:
        return "flux"
    if "sd3" in name or backend == "stability":
        return "sd3"
    if "xl" in name or backend == "replicate":
        return "sdxl"
    return "sd"


@dataclass(frozen=True)
class Route:
    backend: str
    model: str  # the backend's model id
    profile: FamilyProfile


@dataclass(eq=False)
class _Waiter:
    job: Job
    seq: int
    future: asyncio.Future[None]


@dataclass(eq=False)
class FairGate:
    """At most ``limit`` renders at a time on one backend; the next slot goes to the job the GPU
    queue would serve next (started jobs first, then round robin across users)."""

    limit: int
    active: int = 0
    waiting: list[_Waiter] = field(default_factory=list)
    ring: policy.UserRing = field(default_factory=policy.UserRing)
    _seq: Any = field(default_factory=itertools.count)

    async def acquire(self, job: Job) -> None:
        if self.active < self.limit and not self.waiting:
            self.active += 1
            return
        waiter = _Waiter(job, next(self._seq), asyncio.get_running_loop().create_future())
        self.ring.join(job.user_id)
        self.waiting.append(waiter)
        try:
            while not waiter.future.done():
                if job.cancelled:
                    raise JobCancelled()
                await asyncio.wait({waiter.future}, timeout=POLL_INTERVAL_S)
        except BaseException:
            if waiter in self.waiting:
                self.waiting.remove(waiter)
            elif waiter.future.done():
                self.release()  # the slot was handed over just as we gave up
            raise

    def release(self) -> None:
        self.active -= 1
        while self.active < self.limit and self.waiting:
            nxt = policy.priority_order(self.waiting, self.ring)[0]
            self.waiting.remove(nxt)
            self.ring.served([nxt])
            self.active += 1
            if not nxt.future.done():
                nxt.future.set_result(None)


class RenderRouter:
    """The backends this deployment renders on, built from the settings (missing keys and broken
    workflow files fail here, at start-up, naming the setting)."""

    def __init__(self, settings: Settings, backends: dict[str, HttpBackend] | None = None) -> None:
        from ..registry import parse_models

        self.settings = settings
        self.default = settings.RENDER_BACKEND
        self.fallback = settings.RENDER_FALLBACK or None
        self.entries = parse_models(settings.MODELS)
        self._backends: dict[str, HttpBackend] = dict(backends or {})
        self.gates: dict[str, FairGate] = {}
        self._open: dict[tuple[Any, ...], _Batch] = {}
        needed: set[str] = {str(self.default), str(self.fallback or "")} - {"diffusers", ""}
        for entry in self.entries.values():
            found = remote_source(entry.source)
            if found:
                needed.add(found[0])
        for name in sorted(needed):
            self.backend(name)  # built now: configuration errors surface at start-up

    # --- which backend ---
    def is_remote(self, model: str | None) -> bool:
        return self.route(model).backend != "diffusers"

    def route(self, model: str | None) -> Route:
        """Where ``model`` (a MODELS name; None: the default) renders."""
        defaults: ModelDefaults | None = None
        if model is not None and model in self.entries:
            entry = self.entries[model]
            found = remote_source(entry.source)
            if found is None:
                return Route("diffusers", entry.source, _unknown_profile())
            backend, model_id = found
            defaults = entry.defaults
        elif model is None or model == self.settings.DIFFUSION_MODEL:
            default_entry = self.entries.get(self.settings.DIFFUSION_MODEL)
            if default_entry is not None and remote_source(default_entry.source) is not None:
                return self.route(default_entry.name)
            if self.default == "diffusers":
                return Route("diffusers", self.settings.DIFFUSION_MODEL, _unknown_profile())
            backend, model_id = self.default, ""
        else:
            return Route("diffusers", model, _unknown_profile())  # the registry refuses unknown names
        model_id = model_id or self.backend(backend).default_model
        arch = guess_architecture(model_id, backend)
        side = 512 if arch == "sd" else 1024
        width = self.settings.WIDTH if defaults is None or defaults.width is None else defaults.width
        height = self.settings.HEIGHT if defaults is None or defaults.height is None else defaults.height
        profile = family_profile(arch, width or side, height or side, defaults)
        if self.settings.STEPS is not None and (defaults is None or defaults.steps is None):
            profile = replace(profile, default_steps=self.settings.STEPS)
        if self.settings.GUIDANCE is not None and (defaults is None or defaults.guidance is None):
            profile = replace(profile, default_guidance=self.settings.GUIDANCE)
        return Route(backend, model_id, profile)

    def backend(self, name: str) -> HttpBackend:
        if name not in self._backends:
            self._backends[name] = build_backend(name, self.settings)
        return self._backends[name]

    def gate(self, name: str) -> FairGate:
        if name not in self.gates:
            self.gates[name] = FairGate(self.settings.REMOTE_CONCURRENCY)
        return self.gates[name]

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()

    # --- rendering ---
    async def render(self, job: Job, request: RenderRequest, *, emit: Emit, local: LocalRender) -> RenderedImage:
        """Render ``request`` (validated) where its model lives; on a backend failure, on
        ``RENDER_FALLBACK`` when set."""
        route = self.route(request.model)
        try:
            if route.backend == "diffusers":
                return await local(request)
            return await self._remote(route, job, request, emit)
        except BackendError as exc:
            fallback = self.fallback
            if fallback is None or fallback == route.backend or job.cancelled:
                raise
            log.warning("%s failed (%s); rendering on the fallback %s", LABELS[route.backend], exc, fallback)
            moved = replace(request, model=None, loras=())  # the fallback's default model
            if fallback == "diffusers":
                image = await local(moved)
            else:
                backend = self.backend(fallback)
                image = await self._remote(Route(fallback, backend.default_model, route.profile), job, moved, emit)
            image.fallback_from = route.backend
            return image

    async def render_as_stage(
        self,
        job: Job,
        request: RenderRequest,
        *,
        emit: Emit,
        local: LocalRender,
        timeout_s: float,
        metrics: MetricsRecorder,
    ) -> RenderedImage:
        """:meth:`render` as an executor's render stage (both executors call this for a remote
        model): on the bot's event loop, refused for a cancelled job, bounded by the stage timeout
        (which cancels the job), measured like any render."""
        if job.cancelled:
            raise JobCancelled()
        began = time.monotonic()
        try:
            image = await asyncio.wait_for(self.render(job, request, emit=emit, local=local), timeout_s)
        except TimeoutError:
            job.cancel()
            raise StageTimeout() from None
        metrics.observe_batch(1)
        metrics.observe_stage("render", time.monotonic() - began)
        return image

    async def _remote(self, route: Route, job: Job, request: RenderRequest, emit: Emit) -> RenderedImage:
        from ..synthesis import RenderedImage

        backend = self.backend(route.backend)
        caps = backend.capabilities
        if request.loras and not caps.loras:
            raise BadRequest(f"LoRAs can't be used with models on {LABELS[route.backend]}.")
        if request.init_image is not None and not caps.img2img:
            raise BadRequest(f"{LABELS[route.backend]} with this model can't start from a picture.")
        remote = resolve(request, route)
        if request.control is not None:
            remote = replace(remote, control=await remote_control(backend, request.control, remote))
        if caps.max_batch > 1 and job.candidates > 1:
            result, seconds, batch_size = await self._coalesced(route, backend, job, remote, emit)
        else:
            results, seconds = await self._call(route, backend, job, remote, 1, emit)
            result, batch_size = results[0], 1
        if job.cancelled:
            raise JobCancelled()
        image = result.image
        return RenderedImage(
            image=image,
            seed=result.seed,
            prompt=remote.prompt,
            negative_prompt=remote.negative_prompt,
            steps=remote.steps,
            guidance=remote.guidance,
            width=image.width,
            height=image.height,
            mode=remote.mode,
            prompt_tokens=approximate_tokens(remote.prompt),
            prompt_chunks=max(1, -(-approximate_tokens(remote.prompt) // 75)),
            nsfw=result.nsfw,
            batch_size=batch_size,
            seconds=seconds,
            model=request.model,
            family=route.profile,
            loras=request.loras,
            backend=route.backend,
            control_mode=remote.control.mode if remote.control else None,
            control_strength=remote.control.strength if remote.control else None,
            control_image=_control_preview(remote.control),
        )

    async def _call(
        self, route: Route, backend: HttpBackend, job: Job, remote: RemoteJob, count: int, emit: Emit
    ) -> tuple[list[RemoteResult], float]:
        """One request for ``count`` pictures (seeds ``remote.seed + i``) through the backend's gate."""
        from ..executor.jobs import ProgressEvent

        gate = self.gate(route.backend)
        await gate.acquire(job)
        try:
            job.started = True
            emit(job, ProgressEvent(job.id, "render", 0, remote.steps))

            def progress(step: int, total: int) -> None:
                if not job.cancelled:
                    emit(job, ProgressEvent(job.id, "render", step, total))

            began = time.monotonic()
            stop = lambda: job.cancelled  # noqa: E731
            if count == 1:
                results = [await backend.render(remote, progress=progress, should_stop=stop)]
            else:
                results = list(await backend.render_many(remote, count, progress=progress, should_stop=stop))
            return results, time.monotonic() - began
        finally:
            gate.release()

    async def _coalesced(
        self, route: Route, backend: HttpBackend, job: Job, remote: RemoteJob, emit: Emit
    ) -> tuple[RemoteResult, float, int]:
        """This picture, rendered in one request with its job's sibling candidates when they come."""
        key = (job.id, route.backend, replace(remote, seed=0))
        batch = self._open.get(key)
        if batch is not None and len(batch.members) < backend.capabilities.max_batch:
            future: asyncio.Future[tuple[RemoteResult, float, int]] = asyncio.get_running_loop().create_future()
            batch.members.append((remote.seed, future))
            if len(batch.members) + 1 >= min(job.candidates, backend.capabilities.max_batch):
                batch.full.set()
            return await future
        batch = _Batch(members=[])
        self._open[key] = batch
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(batch.full.wait(), BATCH_WINDOW_S)
        finally:
            if self._open.get(key) is batch:
                del self._open[key]
        followers = batch.members
        seeds = sorted([remote.seed, *(seed for seed, _ in followers)])
        if len(seeds) == 1 or seeds != list(range(seeds[0], seeds[0] + len(seeds))):
            # Not one consecutive run (a wrapped seed): each picture alone, in parallel.
            async def alone(seed: int, future: asyncio.Future[tuple[RemoteResult, float, int]]) -> None:
                try:
                    results, took = await self._call(route, backend, job, replace(remote, seed=seed), 1, emit)
                    future.set_result((results[0], took, 1))
                except BaseException as exc:
                    future.set_exception(exc if isinstance(exc, Exception) else JobCancelled())

            for seed, future in followers:
                asyncio.ensure_future(alone(seed, future))
            results, took = await self._call(route, backend, job, remote, 1, emit)
            return results[0], took, 1
        try:
            results, took = await self._call(route, backend, job, replace(remote, seed=seeds[0]), len(seeds), emit)
        except BaseException as exc:
            for _, future in followers:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else JobCancelled())
            raise
        by_seed = dict(zip(seeds, results, strict=True))
        for seed, future in followers:
            if not future.done():
                future.set_result((by_seed[seed], took, len(seeds)))
        return by_seed[remote.seed], took, len(seeds)


@dataclass(eq=False)
class _Batch:
    """Candidates of one job waiting to go out in one request: (seed, where its picture goes)."""

    members: list[tuple[int, asyncio.Future[tuple[RemoteResult, float, int]]]]
    full: asyncio.Event = field(default_factory=asyncio.Event)  # every candidate of the job is here


def resolve(request: RenderRequest, route: Route) -> RemoteJob:
    """A validated request with every option the backend needs filled in from the model's profile."""
    profile = route.profile
    if request.width is not None and request.height is not None:
        width, height = request.width, request.height
        aspect = nearest_aspect(width, height)
    elif request.aspect is not None:
        width, height = families.aspect_size(profile.native_size, request.aspect)
        aspect = request.aspect
    else:
        width, height = profile.native_size
        aspect = nearest_aspect(width, height)
    if request.seed is None:
        raise ValueError("resolve() takes a validated request (its seed chosen)")
    return RemoteJob(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=int(request.seed),
        steps=int(request.steps if request.steps is not None else profile.default_steps),
        guidance=float(request.guidance if request.guidance is not None else profile.default_guidance),
        width=width,
        height=height,
        aspect=aspect,
        model=route.model,
        init_image=request.init_image,
        strength=float(request.strength),
        loras=request.loras,
    )


async def remote_control(backend: HttpBackend, spec: ControlSpec, job: RemoteJob) -> RemoteControl:
    """The ControlNet part of a remote job, or a clear refusal: the backend applies no ControlNet,
    not this mode, or its settings name no model for it."""
    from ..control import remote_control_image

    label = LABELS[backend.name]
    if spec.mode not in backend.capabilities.controls:
        if not backend.capabilities.controls:
            raise BadRequest(f"{label} can't apply a ControlNet control; pick a model rendered elsewhere.")
        offered = ", ".join(sorted(backend.capabilities.controls))
        raise BadRequest(f"{label} can't apply the {spec.mode} control (it can: {offered}).")
    model = backend.controlnet_models.get(spec.mode)
    if not model:
        setting = f"{backend.name.upper()}_CONTROLNET_MODELS"
        raise BadRequest(f"{label} has no ControlNet model for {spec.mode} ({setting} names none).")
    image, preprocessor = await asyncio.to_thread(remote_control_image, spec, job.width, job.height)
    return RemoteControl(spec.mode, float(spec.strength), image, model, preprocessor)


def _control_preview(control: RemoteControl | None) -> Image.Image | None:
    """The control image sent (for Details), or None."""
    if control is None:
        return None
    with Image.open(io.BytesIO(control.image)) as image:
        return image.convert("RGB")


def nearest_aspect(width: int, height: int) -> str:
    ratio = width / height
    return min(families.ASPECTS, key=lambda a: abs(_ratio(a) - ratio))


def _ratio(aspect: str) -> float:
    w, h = families.parse_aspect(aspect)
    return w / h


_TOKEN = re.compile(r"\w+|[^\w\s]")


def approximate_tokens(prompt: str) -> int:
    """Roughly the CLIP tokens of ``prompt`` (words and punctuation; no tokenizer on this side)."""
    return len(_TOKEN.findall(prompt))


def _unknown_profile() -> FamilyProfile:
    return family_profile("sd", 512, 512)


def build_backend(name: str, settings: Settings) -> HttpBackend:
    """One backend from validated settings (a missing API key or token is refused once, in
    ``Settings._backends_configured``, naming the setting)."""
    from ..control import parse_remote_controlnet_models

    common: dict[str, Any] = {"timeout_s": settings.REMOTE_TIMEOUT_S, "retries": settings.REMOTE_RETRIES}
    if name == "a1111":
        from .a1111 import A1111Backend

        return A1111Backend(
            settings.A1111_URL,
            model=settings.A1111_MODEL,
            controlnet_models=parse_remote_controlnet_models(
                settings.A1111_CONTROLNET_MODELS, "A1111_CONTROLNET_MODELS"
            ),
            **common,
        )
    if name == "comfyui":
        from .comfyui import ComfyUIBackend

        return ComfyUIBackend(
            settings.COMFYUI_URL,
            checkpoint=settings.COMFYUI_CHECKPOINT,
            workflow=settings.COMFYUI_WORKFLOW,
            img2img_workflow=settings.COMFYUI_IMG2IMG_WORKFLOW,
            controlnet_models=parse_remote_controlnet_models(
                settings.COMFYUI_CONTROLNET_MODELS, "COMFYUI_CONTROLNET_MODELS"
            ),
            **common,
        )
    if name == "stability":
        from .stability import StabilityBackend

        assert settings.STABILITY_API_KEY is not None, "Settings._backends_configured refuses a missing key"
        return StabilityBackend(
            settings.STABILITY_URL,
            api_key=settings.STABILITY_API_KEY.get_secret_value(),
            model=settings.STABILITY_MODEL,
            **common,
        )
    if name == "replicate":
        from .replicate import ReplicateBackend

        assert settings.REPLICATE_API_TOKEN is not None, "Settings._backends_configured refuses a missing token"
        return ReplicateBackend(
            settings.REPLICATE_URL,
            api_token=settings.REPLICATE_API_TOKEN.get_secret_value(),
            model=settings.REPLICATE_MODEL,
            **common,
        )
    raise ValueError(f"unknown render backend {name!r}")
