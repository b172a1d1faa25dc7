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
        #: The ControlNet models the sd-webui-controlnet extension has (GET /controlnet/model_list).
        self.controlnet_models = {
            "control_v11p_sd15_canny",
            "control_v11f1p_sd15_depth",
            "control_v11p_sd15_openpose",
            "control_v11f1e_sd15_tile",
        }
        self.controlnet_images: list[Image.Image] = []  # the control images received, decoded
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
        problem = self._controlnet_problem(payload)
        if problem:  # what the extension answers for a unit it can't run
            return web.json_response({"error": "RuntimeError", "detail": problem}, status=422)
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

    def _controlnet_problem(self, payload: dict[str, Any]) -> str | None:
        """sd-webui-controlnet's checks of ``alwayson_scripts.controlnet.args``: a known model, a
        known preprocessor, a decodable image, a weight."""
        scripts = payload.get("alwayson_scripts") or {}
        if "controlnet" not in scripts:
            return None
        args = scripts["controlnet"].get("args") if isinstance(scripts["controlnet"], dict) else None
        if not isinstance(args, list) or not args:
            return "controlnet: args must be a list of units"
        for unit in args:
            if unit.get("model") not in self.controlnet_models:
                return f"ControlNet model {unit.get('model')!r} not found"
            if unit.get("module") not in {"none", "canny", "depth_midas", "openpose"}:
                return f"unknown preprocessor {unit.get('module')!r}"
            if not isinstance(unit.get("weight"), int | float):
                return "weight must be a number"
            try:
                data = base64.b64decode(unit["image"], validate=True)
                with Image.open(io.BytesIO(data)) as image:
                    self.controlnet_images.append(image.convert("RGB"))
            except (KeyError, binascii.Error, OSError):
                return "controlnet: the image is not a picture"
        return None
