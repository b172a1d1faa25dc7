"""Render backends: where pictures are rendered (this machine's GPU, or a remote A1111/Forge,
ComfyUI, Stability AI or Replicate) behind one interface (:mod:`.base`), chosen per model by
:mod:`.router` (imported on its own: it needs the executor's policy). README "Render backends"
has the capability table."""

from __future__ import annotations

from .base import (
    BACKEND_NAMES,
    LABELS,
    REMOTE_BACKENDS,
    BackendError,
    BackendGarbage,
    BackendRefused,
    BackendUnavailable,
    Capabilities,
    RemoteJob,
    RemoteResult,
    RenderBackend,
    remote_source,
)

__all__ = [
    "BACKEND_NAMES",
    "LABELS",
    "REMOTE_BACKENDS",
    "BackendError",
    "BackendGarbage",
    "BackendRefused",
    "BackendUnavailable",
    "Capabilities",
    "RemoteJob",
    "RemoteResult",
    "RenderBackend",
    "remote_source",
]
