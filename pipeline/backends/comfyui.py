"""ComfyUI's HTTP + websocket API.

1. (image-to-image) ``POST /upload/image`` (multipart ``image``) → ``{"name", "subfolder", "type"}``;
2. ``GET /ws?clientId=<id>`` (websocket) is opened *before* the prompt is queued, so no message
   is missed;
3. ``POST /prompt`` ``{"prompt": <API-format graph>, "client_id": <id>}`` → ``{"prompt_id", ...}``
   (400: ``{"error": {"message", ...}, "node_errors": {...}}``);
4. the websocket then says ``execution_start``, ``executing`` ``{node}``, ``progress``
   ``{value, max}``, ``executed`` ``{node, output: {images: [{filename, subfolder, type}]}}``,
   and ``executing`` with ``node: null`` when the prompt is done (``execution_error`` /
   ``execution_interrupted`` when not). Binary frames are previews; we drop them unshown
   (a preview has not passed the safety checker or the server's NSFW policy, which judge the
   finished picture; see README "Render backends");
5. ``GET /view?filename=&subfolder=&type=`` gives the picture. If the websocket drops, the
   outputs are read from ``GET /history/<prompt_id>`` instead.

Cancel: ``POST /interrupt`` (the running prompt) and ``POST /queue {"delete": [id]}`` (if queued).

Workflows are ComfyUI's "API format" JSON (Save (API Format) in its menu). The shipped defaults
(``data/comfyui_txt2img.json``, ``data/comfyui_img2img.json``) are the stock SD/SDXL graphs; a
deployment's own is named by ``COMFYUI_WORKFLOW`` (and ``COMFYUI_IMG2IMG_WORKFLOW``). In any
string input, these placeholders are replaced: ``{{prompt}}``, ``{{negative_prompt}}``,
``{{seed}}``, ``{{steps}}``, ``{{cfg}}``, ``{{width}}``, ``{{height}}``, ``{{checkpoint}}``,
``{{denoise}}`` and ``{{image}}`` (the uploaded init image). An input that is exactly one
placeholder gets the value with its type (a number for ``{{seed}}``); inside longer text, its text.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp

from .. import limits
from ..errors import BadRequest, JobCancelled
from .base import (
    MAX_JSON_BYTES,
    POLL_INTERVAL_S,
    BackendError,
    BackendGarbage,
    BackendRefused,
    BackendUnavailable,
    Capabilities,
    HttpBackend,
    ProgressFn,
    RemoteJob,
    RemoteResult,
    StopFn,
    sleep_unless_stopped,
)

log = logging.getLogger(__name__)

PLACEHOLDERS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "cfg",
    "width",
    "height",
    "checkpoint",
    "denoise",
    "image",
)
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
#: A websocket frame (a preview image at most) is refused past this.
MAX_WS_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_WORKFLOW_BYTES = 1024 * 1024
#: A socket silent this long mid-render: the outputs are looked up in /history instead.
SILENCE_S = 2.0


def load_workflow(path: Path | None, default: str) -> dict[str, Any]:
    """A workflow graph: ``path`` (a deployment's own), else the shipped ``default``. Raises
    ValueError naming the file when it is not an API-format graph."""
    if path is None:
        text = resources.files(__package__).joinpath("data", default).read_text("utf-8")
        where = default
    else:
        if path.stat().st_size > MAX_WORKFLOW_BYTES:
            raise ValueError(f"{path}: a workflow over {MAX_WORKFLOW_BYTES // 1024} KiB is not one")
        text = path.read_text("utf-8")
        where = str(path)
    try:
        graph = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where} is not JSON: {exc}") from None
    if (
        not isinstance(graph, dict)
        or not graph
        or not all(
            isinstance(node, dict) and "class_type" in node and isinstance(node.get("inputs"), dict)
            for node in graph.values()
        )
    ):
        raise ValueError(
            f"{where} is not a ComfyUI API-format workflow (nodes with class_type and inputs; "
            "save it with 'Save (API Format)')"
        )
    used = set(_PLACEHOLDER.findall(text))
    unknown = used - set(PLACEHOLDERS)
    if unknown:
        raise ValueError(f"{where} uses unknown placeholders: {', '.join(sorted(unknown))}")
    if "prompt" not in used:
        raise ValueError(f"{where} has no {{{{prompt}}}} placeholder: the director's prompt would go nowhere")
    return graph


def fill(graph: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``graph`` with the placeholders in its string inputs replaced by ``values``."""

    def sub(value: Any) -> Any:
        if isinstance(value, str):
            whole = _PLACEHOLDER.fullmatch(value.strip())
            if whole:
                return values[whole.group(1)]
            return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), value)
        if isinstance(value, list):
            return [sub(v) for v in value]
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        return value

    return {node_id: sub(copy.deepcopy(node)) for node_id, node in graph.items()}


