"""Replicate's predictions API, with an API token (``REPLICATE_API_TOKEN``).

* ``REPLICATE_MODEL=owner/name`` (an official model): ``POST /v1/models/{owner}/{name}/predictions``
  ``{"input": {...}}``; ``owner/name:version``: ``POST /v1/predictions`` ``{"version", "input"}``;
* ``Prefer: wait=1`` asks Replicate to hold the create call until the prediction is done (its
  "sync mode"): a fast model needs no polling;
* the answer is a prediction ``{"id", "status", "output", "error", "logs", "urls": {"get", "cancel"}}``;
  we poll ``GET /v1/predictions/{id}`` until ``status`` is ``succeeded`` (``output``: a URL or a
  list of URLs, fetched with the same bounds as any image), ``failed`` or ``canceled``;
* progress is read from the prediction's ``logs`` (the model's own ``12/25`` step counter, when it
  prints one); ``POST /v1/predictions/{id}/cancel`` stops it.

The input is the SDXL-style schema most text-to-image models on Replicate take (``prompt``,
``negative_prompt``, ``width``, ``height``, ``num_inference_steps``, ``guidance_scale``, ``seed``,
``image`` + ``prompt_strength`` for image-to-image, as a data URI).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from typing import Any

from .. import limits
from ..errors import JobCancelled
from .base import (
    POLL_INTERVAL_S,
    BackendError,
    BackendGarbage,
    BackendRefused,
    Capabilities,
    HttpBackend,
    ProgressFn,
    RemoteJob,
    RemoteResult,
    StopFn,
    sleep_unless_stopped,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.replicate.com"
DEFAULT_MODEL = "stability-ai/sdxl"
_STEP = re.compile(r"(\d+)\s*/\s*(\d+)")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_MODEL = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(:[0-9a-f]{8,128})?$")
#: ``Prefer: wait=N`` (Replicate's sync mode, 1-60 s): the create call answers when done, up to N s.
WAIT_S = 1  # short: a create call cannot be cancelled (no prediction id yet) while it waits
#: Polling starts at POLL_INTERVAL_S and slows to this (a long queue on Replicate's side).
MAX_POLL_S = 2.0


def check_model(model: str) -> str:
    if not _MODEL.match(model):
        raise ValueError(f"a Replicate model is owner/name or owner/name:version (got {model!r})")
    return model


class ReplicateBackend(HttpBackend):
    name = "replicate"
    capabilities = Capabilities(progress=True, cancel=True)

    def __init__(self, base_url: str, *, api_token: str, model: str = DEFAULT_MODEL, **kwargs: Any) -> None:
        super().__init__(base_url or DEFAULT_BASE_URL, **kwargs)
        self.api_token = api_token
        self.default_model = check_model(model)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}"}

    def input_of(self, job: RemoteJob) -> dict[str, Any]:
        values: dict[str, Any] = {
            "prompt": job.prompt,
            "width": job.width,
            "height": job.height,
            "num_inference_steps": job.steps,
            "guidance_scale": job.guidance,
            "seed": job.seed,
            "num_outputs": 1,
        }
        if job.negative_prompt:
            values["negative_prompt"] = job.negative_prompt
        if job.init_image is not None:
            values["image"] = "data:application/octet-stream;base64," + base64.b64encode(job.init_image).decode()
            values["prompt_strength"] = job.strength
        return values

    async def render(self, job: RemoteJob, *, progress: ProgressFn, should_stop: StopFn) -> RemoteResult:
        model = check_model(job.model or self.default_model)
        name, _, version = model.partition(":")
        if version:
            path, body = "/v1/predictions", {"version": version, "input": self.input_of(job)}
        else:
            path, body = f"/v1/models/{name}/predictions", {"input": self.input_of(job)}
        # Sync mode: Replicate holds the answer until the prediction is done (or WAIT_S passed), so
        # a fast model needs no polling at all; a slower one is polled from where it stands.
        prediction = await self.post_json(path, body, should_stop=should_stop, headers={"Prefer": f"wait={WAIT_S}"})
        pid = prediction.get("id") if isinstance(prediction, dict) else None
        if not isinstance(pid, str) or not _ID.match(pid):
            raise BackendGarbage(self.name, "no prediction id")
        delay = POLL_INTERVAL_S
        try:
            while True:
                status = prediction.get("status")
                if status == "succeeded":
                    break
                if status == "failed":
                    raise BackendRefused(self.name, str(prediction.get("error") or "the prediction failed")[:200])
                if status == "canceled":
                    if should_stop():
                        raise JobCancelled()
                    raise BackendError(self.name, "The Replicate prediction was cancelled on Replicate's side.")
                if status not in ("starting", "processing"):
                    raise BackendGarbage(self.name, f"unknown status {str(status)[:40]!r}")
                _report(prediction.get("logs"), progress)
                await sleep_unless_stopped(delay, should_stop)
                delay = min(MAX_POLL_S, delay * 1.5)
                prediction = await self.get_json(f"/v1/predictions/{pid}", should_stop=should_stop)
                if not isinstance(prediction, dict):
                    raise BackendGarbage(self.name, "a prediction that is not an object")
        except JobCancelled:
            with contextlib.suppress(BackendError):
                await self.request("POST", f"/v1/predictions/{pid}/cancel", retries=0, timeout_s=5.0)
            raise
        output = prediction.get("output")
        url = output[0] if isinstance(output, list) and output else output
        if not isinstance(url, str) or not url.startswith(("https://", "http://", "data:")):
            raise BackendGarbage(self.name, "no output picture")
        if url.startswith("data:"):
            image = await asyncio.to_thread(self.decode_base64_image, url)
        else:
            _, _, data = await self.request("GET", url, max_bytes=limits.MAX_IMAGE_BYTES, should_stop=should_stop)
            image = await asyncio.to_thread(self.decode_image, data)
        if should_stop():
            raise JobCancelled()
        progress(job.steps, job.steps)
        return RemoteResult(image=image, seed=job.seed)


def _report(logs: object, progress: ProgressFn) -> None:
    """The last ``step/total`` the model printed (tqdm: `` 48%|████▊     | 12/25 [...]``)."""
    if not isinstance(logs, str) or not logs:
        return
    matches = _STEP.findall(logs[-2000:])
    if matches:
        step, total = (int(x) for x in matches[-1])
        if 0 < total <= limits.MAX_STEPS * 10 and 0 <= step <= total:
            progress(step, total)
