"""One process, one queue: the real discord.py bot (against the fake Discord) and the web API
(uvicorn, real HTTP) served by the same executor, store and fairness."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from devkit.helpers import footer_job
from tests.bot.test_bot import imagine, wait_result
from tests.web.conftest import read_events

pytestmark = pytest.mark.timeout(180)


async def test_a_discord_job_and_an_api_job_share_one_queue(fake_discord, bot_settings):
    from bot.client import VoxCanvasBot, configure_endpoints
    from web.server import WebServer

    settings = bot_settings(API_PORT=0, STEPS=100, QA_MAX_ROUNDS=0)
    configure_endpoints(settings)
    web = WebServer(settings)
    bot = VoxCanvasBot(settings, guild_ready_timeout=0.05, warm_up=False, services=[web])
    task = asyncio.create_task(bot.start(settings.DISCORD_TOKEN.get_secret_value()))
    try:
        await fake_discord.wait_until(lambda: bot.is_ready() or None, 20, "bot ready", poll=0.02)
        assert web.port and web.port > 0
        async with httpx.AsyncClient(base_url=web.base_url(), timeout=60) as client:
            page = await client.get("/")
            assert page.status_code == 200 and "VoxCanvas" in page.text
            # A slow Discord job first, then an API job: the API job waits behind it in the one queue.
            interaction = await imagine(fake_discord, {"prompt": "a lighthouse in a storm", "seed": 1})
            await fake_discord.wait_until(
                lambda: bot.executor.metrics().running_jobs or None, 30, "discord job running", poll=0.005
            )
            created = await client.post("/api/jobs", json={"text": "a red apple", "steps": 2, "seed": 2})
            assert created.status_code == 202, created.text
            api_id = created.json()["job_id"]
            events = await read_events(client, created.json()["events_url"])
            queued = [data for name, data in events if name == "queued"]
            assert queued[0]["position"] == 1  # first to wait: the Discord job holds the one GPU thread
            assert events[-1][0] == "done"
            message = await wait_result(fake_discord, interaction)
            discord_id = footer_job(message)
        # Both in the one store; each with its own kind of user.
        discord_record = await bot.store.get(discord_id)
        api_record = await bot.store.get(api_id)
        assert discord_record.state == api_record.state == "done"
        assert discord_record.user_id > 0 > api_record.user_id
        assert api_record.delivered_message_id == 0  # "delivered" = stored for the API client
        assert bot.executor.metrics().jobs_done >= 2
        # The API job never touched Discord: no message carries its id.
        assert not any(api_id in str(call) for call in fake_discord.calls)
    finally:
        if not bot.is_closed():
            await bot.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
    # Closing the bot stopped the web server too.
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=5) as client:
            await client.get(f"http://127.0.0.1:{web.port}/")
