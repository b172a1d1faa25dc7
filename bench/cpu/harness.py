"""What the CPU measurements run on: the plan, the product's settings on the tiny models, the fake
Discord on its own thread and the real bot connected to it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common import product_defaults

log = logging.getLogger(__name__)

TOKEN = "bench-token"


@dataclass(frozen=True)
class CpuPlan:
    steps: int = 25  # product default
    size: int = 64  # the tiny models' native size
    overhead_pairs: int = 8
    burst_jobs: int = 32
    burst_reps: int = 2
    lag_jobs: int = 50
    lag_period_s: float = 0.010
    idle_s: float = 1.0
    whisper_repeats: int = 2  # (d) timed pairs old/new path after a warm-up pair (20 s note, beam 5)
    first_progress_repeats: int = 3  # (e) per first-progress delay


FULL = CpuPlan()
QUICK = CpuPlan(overhead_pairs=4, burst_reps=1, idle_s=0.5, whisper_repeats=1, first_progress_repeats=2)


def settings_factory(models: dict[str, Path], plan: CpuPlan, data_root: Path) -> Callable[..., Any]:
    """Settings on the tiny models with the product's defaults for everything measured (passed
    explicitly, so a developer's environment or .env cannot change what is measured)."""
    from pipeline.settings import Settings

    defaults = product_defaults(
        "DYNAMIC_BATCHING",
        "MAX_BATCH",
        "BATCH_WINDOW_MS",
        "MAX_JOBS_PER_USER",
        "MAX_QUEUE",
        "GUIDANCE",
        "SAFETY_CHECKER",
        "QA_THRESHOLD",
    )
    counter = iter(range(1_000_000))

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            defaults,
            DIFFUSION_MODEL=str(models["sd15"]),
            CLIP_MODEL=str(models["clip-vit-large-patch14"]),
            WHISPER_MODEL=str(models["whisper-large-v3-turbo"]),
            DEVICE="cpu",
            WIDTH=plan.size,
            HEIGHT=plan.size,
            STEPS=plan.steps,
            QA_MAX_ROUNDS=0,
            GEMINI_API_KEY="",
            DISCORD_TOKEN=TOKEN,
            DATA_DIR=data_root / f"data-{next(counter)}",
            RETENTION_DAYS=0,
            LOG_LEVEL="WARNING",
        )
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


class FakeDiscordThread:
    """The fake Discord (devkit.discord) serving from its own thread and event loop."""

    def __init__(self, users: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-discord", daemon=True)
        self.n_users = users
        self.fake = None
        self.users: list = []

    async def __aenter__(self) -> FakeDiscordThread:
        self.thread.start()
        await self.call(self._start())
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.call(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self.thread.join, 10)

    async def _start(self) -> None:
        from devkit.discord import FakeDiscord

        self.fake = FakeDiscord(token=TOKEN)
        await self.fake.start()
        guild = self.fake.guild.id
        self.users = [await self.fake.add_user(f"user{i}", guild_id=guild) for i in range(self.n_users)]

    async def call(self, coro):
        """Run ``coro`` on the fake's loop and await its result from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))


def _footer_job(message: dict) -> str | None:
    for embed in message.get("embeds") or []:
        text = (embed.get("footer") or {}).get("text", "")
        if text.startswith("job "):
            return text.removeprefix("job ")
    return None


async def imagine_timed(
    fake, options: dict, user, timeout: float = 300.0, cpu: list | None = None
) -> tuple[float, str]:
    """(fake's loop) Dispatch /imagine; (seconds until the result message is recorded, job id).
    ``cpu`` collects the CPU seconds the fake Discord's thread spent meanwhile."""
    started = time.perf_counter()
    cpu_started = time.thread_time()
    interaction = await fake.slash_command("imagine", options, user=user)

    def final():
        if interaction.acknowledged and interaction.response_type == 4:  # refused outright
            return {"content": (interaction.response_body or {}).get("data", {}).get("content", "refused")}
        msg = fake.original_response(interaction)
        if msg and (_footer_job(msg) or (msg.get("content") or "").startswith(("⚠️", "😵", "🚫"))):
            return msg
        return None

    message = await fake.wait_until(final, timeout, "the /imagine result", poll=0.25)
    elapsed = time.perf_counter() - started
    if cpu is not None:
        cpu.append(time.thread_time() - cpu_started)
    job_id = _footer_job(message)
    if not job_id:
        raise RuntimeError(f"/imagine did not produce a picture: {message.get('content')!r}")
    return elapsed, job_id


@contextlib.asynccontextmanager
async def running_bot(settings):
    from bot.client import VoxCanvasBot, configure_endpoints

    configure_endpoints(settings)
    bot = VoxCanvasBot(settings, guild_ready_timeout=0.05, warm_up=False)
    task = asyncio.create_task(bot.start(settings.DISCORD_TOKEN.get_secret_value()), name="bot")
    try:
        deadline = time.monotonic() + 60
        while not bot.is_ready():
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise TimeoutError("the bot did not become ready against the fake Discord")
            await asyncio.sleep(0.02)
        yield bot
    finally:
        if not bot.is_closed():
            await bot.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


async def bot_idle(bot, timeout: float = 30.0) -> None:
    """Wait until the bot has no job task left (delivery bookkeeping after the result)."""
    deadline = time.monotonic() + timeout
    # The runner's task set has no event to wait on: poll it.
    while bot.runner.tasks and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


@dataclass
class BotSession:
    """One bot connected to the fake Discord, its models loaded."""

    discord_thread: FakeDiscordThread
    bot: Any
    model_load_s: float
    torch_threads_gpu_thread: int


@contextlib.asynccontextmanager
async def bot_session(plan: CpuPlan, make_settings: Callable[..., Any]) -> AsyncIterator[BotSession]:
    """The fake Discord with ``plan.lag_jobs`` users and the real bot connected to it, warmed up."""
    async with FakeDiscordThread(users=plan.lag_jobs) as discord_thread:
        fake = discord_thread.fake
        settings = make_settings(
            DISCORD_API_BASE=fake.api_base,
            DISCORD_GATEWAY_URL=fake.gateway_url,
            DISCORD_GUILD_IDS=str(fake.guild.id),
        )
        async with running_bot(settings) as bot:
            started = time.perf_counter()
            await bot.executor.warm_up(whisper=False, clip=True)
            load_s = time.perf_counter() - started
            import torch

            threads = await bot.executor.call(None, "probe", torch.get_num_threads)
            log.info(
                "bot ready, tiny models loaded in %.1f s; %d torch thread(s) on the executor's thread", load_s, threads
            )
            yield BotSession(discord_thread, bot, load_s, threads)
