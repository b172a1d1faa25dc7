"""The web API served for real: the headless runtime (store, executor, studio, runner) on the tiny
models and uvicorn on 127.0.0.1 (an ephemeral port), driven by a real HTTP client (httpx)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest


@dataclass
class Served:
    url: str
    runtime: Any
    server: Any
    settings: Any

    def client(self, key: str | None = None, **kw: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60, **kw)


@pytest.fixture
def web_settings(make_settings, trained_whisper_dir, tiny_musicgen_dir):
    def factory(**overrides):
        values = dict(
            WHISPER_MODEL=str(trained_whisper_dir),
            MUSIC_MODEL=str(tiny_musicgen_dir),
            MUSIC_SECONDS=5,
            STEPS=2,
            QA_MAX_ROUNDS=1,
            MAX_JOBS_PER_USER=2,
            RETENTION_DAYS=0,
            API_HOST="127.0.0.1",
            API_PORT=0,
            API_WAIT_S=120,
        )
        values.update(overrides)
        return make_settings(**values)

    return factory


@pytest.fixture
async def serve(web_settings):
    """``await serve(**settings)`` → a :class:`Served` web API; all are stopped at the end."""
    from bot.headless import Headless
    from web.server import WebServer

    started: list[Served] = []

    async def start(**overrides: Any) -> Served:
        settings = web_settings(**overrides)
        runtime = Headless(settings, warm_up=False)
        runner = await runtime.start()
        server = WebServer(settings)
        url = await server.start(runner)
        served = Served(url.rstrip("/"), runtime, server, settings)
        started.append(served)
        return served

    yield start
    for served in started:
        await served.server.stop()
        await served.runtime.close()


async def read_events(client: httpx.AsyncClient, path: str, timeout: float = 90) -> list[tuple[str, dict]]:
    """Every SSE event of a job's stream until ``done`` / ``failed`` (parsed by hand, as a browser would)."""
    events: list[tuple[str, dict]] = []

    async def collect() -> None:
        async with client.stream("GET", path, headers={"Accept": "text/event-stream"}) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            name, data = None, []
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and name is not None:
                    events.append((name, json.loads("\n".join(data))))
                    if name in ("done", "failed"):
                        return
                    name, data = None, []

    await asyncio.wait_for(collect(), timeout)
    return events


async def wait_state(client: httpx.AsyncClient, job_id: str, states: tuple[str, ...], timeout: float = 90) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await client.get(f"/api/jobs/{job_id}")).json()
        if body["state"] in states or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.05)
