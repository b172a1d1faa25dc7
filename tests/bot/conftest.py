"""A running VoxCanvas bot (real discord.py) connected to the fake Discord, on the tiny models."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import pytest

from devkit.discord import FakeDiscord


@dataclass
class BotHarness:
    fake: FakeDiscord
    bot: object
    settings: object
    task: asyncio.Task

    async def wait_ready(self, timeout: float = 20.0) -> None:
        await self.fake.wait_until(lambda: self.bot.is_ready() or None, timeout, "bot ready", poll=0.02)


@pytest.fixture
async def fake_discord():
    async with FakeDiscord(token="test-token") as fake:
        with fake.patch_discord_py():
            yield fake


@pytest.fixture
def bot_settings(make_settings, fake_discord, trained_whisper_dir):
    def factory(**overrides):
        values = dict(
            DISCORD_TOKEN="test-token",
            DISCORD_API_BASE=fake_discord.api_base,
            DISCORD_GATEWAY_URL=fake_discord.gateway_url,
            DISCORD_GUILD_IDS=str(fake_discord.guild.id),
            WHISPER_MODEL=str(trained_whisper_dir),
            STEPS=4,
            QA_MAX_ROUNDS=1,
            MAX_JOBS_PER_USER=2,
            RETENTION_DAYS=0,
        )
        values.update(overrides)
        return make_settings(**values)

    return factory


@pytest.fixture
async def start_bot(fake_discord, bot_settings):
    """Start VoxCanvasBot against the fake; every bot started is closed at the end."""
    from bot.client import VoxCanvasBot, configure_endpoints

    harnesses: list[BotHarness] = []

    async def start(settings=None, **overrides) -> BotHarness:
        settings = settings or bot_settings(**overrides)
        configure_endpoints(settings)
        bot = VoxCanvasBot(settings, guild_ready_timeout=0.05, warm_up=False)
        task = asyncio.create_task(bot.start(settings.DISCORD_TOKEN.get_secret_value()))
        harness = BotHarness(fake_discord, bot, settings, task)
        harnesses.append(harness)
        await harness.wait_ready()
        return harness

    yield start
    for harness in harnesses:
        if not harness.bot.is_closed():
            await harness.bot.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(harness.task, 10)


@pytest.fixture
def secret_log(caplog):
    """Every log line the test produced, for the "no secrets in logs" checks."""
    caplog.set_level(logging.DEBUG)
    return caplog