#: Node ids added to a workflow for ControlNet (strings, like ComfyUI's own; unlikely in a user's graph).
CONTROL_NODES = {"image": "voxcanvas_control_image", "loader": "voxcanvas_controlnet", "apply": "voxcanvas_control"}
SAMPLERS = ("KSampler", "KSamplerAdvanced")


def with_control(graph: dict[str, Any], image_name: str, model: str, strength: float) -> dict[str, Any]:
    """``graph`` with ControlNet between its text encodings and its sampler: ``LoadImage`` (the
    uploaded control image) and ``ControlNetLoader`` feed ``ControlNetApplyAdvanced``, whose
    conditioning replaces the sampler's ``positive``/``negative`` (ComfyUI's core nodes; the
    preprocessing — canny edges, palette bands — is done before the upload)."""
    samplers = [node for node in graph.values() if isinstance(node, dict) and node.get("class_type") in SAMPLERS]
    if len(samplers) != 1:
        raise BadRequest("ControlNet needs a ComfyUI workflow with exactly one KSampler.")
    sampler = samplers[0]["inputs"]
    if not isinstance(sampler.get("positive"), list) or not isinstance(sampler.get("negative"), list):
        raise BadRequest("ControlNet needs the workflow's KSampler to take its positive and negative from nodes.")
    out = dict(graph)
    out[CONTROL_NODES["image"]] = {"class_type": "LoadImage", "inputs": {"image": image_name}}
    out[CONTROL_NODES["loader"]] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": model}}
    out[CONTROL_NODES["apply"]] = {
        "class_type": "ControlNetApplyAdvanced",
        "inputs": {
            "positive": sampler["positive"],
            "negative": sampler["negative"],
            "control_net": [CONTROL_NODES["loader"], 0],
            "image": [CONTROL_NODES["image"], 0],
            "strength": strength,
            "start_percent": 0.0,
            "end_percent": 1.0,
        },
    }
    sampler["positive"] = [CONTROL_NODES["apply"], 0]
    sampler["negative"] = [CONTROL_NODES["apply"], 1]
    return out


