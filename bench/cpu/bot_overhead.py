"""(a) Bot overhead: the same jobs (same idea, same seed, ``QA_MAX_ROUNDS=0``) through the whole bot —
``/imagine`` dispatched over the fake Discord's gateway, the job stored in SQLite, progress edits, the
result uploaded — and through ``Studio.run`` directly on the *same* executor and models. Pairs
alternate their order; the overhead is the median of the per-pair ratios."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..models import IDEAS
from ..report import median
from .harness import BotSession, CpuPlan, bot_idle, imagine_timed

log = logging.getLogger(__name__)


async def measure_overhead(session: BotSession, plan: CpuPlan) -> dict[str, Any]:
    from pipeline.studio import Idea

    discord_thread, bot = session.discord_thread, session.bot
    fake = discord_thread.fake
    user = discord_thread.users[0]

    pictures: dict[tuple[str, int], list[bytes]] = {}
    fake_cpu: list[float] = []  # CPU seconds of the fake Discord's thread per bot job
    loop_cpu: dict[str, list[float]] = {"bot": [], "direct": []}  # of the event-loop thread

    async def via_bot(prompt: str, seed: int) -> float:
        cpu_started = time.thread_time()
        elapsed, job_id = await discord_thread.call(
            imagine_timed(fake, {"prompt": prompt, "seed": seed}, user, cpu=fake_cpu)
        )
        await bot_idle(bot)
        loop_cpu["bot"].append(time.thread_time() - cpu_started)
        pictures.setdefault((prompt, seed), []).append(await bot.store.read_image(job_id))
        return elapsed

    async def direct(prompt: str, seed: int) -> float:
        job = bot.executor.admit("direct-caller")
        cpu_started = time.thread_time()
        started = time.perf_counter()
        try:
            output = await bot.studio.run(job, Idea(text=prompt, seed=seed))
        finally:
            job.finish("done")
        elapsed = time.perf_counter() - started
        loop_cpu["direct"].append(time.thread_time() - cpu_started)
        pictures.setdefault((prompt, seed), []).append(output.image_png)
        return elapsed

    # Warm-up: first calls of every path (not timed).
    await via_bot(IDEAS[0], 1)
    await direct(IDEAS[0], 1)

    bot_s: list[float] = []
    direct_s: list[float] = []
    for i in range(plan.overhead_pairs):
        prompt, seed = IDEAS[i % len(IDEAS)], 100 + i
        if i % 2 == 0:
            bot_s.append(await via_bot(prompt, seed))
            direct_s.append(await direct(prompt, seed))
        else:
            direct_s.append(await direct(prompt, seed))
            bot_s.append(await via_bot(prompt, seed))
        log.info("overhead pair %d: bot %.3f s, direct %.3f s", i + 1, bot_s[-1], direct_s[-1])
    ratios = [b / d for b, d in zip(bot_s, direct_s, strict=True)]
    return {
        "pairs": plan.overhead_pairs,
        "bot_s": bot_s,
        "direct_s": direct_s,
        "bot_median_s": median(bot_s),
        "direct_median_s": median(direct_s),
        "ratio_of_medians": median(bot_s) / median(direct_s),
        "pair_ratio_median": median(ratios),
        "overhead_pct": (median(ratios) - 1.0) * 100.0,
        "overhead_ms_median": median([(b - d) * 1000 for b, d in zip(bot_s, direct_s, strict=True)]),
        "model_load_s": session.model_load_s,
        "torch_threads_gpu_thread": session.torch_threads_gpu_thread,
        "same_picture_pairs": sum(1 for v in pictures.values() if len(v) == 2 and v[0] == v[1]),
        # diagnostics (warm-up excluded): CPU time per job on the event-loop thread, and of the
        # fake Discord's thread (work the real Discord would do elsewhere; here it shares the CPU)
        "loop_cpu_ms_bot": median(loop_cpu["bot"][1:]) * 1000,
        "loop_cpu_ms_direct": median(loop_cpu["direct"][1:]) * 1000,
        "fake_discord_cpu_ms": median(fake_cpu[1:]) * 1000,
    }
