"""``families`` section (issue #12): for each model family beyond SD 1.5 — SDXL, SDXL-Turbo,
SD3-medium, FLUX.1-schnell (real-size architectures, random weights: ``bench/family_models.py``) —
load it through the product's model pool (``MODELS``, one resident at a time), then measure at its
NATIVE size and its family's DEFAULT steps and guidance (nothing set: what a user gets by switching
``DIFFUSION_MODEL``): seconds per image at batch 1, and images/s for a burst of jobs with the
product's dynamic batching (``MAX_BATCH`` 4) and without it (1). Each model is built (once, into the
cache), measured and saved before the next is built, so a lease that ends early keeps what it measured;
the burst is at most 8 jobs and batch 1 at most 3 repeats, to fit the four in one short lease. The speed options of the
``options`` section (fp16/bf16, SDPA, channels_last) are the product's defaults here; they are not
toggled per family."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from ..family_models import ensure_family_model, family_model_dirs
from ..models import IDEAS
from ..report import median, metric
from .harness import GpuBench, fmt_s, put_table

log = logging.getLogger(__name__)


async def section_families(bench: GpuBench) -> None:
    from pipeline.executor import GPUExecutor
    from pipeline.synthesis import RenderRequest

    tiny = bench.args.smoke or bench.args.models == "tiny"
    cache = Path(bench.args.cache)
    dirs = family_model_dirs(cache, tiny=tiny)
    plan = bench.plan
    burst_jobs = min(plan.burst_jobs, 8)
    repeats = min(bench.repeats, 3)
    settings = bench.make_settings(
        DIFFUSION_MODEL=str(dirs["sdxl"]),
        MODELS=", ".join(f"{name}={path}" for name, path in dirs.items()),
        WIDTH=None,
        HEIGHT=None,
        STEPS=None,
        GUIDANCE=None,
        MAX_RESIDENT_MODELS=1,
    )
    executor = GPUExecutor(settings, stage_timeout_s=3600)
    await executor.start()
    rows: list[list[Any]] = []
    details: dict[str, Any] = {}
    try:
        for name in dirs:
            try:
                steps = plan.steps if bench.args.smoke else None  # smoke: 2 steps; else the family's own
                started = time.perf_counter()
                await asyncio.to_thread(ensure_family_model, cache, name, tiny=tiny)
                build_s = time.perf_counter() - started
                started = time.perf_counter()
                synth = await executor.call(None, "tool", executor.engine.models.use, name)
                load_s = time.perf_counter() - started
                family = synth.family

                def request(i: int, _name: str = name, _steps: int | None = steps) -> RenderRequest:
                    return RenderRequest(prompt=IDEAS[i % len(IDEAS)], seed=100 + i, model=_name, steps=_steps)

                b1: list[float] = []
                for i in range(plan.warmup + repeats):
                    job = executor.admit("bench", force=True)
                    t0 = time.perf_counter()
                    image = await executor.render(job, request(i))
                    job.finish()
                    if i >= plan.warmup:
                        b1.append(time.perf_counter() - t0)
                bursts: dict[int, float] = {}
                for max_batch in (4,) if bench.args.smoke else (1, 4):  # smoke: proves the code, not the ratio
                    executor.max_batch = max_batch
                    jobs = [executor.admit(f"user{i}", force=True) for i in range(burst_jobs)]
                    t0 = time.perf_counter()
                    await asyncio.gather(*(executor.render(job, request(i)) for i, job in enumerate(jobs)))
                    bursts[max_batch] = burst_jobs / (time.perf_counter() - t0)
                    for job in jobs:
                        job.finish()
                details[name] = {
                    "family": family.key,
                    "size": [image.width, image.height],
                    "steps": image.steps,
                    "guidance": image.guidance,
                    "build_or_cache_s": build_s,
                    "load_s": load_s,
                    "b1_s": b1,
                    "burst_images_per_s": bursts,
                }
                bench.metrics[f"family_{name}_b1"] = metric(
                    f"{name} ({family.label}) {image.width}x{image.height}, {image.steps} steps: seconds per image",
                    median(b1),
                    "s",
                    fmt="{:.3f}",
                )
                bench.metrics[f"family_{name}_burst"] = metric(
                    f"{name}: images/s in a burst of {burst_jobs} (MAX_BATCH 4)", bursts[4], "img/s", fmt="{:.2f}"
                )
                rows.append(
                    [
                        name,
                        family.label,
                        f"{image.width}×{image.height}",
                        f"{image.steps} / {image.guidance:g}",
                        f"{load_s:.1f}",
                        fmt_s(median(b1)),
                        f"{bursts[1]:.2f}" if 1 in bursts else "—",
                        f"{bursts[4]:.2f}",
                    ]
                )
                log.info("family %s: %.3f s per image, burst %s images/s", name, median(b1), bursts)
                _record(bench, details, rows, burst_jobs)
                bench.save()
            except Exception as exc:  # one family failing (e.g. out of memory) leaves the others measured
                log.exception("family %s failed", name)
                bench.results.setdefault("errors", []).append(f"families/{name}: {type(exc).__name__}: {exc}")
                bench.save()
    finally:
        executor.max_batch = settings.MAX_BATCH
        await executor.shutdown(timeout_s=60)


def _record(bench: GpuBench, details: dict[str, Any], rows: list[list[Any]], burst_jobs: int) -> None:
    bench.details["families"] = details
    put_table(
        bench.results,
        {
            "title": "Model families at their native size and default steps (random weights, real size)",
            "columns": [
                "model",
                "family",
                "native size",
                "steps / guidance",
                "load s",
                "s per image (batch 1)",
                f"burst of {burst_jobs}: images/s, MAX_BATCH 1",
                "MAX_BATCH 4",
            ],
            "rows": rows,
        },
    )
