"""A fake ComfyUI: ``POST /prompt``, the ``/ws?clientId=`` websocket (``status``,
``execution_start``, ``executing``, ``progress``, preview frames, ``executed``, ``executing`` with
``node: null``), ``GET /history/{id}``, ``GET /view``, ``POST /upload/image``, ``/interrupt``, ``/queue``."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import uuid
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image

from .common import FakeBackend, picture, png


class FakeComfyUI(FakeBackend):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.files: dict[tuple[str, str, str], bytes] = {}  # (type, subfolder, filename) → bytes
        self.graphs: list[dict[str, Any]] = []
        self.lock = asyncio.Lock()
        self.running: str | None = None
        self._interrupt: set[str] = set()
        self.deleted: list[str] = []
        self.send_ws = True  # False: say nothing on the socket (the client must read /history)

    #: The files in the fake server's models/controlnet.
    controlnets = frozenset(
        {"control_v11p_sd15_canny.pth", "control_v11p_sd15_openpose.pth", "control_v11f1e_sd15_tile.pth"}
    )

    def _graph_problem(self, graph: dict[str, Any]) -> str | None:
        """ComfyUI's own validation of links and of the ControlNet nodes: every ``[node, output]``
        input names a node of the graph; a ControlNetLoader names a model it has; a
        ControlNetApplyAdvanced has its conditioning, net, image and a strength."""
        for node_id, node in graph.items():
            for name, value in node.get("inputs", {}).items():
                if isinstance(value, list) and len(value) == 2 and str(value[0]) not in graph:
                    return f"node {node_id} input {name}: no node {value[0]}"
            if (
                node["class_type"] == "ControlNetLoader"
                and node["inputs"].get("control_net_name") not in self.controlnets
            ):
                return f"Value not in list: control_net_name: {node['inputs'].get('control_net_name')!r}"
            if node["class_type"] == "ControlNetApplyAdvanced":
                inputs = node["inputs"]
                if not all(isinstance(inputs.get(k), list) for k in ("positive", "negative", "control_net", "image")):
                    return f"node {node_id}: ControlNetApplyAdvanced is missing a link"
                if not isinstance(inputs.get("strength"), int | float):
                    return f"node {node_id}: strength must be a number"
        return None

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/prompt", self.prompt)
        app.router.add_get("/ws", self.ws)
        app.router.add_get("/history/{prompt_id}", self.get_history)
        app.router.add_get("/view", self.view)
        app.router.add_post("/upload/image", self.upload)
        app.router.add_post("/interrupt", self.interrupt)
        app.router.add_post("/queue", self.queue)

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets[client_id] = sock
        await sock.send_json(
            {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}}
        )
        async for message in sock:
            if message.type == WSMsgType.ERROR:
                break
        self.sockets.pop(client_id, None)
        return sock

    async def prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen[-1].body = body
        graph = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(graph, dict) or not graph:
            return web.json_response(
                {
                    "error": {
                        "type": "invalid_prompt",
                        "message": "Cannot execute because the prompt is empty",
                        "details": "",
                    },
                    "node_errors": {},
                },
                status=400,
            )
        text = json.dumps(graph)
        if "{{" in text:
            return web.json_response(
                {
                    "error": {"type": "invalid_prompt", "message": "unfilled placeholder", "details": ""},
                    "node_errors": {},
                },
                status=400,
            )
        by_type = {node["class_type"]: (node_id, node) for node_id, node in graph.items()}
        if "SaveImage" not in by_type:
            return web.json_response(
                {
                    "error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": ""},
                    "node_errors": {},
                },
                status=400,
            )
        sampler = by_type["KSampler"][1]["inputs"]
        size_node = by_type.get("EmptyLatentImage") or by_type.get("ImageScale")
        assert size_node is not None
        width, height = size_node[1]["inputs"]["width"], size_node[1]["inputs"]["height"]
        for value in (sampler["seed"], sampler["steps"], width, height):
            if not isinstance(value, int):
                return web.json_response(
                    {
                        "error": {
                            "type": "prompt_outputs_failed_validation",
                            "message": "Prompt outputs failed validation",
                            "details": "",
                        },
                        "node_errors": {by_type["KSampler"][0]: {"errors": [{"message": f"not an int: {value!r}"}]}},
                    },
                    status=400,
                )
        problem = self._graph_problem(graph)
        if problem is not None:
            return web.json_response(
                {"error": {"type": "prompt_outputs_failed_validation", "message": problem, "details": ""}},
                status=400,
            )
        for name in [n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage"]:
            sub, _, filename = name.rpartition("/")
            if ("input", sub, filename) not in self.files:
                return web.json_response(
                    {
                        "error": {
                            "type": "prompt_outputs_failed_validation",
                            "message": f"Invalid image file: {name}",
                            "details": "",
                        },
                        "node_errors": {},
                    },
                    status=400,
                )
        self.graphs.append(graph)
        prompt_id = str(uuid.uuid4())
        client_id = str(body.get("client_id") or "")
        self.history[prompt_id] = {
            "prompt": [len(self.graphs), prompt_id, graph, {}, []],
            "outputs": {},
            "status": {"status_str": "running", "completed": False, "messages": []},
        }
        asyncio.get_running_loop().create_task(
            self._run(
                prompt_id, client_id, by_type, int(sampler["seed"]), int(sampler["steps"]), int(width), int(height)
            )
        )
        return web.json_response({"prompt_id": prompt_id, "number": len(self.graphs), "node_errors": {}})

    async def _send(self, client_id: str, message: dict[str, Any] | bytes) -> None:
        sock = self.sockets.get(client_id)
        if sock is None or sock.closed or not self.send_ws:
            return
        if isinstance(message, bytes):
            await sock.send_bytes(message)
        else:
            await sock.send_json(message)

    async def _run(
        self, prompt_id: str, client_id: str, by_type: dict[str, Any], seed: int, steps: int, width: int, height: int
    ) -> None:
        async with self.lock:
            if prompt_id in self.deleted:
                return
            self.running = prompt_id
            self.renders_started += 1
            await self._send(client_id, {"type": "execution_start", "data": {"prompt_id": prompt_id, "timestamp": 0}})
            sampler_id = by_type["KSampler"][0]
            for node_id in (by_type["CheckpointLoaderSimple"][0], sampler_id):
                await self._send(
                    client_id,
                    {"type": "executing", "data": {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}},
                )
            for step in range(1, steps + 1):
                await asyncio.sleep(self.step_s)
                if prompt_id in self._interrupt:
                    self.running = None
                    self.history[prompt_id]["status"] = {"status_str": "error", "completed": False, "messages": []}
                    await self._send(
                        client_id,
                        {
                            "type": "execution_interrupted",
                            "data": {
                                "prompt_id": prompt_id,
                                "node_id": sampler_id,
                                "node_type": "KSampler",
                                "executed": [],
                            },
                        },
                    )
                    return
                await self._send(
                    client_id,
                    {
                        "type": "progress",
                        "data": {"value": step, "max": steps, "prompt_id": prompt_id, "node": sampler_id},
                    },
                )
                if step == 1:  # a preview frame: 4-byte event type 1, 4-byte format 2 (PNG), the image
                    await self._send(client_id, struct.pack(">II", 1, 2) + png(picture(seed, 8, 8)))
            filename = f"voxcanvas_{len(self.files):05d}_.png"
            self.files[("output", "", filename)] = png(picture(seed, width, height))
            save_id = by_type["SaveImage"][0]
            output = {"images": [{"filename": filename, "subfolder": "", "type": "output"}]}
            self.history[prompt_id]["outputs"] = {save_id: output}
            self.history[prompt_id]["status"] = {"status_str": "success", "completed": True, "messages": []}
            await self._send(
                client_id,
                {
                    "type": "executed",
                    "data": {"node": save_id, "display_node": save_id, "output": output, "prompt_id": prompt_id},
                },
            )
            await self._send(client_id, {"type": "executing", "data": {"node": None, "prompt_id": prompt_id}})
            self.renders_finished += 1
            self.running = None

    async def get_history(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response(
            {prompt_id: entry} if entry is not None and entry["status"]["status_str"] != "running" else {}
        )

    async def view(self, request: web.Request) -> web.Response:
        key = (
            request.query.get("type", "output"),
            request.query.get("subfolder", ""),
            request.query.get("filename", ""),
        )
        data = self.files.get(key)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="image/png")

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        field = form.get("image")
        if field is None or isinstance(field, str):
            return web.Response(status=400)
        data = field.file.read()
        Image.open(io.BytesIO(data)).verify()
        self.files[("input", "", field.filename)] = data
        self.seen[-1].body = {"image": field.filename, "overwrite": form.get("overwrite")}
        return web.json_response({"name": field.filename, "subfolder": "", "type": "input"})

    async def interrupt(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        self.seen[-1].body = body
        target = body.get("prompt_id") if isinstance(body, dict) else None
        if self.running is not None and target in (None, self.running):
            self._interrupt.add(self.running)
            self.interrupted += 1
        return web.Response(status=200)

    async def queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen[-1].body = body
        self.deleted.extend(body.get("delete", []))
        return web.Response(status=200)
