"""EXECUTOR=ray on this machine (CPU, tiny models; ``python -m bench.cpu.ray_burst``):

* a burst of 32 render jobs (32 users) through 1 render replica, then through 2 (one run each,
  after a warm-up burst; the ratio of wall times);
* the overhead per job of the Ray path: 8 jobs one after another through the Ray executor
  (1 replica) and through the local executor, same models and requests (median difference).

Starts its own local Ray cluster (127.0.0.1, CPU only) and stops it. Results go to
``bench/results/ray-cpu-<date>.json``. On a GPU machine, ``--device cuda --model real --size 512
--steps 25`` renders SD 1.5's real-size architecture (random weights, :mod:`bench.models`) and compares
two replicas sharing one GPU (``RAY_RENDER_GPUS=0.5`` each) against one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ..models import IDEAS

RESULTS = Path(__file__).resolve().parents[1] / "results"


async def _burst(executor: Any, n: int, steps: int, size: int, tag: str) -> tuple[float, list[Any]]:
    from pipeline.synthesis import RenderRequest

    jobs = [executor.admit(f"{tag}-{i}") for i in range(n)]

    async def one(i: int, job: Any) -> Any:
        try:
            return await executor.render(
                job, RenderRequest(prompt=IDEAS[i % len(IDEAS)], seed=1000 + i, steps=steps, width=size, height=size)
            )
        finally:
            job.finish()

    began = time.perf_counter()
    images = await asyncio.gather(*(one(i, job) for i, job in enumerate(jobs)))
    return time.perf_counter() - began, images


async def _serial(executor: Any, n: int, steps: int, size: int) -> list[float]:
    from pipeline.synthesis import RenderRequest

    times = []
    for i in range(n):
        job = executor.admit(f"serial-{i}")
        began = time.perf_counter()
        await executor.render(job, RenderRequest(prompt=IDEAS[0], seed=i, steps=steps, width=size, height=size))
        times.append(time.perf_counter() - began)
        job.finish()
    return times


async def run(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """The measurements, written to ``path`` after each phase (a run cut short keeps what it measured)."""
    import ray
    import torch
    from ray import serve

    from devkit import builders
    from pipeline.executor import GPUExecutor, deployments
    from pipeline.executor.ray_serve import RayExecutor
    from pipeline.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    if args.model == "real":
        from ..models import ensure_real_models

        sd = ensure_real_models(args.cache, names=("sd15",))["sd15"]
    else:
        sd = builders.build_tiny_stable_diffusion(work / "tiny-sd")
    replica_gpus = args.replica_gpus if args.replica_gpus is not None else (0.5 if args.device == "cuda" else None)
    gpus = {"RAY_RENDER_GPUS": replica_gpus} if replica_gpus is not None else {}  # 0.5: two replicas share one GPU
    base = dict(
        DIFFUSION_MODEL=str(sd), DEVICE=args.device, WIDTH=args.size, HEIGHT=args.size, GEMINI_API_KEY="",
        DATA_DIR=work / "data", MAX_JOBS_PER_USER=1000, MAX_QUEUE=1000, EXECUTOR="ray", RAY_ADDRESS="auto",
        _env_file=None, **gpus,
    )  # fmt: skip
    # GPUs counted by torch, not left to Ray's detection: a replica asking for a GPU the cluster
    # does not know about would wait for it forever.
    gpus_seen = torch.cuda.device_count() if args.device == "cuda" else 0
    declared = gpus_seen if args.ray_gpus is None else args.ray_gpus
    ray.init(num_cpus=16, num_gpus=declared, include_dashboard=False, log_to_driver=args.device == "cuda",
             _node_ip_address="127.0.0.1")  # fmt: skip
    _say(f"ray up: {ray.cluster_resources()}")
    out: dict[str, Any] = {"machine": args.machine, "jobs": args.jobs, "steps": args.steps, "size": args.size,
                           "model": "SD 1.5 architecture, random weights" if args.model == "real" else "tiny SD",
                           **{k.lower(): v for k, v in gpus.items()}}  # fmt: skip
    try:
        for replicas in (1, 2):
            settings = Settings(**base, RAY_NAMESPACE=f"bench-{replicas}", RAY_MIN_REPLICAS=replicas,
                                RAY_MAX_REPLICAS=replicas)  # fmt: skip
            executor = RayExecutor(settings, stages=("render",))
            began = time.perf_counter()
            await executor.start()
            _say(f"{replicas} replica(s) deployed in {time.perf_counter() - began:.1f} s")
            await _burst(executor, 2 * replicas * settings.MAX_BATCH, args.steps, args.size, "warm")  # load, warm
            out[f"deploy_and_warm_s_{replicas}"] = time.perf_counter() - began
            wall, images = await _burst(executor, args.jobs, args.steps, args.size, "burst")
            _say(f"{replicas} replica(s): burst of {args.jobs} in {wall:.2f} s")
            out[f"burst_wall_s_{replicas}_replicas"] = wall
            out[f"batch_sizes_{replicas}_replicas"] = sorted({r.batch_size for r in images})
            _save(path, out)
            if replicas == 1:
                out["ray_serial_job_s"] = await _serial(executor, 8, args.steps, args.size)
            await executor.shutdown()
            # The executor leaves its deployments running (a restarted bot reuses them); the bench
            # removes them, or this phase's replicas would keep their GPU share from the next one.
            await asyncio.to_thread(serve.delete, deployments.app_name(settings.RAY_NAMESPACE, "render"))
        _say("local executor")
        out["burst_speedup_2_vs_1"] = out["burst_wall_s_1_replicas"] / out["burst_wall_s_2_replicas"]
        local = GPUExecutor(Settings(**{**base, "EXECUTOR": "local"}))
        await local.start()
        await local.warm_up(whisper=False, clip=False)
        await _serial(local, 2, args.steps, args.size)  # warm
        out["local_serial_job_s"] = await _serial(local, 8, args.steps, args.size)
        wall, _ = await _burst(local, args.jobs, args.steps, args.size, "local")
        out["burst_wall_s_local"] = wall
        await local.shutdown()
        out["ray_overhead_per_job_s"] = statistics.median(out["ray_serial_job_s"]) - statistics.median(
            out["local_serial_job_s"]
        )
        _save(path, out)
    finally:
        serve.shutdown()
        ray.shutdown()
    return out


def _save(path: Path, out: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


def _say(line: str) -> None:
    print(f"[ray_burst {time.strftime('%H:%M:%S')}] {line}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--ray-gpus",
        type=float,
        help="GPUs the local cluster declares (default: torch's count on cuda, else 0); with --replica-gpus "
        "on a CPU machine this checks the GPU placement (replicas render on the CPU)",
    )
    parser.add_argument("--replica-gpus", type=float, help="RAY_RENDER_GPUS per replica (default 0.5 on cuda)")
    parser.add_argument("--machine", default="2-core CPU sandbox (shared)")
    parser.add_argument("--model", choices=("tiny", "real"), default="tiny")
    parser.add_argument("--cache", type=Path, default=RESULTS.parents[1] / ".cache" / "bench-models")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    path = args.out / f"ray-{args.device}-{datetime.date.today().isoformat()}.json"
    out = asyncio.run(run(args, path))
    print(json.dumps(out, indent=2))
    print(f"→ {path}")


if __name__ == "__main__":
    main()
