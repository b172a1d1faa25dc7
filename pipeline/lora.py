"""LoRAs from ``LORA_DIR``: ``.safetensors`` files usable by name (the file name without suffix).

Loading goes through diffusers' own ``load_lora_weights`` (peft adapters): each LoRA a batch asks
for is loaded once as an adapter named after it, the batch's set is activated with its weights
(``set_adapters``, unfused: switching sets between batches costs no re-load), and a batch with no
LoRA unloads them all (``unload_lora_weights``), so the base model renders exactly as before.
A LoRA made for another family fails to load with a message naming it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from .errors import BadRequest

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def lora_names(lora_dir: Path | None) -> list[str]:
    """The LoRAs in ``lora_dir`` (sorted names), empty when it is not set or missing."""
    if lora_dir is None or not lora_dir.is_dir():
        return []
    return sorted(p.stem for p in lora_dir.glob("*.safetensors") if _NAME.match(p.stem))


def parse_lora(text: str, default_weight: float) -> tuple[str, float]:
    """``"name"`` or ``"name:0.8"`` → (name, weight)."""
    name, _, weight = text.strip().partition(":")
    try:
        return name.strip(), float(weight) if weight.strip() else default_weight
    except ValueError:
        raise BadRequest(f"A LoRA is written name or name:weight (got {text!r}).") from None


_LORA_DOWN = (".lora_A.weight", ".lora.down.weight", ".lora_down.weight")


def fits(denoiser: Any, path: Path, prefix: str) -> bool | None:
    """Whether the LoRA at ``path`` fits ``denoiser`` (the UNet or transformer, whose weights in the
    file start with ``prefix``: "unet" or "transformer"): every layer it adapts exists with the same
    input width. Reads only the file's header. None: a layout this check does not know (kohya-style
    names): offered, and loading says whether it fits."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            downs = [k for k in keys if k.endswith(_LORA_DOWN)]
            if not downs or not all(
                k.split(".", 1)[0] in ("unet", "transformer", "text_encoder", "text_encoder_2") for k in downs
            ):
                return None
            ours = [k for k in downs if k.startswith(prefix + ".")]
            if not ours:
                return False  # made for another denoiser (a UNet LoRA on FLUX, or the reverse)
            for key in ours:
                module_path = key[len(prefix) + 1 :]
                for suffix in _LORA_DOWN:
                    module_path = module_path.removesuffix(suffix)
                try:
                    module = denoiser.get_submodule(module_path)
                except AttributeError:
                    return False
                width = getattr(module, "in_features", None) or getattr(module, "in_channels", None)
                if width is not None and int(handle.get_slice(key).get_shape()[-1]) != int(width):
                    return False
    except Exception as exc:  # an unreadable file is not offered
        log.info("LoRA %s unreadable: %s", path.name, exc)
        return False
    return True


def compatible_names(lora_dir: Path | None, pipe: Any, cache: dict[tuple[str, float], bool]) -> list[str]:
    """The LoRAs of ``lora_dir`` that fit the loaded pipeline (header check, cached per file version)."""
    denoiser = getattr(pipe, "unet", None)
    prefix = "unet"
    if denoiser is None:
        denoiser, prefix = getattr(pipe, "transformer", None), "transformer"
    names = []
    for name in lora_names(lora_dir):
        path = (lora_dir or Path()) / f"{name}.safetensors"
        key = (f"{id(pipe)}:{path}", path.stat().st_mtime)
        if key not in cache:
            cache[key] = fits(denoiser, path, prefix) is not False
        if cache[key]:
            names.append(name)
    return names


class LoraSet:
    """The LoRAs loaded into one pipeline (model thread only)."""

    def __init__(self, lora_dir: Path | None) -> None:
        self.lora_dir = lora_dir
        self.loaded: set[str] = set()
        self.active: tuple[tuple[str, float], ...] = ()

    def path_of(self, name: str) -> Path:
        if self.lora_dir is None or not _NAME.match(name):
            raise BadRequest(f"There is no LoRA called {name!r}" + ("" if self.lora_dir else " (LORA_DIR is not set)."))
        path = self.lora_dir / f"{name}.safetensors"
        if not path.is_file():
            available = ", ".join(lora_names(self.lora_dir)) or "none"
            raise BadRequest(f"There is no LoRA called {name!r}. Available: {available}.")
        return path

    def apply(self, pipe: Any, loras: tuple[tuple[str, float], ...]) -> None:
        """Make ``loras`` (name, weight) the active adapters of ``pipe`` (its img2img view shares
        the modules); none: unload every adapter."""
        if loras == self.active:
            return
        if not loras:
            if self.loaded:
                pipe.unload_lora_weights()
                self.loaded.clear()
            self.active = ()
            return
        for name, _ in loras:
            if name not in self.loaded:
                path = self.path_of(name)
                try:
                    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
                except Exception as exc:
                    log.info("LoRA %s did not load: %s", name, exc)
                    raise BadRequest(
                        f"The LoRA {name!r} does not fit this model (it was made for another model family)."
                    ) from exc
                self.loaded.add(name)
        pipe.set_adapters([name for name, _ in loras], adapter_weights=[weight for _, weight in loras])
        self.active = loras
