"""``burst`` section: 32 render jobs from 32 users through the executor one at a time (``MAX_BATCH`` 1,
what ``DYNAMIC_BATCHING=false`` sets) vs batched (``MAX_BATCH`` 4, the default, and 8); and 32 whole
text jobs (render + review) one at a time vs batched. ``run_bursts`` and ``burst_table`` serve the
``compile`` section too."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..common import batch_size_delta
from ..models import IDEAS
from ..report import metric, percentile
from .harness import GpuBench, put_table

log = logging.getLogger(__name__)


async def _render_burst(bench: GpuBench, n: int, tag: str) -> dict[str, Any]:
    from pipeline.synthesis import RenderRequest

    ex = bench.executor
    jobs = [ex.admit(f"{tag}-{i}") for i in range(n)]

    async def one(i, job):
        submitted = time.perf_counter()
        try:
            await ex.render(
                job,
                RenderRequest(
                    prompt=IDEAS[i % len(IDEAS)],
                    seed=1000 + i,
                    steps=bench.plan.steps,
                    guidance=bench.plan.guidance,
                    width=bench.plan.size,
                    height=bench.plan.size,
                ),
            )
        finally:
            job.finish("done")
        return time.perf_counter() - submitted

    before = dict(ex.metrics().batch_sizes)
    started = time.perf_counter()
    latencies = await asyncio.gather(*(one(i, j) for i, j in enumerate(jobs)))
    wall = time.perf_counter() - started
    after = dict(ex.metrics().batch_sizes)
    return {
        "wall_s": wall,
        "images_per_s": n / wall,
        "batch_sizes": batch_size_delta(before, after),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
    }


async def _loop_burst(bench: GpuBench, n: int, tag: str) -> dict[str, Any]:
    from pipeline.studio import Idea, Studio

    studio = Studio(bench.settings, bench.executor)
    jobs = [bench.executor.admit(f"{tag}-{i}") for i in range(n)]

    async def one(i, job):
        submitted = time.perf_counter()
        try:
            await studio.run(job, Idea(text=IDEAS[i % len(IDEAS)], seed=2000 + i))
        finally:
            job.finish("done")
        return time.perf_counter() - submitted

    started = time.perf_counter()
    latencies = await asyncio.gather(*(one(i, j) for i, j in enumerate(jobs)))
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "jobs_per_s": n / wall,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
    }


async def run_bursts(
    bench: GpuBench, label: str, batches: tuple[int, ...], *, loop_burst: bool = True
) -> dict[str, Any]:
    """Render bursts with the executor's batch limit at 1 (what DYNAMIC_BATCHING=false sets) and at
    each of ``batches``; the limit is changed on the one executor so the models and the GPU
    thread (and any compiled graphs, which belong to that thread) stay the same."""
    ex, plan = bench.executor, bench.plan
    default = ex.max_batch
    runs: dict[int, Any] = {}
    loops: dict[int, Any] = {}
    try:
        for max_batch in (1, *batches):
            ex.max_batch = max_batch
            if plan.warmup:
                await _render_burst(bench, max_batch, "warm")  # this batch shape once, untimed
            runs[max_batch] = await _render_burst(bench, plan.burst_jobs, f"burst{max_batch}")
            log.info(
                "%s burst, MAX_BATCH %d: %.2f images/s %s",
                label,
                max_batch,
                runs[max_batch]["images_per_s"],
                runs[max_batch]["batch_sizes"],
            )
        if loop_burst:
            for max_batch in (1, batches[0]):
                ex.max_batch = max_batch
                loops[max_batch] = await _loop_burst(bench, plan.burst_jobs, f"loop{max_batch}")
                log.info("%s loop burst, MAX_BATCH %d: %.2f jobs/s", label, max_batch, loops[max_batch]["jobs_per_s"])
    finally:
        ex.max_batch = default
    return {"render": runs, "loop": loops}


async def section_burst(bench: GpuBench) -> None:
    plan = bench.plan
    result = await run_bursts(bench, "eager", plan.burst_batches)
    bench.details["burst"] = result
    runs, loops = result["render"], result["loop"]
    default = plan.burst_batches[0]
    bench.metrics["burst_ratio"] = metric(
        f"Burst of {plan.burst_jobs} render jobs: throughput batched (MAX_BATCH {default}) ÷ one at a time",
        runs[default]["images_per_s"] / runs[1]["images_per_s"],
        "×",
        target=(">=", 2.0),
        fmt="{:.2f}",
    )
    for mb in plan.burst_batches[1:]:
        bench.metrics[f"burst_ratio_{mb}"] = metric(
            f"Burst of {plan.burst_jobs} render jobs: batched (MAX_BATCH {mb}) ÷ one at a time",
            runs[mb]["images_per_s"] / runs[1]["images_per_s"],
            "×",
            fmt="{:.2f}",
        )
    if loops:
        bench.metrics["loop_burst_ratio"] = metric(
            f"Burst of {plan.burst_jobs} whole text jobs (render + CLIP review): batched ÷ one at a time",
            loops[default]["jobs_per_s"] / loops[1]["jobs_per_s"],
            "×",
            fmt="{:.2f}",
        )
    burst_table(bench, "Burst", result)


def burst_table(bench: GpuBench, title: str, result: dict[str, Any]) -> None:
    runs, loops = result["render"], result["loop"]
    rows = [
        [
            f"renders, MAX_BATCH {mb}",
            f"{r['images_per_s']:.2f} images/s",
            f"{r['wall_s']:.2f}",
            f"{r['images_per_s'] / runs[1]['images_per_s']:.2f}×",
            str(r["batch_sizes"]),
            f"{r['latency_p50_s']:.2f} / {r['latency_p95_s']:.2f}",
        ]
        for mb, r in runs.items()
    ]
    rows += [
        [
            f"whole text jobs, MAX_BATCH {mb}",
            f"{r['jobs_per_s']:.2f} jobs/s",
            f"{r['wall_s']:.2f}",
            f"{r['jobs_per_s'] / loops[1]['jobs_per_s']:.2f}×",
            "",
            f"{r['latency_p50_s']:.2f} / {r['latency_p95_s']:.2f}",
        ]
        for mb, r in loops.items()
    ]
    put_table(
        bench.results,
        {
            "title": (
                f"{title} of {bench.plan.burst_jobs} jobs from {bench.plan.burst_jobs} users through GPUExecutor"
            ),
            "columns": [
                "run",
                "throughput",
                "wall s",
                "vs one at a time",
                "batch sizes (size: calls)",
                "job latency p50 / p95 s",
            ],
            "rows": rows,
        },
    )
