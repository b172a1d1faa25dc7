"""The admitted jobs, as both executors keep them in the bot process: admission under the caps,
the users' round-robin ring, queue positions and ETAs, and the measurements of finished jobs.

Whatever runs the models (the local GPU thread or a Ray cluster), this part stays here and is the
same code, so admission, fairness and what a waiting user is told behave identically on both
executors. The decisions themselves are :mod:`.policy`'s pure functions; this is their state.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import policy
from .jobs import Job, ProgressEvent
from .metrics import MetricsRecorder, MetricsSnapshot

if TYPE_CHECKING:
    from ..settings import Settings
    from .base import Executor


class JobBook:
    """The jobs of one executor. ``lock`` (the local executor's condition) guards the jobs and the
    ring where another thread reads them; the Ray executor touches them from the event loop only."""

    def __init__(
        self,
        executor: Executor,
        settings: Settings,
        metrics: MetricsRecorder,
        *,
        lock: contextlib.AbstractContextManager[Any] | None = None,
        parallel: int = 1,
    ) -> None:
        self._executor = executor
        self.parallel = max(1, parallel)  # model workers serving batches side by side (render replicas)
        self.settings = settings
        self.metrics = metrics
        self._lock = lock if lock is not None else contextlib.nullcontext()
        self.jobs: dict[str, Job] = {}
        self.ring = policy.UserRing()
        self._seq = itertools.count()

    def admit(self, user_id: str | int, job_id: str | None = None, *, force: bool = False) -> Job:
        """A slot for a user's job, or a user-facing error (``force``: no caps, for jobs accepted
        before a restart)."""
        user = str(user_id)
        if not force:
            policy.check_admission(
                self.jobs.values(),
                user,
                max_jobs_per_user=self.settings.MAX_JOBS_PER_USER,
                max_queue=self.settings.MAX_QUEUE,
            )
        if job_id is not None and job_id in self.jobs:
            raise ValueError(f"job {job_id} is already admitted")
        job = Job(self._executor, job_id or uuid.uuid4().hex[:12], user, next(self._seq))
        with self._lock:
            self.jobs[job.id] = job
            self.ring.join(user)
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def of_user(self, user_id: str | int) -> list[Job]:
        return [j for j in self.jobs.values() if j.user_id == str(user_id) and not j.finished]

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self.jobs.values()))

    def close(self, job: Job, outcome: str) -> bool:
        """Mark ``job`` finished and give its slot back; False when it already was."""
        if job.finished:
            return False
        job.finished = True
        with self._lock:
            self.jobs.pop(job.id, None)
            if not any(j.user_id == job.user_id for j in self.jobs.values()):
                self.ring.leave(job.user_id)
        self.metrics.job_finished(time.monotonic() - job.admitted_at, outcome, cancelled=job.cancelled)
        return True

    def unfinished_ids(self) -> list[str]:
        return [job.id for job in self.jobs.values() if not job.finished]

    def service_order(self) -> list[Job]:
        """The jobs that have not begun, in the order they will be served."""
        return policy.service_order(self.jobs.values(), self.ring)

    def position_of(self, job: Job) -> int | None:
        if job.started or job.finished:
            return None
        return policy.queue_position(job, self.service_order())

    def eta_at(self, position: int, *, parallel: int | None = None) -> float:
        """Seconds until the job at ``position`` starts; ``parallel``: model workers serving batches
        side by side (default: the book's)."""
        return policy.eta_at(
            position,
            running_jobs=sum(1 for j in self.jobs.values() if j.started and not j.finished),
            mean_job_s=self.metrics.mean_job_seconds(),
            mean_batch_size=self.metrics.mean_batch_size() * max(1, parallel or self.parallel),
        )

    def eta_of(self, job: Job) -> float | None:
        position = self.position_of(job)
        return None if position is None else self.eta_at(position)

    def queue_events(self) -> list[tuple[Job, ProgressEvent]]:
        """Each waiting job that has a listener, with its place in the queue and ETA (the order is
        computed once)."""
        return [
            (job, ProgressEvent(job.id, "queued", position=pos, eta_s=self.eta_at(pos)))
            for pos, job in enumerate(self.service_order(), start=1)
            if job.listener is not None
        ]

    def snapshot(self, *, pending_items: int) -> MetricsSnapshot:
        active = [j for j in self.jobs.values() if not j.finished]
        return self.metrics.snapshot(
            queue_depth=sum(1 for j in active if not j.started),
            running_jobs=sum(1 for j in active if j.started),
            pending_items=pending_items,
        )
