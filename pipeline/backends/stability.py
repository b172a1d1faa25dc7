"""Stability AI's hosted Stable Image API (v2beta), with an API key (``STABILITY_API_KEY``).

``POST /v2beta/stable-image/generate/{sd3|core|ultra}`` takes ``multipart/form-data``: ``prompt``,
``negative_prompt``, ``aspect_ratio``, ``seed``, ``output_format``; the ``sd3`` endpoint also
``model`` (``sd3.5-large`` ...), ``cfg_scale``, and ``mode=image-to-image`` with ``image`` and
``strength``. With ``accept: application/json`` the answer is ``{"image": base64, "finish_reason":
"SUCCESS" | "CONTENT_FILTERED", "seed": n}``; with ``accept: image/*`` it is the picture, with
``finish-reason`` and ``seed`` headers. Errors are ``{"id", "name", "errors": [text]}``.

The service chooses the pixels from the aspect ratio and the step count itself, and reports no
progress; a request cannot be cancelled once sent (we drop its answer).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from ..errors import JobCancelled
from .base import (
    MAX_RESPONSE_BYTES,
    BackendGarbage,
    Capabilities,
    HttpBackend,
    ProgressFn,
    RemoteJob,
    RemoteResult,
    StopFn,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.stability.ai"
DEFAULT_MODEL = "sd3.5-large"
#: Stability's aspect ratios (the ones VoxCanvas offers are a subset, but for 4:3/3:4 → 5:4/4:5).
ASPECTS = {"1:1", "16:9", "9:16", "21:9", "9:21", "2:3", "3:2", "4:5", "5:4"}
_ASPECT_MAP = {"4:3": "5:4", "3:4": "4:5"}


class StabilityBackend(HttpBackend):
    name = "stability"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        model: str = DEFAULT_MODEL,
        accept: str = "application/json",
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url or DEFAULT_BASE_URL, **kwargs)
        self.api_key = api_key
        self.default_model = model
        self.accept = accept
        self.capabilities = Capabilities(
            sizes="aspect", steps=False, guidance=model.startswith("sd3"), img2img=model.startswith("sd3")
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "accept": self.accept}

    @staticmethod
    def endpoint(model: str) -> str:
        if model in ("core", "ultra"):
            return f"/v2beta/stable-image/generate/{model}"
        return "/v2beta/stable-image/generate/sd3"

    def form(self, job: RemoteJob) -> aiohttp.FormData:
        model = job.model or self.default_model
        form = aiohttp.FormData(default_to_multipart=True)  # the API takes multipart only
        form.add_field("prompt", job.prompt)
        if job.negative_prompt:
            form.add_field("negative_prompt", job.negative_prompt)
        form.add_field("seed", str(job.seed))
        form.add_field("output_format", "png")
        if model.startswith("sd3"):
            form.add_field("model", model)
            form.add_field("cfg_scale", f"{job.guidance:g}")
        if job.init_image is not None:
            form.add_field("mode", "image-to-image")
            form.add_field("image", job.init_image, filename="init.png", content_type="application/octet-stream")
            form.add_field("strength", f"{job.strength:g}")
        else:
            form.add_field("aspect_ratio", _ASPECT_MAP.get(job.aspect, job.aspect if job.aspect in ASPECTS else "1:1"))
        return form

    async def render(self, job: RemoteJob, *, progress: ProgressFn, should_stop: StopFn) -> RemoteResult:
        model = job.model or self.default_model
        _, headers, body = await self.request(
            "POST",
            self.endpoint(model),
            data=lambda: self.form(job),
            max_bytes=MAX_RESPONSE_BYTES,
            should_stop=should_stop,
        )
        if should_stop():
            raise JobCancelled()
        content_type = headers.get("Content-Type", "")
        if content_type.startswith("image/"):
            finish, seed = headers.get("finish-reason", "SUCCESS"), headers.get("seed")
            image = await asyncio.to_thread(self.decode_image, body)
        else:
            answer = self.parse_json(body)
            if not isinstance(answer, dict):
                raise BackendGarbage(self.name, "not an object")
            finish, seed = answer.get("finish_reason", "SUCCESS"), answer.get("seed")
            image = await asyncio.to_thread(self.decode_base64_image, answer.get("image"))
        try:
            used_seed = int(seed) if seed is not None else job.seed
        except (TypeError, ValueError):
            used_seed = job.seed
        progress(1, 1)
        return RemoteResult(image=image, seed=used_seed, nsfw=finish == "CONTENT_FILTERED")
