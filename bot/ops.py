"""What an operator sees: ``/metrics`` (Prometheus text format) and ``/healthz`` (200 / 503 + JSON).

Metrics come from prometheus-client into a registry of this runtime's own (never the global one,
so tests can run several runtimes in one process): the executor's histograms and counters
(:class:`pipeline.executor.metrics.MetricsRecorder`), gauges read at scrape time (queue depth,
running jobs, GPU memory, gateway latency), Discord REST errors counted by an aiohttp trace on
discord.py's own HTTP session, and — read from the store when scraped — stored jobs by kind and
state and Gemini fallbacks by reason.

Health: the Discord gateway connected and heartbeating (when the bot runs), the executor's model
thread alive, the store writable (a real write in a transaction).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Final

import aiohttp
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .runner import JobRunner

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
STORE_PROBE_TIMEOUT_S: Final = 5.0


class RestErrors:
    """Discord REST responses with an error status, counted by method and status (an aiohttp
    trace on discord.py's session: ``discord.Client(http_trace=...)``)."""

    def __init__(self) -> None:
        self.counter = Counter(
            "voxcanvas_discord_rest_errors",
            "Discord REST responses with status >= 400",
            ["method", "status"],
            registry=None,
        )

    def trace_config(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()

        async def on_end(session: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams) -> None:
            if params.response.status >= 400:
                self.counter.labels(method=params.method, status=str(params.response.status)).inc()

        async def on_exception(session: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestExceptionParams) -> None:
            self.counter.labels(method=params.method, status="connection").inc()

        trace.on_request_end.append(on_end)
        trace.on_request_exception.append(on_exception)
        return trace


@dataclass
class Check:
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


@dataclass
class Health:
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())

    def as_dict(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "unhealthy", "checks": {k: c.as_dict() for k, c in self.checks.items()}}


class _ScrapeCollector(Collector):
    """Gauges computed when scraped; the store's counts are read just before (async) by :meth:`Ops.metrics`."""

    def __init__(self, ops: Ops) -> None:
        self.ops = ops
        self.job_counts: list[tuple[str, str, int]] = []
        self.fallbacks: list[tuple[str, str, int]] = []

    def collect(self) -> Iterable[Metric]:
        runner = self.ops.runner
        snapshot = runner.executor.metrics() if hasattr(runner.executor, "metrics") else None
        if snapshot is not None:
            yield GaugeMetricFamily("voxcanvas_queue_depth", "Unfinished jobs not yet started", snapshot.queue_depth)
            yield GaugeMetricFamily(
                "voxcanvas_running_jobs", "Unfinished jobs that have started", snapshot.running_jobs
            )
            yield GaugeMetricFamily(
                "voxcanvas_pending_work_items", "Work items waiting for the model thread", snapshot.pending_items
            )
            yield GaugeMetricFamily(
                "voxcanvas_busy_fraction", "Share of time the model thread worked", snapshot.busy_fraction
            )
            yield GaugeMetricFamily(
                "voxcanvas_model_thread_restarts",
                "Times the model thread died and was restarted",
                snapshot.thread_restarts,
            )
        jobs = GaugeMetricFamily("voxcanvas_jobs", "Stored jobs by kind and state", labels=["kind", "state"])
        for kind, state, count in self.job_counts:
            jobs.add_metric([kind, state], count)
        yield jobs
        fallbacks = GaugeMetricFamily(
            "voxcanvas_gemini_fallbacks",
            "Stored results whose Gemini director/critic fell back, by reason",
            labels=["role", "reason"],
        )
        for role, reason, count in self.fallbacks:
            fallbacks.add_metric([role, reason], count)
        yield fallbacks
        gpu = GaugeMetricFamily("voxcanvas_gpu_memory_bytes", "GPU memory allocated by torch", labels=["device"])
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                gpu.add_metric([f"cuda:{index}"], float(torch.cuda.memory_allocated(index)))
        yield gpu
        client = self.ops.client
        if client is not None:
            latency = client.latency
            yield GaugeMetricFamily(
                "voxcanvas_gateway_latency_seconds",
                "Discord gateway heartbeat latency (NaN/Inf: not connected)",
                latency,
            )


class Ops:
    """The runtime's metrics registry and health checks. ``client`` is the Discord client, or
    ``None`` when only the web API runs."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self.client: Any = getattr(runner, "_client", None)
        self.registry = CollectorRegistry(auto_describe=True)
        recorder = getattr(runner.executor, "recorder", None)
        if recorder is not None:
            for collector in recorder.collectors():
                self.registry.register(collector)
        rest = getattr(self.client, "rest_errors", None)
        if isinstance(rest, RestErrors):
            self.registry.register(rest.counter)
        self._scrape = _ScrapeCollector(self)
        self.registry.register(self._scrape)
        self._scrape_lock = asyncio.Lock()

    async def metrics(self) -> bytes:
        """The Prometheus text exposition of everything above."""
        async with self._scrape_lock:
            try:
                self._scrape.job_counts = await self.runner.store.job_counts()
                self._scrape.fallbacks = await self.runner.store.fallback_counts()
            except Exception:
                log.warning("metrics: could not read the store", exc_info=True)
                self._scrape.job_counts, self._scrape.fallbacks = [], []
            return generate_latest(self.registry)

    async def health(self) -> Health:
        health = Health()
        if self.client is not None:
            health.checks["gateway"] = self._gateway()
        health.checks["executor"] = self._executor()
        health.checks["store"] = await self._store()
        return health

    def _gateway(self) -> Check:
        client = self.client
        if client.is_closed():
            return Check(False, "the Discord client is closed")
        shards = getattr(client, "shards", None)  # AutoShardedBot: every shard must be up
        if shards:
            if not client.is_ready():
                return Check(False, "not connected to the Discord gateway yet")
            down = sorted(shard_id for shard_id, shard in shards.items() if shard.is_closed())
            if down:
                return Check(False, f"the gateway connection of shard(s) {down} is down (reconnecting)")
        else:
            ws = getattr(client, "ws", None)
            if ws is None or not client.is_ready():
                return Check(False, "not connected to the Discord gateway yet")
            if not getattr(ws, "open", False):
                return Check(False, "the gateway connection is down (reconnecting)")
        latency = client.latency
        if not math.isfinite(latency):
            return Check(False, "no heartbeat acknowledged on the gateway")
        return Check(True, f"connected; heartbeat latency {latency * 1000:.0f} ms")

    def _executor(self) -> Check:
        executor = self.runner.executor
        if getattr(executor, "_accepting", True) is False:
            return Check(False, "shutting down")
        health = getattr(executor, "health", None)  # executors without a model thread (EXECUTOR=ray)
        if callable(health):
            ok, detail = health()
            return Check(ok, detail)
        thread = getattr(executor, "thread", None)
        if thread is None:
            return Check(False, "the model thread is not running")
        if not thread.is_alive():
            return Check(False, f"the model thread {thread.name!r} is dead")
        return Check(True, f"model thread {thread.name!r} alive")

    async def _store(self) -> Check:
        started = time.monotonic()
        try:
            await asyncio.wait_for(self.runner.store.check_writable(), STORE_PROBE_TIMEOUT_S)
        except TimeoutError:
            return Check(False, f"a write did not finish in {STORE_PROBE_TIMEOUT_S:.0f} s")
        except Exception as exc:
            return Check(False, f"not writable: {exc}")
        return Check(True, f"writable ({(time.monotonic() - started) * 1000:.0f} ms)")
