"""(g) The web API under a burst (issue #14): ``python -m bench.cpu.web_api [--quick]``.

The headless runtime and the web server (uvicorn, in-process, 127.0.0.1) on the tiny models with
the product's defaults; 50 API keys (50 users) each start one job at once. While the burst runs:

* **GET /api/jobs/{id}**: a few client loops poll random jobs of the burst back to back —
  requests per second and latency p50 / p99;
* **SSE fan-out**: one stream per job plus extra watchers on one job — the delay from an event's
  publication (the server's monotonic clock; same process) to its arrival at the client;
* **event-loop lag** of the server's loop: a heartbeat task sleeps 10 ms and records how late it
  wakes (the goal: p99 ≤ 50 ms, as for Discord).

The HTTP clients run in a separate process (as real clients are other machines), so neither their
parsing nor their share of the GIL is the server's; they still share the 2 CPU cores. Arrival
times use the system-wide monotonic clock, which both processes read.
Writes ``bench/results/web-cpu-<date>[-quick].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime as dt
import json
import logging
import multiprocessing
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..models import ensure_tiny_models
from ..report import RESULTS_DIR, machine_info, percentile, rounded
from .event_loop_lag import Heartbeat
from .harness import FULL, CpuPlan, settings_factory

log = logging.getLogger(__name__)

BURST_JOBS = 50
EXTRA_WATCHERS = 20  # more streams on the first job: one job's events fanned out to many clients
POLLERS = 4
LAG_GOAL_MS = 50.0


def run_clients(base: str, keys: list[str]) -> dict[str, Any]:
    """In the client process: the whole client side of the burst."""
    return asyncio.run(_clients(base, keys, threading.Event()))


async def _stream(client: Any, url: str, key: str, arrivals: list[tuple[str, int, float, float]], job_id: str) -> None:
    """Follow one job's events; each arrival with the moment the stream was open (events published
    before then are replayed on connect and not counted as delivery delay)."""
    import httpx

    async with client.stream("GET", url, headers={"Authorization": f"Bearer {key}"}) as response:
        if response.status_code != 200:
            raise httpx.HTTPError(f"{url}: {response.status_code}")
        connected = time.monotonic()
        name, seq = None, None
        async for line in response.aiter_lines():  # event:, data:, id:, then a blank line
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("id:"):
                seq = int(line[3:].strip())
            elif line == "" and seq is not None:
                arrivals.append((job_id, seq, time.monotonic(), connected))
                if name in ("done", "failed"):
                    return
                name, seq = None, None


async def _clients(base: str, keys: list[str], stop: threading.Event) -> dict[str, Any]:
    """On the client thread: start the burst, follow every job, poll job states until all are done."""
    import httpx

    limits = httpx.Limits(max_connections=BURST_JOBS + EXTRA_WATCHERS + POLLERS + 10)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        started = time.monotonic()
        created = await asyncio.gather(
            *(
                client.post(
                    "/api/jobs",
                    json={"text": f"a lighthouse on a cliff, variation {i}", "seed": 100 + i},
                    headers={"Authorization": f"Bearer {key}"},
                )
                for i, key in enumerate(keys)
            )
        )
        submit_s = time.monotonic() - started
        jobs = [(r.json()["job_id"], r.json()["events_url"], key) for r, key in zip(created, keys, strict=True)]
        assert all(r.status_code == 202 for r in created), [r.text for r in created if r.status_code != 202]
        arrivals: list[tuple[str, int, float, float]] = []
        streams = [_stream(client, url, key, arrivals, job_id) for job_id, url, key in jobs]
        first_id, first_url, first_key = jobs[0]
        streams += [_stream(client, first_url, first_key, arrivals, first_id) for _ in range(EXTRA_WATCHERS)]
        get_latencies: list[float] = []
        rng = random.Random(0)

        async def poll() -> None:
            while not stop.is_set():
                job_id, _, key = rng.choice(jobs)
                t0 = time.monotonic()
                response = await client.get(f"/api/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"})
                get_latencies.append(time.monotonic() - t0)
                assert response.status_code == 200

        pollers = [asyncio.create_task(poll()) for _ in range(POLLERS)]
        poll_started = time.monotonic()
        await asyncio.gather(*streams)
        stop.set()
        await asyncio.gather(*pollers)
        poll_s = time.monotonic() - poll_started
        return {
            "submit_s": submit_s,
            "burst_s": time.monotonic() - started,
            "jobs": [job_id for job_id, _, _ in jobs],
            "arrivals": arrivals,
            "get_latencies": get_latencies,
            "poll_s": poll_s,
        }


async def measure(plan: CpuPlan, root: Path) -> dict[str, Any]:
    from bot.headless import Headless
    from web.server import WebServer

    models = ensure_tiny_models(root / "models")
    keys = [f"bench-key-{i}" for i in range(BURST_JOBS)]
    settings = settings_factory(models, plan, root)(DISCORD_TOKEN=None, API_PORT=0, API_KEYS=",".join(keys))
    runtime = Headless(settings, warm_up=False)
    runner = await runtime.start()
    await runtime.executor.warm_up(whisper=False, clip=True)
    server = WebServer(settings)
    base = (await server.start(runner)).rstrip("/")
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    await asyncio.get_running_loop().run_in_executor(pool, time.sleep, 0)  # the client process is up
    heartbeat = Heartbeat(plan.lag_period_s).start()
    await asyncio.sleep(plan.idle_s)
    idle = await heartbeat.stop()
    try:
        heartbeat.start()
        out = await asyncio.get_running_loop().run_in_executor(pool, run_clients, base, keys)
        lags = await heartbeat.stop()
        api = runner.api
        assert api is not None
        published: dict[tuple[str, int], float] = {}
        states = []
        for job_id in out["jobs"]:
            record = await runtime.store.get(job_id)
            states.append(record.state if record else "missing")
            events = api._logs[job_id]
            for event in events.events:
                published[(job_id, event.seq)] = events.started + event.t
        delays = [
            arrived - published[(j, s)]
            for j, s, arrived, connected in out["arrivals"]
            if (j, s) in published and published[(j, s)] >= connected  # live, not replayed on connect
        ]
    finally:
        pool.shutdown()
        await server.stop()
        await runtime.close(grace_s=5)
    gets = out["get_latencies"]
    ms = 1000.0
    return rounded(
        {
            "jobs": BURST_JOBS,
            "steps": plan.steps,
            "done": states.count("done"),
            "submit_s": out["submit_s"],
            "burst_wall_s": out["burst_s"],
            "get_job": {
                "clients": POLLERS,
                "requests": len(gets),
                "requests_per_s": len(gets) / out["poll_s"],
                "p50_ms": percentile(gets, 50) * ms,
                "p99_ms": percentile(gets, 99) * ms,
                "max_ms": max(gets) * ms,
            },
            "sse": {
                "streams": BURST_JOBS + EXTRA_WATCHERS,
                "events_received": len(out["arrivals"]),
                "live_events_timed": len(delays),
                "events_per_s": len(out["arrivals"]) / out["burst_s"],
                "delivery_p50_ms": percentile(delays, 50) * ms,
                "delivery_p99_ms": percentile(delays, 99) * ms,
                "delivery_max_ms": max(delays) * ms,
            },
            "loop_lag": {
                "period_ms": plan.lag_period_s * ms,
                "samples": len(lags),
                "p50_ms": percentile(lags, 50) * ms,
                "p99_ms": percentile(lags, 99) * ms,
                "max_ms": max(lags) * ms,
                "idle_p99_ms": percentile(idle, 99) * ms if idle else None,
                "goal_p99_ms": LAG_GOAL_MS,
                "goal_met": percentile(lags, 99) * ms <= LAG_GOAL_MS,
            },
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu.web_api", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer denoising steps (10)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan = CpuPlan(steps=10, idle_s=0.5) if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="voxcanvas-web-bench-") as tmp:
        results = asyncio.run(measure(plan, Path(tmp)))
    payload = {
        "mode": "web-cpu",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "results": results,
    }
    name = f"web-cpu-{dt.date.today().isoformat()}{'-quick' if args.quick else ''}.json"
    path = args.out / name
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"wrote {path}")
    return 0 if results["loop_lag"]["goal_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
