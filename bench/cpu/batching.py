"""(b) Batching: a burst of 32 render jobs from 32 users through ``GPUExecutor`` with
``DYNAMIC_BATCHING`` on (product default ``MAX_BATCH``) and off, same seeds, same models (one
:class:`~pipeline.executor.Engine` shared by both executors); throughput ratio and the histogram of
batch sizes. The images of both runs are compared."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..common import batch_size_delta
from ..models import IDEAS
from ..report import median, percentile
from .harness import CpuPlan

log = logging.getLogger(__name__)


async def _render_burst(executor, n: int, steps: int, size: int, tag: str):
    from pipeline.synthesis import RenderRequest

    jobs = [executor.admit(f"{tag}-user-{i}") for i in range(n)]

    async def one(i: int, job):
        submitted = time.perf_counter()
        try:
            rendered = await executor.render(
                job, RenderRequest(prompt=IDEAS[i % len(IDEAS)], seed=1000 + i, steps=steps, width=size, height=size)
            )
        finally:
            job.finish("done")
        return rendered, time.perf_counter() - submitted

    started = time.perf_counter()
    results = await asyncio.gather(*(one(i, job) for i, job in enumerate(jobs)))
    wall = time.perf_counter() - started
    return wall, [r for r, _ in results], [lat for _, lat in results]


async def measure_batching(plan: CpuPlan, make_settings) -> dict[str, Any]:
    import numpy as np

    from pipeline.executor import Engine, GPUExecutor

    engine = Engine(make_settings())
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    images: dict[bool, list] = {}
    order = [False, True, True, False, False, True][: 2 * plan.burst_reps]
    warmed: set[bool] = set()
    for batching in order:
        settings = make_settings(DYNAMIC_BATCHING=batching, MAX_JOBS_PER_USER=1000, MAX_QUEUE=1000)
        executor = GPUExecutor(settings, engine=engine)
        await executor.start()
        try:
            await executor.warm_up(whisper=False, clip=False)
            if batching not in warmed:  # first calls at this mode's batch shapes, not timed
                await _render_burst(executor, settings.MAX_BATCH, plan.steps, plan.size, "warm")
                warmed.add(batching)
            before = dict(executor.metrics().batch_sizes)
            wall, rendered, latencies = await _render_burst(executor, plan.burst_jobs, plan.steps, plan.size, "burst")
            after = dict(executor.metrics().batch_sizes)
        finally:
            await executor.shutdown()
        hist = batch_size_delta(before, after)
        per_call = {}
        for size_ in hist:
            secs = [r.seconds for r in rendered if r.batch_size == size_]
            per_call[size_] = median(secs)
        runs[batching].append(
            {
                "wall_s": wall,
                "images_per_s": plan.burst_jobs / wall,
                "batch_sizes": hist,
                "call_s_by_batch": per_call,
                "job_latency_p50_s": percentile(latencies, 50),
                "job_latency_p95_s": percentile(latencies, 95),
            }
        )
        images[batching] = [np.asarray(r.image, dtype=np.int16) for r in rendered]
        log.info(
            "burst of %d renders, batching %s: %.2f s (%.2f images/s), batch sizes %s",
            plan.burst_jobs,
            "on" if batching else "off",
            wall,
            plan.burst_jobs / wall,
            hist,
        )
    max_diff = max(int(np.abs(a - b).max()) for a, b in zip(images[True], images[False], strict=True))
    on = median([r["images_per_s"] for r in runs[True]])
    off = median([r["images_per_s"] for r in runs[False]])
    settings = make_settings()
    return {
        "jobs": plan.burst_jobs,
        "max_batch": settings.MAX_BATCH,
        "batch_window_ms": settings.BATCH_WINDOW_MS,
        "batched": runs[True],
        "one_at_a_time": runs[False],
        "batched_images_per_s": on,
        "one_at_a_time_images_per_s": off,
        "throughput_ratio": on / off,
        "max_pixel_difference": max_diff,
    }
