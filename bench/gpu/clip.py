"""``clip`` section: ``ClipCritic.review`` of a 512² picture against the prompt and the scene's elements."""

from __future__ import annotations

import logging
import time

from ..models import IDEAS
from ..report import median, metric
from .harness import GpuBench

log = logging.getLogger(__name__)


async def section_clip(bench: GpuBench) -> None:
    from pipeline.directors import LocalDirector

    scene = await LocalDirector().direct(IDEAS[0], style=None, language="en")
    image = (await bench.gpu(bench.render_fn(1)))[0].image
    job = bench.executor.admit("bench-clip")
    times = []
    try:
        for i in range(bench.plan.warmup + bench.repeats):
            started = time.perf_counter()
            await bench.executor.review(job, image, scene, scene.diffusion_prompt)
            if i >= bench.plan.warmup:
                times.append(time.perf_counter() - started)
    finally:
        job.finish("done")
    bench.details["clip"] = {"review_s": times, "texts": 1 + len(scene.elements), "image_px": image.size}
    bench.metrics["clip_review"] = metric(
        f"CLIP ViT-L/14 review ({1 + len(scene.elements)} texts vs a {image.size[0]}² picture)",
        median(times),
        "s",
        fmt="{:.3f}",
    )
