"""What the executor measures: waits, stage and job times, batch sizes, outcomes, busy time."""

from __future__ import annotations

import collections
import statistics
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram

from .jobs import WorkKind

# Latency buckets (seconds) from a fast CLIP review on a GPU to a slow CPU render.
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf"))
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, float("inf"))


@dataclass
class MetricsSnapshot:
    queue_depth: int  # unfinished jobs that have not started
    running_jobs: int  # unfinished jobs that have started
    pending_items: int  # work items waiting for the GPU thread
    jobs_done: int
    jobs_failed: int
    jobs_cancelled: int
    wait_p50_s: float | None  # enqueue → start of work items
    wait_p95_s: float | None
    stage_mean_s: dict[str, float]  # per work kind: mean wall time of recent calls
    batch_sizes: dict[int, int]  # batch size → number of pipeline calls
    busy_fraction: float  # time the GPU thread spent working / time since start
    thread_restarts: int
    uptime_s: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class MetricsRecorder:
    """Counters and recent samples. Appends come from the model thread and the event loop; each is
    a single GIL-atomic operation, so no lock is needed.

    The histograms and counters (prometheus-client, thread-safe) are not registered anywhere: the
    process's ``/metrics`` (:mod:`bot.ops`) collects them into its own registry, so several
    executors (tests) never clash in a global one."""

    def __init__(self) -> None:
        self.started_at = time.monotonic()
        self.busy_s = 0.0
        self.waits: collections.deque[float] = collections.deque(maxlen=500)
        self.stage_times: dict[WorkKind, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=50)
        )
        self.job_times: collections.deque[float] = collections.deque(maxlen=50)
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.done = self.failed = self.cancelled = 0
        self.restarts = 0
        self.stage_hist = Histogram(
            "voxcanvas_stage_seconds",
            "Wall time of work on the model thread, by stage",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=None,
        )
        self.wait_hist = Histogram(
            "voxcanvas_queue_wait_seconds", "Enqueue to start of a work item", buckets=STAGE_BUCKETS, registry=None
        )
        self.batch_hist = Histogram(
            "voxcanvas_render_batch_size", "Images per diffusion pipeline call", buckets=BATCH_BUCKETS, registry=None
        )
        self.jobs_total = Counter(
            "voxcanvas_executor_jobs", "Jobs the executor finished, by outcome", ["outcome"], registry=None
        )

    def collectors(self) -> tuple[Histogram | Counter, ...]:
        return (self.stage_hist, self.wait_hist, self.batch_hist, self.jobs_total)

    def observe_wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.wait_hist.observe(seconds)

    def observe_stage(self, kind: WorkKind, seconds: float) -> None:
        self.stage_times[kind].append(seconds)
        self.stage_hist.labels(stage=kind).observe(seconds)

    def observe_batch(self, size: int) -> None:
        self.batch_sizes[size] += 1
        self.batch_hist.observe(size)

    def job_finished(self, seconds: float, outcome: str, *, cancelled: bool) -> None:
        self.job_times.append(seconds)
        if cancelled or outcome == "cancelled":
            self.cancelled += 1
            self.jobs_total.labels(outcome="cancelled").inc()
        elif outcome == "done":
            self.done += 1
            self.jobs_total.labels(outcome="done").inc()
        else:
            self.failed += 1
            self.jobs_total.labels(outcome="failed").inc()

    def stage_means(self) -> dict[str, float]:
        return {kind: statistics.fmean(times) for kind, times in self.stage_times.items() if times}

    def mean_job_seconds(self) -> float:
        """Mean wall time of recent jobs; before any finished, a render plus a review."""
        if self.job_times:
            return statistics.fmean(self.job_times)
        per_stage = self.stage_means()
        return per_stage.get("render", 5.0) + per_stage.get("review", 0.5)

    def mean_batch_size(self) -> float:
        calls = sum(self.batch_sizes.values())
        if not calls:
            return 1.0
        return sum(size * n for size, n in self.batch_sizes.items()) / calls

    def wait_percentile(self, p: float) -> float | None:
        waits = sorted(self.waits)
        if not waits:
            return None
        return waits[min(len(waits) - 1, int(p * len(waits)))]

    def snapshot(self, *, queue_depth: int, running_jobs: int, pending_items: int) -> MetricsSnapshot:
        uptime = time.monotonic() - self.started_at
        return MetricsSnapshot(
            queue_depth=queue_depth,
            running_jobs=running_jobs,
            pending_items=pending_items,
            jobs_done=self.done,
            jobs_failed=self.failed,
            jobs_cancelled=self.cancelled,
            wait_p50_s=self.wait_percentile(0.5),
            wait_p95_s=self.wait_percentile(0.95),
            stage_mean_s=self.stage_means(),
            batch_sizes=dict(sorted(self.batch_sizes.items())),
            busy_fraction=min(1.0, self.busy_s / uptime) if uptime > 0 else 0.0,
            thread_restarts=self.restarts,
            uptime_s=uptime,
        )
