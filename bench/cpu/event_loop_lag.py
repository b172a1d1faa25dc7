"""(c) Event-loop lag on the bot's loop while many users send ``/imagine`` at once: a heartbeat task
sleeps 10 ms and records how late it wakes up (an idle baseline first)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..common import batch_size_delta
from ..models import IDEAS
from ..report import percentile
from .harness import BotSession, CpuPlan, bot_idle, imagine_timed

log = logging.getLogger(__name__)


class Heartbeat:
    """A task that sleeps ``period`` and records how late it wakes (the event loop's lag)."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.lags: list[float] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.period)
            self.lags.append(time.perf_counter() - started - self.period)

    def start(self) -> Heartbeat:
        self.lags = []
        self._task = asyncio.create_task(self._run(), name="heartbeat")
        return self

    async def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.lags


async def measure_lag(session: BotSession, plan: CpuPlan) -> dict[str, Any]:
    discord_thread, bot = session.discord_thread, session.bot
    fake = discord_thread.fake
    heartbeat = Heartbeat(plan.lag_period_s).start()
    await asyncio.sleep(plan.idle_s)
    idle_lags = await heartbeat.stop()
    before = dict(bot.executor.metrics().batch_sizes)

    async def burst() -> tuple[float, list[float]]:
        begun = time.perf_counter()
        done = await asyncio.gather(
            *(
                imagine_timed(fake, {"prompt": IDEAS[i % len(IDEAS)], "seed": 500 + i}, u)
                for i, u in enumerate(discord_thread.users[: plan.lag_jobs])
            )
        )
        return time.perf_counter() - begun, [elapsed for elapsed, _ in done]

    heartbeat.start()
    wall, latencies = await discord_thread.call(burst())
    lags = await heartbeat.stop()
    await bot_idle(bot)
    hist = batch_size_delta(before, dict(bot.executor.metrics().batch_sizes))
    lag = {
        "jobs": plan.lag_jobs,
        "period_ms": plan.lag_period_s * 1000,
        "samples": len(lags),
        "p50_ms": percentile(lags, 50) * 1000,
        "p99_ms": percentile(lags, 99) * 1000,
        "max_ms": max(lags) * 1000,
        "idle_p50_ms": percentile(idle_lags, 50) * 1000 if idle_lags else None,
        "idle_p99_ms": percentile(idle_lags, 99) * 1000 if idle_lags else None,
        "burst_wall_s": wall,
        "jobs_per_s": plan.lag_jobs / wall,
        "job_latency_p50_s": percentile(latencies, 50),
        "job_latency_p95_s": percentile(latencies, 95),
        "batch_sizes": hist,
        "lags_ms": [round(x * 1000, 3) for x in lags],
    }
    log.info(
        "event-loop lag during %d-job burst: p50 %.2f ms, p99 %.2f ms, max %.1f ms (%d samples, %.1f s)",
        plan.lag_jobs,
        lag["p50_ms"],
        lag["p99_ms"],
        lag["max_ms"],
        len(lags),
        wall,
    )
    return lag
