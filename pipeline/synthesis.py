"""Stable Diffusion rendering with diffusers.

One :class:`Synthesizer` owns one text-to-image pipeline (and an image-to-image view of the same
components, so there is never a second copy of the weights in memory). It renders a *batch* of
compatible :class:`RenderRequest`s in one pipeline call, each with its own generator, so that a
batch gives the same images as rendering the requests one by one with the same seeds.

Prompts longer than the CLIP text encoder's 77-token window are never silently cut: they are
encoded whole, in 75-token chunks whose embeddings are concatenated along the sequence axis
(the UNet's cross-attention takes any sequence length). The number of tokens and chunks is
recorded with every image. Each prompt is tokenised once per request (:meth:`Synthesizer.token_ids`
caches the ids on the request): the batch key, the encoding and the recorded token count share them.

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
from typing import Any, Literal

import torch
from PIL import Image

from . import limits
from .errors import BadRequest
from .images import decode_init_image
from .models import LazyModel

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]  # (step done, total steps) -> None
StopFn = Callable[[], bool]  # True -> stop at the next step


def random_seed() -> int:
    return secrets.randbelow(limits.MAX_SEED + 1)


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
    init_image: bytes | None = field(default=None, repr=False)  # PNG/JPEG/WebP bytes: image-to-image
    strength: float = limits.DEFAULT_STRENGTH
    token_cache: dict[tuple[str, str], list[int]] = field(default_factory=dict, init=False, repr=False, compare=False)
    """(tokenizer, text) → token ids, filled by :meth:`Synthesizer.token_ids`; not part of the
    request's identity (``replace`` starts a fresh one)."""

    @property
    def mode(self) -> Literal["text2img", "img2img"]:
        return "img2img" if self.init_image is not None else "text2img"

    def validated(self) -> RenderRequest:
        """Check every option; return a copy with the seed fixed. Raises :class:`BadRequest`."""
        prompt = (self.prompt or "").strip()
        if not prompt:
            raise BadRequest("The prompt is empty — tell me what to draw.")
        if len(prompt) > limits.MAX_PROMPT_CHARS:
            raise BadRequest(
                f"The prompt is {len(prompt)} characters long; please keep it under {limits.MAX_PROMPT_CHARS}."
            )
        for name, side in (("width", self.width), ("height", self.height)):
            if (
                not isinstance(side, int)
                or side % limits.SIDE_MULTIPLE
                or not limits.MIN_SIDE <= side <= limits.MAX_SIDE
            ):
                raise BadRequest(
                    f"The {name} must be a multiple of {limits.SIDE_MULTIPLE} between {limits.MIN_SIDE} and "
                    f"{limits.MAX_SIDE} pixels (got {side})."
                )
        if not isinstance(self.steps, int) or not limits.MIN_STEPS <= self.steps <= limits.MAX_STEPS:
            raise BadRequest(f"Steps must be between {limits.MIN_STEPS} and {limits.MAX_STEPS} (got {self.steps}).")
        if not limits.MIN_GUIDANCE <= float(self.guidance) <= limits.MAX_GUIDANCE:
            raise BadRequest(
                f"Guidance must be between {limits.MIN_GUIDANCE:g} and {limits.MAX_GUIDANCE:g} (got {self.guidance:g})."
            )
        if self.seed is not None and not 0 <= int(self.seed) <= limits.MAX_SEED:
            raise BadRequest(f"The seed must be between 0 and {limits.MAX_SEED} (got {self.seed}).")
        if self.init_image is not None:
            if not limits.MIN_STRENGTH <= float(self.strength) <= limits.MAX_STRENGTH:
                raise BadRequest(
                    f"Strength must be between {limits.MIN_STRENGTH:g} and {limits.MAX_STRENGTH:g} "
                    f"(got {self.strength:g})."
                )
            if int(self.steps * self.strength) < 1:
                raise BadRequest("With that strength and step count no denoising step would run; raise either.")
            decode_init_image(self.init_image)  # BadRequest: not PNG/JPEG/WebP, too large, corrupt
        seed = random_seed() if self.seed is None else int(self.seed)
        return replace(self, prompt=prompt, negative_prompt=(self.negative_prompt or "").strip(), seed=seed)

    def sized_init_image(self) -> Image.Image:
        """The init image decoded and resized to the requested size (image-to-image only)."""
        if self.init_image is None:
            raise ValueError("a text-to-image request has no init image")
        return decode_init_image(self.init_image).resize((self.width, self.height), Image.Resampling.LANCZOS)

    def batch_key(self) -> tuple[Any, ...]:
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


class RenderInterrupted(Exception):
    """The pipeline call was stopped at a step boundary because every job in it was cancelled."""


@dataclass(frozen=True)
class DiffusionPipelines:
    """The loaded text-to-image pipeline and an image-to-image view of the same components."""

    text2img: Any
    img2img: Any


