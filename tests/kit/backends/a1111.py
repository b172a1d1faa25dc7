"""A fake AUTOMATIC1111/Forge API: ``/sdapi/v1/txt2img``, ``/img2img``, ``/progress``, ``/interrupt``."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
from typing import Any

from aiohttp import web
from PIL import Image

from .common import FakeBackend, picture, png


class FakeA1111(FakeBackend):
    """One job at a time, like the web UI (a second render waits for the first).

    ``batch_size`` pictures per call (``max_batch`` at most, as a server's memory would allow),
    seeds ``seed + i`` in ``info.all_seeds`` as the web UI numbers them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lock = asyncio.Lock()
        self.step = 0
        self.steps = 0
        self._interrupt = False
        self.payloads: list[dict[str, Any]] = []
        self.max_batch = 8

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/sdapi/v1/txt2img", self.txt2img)
        app.router.add_post("/sdapi/v1/img2img", self.img2img)
        app.router.add_get("/sdapi/v1/progress", self.progress)
        app.router.add_post("/sdapi/v1/interrupt", self.interrupt)

    async def txt2img(self, request: web.Request) -> web.Response:
        return await self._render(request, img2img=False)

    async def img2img(self, request: web.Request) -> web.Response:
        return await self._render(request, img2img=True)

    async def _render(self, request: web.Request, *, img2img: bool) -> web.Response:
        payload = await request.json()
        self.seen[-1].body = payload
        self.payloads.append(payload)
        for key, kind in (("prompt", str), ("steps", int), ("width", int), ("height", int), ("seed", int)):
            if not isinstance(payload.get(key), kind):
                return web.json_response({"detail": [{"loc": ["body", key], "msg": "field required"}]}, status=422)
        batch = payload.get("batch_size", 1)
        if not isinstance(batch, int) or not 1 <= batch <= self.max_batch or payload.get("n_iter", 1) != 1:
            return web.json_response({"detail": [{"loc": ["body", "batch_size"], "msg": "bad batch"}]}, status=422)
        if img2img:
            try:
                data = base64.b64decode(payload["init_images"][0], validate=True)
                Image.open(io.BytesIO(data)).verify()
            except (KeyError, IndexError, binascii.Error, OSError):
                return web.json_response({"error": "ValueError", "detail": "bad init image"}, status=422)
        async with self.lock:
            self.renders_started += 1
            self._interrupt = False
            self.step, self.steps = 0, payload["steps"]
            for _ in range(self.steps):
                await asyncio.sleep(self.step_s)
                if self._interrupt:
                    break
                self.step += 1
            if not self._interrupt:  # interrupted: answered anyway, with the picture so far (as A1111 does)
                self.renders_finished += 1
            seed = payload["seed"]
            seeds = [seed + i for i in range(batch)]
            images = [picture(s, payload["width"], payload["height"]) for s in seeds]
            info = {"prompt": payload["prompt"], "seed": seed, "all_seeds": seeds, "steps": payload["steps"]}
            self.step, self.steps = 0, 0
            body = {
                "images": [base64.b64encode(png(image)).decode() for image in images],
                "parameters": {k: v for k, v in payload.items() if k != "init_images"},
                "info": json.dumps(info),
            }
            return web.json_response(body)

    async def progress(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "progress": self.step / self.steps if self.steps else 0.0,
                "eta_relative": 0.0,
                "state": {
                    "skipped": False,
                    "interrupted": self._interrupt,
                    "job": "",
                    "job_count": 1 if self.steps else 0,
                    "job_no": 0,
                    "sampling_step": self.step,
                    "sampling_steps": self.steps,
                },
                "current_image": None,
                "textinfo": None,
            }
        )

    async def interrupt(self, request: web.Request) -> web.Response:
        self._interrupt = True
        self.interrupted += 1
        return web.json_response({})
