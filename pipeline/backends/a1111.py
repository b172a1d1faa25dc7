"""AUTOMATIC1111's web UI API (and Forge, which speaks the same): ``--api`` on the server.

* ``POST /sdapi/v1/txt2img`` / ``POST /sdapi/v1/img2img`` (``init_images``: base64,
  ``denoising_strength``) answer ``{"images": [base64 PNG], "parameters": {...}, "info": "<JSON
  text with seed, all_seeds ...>"}`` once the picture is done;
* meanwhile ``GET /sdapi/v1/progress?skip_current_image=true`` gives ``state.sampling_step`` /
  ``state.sampling_steps`` (the server's current job: with ``REMOTE_CONCURRENCY=1`` that is ours);
* ``POST /sdapi/v1/interrupt`` stops the running job; the server then answers the render call
  with what it has, which we drop (the job was cancelled).

The checkpoint is chosen per request with ``override_settings.sd_model_checkpoint`` (empty: the
one the server has loaded); LoRAs use the web UI's own ``<lora:name:weight>`` prompt syntax.
ControlNet goes through the sd-webui-controlnet extension (built into Forge):
``alwayson_scripts.controlnet.args`` with the control image (made here: canny edges, palette bands,
a pose skeleton; for depth the picture itself with the ``depth_midas`` preprocessor), the model
from ``A1111_CONTROLNET_MODELS`` and the strength as ``weight``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from typing import Any

from .. import limits
from ..errors import JobCancelled
from .base import (
    MAX_RESPONSE_BYTES,
    POLL_INTERVAL_S,
    BackendError,
    BackendGarbage,
    Capabilities,
    HttpBackend,
    ProgressFn,
    RemoteJob,
    RemoteResult,
    StopFn,
)

log = logging.getLogger(__name__)

#: How often the progress endpoint is polled while a render runs.
PROGRESS_INTERVAL_S = 0.5
SAMPLER = "Euler a"


class A1111Backend(HttpBackend):
    name = "a1111"
    #: ``batch_size`` pictures in one txt2img/img2img call, seeds ``seed .. seed+n-1`` (as the web UI
    #: numbers them), so each candidate can be rendered again alone from its own seed.
    capabilities = Capabilities(
        progress=True,
        cancel=True,
        loras=True,
        max_batch=limits.MAX_CANDIDATES,
        controls=frozenset({"canny", "depth", "pose", "palette"}),
    )

    def __init__(self, base_url: str, *, model: str = "", sampler: str = SAMPLER, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.default_model = model
        self.sampler = sampler

    def payload(self, job: RemoteJob, count: int = 1) -> dict[str, Any]:
        prompt = job.prompt + "".join(f" <lora:{name}:{weight:g}>" for name, weight in job.loras)
        payload: dict[str, Any] = {
            "prompt": prompt,
            "negative_prompt": job.negative_prompt,
            "seed": job.seed,
            "steps": job.steps,
            "cfg_scale": job.guidance,
            "width": job.width,
            "height": job.height,
            "batch_size": count,
            "n_iter": 1,
            "sampler_name": self.sampler,
            "send_images": True,
            "save_images": False,
        }
        if job.model:
            payload["override_settings"] = {"sd_model_checkpoint": job.model}
            payload["override_settings_restore_afterwards"] = False  # switching checkpoints back and forth is slow
        if job.init_image is not None:
            payload["init_images"] = [base64.b64encode(job.init_image).decode("ascii")]
            payload["denoising_strength"] = job.strength
        if job.control is not None:  # the sd-webui-controlnet extension's API (Forge has it built in)
            payload["alwayson_scripts"] = {
                "controlnet": {
                    "args": [
                        {
                            "enabled": True,
                            "image": base64.b64encode(job.control.image).decode("ascii"),
                            "module": job.control.preprocessor,
                            "model": job.control.model,
                            "weight": job.control.strength,
                            "resize_mode": "Crop and Resize",
                            "processor_res": min(job.width, job.height),
                            "pixel_perfect": False,
                            "guidance_start": 0.0,
                            "guidance_end": 1.0,
                            "control_mode": "Balanced",
                        }
                    ]
                }
            }
        return payload

    async def render(self, job: RemoteJob, *, progress: ProgressFn, should_stop: StopFn) -> RemoteResult:
        return (await self.render_many(job, 1, progress=progress, should_stop=should_stop))[0]

    async def render_many(
        self, job: RemoteJob, count: int, *, progress: ProgressFn, should_stop: StopFn
    ) -> list[RemoteResult]:
        """``count`` pictures of ``job`` in one request (``batch_size``), seeds ``job.seed + i``."""
        path = "/sdapi/v1/img2img" if job.init_image is not None else "/sdapi/v1/txt2img"
        payload = self.payload(job, count)
        call = asyncio.ensure_future(self.post_json(path, payload, max_bytes=MAX_RESPONSE_BYTES))

        async def poll() -> None:  # its own task: a slow progress answer never delays the render's
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL_S)
                await self._poll_progress(progress)

        poller = asyncio.ensure_future(poll())
        try:
            while not call.done():
                if should_stop():
                    await self._interrupt(call)
                    raise JobCancelled()
                await asyncio.wait({call}, timeout=POLL_INTERVAL_S)
        finally:
            for task in (poller, call):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
        answer = call.result()
        if should_stop():
            raise JobCancelled()
        if not isinstance(answer, dict) or not isinstance(answer.get("images"), list) or not answer["images"]:
            raise BackendGarbage(self.name, "no images in the answer")
        # The web UI may append extra pictures (a grid, ControlNet's detected maps): the first
        # ``count`` are the batch.
        if len(answer["images"]) < count:
            raise BackendGarbage(self.name, f"{len(answer['images'])} images for a batch of {count}")
        images = await asyncio.gather(
            *(asyncio.to_thread(self.decode_base64_image, data) for data in answer["images"][:count])
        )
        progress(job.steps, job.steps)
        seeds = _seeds_of(answer, job.seed, count)
        return [RemoteResult(image=image, seed=seed) for image, seed in zip(images, seeds, strict=True)]

    async def _poll_progress(self, progress: ProgressFn) -> None:
        try:
            state = await self.get_json(
                "/sdapi/v1/progress", params={"skip_current_image": "true"}, retries=0, timeout_s=5.0
            )
        except BackendError as exc:  # progress is a nicety: a missed poll is not a failed render
            log.debug("A1111 progress poll failed: %s", exc)
            return
        info = state.get("state") if isinstance(state, dict) else None
        if isinstance(info, dict):
            step, total = info.get("sampling_step"), info.get("sampling_steps")
            if isinstance(step, int) and isinstance(total, int) and 0 < total and 0 <= step <= total:
                progress(step, total)

    async def _interrupt(self, call: asyncio.Future[Any]) -> None:
        """Stop the server's running job and let the render call end (bounded)."""
        try:
            await self.request("POST", "/sdapi/v1/interrupt", retries=1, timeout_s=5.0)
        except BackendError as exc:
            log.info("A1111 interrupt failed: %s", exc)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(call), 5.0)


def _seeds_of(answer: dict[str, Any], sent: int, count: int) -> list[int]:
    """The seeds A1111 used (``info`` is a JSON *string* with ``seed`` and ``all_seeds``); the ones
    we asked for (``sent + i``) when it does not say."""
    info = answer.get("info")
    with contextlib.suppress(ValueError, TypeError):
        parsed = json.loads(info) if isinstance(info, str) else info
        if isinstance(parsed, dict):
            seeds = parsed.get("all_seeds")
            if isinstance(seeds, list) and len(seeds) >= count and all(isinstance(x, int) for x in seeds[:count]):
                return [int(x) for x in seeds[:count]]
            if isinstance(parsed.get("seed"), int):
                return [int(parsed["seed"]) + i for i in range(count)]
    return [sent + i for i in range(count)]
