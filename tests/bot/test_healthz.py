"""``/healthz`` of the real discord.py bot on the fake Discord (web server in the same process):
healthy when connected, 503 while the gateway is cut, healthy again after the client RESUMEs."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from tests.web.test_ops import families

pytestmark = pytest.mark.timeout(180)


async def test_healthz_follows_the_gateway_through_an_outage_and_resume(fake_discord, bot_settings):
    from bot.client import VoxCanvasBot, configure_endpoints
    from web.server import WebServer

    settings = bot_settings(API_PORT=0)
    configure_endpoints(settings)
    web = WebServer(settings)
    bot = VoxCanvasBot(settings, guild_ready_timeout=0.05, warm_up=False, services=[web])
    task = asyncio.create_task(bot.start(settings.DISCORD_TOKEN.get_secret_value()))
    try:
        await fake_discord.wait_until(lambda: bot.is_ready() or None, 20, "bot ready", poll=0.02)
        async with httpx.AsyncClient(base_url=web.base_url(), timeout=30) as client:

            async def health() -> tuple[int, dict]:
                response = await client.get("/healthz")
                return response.status_code, response.json()

            async def until(code: int) -> dict:
                deadline = asyncio.get_running_loop().time() + 30
                while True:
                    status, body = await health()
                    if status == code:
                        return body
                    assert asyncio.get_running_loop().time() < deadline, body
                    await asyncio.sleep(0.02)

            body = await until(200)
            assert body["checks"]["gateway"]["ok"] is True
            assert set(body["checks"]) == {"gateway", "executor", "store"}
            session = fake_discord.gateway.connected_session()
            assert session is not None
            resumes = session.resumes

            await fake_discord.gateway.cut()
            body = await until(503)
            assert body["status"] == "unhealthy"
            assert body["checks"]["gateway"]["ok"] is False
            assert body["checks"]["executor"]["ok"] and body["checks"]["store"]["ok"]
            # Still down while Discord refuses connections.
            await asyncio.sleep(0.3)
            assert (await health())[0] == 503

            fake_discord.gateway.restore()
            body = await until(200)
            assert body["checks"]["gateway"]["ok"] is True
            assert session.resumes > resumes  # it came back by RESUME, the same session
            metrics = families((await client.get("/metrics")).text)
            assert "voxcanvas_gateway_latency_seconds" in metrics
            assert "voxcanvas_discord_rest_errors" in metrics
    finally:
        if not bot.is_closed():
            await bot.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