class Synthesizer(LazyModel[DiffusionPipelines]):
    """Owns the diffusion pipeline. Not thread-safe: use from the GPU executor thread only."""

    setting = "DIFFUSION_MODEL"

    def __init__(self, model: str, device: str = "auto", *, safety_checker: bool = True) -> None:
        super().__init__(model, device)
        self.safety_checker = safety_checker

    # -- loading -----------------------------------------------------------------------------
    def _load(self, device: torch.device, dtype: torch.dtype) -> DiffusionPipelines:
        from diffusers import (
            AutoPipelineForImage2Image,
            AutoPipelineForText2Image,
            EulerDiscreteScheduler,
        )

        kwargs: dict[str, Any] = {"dtype": dtype}
        if not self.safety_checker:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        pipe = AutoPipelineForText2Image.from_pretrained(self.model_id, **kwargs)  # type: ignore[no-untyped-call]
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # type: ignore[no-untyped-call]
        pipe = pipe.to(device)
        if device.type == "cuda":
            pipe.unet.to(memory_format=torch.channels_last)
        pipe.set_progress_bar_config(disable=True)
        # Same modules, no copy: from_pipe re-uses the loaded components.
        img2img = AutoPipelineForImage2Image.from_pipe(pipe)
        img2img.set_progress_bar_config(disable=True)
        return DiffusionPipelines(text2img=pipe, img2img=img2img)

    def _loaded_note(self, weights: DiffusionPipelines) -> str:
        checker = getattr(weights.text2img, "safety_checker", None)
        return f", safety checker {'on' if checker is not None else 'off'}"

    @property
    def _text2img(self) -> Any:
        return self.load().text2img

    @property
    def _img2img(self) -> Any:
        return self.load().img2img

    @property
    def tokenizer(self) -> Any:
        return self._text2img.tokenizer

    # -- prompts -----------------------------------------------------------------------------
    def _tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, truncation=False).input_ids)

    def count_tokens(self, text: str) -> int:
        """CLIP tokens in ``text`` without the start/end tokens (the window holds 75)."""
        return len(self._tokenize(text))

    def token_ids(self, request: RenderRequest, text: str) -> list[int]:
        """Token ids of ``text`` (``request``'s prompt or negative prompt) without the start/end
        tokens, tokenised on the first call and cached on the request after that."""
        key = (str(getattr(self.tokenizer, "name_or_path", "")), text)
        ids = request.token_cache.get(key)
        if ids is None:
            ids = request.token_cache[key] = self._tokenize(text)
        return ids

    def _window(self) -> int:
        return int(self.tokenizer.model_max_length)  # 77 for SD 1.x

    def _chunks(self, tokens: int) -> int:
        return max(1, math.ceil(tokens / (self._window() - 2)))

    def batch_key(self, request: RenderRequest) -> tuple[Any, ...]:
        """:meth:`RenderRequest.batch_key` plus the prompt's chunk count: requests batch together
        only when batching changes nothing about any of their images."""
        prompt, negative = self.token_ids(request, request.prompt), self.token_ids(request, request.negative_prompt)
        return (*request.batch_key(), self._chunks(max(len(prompt), len(negative))))

    def _encode(self, token_ids: list[list[int]], chunks: int) -> torch.Tensor:
        """Encode each text (its token ids) as ``chunks`` 77-token windows, concatenated: [B, chunks*77, D]."""
        tok = self.tokenizer
        window = self._window()
        body = window - 2
        bos, eos = tok.bos_token_id, tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        rows: list[list[int]] = []
        for ids in token_ids:
            for c in range(chunks):
                part = ids[c * body : (c + 1) * body]
                row = [bos, *part, eos]
                rows.append(row + [pad] * (window - len(row)))
        pipe = self._text2img
        input_ids = torch.tensor(rows, device=self.device)
        with torch.inference_mode():
            hidden = pipe.text_encoder(input_ids)[0]
        return hidden.reshape(len(token_ids), chunks * window, hidden.shape[-1]).to(self.dtype)

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
        seeds = [r.seed for r in requests if r.seed is not None]
        if len(keys) != 1 or len(seeds) != len(requests):
            raise ValueError("render() needs validated requests that share one batch key")
        first = requests[0]
        chunks = keys.pop()[-1]
        prompt_embeds = self._encode([self.token_ids(r, r.prompt) for r in requests], chunks)
        negative_embeds = self._encode([self.token_ids(r, r.negative_prompt) for r in requests], chunks)
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

        def on_step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            if progress is not None:
                progress(step + 1, pipe.num_timesteps)
            if should_stop is not None and should_stop():
                pipe._interrupt = True
            return callback_kwargs

        common: dict[str, Any] = {
            "prompt_embeds": prompt_embeds,
            "negative_prompt_embeds": negative_embeds,
            "num_inference_steps": first.steps,
            "guidance_scale": float(first.guidance),
            "generator": generators,
            "callback_on_step_end": on_step_end,
            "output_type": "pil",
        }
        started = time.perf_counter()
        with torch.inference_mode():
            if first.mode == "img2img":
                images = [r.sized_init_image() for r in requests]
                pipe = self._img2img
                output = pipe(image=images, strength=float(first.strength), **common)
            else:
                pipe = self._text2img
                output = pipe(height=first.height, width=first.width, **common)
        if pipe.interrupt:
            raise RenderInterrupted()
        seconds = time.perf_counter() - started
        flagged = output.nsfw_content_detected or [False] * len(requests)
        results: list[RenderedImage] = []
        for request, seed, image, nsfw in zip(requests, seeds, output.images, flagged, strict=True):
            results.append(
                RenderedImage(
                    image=image,
                    seed=seed,
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt,
                    steps=request.steps,
                    guidance=float(request.guidance),
                    width=request.width,
                    height=request.height,
                    mode=request.mode,
                    prompt_tokens=len(self.token_ids(request, request.prompt)),
                    prompt_chunks=chunks,
                    nsfw=bool(nsfw),
                    batch_size=len(requests),
                    seconds=seconds,
                )
            )
        return results
