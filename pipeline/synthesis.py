"""Stable Diffusion rendering with diffusers.

One :class:`Synthesizer` owns one text-to-image pipeline (and an image-to-image view of the same
components, so there is never a second copy of the weights in memory). It renders a *batch* of
compatible :class:`RenderRequest`s in one pipeline call, each with its own generator, so that a
batch gives the same images as rendering the requests one by one with the same seeds.

Prompts longer than the CLIP text encoder's 77-token window are never silently cut: they are
encoded whole, in 75-token chunks whose embeddings are concatenated along the sequence axis
(the UNet's cross-attention takes any sequence length). The number of tokens and chunks is
recorded with every image.

All methods here run torch and must be called from the GPU executor thread only.
"""

from __future__ import annotations

import io
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from PIL import Image

from .errors import BadRequest
from .models import model_unavailable, resolve_device

log = logging.getLogger(__name__)

MIN_SIDE, MAX_SIDE = 64, 1024
MAX_STEPS = 100
MAX_GUIDANCE = 30.0
MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**32 - 1

ProgressFn = Callable[[int, int], None]  # (step done, total steps) -> None
StopFn = Callable[[], bool]  # True -> stop at the next step


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


@dataclass(frozen=True)
class RenderRequest:
    """One image to render. ``seed=None`` means "pick one" (the chosen seed is recorded)."""

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    steps: int = 25
    guidance: float = 7.5
    width: int = 512
    height: int = 512
    init_image: bytes | None = field(default=None, repr=False)  # PNG/JPEG bytes: image-to-image
    strength: float = 0.75

    @property
    def mode(self) -> Literal["text2img", "img2img"]:
        return "img2img" if self.init_image is not None else "text2img"

    def validated(self) -> RenderRequest:
        """Check every option; return a copy with the seed fixed. Raises :class:`BadRequest`."""
        prompt = (self.prompt or "").strip()
        if not prompt:
            raise BadRequest("The prompt is empty — tell me what to draw.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise BadRequest(f"The prompt is {len(prompt)} characters long; please keep it under {MAX_PROMPT_CHARS}.")
        for name, side in (("width", self.width), ("height", self.height)):
            if not isinstance(side, int) or side % 8 or not MIN_SIDE <= side <= MAX_SIDE:
                raise BadRequest(
                    f"The {name} must be a multiple of 8 between {MIN_SIDE} and {MAX_SIDE} pixels (got {side})."
                )
        if not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise BadRequest(f"Steps must be between 1 and {MAX_STEPS} (got {self.steps}).")
        if not 0.0 <= float(self.guidance) <= MAX_GUIDANCE:
            raise BadRequest(f"Guidance must be between 0 and {MAX_GUIDANCE:g} (got {self.guidance:g}).")
        if self.seed is not None and not 0 <= int(self.seed) <= MAX_SEED:
            raise BadRequest(f"The seed must be between 0 and {MAX_SEED} (got {self.seed}).")
        if self.init_image is not None:
            if not 0.0 < float(self.strength) <= 1.0:
                raise BadRequest(f"Strength must be above 0 and at most 1 (got {self.strength:g}).")
            if int(self.steps * self.strength) < 1:
                raise BadRequest("With that strength and step count no denoising step would run; raise either.")
            decode_init_image(self.init_image)  # raises BadRequest when it isn't an image
        seed = random_seed() if self.seed is None else int(self.seed)
        return replace(self, prompt=prompt, negative_prompt=(self.negative_prompt or "").strip(), seed=seed)

    def batch_key(self) -> tuple:
        """Requests with equal keys may share one pipeline call."""
        strength = round(float(self.strength), 4) if self.init_image is not None else None
        return (self.mode, self.width, self.height, self.steps, round(float(self.guidance), 4), strength)


@dataclass
class RenderedImage:
    image: Image.Image
    seed: int
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    width: int
    height: int
    mode: str
    prompt_tokens: int  # CLIP tokens in the prompt, without the start/end tokens
    prompt_chunks: int  # 77-token windows the prompt was encoded in (1 = fits the window)
    nsfw: bool  # the safety checker blanked this image
    batch_size: int
    seconds: float  # wall time of the pipeline call this image came from

    def png_bytes(self) -> bytes:
        return image_to_png(self.image)


def image_to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_init_image(data: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # PIL raises many types for junk
        raise BadRequest("The attached file isn't an image I can read (PNG, JPEG or WebP).") from exc
    if image.width * image.height > 4096 * 4096:
        raise BadRequest("The attached image is too large; please send one under 16 megapixels.")
    return image.convert("RGB")


class RenderInterrupted(Exception):
    """The pipeline call was stopped at a step boundary because every job in it was cancelled."""


class Synthesizer:
    """Owns the diffusion pipeline. Not thread-safe: use from the GPU executor thread only."""

    def __init__(self, model: str, device: str = "auto", *, safety_checker: bool = True) -> None:
        self.model_id = model
        self.device_setting = device
        self.safety_checker = safety_checker
        self._text2img = None
        self._img2img = None
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None

    # -- loading -----------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._text2img is not None

    def load(self) -> None:
        if self._text2img is not None:
            return
        from diffusers import (
            AutoPipelineForImage2Image,
            AutoPipelineForText2Image,
            EulerDiscreteScheduler,
        )

        self.device, self.dtype = resolve_device(self.device_setting)
        kwargs: dict = {"dtype": self.dtype}
        if not self.safety_checker:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        started = time.perf_counter()
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(self.model_id, **kwargs)
        except Exception as exc:
            raise model_unavailable("DIFFUSION_MODEL", self.model_id, exc) from exc
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe = pipe.to(self.device)
        if self.device.type == "cuda":
            pipe.unet.to(memory_format=torch.channels_last)
        pipe.set_progress_bar_config(disable=True)
        self._text2img = pipe
        # Same modules, no copy: from_pipe re-uses the loaded components.
        self._img2img = AutoPipelineForImage2Image.from_pipe(pipe)
        self._img2img.set_progress_bar_config(disable=True)
        log.info(
            "diffusion model %s loaded on %s/%s in %.1fs (safety checker %s)",
            self.model_id,
            self.device,
            str(self.dtype).removeprefix("torch."),
            time.perf_counter() - started,
            "on" if getattr(pipe, "safety_checker", None) is not None else "off",
        )

    @property
    def tokenizer(self):
        self.load()
        return self._text2img.tokenizer

    # -- prompts -----------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """CLIP tokens in ``text`` without the start/end tokens (the window holds 75)."""
        return len(self.tokenizer(text, add_special_tokens=False, truncation=False).input_ids)

    def _window(self) -> int:
        return int(self.tokenizer.model_max_length)  # 77 for SD 1.x

    def chunks_for(self, text: str) -> int:
        return max(1, math.ceil(self.count_tokens(text) / (self._window() - 2)))

    def batch_key(self, request: RenderRequest) -> tuple:
        """:meth:`RenderRequest.batch_key` plus the prompt's chunk count: requests batch together
        only when batching changes nothing about any of their images."""
        chunks = max(self.chunks_for(request.prompt), self.chunks_for(request.negative_prompt))
        return (*request.batch_key(), chunks)

    def _encode(self, texts: list[str], chunks: int) -> torch.Tensor:
        """Encode each text as ``chunks`` 77-token windows, concatenated: [B, chunks*77, D]."""
        tok = self.tokenizer
        window = self._window()
        body = window - 2
        bos, eos = tok.bos_token_id, tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        rows: list[list[int]] = []
        for text in texts:
            ids = tok(text, add_special_tokens=False, truncation=False).input_ids
            for c in range(chunks):
                part = ids[c * body : (c + 1) * body]
                row = [bos, *part, eos]
                rows.append(row + [pad] * (window - len(row)))
        pipe = self._text2img
        input_ids = torch.tensor(rows, device=self.device)
        with torch.inference_mode():
            hidden = pipe.text_encoder(input_ids)[0]
        return hidden.reshape(len(texts), chunks * window, hidden.shape[-1]).to(self.dtype)

    # -- rendering ---------------------------------------------------------------------------
    def render(
        self,
        requests: list[RenderRequest],
        *,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> list[RenderedImage]:
        """Render compatible requests in ONE pipeline call (one generator per request).

        ``progress(step, total)`` is called after every denoising step. When ``should_stop()``
        turns true the call stops at the next step boundary and :class:`RenderInterrupted` is
        raised. Requests must be validated (seeded) and share :meth:`RenderRequest.batch_key`.
        """
        if not requests:
            return []
        self.load()
        keys = {self.batch_key(r) for r in requests}
        if len(keys) != 1 or any(r.seed is None for r in requests):
            raise ValueError("render() needs validated requests that share one batch key")
        first = requests[0]
        chunks = keys.pop()[-1]
        prompt_embeds = self._encode([r.prompt for r in requests], chunks)
        negative_embeds = self._encode([r.negative_prompt for r in requests], chunks)
        generators = [torch.Generator("cpu").manual_seed(int(r.seed)) for r in requests]

        def on_step_end(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
            if progress is not None:
                progress(step + 1, pipe.num_timesteps)
            if should_stop is not None and should_stop():
                pipe._interrupt = True
            return callback_kwargs

        common = dict(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_embeds,
            num_inference_steps=first.steps,
            guidance_scale=float(first.guidance),
            generator=generators,
            callback_on_step_end=on_step_end,
            output_type="pil",
        )
        started = time.perf_counter()
        with torch.inference_mode():
            if first.mode == "img2img":
                images = [decode_init_image(r.init_image).resize((r.width, r.height), Image.LANCZOS) for r in requests]
                pipe = self._img2img
                output = pipe(image=images, strength=float(first.strength), **common)
            else:
                pipe = self._text2img
                output = pipe(height=first.height, width=first.width, **common)
        if pipe.interrupt:
            raise RenderInterrupted()
        seconds = time.perf_counter() - started
        flagged = output.nsfw_content_detected or [False] * len(requests)
        results = []
        for request, image, nsfw in zip(requests, output.images, flagged):
            results.append(
                RenderedImage(
                    image=image,
                    seed=int(request.seed),
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt,
                    steps=request.steps,
                    guidance=float(request.guidance),
                    width=request.width,
                    height=request.height,
                    mode=request.mode,
                    prompt_tokens=self.count_tokens(request.prompt),
                    prompt_chunks=chunks,
                    nsfw=bool(nsfw),
                    batch_size=len(requests),
                    seconds=seconds,
                )
            )
        return results

    def unload(self) -> None:
        self._text2img = None
        self._img2img = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
