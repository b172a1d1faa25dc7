"""What the executor hands around: the stage and work-kind names, progress events, a job's
admission slot, and one queued work item."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..synthesis import RenderRequest
    from .base import Executor

WorkKind = Literal["warmup", "transcribe", "render", "review", "music", "tool"]
"""What a work item does on the model thread (``tool``: any callable, for tests, bench, CLI)."""

Stage = Literal["queued", "waiting", "decode", "direct", "correct", "load", WorkKind]
"""Where a job is: waiting, one of the studio's own steps (decode audio, direct the scene, start
a correction round), loading the diffusion model it asked for (``detail``: its name), or a work
item running for it. ``waiting``: its work waits for the model workers to come back (EXECUTOR=ray,
the cluster is lost and the executor reconnects)."""

BatchKey = tuple[Hashable, ...]
"""Render requests with equal keys may share one pipeline call."""


@dataclass(frozen=True)
class ProgressEvent:
    job_id: str
    stage: Stage
    step: int = 0
    total: int = 0
    position: int | None = None  # place in the queue while waiting (1 = next)
    eta_s: float | None = None
    detail: str | None = None  # "load": the model's name


class Job:
    """A user's job as the executor sees it: admission slot, priority, progress, cancellation."""

    def __init__(self, executor: Executor, job_id: str, user_id: str, seq: int) -> None:
        self.executor = executor
        self.id = job_id
        self.user_id = user_id
        self.seq = seq  # admission order
        self.admitted_at = time.monotonic()
        self.started = False  # some of its work has begun on the model thread
        self.cancelled = False
        self.finished = False
        self.listener: Callable[[ProgressEvent], None] | None = None
        self.stage: Stage = "queued"
        self.candidates = 1  # pictures its first render makes (the studio sets it; progress says so)
        # Keep pictures the safety checker flags as rendered (the bot spoilers them in an age-restricted
        # channel whose server allows it); False: the studio blacks them out before anything sees them.
        self.keep_flagged = False

    # --- for the caller ---
    def position(self) -> int | None:
        """1-based place among unfinished jobs in service order; None once started."""
        return self.executor.position_of(self)

    def eta_s(self) -> float | None:
        return self.executor.eta_of(self)

    def cancel(self) -> None:
        """Drop queued work now; a running render stops at its next step."""
        self.executor.cancel(self)

    def finish(self, outcome: str = "done") -> None:
        """Give the admission slot back; ``outcome`` is "done", "failed" or "cancelled"."""
        self.executor.finish(self, outcome)

    def __repr__(self) -> str:
        return f"<Job {self.id} user={self.user_id} started={self.started} cancelled={self.cancelled}>"


@dataclass(eq=False)
class WorkItem:
    """One call waiting for (or running on) the model thread. A render carries its request and is
    run by the synthesizer, possibly batched; anything else carries the callable to run."""

    job: Job | None
    kind: WorkKind
    future: asyncio.Future[Any]
    seq: int  # submission order
    fn: Callable[[], Any] | None = None
    request: RenderRequest | None = None
    key: BatchKey | None = None  # batch key of a render, computed on the model thread when needed
    bypassed: int = 0  # times work for a loaded model went ahead of it (policy.prefer_loaded)
    enqueued_at: float = field(default_factory=time.monotonic)
