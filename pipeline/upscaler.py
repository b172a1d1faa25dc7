"""The optional dedicated upscaler (``UPSCALER_MODEL``): diffusers' Stable Diffusion x4 upscaler.

When it is set, the U buttons' hires fix enlarges the candidate with this model instead of
Lanczos (what AUTOMATIC1111 calls the "hires upscaler"), brings it to ×2 of the original, and the
tiled image-to-image refinement runs as before. Like every other model it is loaded with
``from_pretrained`` (a hub id or a local directory), once, on the model thread.

Why diffusers' ``StableDiffusionUpscalePipeline`` rather than an ESRGAN-family model through
``spandrel``: it needs no new dependency (spandrel requires ``torchvision``, whose wheels must
match the installed torch build exactly, and our CPU/CUDA torch pins would have to track it), it
loads through the same ``from_pretrained`` and dtype rules as the diffusion model, and it is
prompt-guided (it knows what the picture is meant to show). Its cost is memory: its UNet runs at
the *input* resolution with self-attention, so the input is cut into tiles of
:data:`~pipeline.limits.UPSCALER_TILE` pixels (512 px out), blended on a feathered canvas
(:mod:`.tiling`) — memory is bounded by one tile whatever the picture's size.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from . import limits
from .errors import JobCancelled
from .images import decode_init_image
from .models import LazyModel
from .tiling import Canvas, overlap_for, tile_boxes

log = logging.getLogger(__name__)

StopFn = Callable[[], bool]
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class UpscaleRequest:
    """One picture for the x4 upscaler (what an executor sends to the model thread or a Ray replica:
    plain bytes and numbers, picklable): ``png`` enlarged and brought to ``size``."""

    png: bytes
    size: tuple[int, int]
    prompt: str
    negative_prompt: str
    seed: int
    steps: int = limits.UPSCALER_STEPS


class Upscaler(LazyModel[Any]):
    """Owns one ``StableDiffusionUpscalePipeline``. Use from the model thread only."""

    setting = "UPSCALER_MODEL"

    def __init__(self, model: str, device: str = "auto", *, tile: int = limits.UPSCALER_TILE) -> None:
        super().__init__(model, device)
        self.tile = tile

    def _load(self, device: torch.device, dtype: torch.dtype) -> Any:
        from diffusers import StableDiffusionUpscalePipeline

        pipe = StableDiffusionUpscalePipeline.from_pretrained(self.model_id, dtype=dtype)  # type: ignore[no-untyped-call]
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @property
    def scale(self) -> int:
        """How much larger the output is than the input (the VAE's upsampling: 4 for the x4 model)."""
        pipe = self.load()
        return int(2 ** (len(pipe.vae.config.block_out_channels) - 1))

    def _loaded_note(self, weights: Any) -> str:
        return f", x{int(2 ** (len(weights.vae.config.block_out_channels) - 1))}"

    def upscale(
        self,
        image: Image.Image,
        *,
        prompt: str,
        negative_prompt: str = "",
        seed: int = 0,
        steps: int = limits.UPSCALER_STEPS,
        guidance: float = limits.UPSCALER_GUIDANCE,
        should_stop: StopFn | None = None,
        progress: ProgressFn | None = None,
    ) -> tuple[Image.Image, int]:
        """``image`` enlarged ×:attr:`scale`, tile by tile (tile ``k`` seeded ``seed + k``); returns
        the picture and the number of tiles. ``should_stop()`` is asked between tiles (a cancelled
        job raises :class:`JobCancelled`); ``progress(done, tiles)`` is told after each tile."""
        pipe = self.load()
        scale = self.scale
        image = image.convert("RGB")
        width, height = image.size
        overlap = overlap_for(self.tile)
        boxes = tile_boxes(width, height, self.tile, overlap=overlap)
        canvas = Canvas(width * scale, height * scale, feather=overlap * scale)
        with torch.inference_mode():
            for k, box in enumerate(boxes):
                if should_stop is not None and should_stop():
                    raise JobCancelled()
                output = pipe(
                    prompt=prompt,
                    negative_prompt=negative_prompt or None,
                    image=image.crop(box.crop()),
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    generator=torch.Generator("cpu").manual_seed(seed + k),
                    output_type="pil",
                )
                canvas.add(box.scaled(scale), output.images[0])
                if progress is not None:
                    progress(k + 1, len(boxes))
        log.debug("upscaled %dx%d x%d in %d tiles", width, height, scale, len(boxes))
        return canvas.image(), len(boxes)

    def upscale_png(
        self,
        png: bytes,
        size: tuple[int, int],
        *,
        prompt: str,
        negative_prompt: str,
        seed: int,
        steps: int = limits.UPSCALER_STEPS,
        should_stop: StopFn | None = None,
        progress: ProgressFn | None = None,
    ) -> tuple[bytes, int, int]:
        """:meth:`upscale` on encoded bytes (bounded by :func:`decode_init_image`), brought to
        ``size`` with Lanczos (the x4 output of a ×2 request is halved here, before it is encoded):
        PNG bytes, the model's scale and the tile count."""
        enlarged, tiles = self.upscale(
            decode_init_image(png),
            prompt=prompt,
            negative_prompt=negative_prompt,
            seed=seed,
            steps=steps,
            should_stop=should_stop,
            progress=progress,
        )
        if enlarged.size != size:
            enlarged = enlarged.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        enlarged.save(buffer, format="PNG")
        return buffer.getvalue(), self.scale, tiles

    def run(
        self, request: UpscaleRequest, *, should_stop: StopFn | None = None, progress: ProgressFn | None = None
    ) -> tuple[bytes, int, int]:
        """:meth:`upscale_png` of ``request``."""
        return self.upscale_png(
            request.png,
            request.size,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            seed=request.seed,
            steps=request.steps,
            should_stop=should_stop,
            progress=progress,
        )
