"""A fake Replicate API: ``POST /v1/models/{owner}/{name}/predictions``, ``POST /v1/predictions``
(with ``version``), ``GET /v1/predictions/{id}``, ``POST /v1/predictions/{id}/cancel``; outputs
served from ``/files/`` on the same server."""

from __future__ import annotations

import asyncio
import base64
import io
import uuid
from typing import Any

from aiohttp import web
from PIL import Image

from .common import FakeBackend, picture, png


class FakeReplicate(FakeBackend):
    def __init__(self, *, api_token: str = "r8_test", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_token = api_token
        self.predictions: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.cancelled: list[str] = []
        self.fail_with: str | None = None  # the next prediction fails with this error

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self.create)
        app.router.add_post("/v1/predictions", self.create)
        app.router.add_get("/v1/predictions/{id}", self.get)
        app.router.add_post("/v1/predictions/{id}/cancel", self.cancel)
        app.router.add_get("/files/{name}", self.file)

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_token}"

    async def create(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response(
                {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401},
                status=401,
            )
        body = await request.json()
        self.seen[-1].body = body
        values = body.get("input") if isinstance(body, dict) else None
        if not isinstance(values, dict) or not isinstance(values.get("prompt"), str):
            return web.json_response(
                {"title": "Input validation failed", "detail": "- input: prompt is required", "status": 422}, status=422
            )
        pid = uuid.uuid4().hex[:26]
        base = str(request.url.origin())
        prediction: dict[str, Any] = {
            "id": pid,
            "model": f"{request.match_info.get('owner', 'x')}/{request.match_info.get('name', 'y')}",
            "version": body.get("version", "hidden"),
            "input": values,
            "logs": "",
            "output": None,
            "error": None,
            "status": "starting",
            "urls": {"get": f"{base}/v1/predictions/{pid}", "cancel": f"{base}/v1/predictions/{pid}/cancel"},
        }
        self.predictions[pid] = prediction
        task = asyncio.get_running_loop().create_task(self._run(pid, base))
        prefer = request.headers.get("Prefer", "")
        if prefer.startswith("wait"):  # sync mode: hold the answer until done, at most N seconds
            seconds = float(prefer.partition("=")[2] or 60)
            await asyncio.wait({task}, timeout=min(60.0, seconds))
        return web.json_response(prediction, status=201)

    async def _run(self, pid: str, base: str) -> None:
        prediction = self.predictions[pid]
        values = prediction["input"]
        steps = int(values.get("num_inference_steps", 4))
        self.renders_started += 1
        await asyncio.sleep(self.step_s)
        prediction["status"] = "processing"
        for step in range(1, steps + 1):
            await asyncio.sleep(self.step_s)
            if prediction["status"] == "canceled":
                return
            prediction["logs"] += f"{100 * step // steps:3d}%|####      | {step}/{steps} [00:01<00:01, 9.9it/s]\n"
        if self.fail_with is not None:
            prediction.update(status="failed", error=self.fail_with)
            self.fail_with = None
            return
        if "image" in values:
            data = base64.b64decode(values["image"].split(",", 1)[1])
            width, height = Image.open(io.BytesIO(data)).size
        else:
            width, height = int(values.get("width", 64)), int(values.get("height", 64))
        name = f"{pid}.png"
        self.files[name] = png(picture(int(values.get("seed", 0)), width, height))
        prediction.update(status="succeeded", output=[f"{base}/files/{name}"])
        self.renders_finished += 1

    async def get(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"detail": "Unauthenticated", "status": 401}, status=401)
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return web.json_response({"detail": "Not found.", "status": 404}, status=404)
        return web.json_response(prediction)

    async def cancel(self, request: web.Request) -> web.Response:
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return web.json_response({"detail": "Not found.", "status": 404}, status=404)
        if prediction["status"] in ("starting", "processing"):
            prediction["status"] = "canceled"
            self.cancelled.append(prediction["id"])
            self.interrupted += 1
        return web.json_response(prediction)

    async def file(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="image/png")
