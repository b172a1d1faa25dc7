"""Where models run and how loading failures are reported.

Only the GPU executor thread calls into here at run time; the helpers are plain functions so
that each stage (transcribe, synthesis, critic) loads its weights the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .errors import ModelUnavailable

log = logging.getLogger(__name__)


def resolve_device(setting: str = "auto") -> tuple[torch.device, torch.dtype]:
    """``DEVICE`` setting → (device, dtype): fp16 on CUDA, fp32 on the CPU."""
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ModelUnavailable("DEVICE is set to 'cuda' but no CUDA GPU is visible. Set DEVICE=auto or DEVICE=cpu.")
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def model_unavailable(setting: str, model_id: str, exc: BaseException) -> ModelUnavailable:
    """A one-paragraph error naming the setting to change, instead of a traceback wall."""
    where = "local directory" if Path(model_id).expanduser().exists() else "model id"
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if len(reason) > 300:
        reason = reason[:297] + "..."
    log.debug("loading %s=%s failed", setting, model_id, exc_info=exc)
    return ModelUnavailable(
        f"Could not load {setting}={model_id!r} ({where}): {reason}. "
        f"Set {setting} to a Hugging Face model id that is reachable (or already in the cache), "
        f"or to a local directory saved with save_pretrained()."
    )
