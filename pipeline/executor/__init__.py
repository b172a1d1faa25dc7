"""Every model call of a job goes through one executor (README "The queue").

* :mod:`.base` — the :class:`Executor` interface the studio, the bot and the CLI use;
* :mod:`.jobs` — :class:`Job`, :class:`ProgressEvent`, the :data:`Stage` and :data:`WorkKind` names;
* :mod:`.policy` — admission caps, started-first order, per-user round robin, batch picking and
  queue positions, as pure functions;
* :mod:`.local` — :class:`GPUExecutor`: one thread on this machine owns every model;
* :mod:`.engine`, :mod:`.metrics`, :mod:`.device` — the models, the measurements, torch's edge.
"""

from __future__ import annotations

from .base import Executor
from .engine import Engine
from .jobs import BatchKey, Job, ProgressEvent, Stage, WorkItem, WorkKind
from .local import GPUExecutor
from .metrics import MetricsSnapshot

__all__ = [
    "BatchKey",
    "Engine",
    "Executor",
    "GPUExecutor",
    "Job",
    "MetricsSnapshot",
    "ProgressEvent",
    "Stage",
    "WorkItem",
    "WorkKind",
]
