"""A fake Stability AI v2beta Stable Image API: ``POST /v2beta/stable-image/generate/{sd3,core,ultra}``
(multipart), answering an image (``accept: image/*``) or JSON with base64, and its error envelope
``{"id", "name", "errors"}``."""

from __future__ import annotations

import asyncio
import base64
import io
import uuid
from typing import Any

from aiohttp import web
from PIL import Image

from .common import FakeBackend, picture, png

#: The fake's pixels per aspect ratio (small, for speed; the real service gives ~1 megapixel).
SIZES = {
    "1:1": (64, 64),
    "16:9": (96, 56),
    "9:16": (56, 96),
    "21:9": (112, 48),
    "9:21": (48, 112),
    "2:3": (56, 80),
    "3:2": (80, 56),
    "4:5": (56, 72),
    "5:4": (72, 56),
}


def envelope(name: str, *errors: str) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "name": name, "errors": list(errors)}


class FakeStability(FakeBackend):
    def __init__(self, *, api_key: str = "sk-test", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        self.forms: list[dict[str, Any]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2beta/stable-image/generate/{endpoint}", self.generate)

    async def generate(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                envelope("unauthorized", "authorization: invalid or missing header value"), status=401
            )
        if request.match_info["endpoint"] not in ("sd3", "core", "ultra"):
            return web.json_response(envelope("not_found", "unknown endpoint"), status=404)
        if not request.content_type.startswith("multipart/form-data"):
            return web.json_response(envelope("bad_request", "content-type: must be multipart/form-data"), status=400)
        form = await request.post()
        fields: dict[str, Any] = {k: (v if isinstance(v, str) else v.file.read()) for k, v in form.items()}
        self.forms.append(fields)
        self.seen[-1].body = fields
        prompt = fields.get("prompt", "")
        if not prompt:
            return web.json_response(envelope("bad_request", "prompt: cannot be empty"), status=400)
        seed = int(fields.get("seed", 0))
        if fields.get("mode") == "image-to-image":
            init = fields.get("image")
            if not isinstance(init, bytes):
                return web.json_response(envelope("bad_request", "image: required for image-to-image"), status=400)
            width, height = Image.open(io.BytesIO(init)).size
        else:
            aspect = fields.get("aspect_ratio", "1:1")
            if aspect not in SIZES:
                return web.json_response(
                    envelope("bad_request", f"aspect_ratio: must be one of {', '.join(SIZES)}"), status=400
                )
            width, height = SIZES[aspect]
        self.renders_started += 1
        await asyncio.sleep(self.step_s * 4)
        self.renders_finished += 1
        finish = "CONTENT_FILTERED" if "forbidden" in prompt else "SUCCESS"
        data = png(picture(seed, width, height))
        if request.headers.get("accept", "").startswith("image/"):
            return web.Response(
                body=data, content_type="image/png", headers={"finish-reason": finish, "seed": str(seed)}
            )
        return web.json_response({"image": base64.b64encode(data).decode(), "finish_reason": finish, "seed": seed})
