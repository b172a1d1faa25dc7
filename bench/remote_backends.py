"""Per-job overhead of each remote render backend: the bot's own cost, not the server's.

``python -m bench.remote_backends [--jobs N] [--size PX]`` renders N pictures one after the other
through the real :class:`~pipeline.executor.GPUExecutor` (admission, fair gate, progress, the
backend's HTTP protocol, base64/PNG decoding and checks) against each wire-level fake of
``devkit.backends`` with render time zero, and subtracts the time the fake spent in its own
handlers (its PNG encoding, its JSON). What is left is what VoxCanvas adds per picture on top of
a real server's render time. Replicate's figure is dominated by polling (first poll after
``POLL_INTERVAL_S``): that is latency, not CPU, and is reported separately as CPU time per job.

Writes ``bench/results/remote-backends-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any


async def measure(kind: str, jobs: int, size: int) -> dict[str, Any]:
    from devkit.backends import FakeA1111, FakeComfyUI, FakeReplicate, FakeStability
    from pipeline.executor import GPUExecutor
    from pipeline.settings import Settings
    from pipeline.synthesis import RenderRequest

    fake_cls: Any = {"a1111": FakeA1111, "comfyui": FakeComfyUI, "stability": FakeStability, "replicate": FakeReplicate}
    async with fake_cls[kind](step_s=0.0) as fake:
        settings = Settings(
            _env_file=None,
            RENDER_BACKEND=kind,
            A1111_URL=fake.url,
            COMFYUI_URL=fake.url,
            STABILITY_URL=fake.url,
            STABILITY_API_KEY="sk-test",
            REPLICATE_URL=fake.url,
            REPLICATE_API_TOKEN="r8_test",
            DEVICE="cpu",
            API_PORT=None,
        )
        executor = GPUExecutor(settings, stage_timeout_s=120)
        await executor.start()
        walls: list[float] = []
        cpu0 = time.process_time()
        try:
            for i in range(jobs + 2):
                if i == 2:  # two warm-up renders (connection set-up), then measure
                    fake.server_s, cpu0 = 0.0, time.process_time()
                job = executor.admit(f"user-{i}")
                began = time.perf_counter()
                await executor.render(
                    job, RenderRequest(prompt="a red apple on a wooden table", seed=i, steps=4, width=size, height=size)
                )
                job.finish()
                if i >= 2:
                    walls.append(time.perf_counter() - began)
            cpu = time.process_time() - cpu0
        finally:
            await executor.shutdown(timeout_s=10)
        server = fake.server_s
    total = sum(walls)
    return {
        "backend": kind,
        "jobs": jobs,
        "size": size if kind != "stability" else "64x64 (the fake's 1:1)",
        "wall_per_job_ms": round(1000 * statistics.median(walls), 2),
        "overhead_per_job_ms": round(1000 * (total - server) / jobs, 2),
        "process_cpu_per_job_ms": round(1000 * cpu / jobs, 2),
        "fake_server_per_job_ms": round(1000 * server / jobs, 2),
        "note": "process CPU includes the fake's own handlers (same process)",
    }


async def measure_candidates(jobs: int, size: int, *, batched: bool) -> dict[str, Any]:
    """4 candidates per job on the fake A1111 (no sampling time): one ``batch_size`` 4 request, or
    (``batched=False``, max_batch forced to 1) four requests through the one-job-at-a-time server."""
    from dataclasses import replace

    from devkit.backends import FakeA1111
    from pipeline.executor import GPUExecutor
    from pipeline.settings import Settings
    from pipeline.synthesis import RenderRequest

    async with FakeA1111(step_s=0.0) as fake:
        settings = Settings(_env_file=None, RENDER_BACKEND="a1111", A1111_URL=fake.url, DEVICE="cpu", API_PORT=None)
        executor = GPUExecutor(settings, stage_timeout_s=120)
        backend = executor.router.backend("a1111")
        if not batched:
            backend.capabilities = replace(backend.capabilities, max_batch=1)  # type: ignore[misc]
        await executor.start()
        walls: list[float] = []
        try:
            for i in range(jobs + 2):
                job = executor.admit(f"user-{i}")
                job.candidates = 4
                began = time.perf_counter()
                await asyncio.gather(
                    *(
                        executor.render(
                            job, RenderRequest(prompt="a red apple", seed=10 * i + n, steps=4, width=size, height=size)
                        )
                        for n in range(4)
                    )
                )
                job.finish()
                if i >= 2:
                    walls.append(time.perf_counter() - began)
        finally:
            await executor.shutdown(timeout_s=10)
    return {
        "backend": "a1111",
        "candidates": 4,
        "batched": batched,
        "size": size,
        "requests_per_job": 1 if batched else 4,
        "wall_per_job_ms": round(1000 * statistics.median(walls), 2),
        "note": "fake server in the same process, no sampling time: includes the fake encoding 4 noise PNGs",
    }


async def main_async(jobs: int, size: int) -> list[dict[str, Any]]:
    rows = [await measure(kind, jobs, size) for kind in ("a1111", "comfyui", "stability", "replicate")]
    for batched in (True, False):
        rows.append(await measure_candidates(jobs, size, batched=batched))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    rows = asyncio.run(main_async(args.jobs, args.size))
    for row in rows:
        print(json.dumps(row))
    out = Path(__file__).parent / "results" / f"remote-backends-{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
