"""The executor the settings ask for: ``EXECUTOR=local`` (this machine's GPU thread, the default)
or ``EXECUTOR=ray`` (Ray Serve deployments on a cluster; Ray is imported only then)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..settings import Settings
    from .base import Executor


def create_executor(settings: Settings) -> Executor:
    if settings.EXECUTOR == "ray":
        from .ray_serve import RayExecutor

        return RayExecutor(settings)
    from .local import GPUExecutor

    return GPUExecutor(settings)
