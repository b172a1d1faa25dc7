"""Wire-level fakes of the remote render backends (A1111/Forge, ComfyUI, Stability AI, Replicate):
aiohttp servers on 127.0.0.1 that speak each real protocol, for tests and bench. Each renders a
small picture whose colours come from the seed (so seeds are checkable), takes ``step_s`` per
step (progress you can watch, cancel you can land mid-render), and can be told to misbehave
through :class:`~.common.FakeBackend.fail` (statuses, Retry-After, delays, garbage bodies)."""

from __future__ import annotations

from .a1111 import FakeA1111
from .comfyui import FakeComfyUI
from .common import FakeBackend, Fault, picture, png
from .replicate import FakeReplicate
from .stability import FakeStability

__all__ = ["FakeA1111", "FakeBackend", "FakeComfyUI", "FakeReplicate", "FakeStability", "Fault", "picture", "png"]