class ComfyUIBackend(HttpBackend):
    name = "comfyui"
    capabilities = Capabilities(progress=True, cancel=True, controls=frozenset({"canny", "pose", "palette"}))

    def __init__(
        self,
        base_url: str,
        *,
        checkpoint: str = "",
        workflow: Path | None = None,
        img2img_workflow: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, **kwargs)
        self.default_model = checkpoint
        self.text2img = load_workflow(workflow, "comfyui_txt2img.json")
        self.img2img = load_workflow(img2img_workflow, "comfyui_img2img.json")
        self.client_id = uuid.uuid4().hex

    def graph_for(self, job: RemoteJob, image_name: str = "", control_name: str = "") -> dict[str, Any]:
        values: dict[str, Any] = {
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt,
            "seed": job.seed,
            "steps": job.steps,
            "cfg": job.guidance,
            "width": job.width,
            "height": job.height,
            "checkpoint": job.model,
            "denoise": job.strength if job.init_image is not None else 1.0,
            "image": image_name,
        }
        graph = fill(self.img2img if job.init_image is not None else self.text2img, values)
        if job.control is not None:
            graph = with_control(graph, control_name, job.control.model, job.control.strength)
        return graph

    async def render(self, job: RemoteJob, *, progress: ProgressFn, should_stop: StopFn) -> RemoteResult:
        image_name = ""
        if job.init_image is not None:
            image_name = await self._upload(job.init_image, should_stop)
        control_name = await self._upload(job.control.image, should_stop) if job.control is not None else ""
        graph = self.graph_for(job, image_name, control_name)
        client_id = uuid.uuid4().hex  # one socket per render: its messages are ours alone
        try:
            ws = await self.session().ws_connect(
                self.url(f"/ws?clientId={client_id}"), max_msg_size=MAX_WS_MESSAGE_BYTES, heartbeat=30.0
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("ComfyUI websocket failed (%s): progress from /history polling instead", exc)
            ws = None
        try:
            queued = await self.post_json("/prompt", {"prompt": graph, "client_id": client_id}, should_stop=should_stop)
            prompt_id = queued.get("prompt_id") if isinstance(queued, dict) else None
            if not isinstance(prompt_id, str) or not prompt_id:
                raise BackendGarbage(self.name, "no prompt_id")
            images: list[dict[str, Any]] = []
            if ws is not None:
                images = await self._follow(ws, prompt_id, progress, should_stop)
            if not images:
                images = await self._from_history(prompt_id, should_stop)
        finally:
            if ws is not None:
                await ws.close()
        image = await self._fetch(images[0], should_stop)
        progress(job.steps, job.steps)
        return RemoteResult(image=image, seed=job.seed)

    async def _upload(self, data: bytes, should_stop: StopFn) -> str:
        def form() -> aiohttp.FormData:
            body = aiohttp.FormData()
            body.add_field("image", data, filename=f"voxcanvas-{uuid.uuid4().hex[:12]}.png", content_type="image/png")
            body.add_field("overwrite", "true")
            return body

        _, _, raw = await self.request("POST", "/upload/image", data=form, should_stop=should_stop)
        answer = self.parse_json(raw)
        if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
            raise BackendGarbage(self.name, "the upload gave no file name")
        subfolder = answer.get("subfolder") or ""
        return f"{subfolder}/{answer['name']}" if subfolder else str(answer["name"])

    async def _follow(
        self, ws: aiohttp.ClientWebSocketResponse, prompt_id: str, progress: ProgressFn, should_stop: StopFn
    ) -> list[dict[str, Any]]:
        """Read the socket until our prompt is done; the images its output nodes saved."""
        images: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while True:
            if should_stop():
                await self._cancel(prompt_id)
                raise JobCancelled()
            try:
                message = await ws.receive(timeout=POLL_INTERVAL_S)
            except TimeoutError:
                if loop.time() - heard > SILENCE_S:  # a socket that went quiet (a proxy): ask /history
                    heard = loop.time()
                    done = await self._history_once(prompt_id)
                    if done:
                        return done
                continue
            heard = loop.time()
            if message.type == aiohttp.WSMsgType.BINARY:
                continue  # a preview
            if message.type != aiohttp.WSMsgType.TEXT:
                log.info("ComfyUI websocket closed mid-render (%s): reading /history", message.type)
                return []
            try:
                event = json.loads(message.data)
            except ValueError:
                raise BackendGarbage(self.name, "a websocket message that is not JSON") from None
            if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
                continue
            kind, data = event.get("type"), event["data"]
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if kind == "progress":
                value, total = data.get("value"), data.get("max")
                if isinstance(value, int) and isinstance(total, int) and 0 < total and 0 <= value <= total:
                    progress(value, total)
            elif kind == "executed":
                output = data.get("output")
                found = output.get("images") if isinstance(output, dict) else None
                if isinstance(found, list):
                    images = [i for i in found if isinstance(i, dict)] or images
            elif kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return images
            elif kind == "execution_success" and data.get("prompt_id") == prompt_id:
                return images
            elif kind == "execution_error":
                raise BackendRefused(self.name, str(data.get("exception_message") or "the workflow failed")[:200])
            elif kind == "execution_interrupted":
                if should_stop():
                    raise JobCancelled()
                raise BackendError(self.name, "The ComfyUI renderer stopped the picture (someone interrupted it).")

    async def _history_once(self, prompt_id: str, should_stop: StopFn | None = None) -> list[dict[str, Any]]:
        """The prompt's output images from ``/history/<id>``; [] while it is not done."""
        history = await self.get_json(f"/history/{prompt_id}", should_stop=should_stop, max_bytes=MAX_JSON_BYTES)
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        if not isinstance(entry, dict):
            return []
        status = entry.get("status")
        if isinstance(status, dict) and status.get("status_str") == "error":
            raise BackendRefused(self.name, "the workflow failed")
        outputs = entry.get("outputs")
        if isinstance(outputs, dict):
            for output in outputs.values():
                found = output.get("images") if isinstance(output, dict) else None
                if isinstance(found, list) and found and isinstance(found[0], dict):
                    return [i for i in found if isinstance(i, dict)]
        if isinstance(status, dict) and status.get("completed"):
            raise BackendGarbage(self.name, "the workflow saved no image")
        return []

    async def _from_history(self, prompt_id: str, should_stop: StopFn) -> list[dict[str, Any]]:
        """Poll ``/history/<id>`` until the prompt has outputs (the websocket was not there)."""
        while True:
            found = await self._history_once(prompt_id, should_stop)
            if found:
                return found
            if should_stop():
                await self._cancel(prompt_id)
                raise JobCancelled()
            await sleep_unless_stopped(POLL_INTERVAL_S * 2, should_stop)

    async def _fetch(self, image: dict[str, Any], should_stop: StopFn) -> Any:
        filename = image.get("filename")
        if not isinstance(filename, str) or not filename:
            raise BackendGarbage(self.name, "an output image without a file name")
        params = {
            "filename": filename,
            "subfolder": str(image.get("subfolder") or ""),
            "type": str(image.get("type") or "output"),
        }
        _, _, data = await self.request(
            "GET", "/view", params=params, max_bytes=limits.MAX_IMAGE_BYTES, should_stop=should_stop
        )
        return await asyncio.to_thread(self.decode_image, data)

    async def _cancel(self, prompt_id: str) -> None:
        # /interrupt with a prompt_id stops only ours (a server older than that stops whatever runs).
        for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
            with contextlib.suppress(BackendError, BackendUnavailable):
                await self.request("POST", path, json_body=body, retries=0, timeout_s=5.0)
