"""Operators: ``/metrics`` scraped (real HTTP) during a burst of jobs and parsed with
prometheus-client's own parser; ``/healthz`` answering for the executor thread and the store (the
gateway's part: tests/bot/test_healthz.py)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(180)


def families(text: str) -> dict[str, list]:
    """Metric name → its samples, parsed as Prometheus would."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, name: str, **labels: str) -> float:
    matches = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, samples)
    return matches[0]


async def test_metrics_scraped_during_a_burst(serve):
    served = await serve(MAX_JOBS_PER_USER=8)
    async with served.client() as client:
        created = await asyncio.gather(
            *(
                client.post("/api/jobs", json={"text": f"a red apple number {i}", "steps": 2, "seed": i})
                for i in range(4)
            )
        )
        ids = [r.json()["job_id"] for r in created]
        assert all(r.status_code == 202 for r in created), [r.text for r in created]
        scrapes: list[dict[str, list]] = []
        deadline = asyncio.get_running_loop().time() + 120
        while True:
            response = await client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            scrapes.append(families(response.text))
            states = [(await client.get(f"/api/jobs/{job_id}")).json()["state"] for job_id in ids]
            if all(s in ("done", "failed") for s in states) or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert states == ["done"] * 4
        final = families((await client.get("/metrics")).text)

    # During the burst, some scrape saw work waiting or running.
    assert any(
        value(s["voxcanvas_queue_depth"], "voxcanvas_queue_depth")
        + value(s["voxcanvas_running_jobs"], "voxcanvas_running_jobs")
        > 0
        for s in scrapes
    )
    # Afterwards: stored jobs by kind and state, executor outcomes, histograms with observations.
    assert value(final["voxcanvas_jobs"], "voxcanvas_jobs", kind="text", state="done") == 4
    assert value(final["voxcanvas_executor_jobs"], "voxcanvas_executor_jobs_total", outcome="done") == 4
    assert value(final["voxcanvas_queue_depth"], "voxcanvas_queue_depth") == 0
    renders = value(final["voxcanvas_stage_seconds"], "voxcanvas_stage_seconds_count", stage="render")
    assert renders >= 1
    inf_bucket = value(final["voxcanvas_stage_seconds"], "voxcanvas_stage_seconds_bucket", stage="render", le="+Inf")
    assert inf_bucket == renders
    batches = final["voxcanvas_render_batch_size"]
    assert value(batches, "voxcanvas_render_batch_size_sum") >= 4  # every candidate image was rendered in some batch
    assert value(final["voxcanvas_queue_wait_seconds"], "voxcanvas_queue_wait_seconds_count") >= renders
    assert "voxcanvas_gpu_memory_bytes" in final  # empty on this CPU machine, present for a scraper
    assert "voxcanvas_gemini_fallbacks" in final


async def test_two_runtimes_have_their_own_registries(serve, tmp_path):
    first, second = await serve(), await serve(DATA_DIR=str(tmp_path / "second"))
    async with first.client() as a, second.client() as b:
        created = await a.post("/api/jobs", json={"text": "a blue cube", "steps": 2, "seed": 1})
        assert created.status_code == 202
        deadline = asyncio.get_running_loop().time() + 90
        while (await a.get(f"/api/jobs/{created.json()['job_id']}")).json()["state"] not in ("done", "failed"):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        seen_a = families((await a.get("/metrics")).text)
        seen_b = families((await b.get("/metrics")).text)
    assert value(seen_a["voxcanvas_jobs"], "voxcanvas_jobs", kind="text", state="done") == 1
    assert not [s for s in seen_b["voxcanvas_jobs"] if s.value]
    assert not [s for s in seen_b["voxcanvas_executor_jobs"] if s.name.endswith("_total")]


async def healthcheck(served, tmp_path) -> tuple[int, str]:
    """The container's HEALTHCHECK command (``python -m bot.healthcheck``) against ``served``."""
    port = served.url.rsplit(":", 1)[1]
    env = {**os.environ, "API_HOST": "127.0.0.1", "API_PORT": port, "DATA_DIR": str(served.settings.DATA_DIR)}
    env.pop("DISCORD_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.healthcheck",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_healthz_headless_reports_executor_and_store(serve, tmp_path):
    served = await serve()
    async with served.client() as client:
        response = await client.get("/healthz")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ok"
        assert set(body["checks"]) == {"executor", "store"}  # no Discord in this process
        code, out = await healthcheck(served, tmp_path)
        assert code == 0, out
        # The model thread dies (its executor shuts down): unhealthy, and says which check failed.
        await served.runtime.executor.shutdown(timeout_s=5)
        response = await client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["checks"]["executor"]["ok"] is False
        assert response.json()["checks"]["store"]["ok"] is True
        code, out = await healthcheck(served, tmp_path)
        assert code == 1 and "executor" in out, out
