"""Where models run, how they are loaded once, and how loading failures are reported.

Only the GPU executor thread calls into here at run time. Each stage's model holder
(:class:`~pipeline.synthesis.Synthesizer`, :class:`~pipeline.transcribe.Transcriber`,
:class:`~pipeline.critic.ClipCritic`) is a :class:`LazyModel`: it says which setting names its
model and how to load it; resolving the device, loading once, timing, the error that names the
setting and the log line are here, once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch

from .errors import ModelUnavailable

log = logging.getLogger(__name__)

Weights = TypeVar("Weights")


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


def pretrained_model(model_class: Any, model_id: str, device: torch.device, dtype: torch.dtype, **options: Any) -> Any:
    """``model_class.from_pretrained(model_id, **options)`` (a transformers model) in ``dtype``,
    moved to ``device``, in eval mode."""
    options[_transformers_dtype_kwarg()] = dtype
    model = model_class.from_pretrained(model_id, **options)
    return model.to(device).eval()


def _transformers_dtype_kwarg() -> str:
    """``from_pretrained`` takes ``dtype=`` since transformers 4.56 (``torch_dtype=`` before)."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


class LazyModel(Generic[Weights]):
    """A model that is loaded on first use, once, on the device the ``DEVICE`` setting picks.

    A subclass names the setting that holds its model id (:attr:`setting`, e.g.
    ``"DIFFUSION_MODEL"``) and loads the weights in :meth:`_load`. :meth:`load` is idempotent and
    thread-safe; any failure becomes a :class:`ModelUnavailable` that names the setting.
    ``device`` and ``dtype`` say where the weights live once loaded.
    """

    setting: ClassVar[str]

    def __init__(self, model: str, device: str = "auto") -> None:
        self.model_id = str(model)
        self.device_setting = device
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self._weights: Weights | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._weights is not None

    def load(self) -> Weights:
        """The weights, loaded now if they are not yet (later calls return at once)."""
        weights = self._weights
        if weights is not None:
            return weights
        with self._lock:
            weights = self._weights
            if weights is not None:
                return weights
            device, dtype = resolve_device(self.device_setting)
            started = time.perf_counter()
            try:
                weights = self._load(device, dtype)
            except ModelUnavailable:
                raise
            except Exception as exc:  # OSError, ValueError, safetensors/JSON errors, CUDA errors, ...
                raise model_unavailable(self.setting, self.model_id, exc) from exc
            self.device, self.dtype = device, dtype
            self._weights = weights
        log.info(
            "%s %s loaded on %s (%s) in %.1f s%s",
            self.setting,
            self.model_id,
            device,
            str(dtype).removeprefix("torch."),
            time.perf_counter() - started,
            self._loaded_note(weights),
        )
        return weights

    def unload(self) -> None:
        """Drop the weights (the next use loads them again)."""
        self._weights = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _load(self, device: torch.device, dtype: torch.dtype) -> Weights:
        """Load the weights onto ``device`` in ``dtype``. Raising anything is fine: :meth:`load`
        turns it into a :class:`ModelUnavailable` naming :attr:`setting`."""
        raise NotImplementedError

    def _loaded_note(self, weights: Weights) -> str:
        """Extra words for the "loaded" log line (``", safety checker off"``)."""
        return ""


@dataclass(frozen=True)
class ProcessorAndModel:
    """A transformers processor and the model it feeds, loaded together."""

    processor: Any
    model: Any


class TransformersModel(LazyModel[ProcessorAndModel]):
    """A :class:`LazyModel` made of a transformers processor and model (Whisper, CLIP)."""

    @property
    def processor(self) -> Any:
        return self.load().processor

    @property
    def model(self) -> Any:
        return self.load().model
