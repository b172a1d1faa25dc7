"""``/healthz`` of the real discord.py bot on the fake Discord (web server in the same process), with
the default ``SHARD_COUNT`` (AutoShardedBot, Discord's recommendation; the fake recommends 2):
healthy when every shard is connected, 503 while one shard's gateway is cut, healthy again once it is
back, and every shard RESUMEs its own session after an op 7 RECONNECT."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from tests.web.test_ops import families

pytestmark = pytest.mark.timeout(180)


async def test_healthz_follows_every_shard_through_an_outage_and_resume(fake_discord, bot_settings):
    from bot.client import ShardedVoxCanvasBot, bot_class, configure_endpoints
    from web.server import WebServer

    fake_discord.rules.recommended_shards = 2
    settings = bot_settings(API_PORT=0)
    configure_endpoints(settings)
    web = WebServer(settings)
    bot = bot_class(settings)(settings, guild_ready_timeout=0.05, warm_up=False, services=[web])
    assert isinstance(bot, ShardedVoxCanvasBot)  # the default: Discord's recommended shard count
    gateway = fake_discord.gateway
    task = asyncio.create_task(bot.start(settings.DISCORD_TOKEN.get_secret_value()))
    try:
        await fake_discord.wait_until(lambda: bot.is_ready() or None, 40, "bot ready", poll=0.02)
        assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
        async with httpx.AsyncClient(base_url=web.base_url(), timeout=30) as client:

            async def health() -> tuple[int, dict]:
                response = await client.get("/healthz")
                return response.status_code, response.json()

            async def until(code: int) -> dict:
                deadline = asyncio.get_running_loop().time() + 40
                while True:
                    status, body = await health()
                    if status == code:
                        return body
                    assert asyncio.get_running_loop().time() < deadline, body
                    await asyncio.sleep(0.02)

            body = await until(200)
            assert body["checks"]["gateway"]["ok"] is True
            assert set(body["checks"]) == {"gateway", "executor", "store"}
            sessions = gateway.connected_sessions()
            assert [s.shard for s in sessions] == [[0, 2], [1, 2]]

            # Shard 1 loses its connection (Discord refuses new ones): unhealthy, naming shard 1,
            # although shard 0 stays connected.
            await gateway.cut(shards={1})
            body = await until(503)
            assert body["status"] == "unhealthy"
            assert body["checks"]["gateway"]["ok"] is False and "[1]" in body["checks"]["gateway"]["detail"]
            assert body["checks"]["executor"]["ok"] and body["checks"]["store"]["ok"]
            await asyncio.sleep(0.3)  # still down while Discord refuses connections
            assert (await health())[0] == 503
            assert sessions[0].connection is not None

            gateway.restore()
            body = await until(200)
            assert body["checks"]["gateway"]["ok"] is True
            await fake_discord.wait_until(lambda: len(gateway.connected_sessions()) == 2 or None, 20, "2 shards")

            # Op 7 RECONNECT on every shard: each RESUMEs its own session, and the bot is healthy.
            sessions = gateway.connected_sessions()
            resumes = [s.resumes for s in sessions]
            await gateway.request_reconnect()
            await fake_discord.wait_until(
                lambda: all(s.resumes > r and s.connection for s, r in zip(sessions, resumes, strict=True)) or None,
                20,
                "every shard resumed",
            )
            assert [s.shard for s in gateway.connected_sessions()] == [[0, 2], [1, 2]]
            resumed = [p["d"] for p in gateway.received if p.get("op") == 6][-2:]
            assert sorted(r["session_id"] for r in resumed) == sorted(s.session_id for s in sessions)
            body = await until(200)
            assert body["checks"]["gateway"]["ok"] is True
            metrics = families((await client.get("/metrics")).text)
            assert "voxcanvas_gateway_latency_seconds" in metrics
            assert "voxcanvas_discord_rest_errors" in metrics
    finally:
        if not bot.is_closed():
            await bot.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
