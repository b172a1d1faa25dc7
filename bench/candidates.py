"""Issue #13's benchmark: images per second of one 4-candidate job against four 1-candidate jobs,
and how often the critic's ranking picks a candidate other than the first.

    python -m bench.candidates                    # the test suite's tiny SD + CLIP (seconds, any machine)
    python -m bench.candidates --size real        # SD 1.5 / CLIP ViT-L/14 sizes, random weights (a GPU)

Everything goes through the product's own path: a :class:`~pipeline.studio.Studio` on a
:class:`~pipeline.executor.GPUExecutor` (one model thread, dynamic batching), the local director
and the CLIP critic, ``QA_MAX_ROUNDS=0`` so that only the first render and its review are timed.

* ``one_job_4``: one job with ``candidates=4`` — one pipeline call of four, one CLIP pass.
* ``four_jobs_1_sequential``: four 1-candidate jobs one after the other (a user pressing four times).
* ``four_jobs_1_concurrent``: four 1-candidate jobs of four users at once (the executor may batch
  them too, when they arrive within ``BATCH_WINDOW_MS``).

Results: ``bench/results/candidates-<device>-<size>-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import bench_parser, hub_offline, model_dirs, result_path

hub_offline()
log = logging.getLogger("bench.candidates")
IDEAS = (
    "a red apple on a wooden table",
    "a lighthouse on a cliff at dusk",
    "a fox in the snow",
    "a castle on a hill at night",
    "a bowl of ramen with chopsticks",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(
        "python -m bench.candidates", __doc__ or "", steps_help="denoising steps (default: 25 GPU, 10 CPU)"
    )
    parser.add_argument("--side", type=int, default=None, help="picture side (default: 512 real, 64 tiny)")
    return parser.parse_args(argv)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from pipeline.executor import GPUExecutor
    from pipeline.settings import Settings
    from pipeline.studio import Idea, Studio

    cuda = args.device != "cpu" and torch.cuda.is_available()
    steps = args.steps or (25 if cuda else 10)
    side = args.side or (512 if args.size == "real" else 64)
    sd_dir, clip_dir = model_dirs(args)
    settings = Settings(
        DIFFUSION_MODEL=str(sd_dir),
        CLIP_MODEL=str(clip_dir),
        DEVICE=args.device,
        DATA_DIR=Path(tempfile.mkdtemp(prefix="bench-candidates-")),
        WIDTH=side,
        HEIGHT=side,
        STEPS=steps,
        QA_MAX_ROUNDS=0,
        MAX_JOBS_PER_USER=4,
        MAX_BATCH=4,
        GEMINI_API_KEY="",
        _env_file=None,
    )
    executor = GPUExecutor(settings, stage_timeout_s=3600)
    await executor.start()
    studio = Studio(settings, executor)

    async def job(user: str, idea: Idea) -> Any:
        admitted = executor.admit(user)
        try:
            return await studio.run(admitted, idea)
        finally:
            admitted.finish()

    try:
        await job("warm", Idea(text="warm up", seed=0, candidates=4))  # loads the models, first-call costs
        await job("warm", Idea(text="warm up", seed=0, candidates=1))
        times: dict[str, list[float]] = {"one_job_4": [], "four_jobs_1_sequential": [], "four_jobs_1_concurrent": []}
        best_not_first = 0
        best_positions: list[int] = []
        for r in range(args.repeats):
            for i, text in enumerate(IDEAS):
                seed = 1000 * r + 10 * i
                t0 = time.perf_counter()
                out = await job("a", Idea(text=text, seed=seed, candidates=4))
                if i == 0:
                    times["one_job_4"].append(time.perf_counter() - t0)
                best_positions.append(out.result.best_candidate)
                best_not_first += out.result.best_candidate != 0
            t0 = time.perf_counter()
            for n in range(4):
                await job("a", Idea(text=IDEAS[0], seed=1000 * r + n, candidates=1))
            times["four_jobs_1_sequential"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await asyncio.gather(
                *(job(f"u{n}", Idea(text=IDEAS[0], seed=1000 * r + n, candidates=1)) for n in range(4))
            )
            times["four_jobs_1_concurrent"].append(time.perf_counter() - t0)
        metrics = executor.metrics()
    finally:
        await studio.aclose()
        await executor.shutdown(timeout_s=30)
    results = {
        name: {
            "median_s": round(statistics.median(values), 4),
            "images_per_s": round(4 / statistics.median(values), 3),
            "runs_s": [round(v, 4) for v in values],
        }
        for name, values in times.items()
    }
    one = results["one_job_4"]["median_s"]
    return {
        "size": args.size,
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({os.cpu_count()} cores)",
        "steps": steps,
        "side": side,
        "repeats": args.repeats,
        "results": results,
        "speedup_vs_sequential": round(results["four_jobs_1_sequential"]["median_s"] / one, 3),
        "speedup_vs_concurrent": round(results["four_jobs_1_concurrent"]["median_s"] / one, 3),
        "critic_ranking": {
            "jobs": len(best_positions),
            "best_not_candidate_1": best_not_first,
            "best_positions": best_positions,
            "note": "random-weight models: the ranking is noise here; the count shows the mechanism",
        },
        "batch_sizes": {str(k): v for k, v in sorted(metrics.batch_sizes.items())},
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("pipeline", "transformers", "diffusers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = asyncio.run(measure(args))
    path = result_path(args, "candidates", "cpu" if result["device"].startswith("cpu") else "gpu")
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
