"""What the fake backends share: a server on 127.0.0.1, a request log, injected faults, pictures."""

from __future__ import annotations

import asyncio
import io
import random
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image


def picture(seed: int, width: int, height: int) -> Image.Image:
    """A picture that depends on the seed only: a colour per seed, plus seeded noise."""
    rng = random.Random(seed)
    base = Image.new("RGB", (width, height), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    return Image.blend(base, noise, 0.2)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Fault:
    """Answer the next ``times`` requests whose path contains ``path`` with this instead."""

    path: str
    status: int = 503
    body: bytes = b'{"detail": "injected failure"}'
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long first (a slow or hanging server)
    times: int = 1
    content_type: str = "application/json"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None  # decoded JSON, or a dict of form fields


class FakeBackend:
    """Base: ``async with Fake() as fake`` starts it; ``fake.url`` is its base URL."""

    def __init__(self, *, step_s: float = 0.01) -> None:
        self.step_s = step_s
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self.routes(self.app)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.renders_started = 0
        self.renders_finished = 0
        self.interrupted = 0
        self.server_s = 0.0  # time spent in this fake's handlers (bench subtracts it: not the bot's cost)

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def fail(self, path: str, status: int = 503, *, times: int = 1, **kwargs: Any) -> Fault:
        fault = Fault(path, status, times=times, **kwargs)
        self.faults.append(fault)
        return fault

    def paths(self, method: str | None = None) -> list[str]:
        return [s.path for s in self.seen if method is None or s.method == method]

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, dict(request.query), dict(request.headers)))
        began = time.perf_counter()
        try:
            return await self._answer(request, handler)
        finally:
            self.server_s += time.perf_counter() - began

    async def _answer(self, request: web.Request, handler: Any) -> web.StreamResponse:
        for fault in self.faults:
            if fault.times > 0 and fault.path in request.path:
                fault.times -= 1
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                return web.Response(
                    status=fault.status, body=fault.body, headers=fault.headers, content_type=fault.content_type
                )
        return await handler(request)  # type: ignore[no-any-return]

    async def __aenter__(self) -> FakeBackend:
        self._runner = web.AppRunner(self.app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
