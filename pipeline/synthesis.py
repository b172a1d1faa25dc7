"""Diffusion rendering with diffusers: SD 1.x/2.x, SDXL, SD3 and FLUX (see :mod:`.families`).

One :class:`Synthesizer` owns one text-to-image pipeline (and an image-to-image view of the same
components, so there is never a second copy of the weights in memory). It renders a *batch* of
compatible :class:`RenderRequest`s in one pipeline call, each with its own generator, so that a
batch gives the same images as rendering the requests one by one with the same seeds.

Prompts are never silently cut. CLIP-conditioned UNets (SD, SDXL) get prompts longer than the
77-token window encoded whole, in 75-token chunks whose embeddings are concatenated along the
sequence axis (the UNet's cross-attention takes any sequence length); SDXL does this for both of
its encoders, and its pooled embedding comes from the first window (what the model was trained
on). We do this ourselves rather than with ``compel``: it is the same windowing compel does with
``truncate_long_prompts=False``, but it shares the request's token cache (one tokenisation per
request, issue #19) and the batch key's chunk count, and compel 2.x is not tested against
transformers 5. T5-conditioned families (SD3, FLUX) read the whole prompt through T5 up to the
model's limit (512 tokens), padded to a 64-token bucket; a longer prompt is refused with a
message, never cut (their CLIP encoders only give the pooled summary, from the first 77 tokens).
The number of tokens and chunks is recorded with every image. Each prompt is tokenised once per
request (:meth:`Synthesizer.token_ids` caches the ids on the request): the batch key, the encoding
and the recorded token count share them.

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

from . import families, limits
from .control import ControlNets, ControlSpec
from .errors import BadRequest, UnsafeImage
from .families import FamilyProfile, ModelDefaults
from .images import decode_init_image
from .lora import LoraSet
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
    steps: int | None = None  # None: the model family's default (see pipeline.families)
    guidance: float | None = None  # None: the family's default
    width: int | None = None  # None: from ``aspect`` at the model's native pixel budget, or native
    height: int | None = None
    init_image: bytes | None = field(default=None, repr=False)  # PNG/JPEG/WebP bytes: image-to-image
    strength: float = limits.DEFAULT_STRENGTH
    aspect: str | None = None  # "16:9" ...: used when width and height are not given
    model: str | None = None  # a name from MODELS; None: DIFFUSION_MODEL
    loras: tuple[tuple[str, float], ...] = ()  # (LoRA name, weight), sorted by name
    # Image-to-image in tiles of this side (0: the model's native size; None: the picture whole).
    # A picture no larger than a tile is refined whole anyway. The U buttons' hires fix sets it.
    tile: int | None = None
    control: ControlSpec | None = field(default=None, repr=False)  # ControlNet (pipeline.control)
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
            if side is None:
                continue
            if (
                not isinstance(side, int)
                or side % limits.SIDE_MULTIPLE
                or not limits.MIN_SIDE <= side <= limits.MAX_SIDE
            ):
                raise BadRequest(
                    f"The {name} must be a multiple of {limits.SIDE_MULTIPLE} between {limits.MIN_SIDE} and "
                    f"{limits.MAX_SIDE} pixels (got {side})."
                )
        if (self.width is None) != (self.height is None):
            raise BadRequest("Give both the width and the height, or neither (then the aspect ratio decides).")
        if self.aspect is not None:
            families.parse_aspect(self.aspect)
        if self.steps is not None and (
            not isinstance(self.steps, int) or not limits.MIN_STEPS <= self.steps <= limits.MAX_STEPS
        ):
            raise BadRequest(f"Steps must be between {limits.MIN_STEPS} and {limits.MAX_STEPS} (got {self.steps}).")
        for name, weight in self.loras:
            if not limits.MIN_LORA_WEIGHT <= float(weight) <= limits.MAX_LORA_WEIGHT:
                raise BadRequest(
                    f"The weight of LoRA {name!r} must be between {limits.MIN_LORA_WEIGHT:g} and "
                    f"{limits.MAX_LORA_WEIGHT:g} (got {weight:g})."
                )
        if len(self.loras) > limits.MAX_LORAS:
            raise BadRequest(f"At most {limits.MAX_LORAS} LoRAs at a time.")
        if self.guidance is not None and not limits.MIN_GUIDANCE <= float(self.guidance) <= limits.MAX_GUIDANCE:
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
            if self.steps is not None and int(self.steps * self.strength) < 1:
                raise BadRequest("With that strength and step count no denoising step would run; raise either.")
            decode_init_image(self.init_image)  # BadRequest: not PNG/JPEG/WebP, too large, corrupt
        if self.tile is not None and self.tile != 0:
            if self.init_image is None:
                raise BadRequest("Only image-to-image renders can be tiled.")
            if self.tile % limits.SIDE_MULTIPLE or not limits.MIN_SIDE <= self.tile <= limits.MAX_SIDE:
                raise BadRequest(
                    f"The tile must be a multiple of {limits.SIDE_MULTIPLE} between {limits.MIN_SIDE} and "
                    f"{limits.MAX_SIDE} pixels (got {self.tile})."
                )
        seed = random_seed() if self.seed is None else int(self.seed)
        loras = tuple(sorted((str(n), round(float(w), 4)) for n, w in self.loras))
        control = self.control.validated() if self.control is not None else None
        return replace(
            self,
            prompt=prompt,
            negative_prompt=(self.negative_prompt or "").strip(),
            seed=seed,
            loras=loras,
            control=control,
        )

    def sized_init_image(self) -> Image.Image:
        """The init image decoded and resized to the requested size (image-to-image only)."""
        if self.init_image is None or self.width is None or self.height is None:
            raise ValueError("a text-to-image request (or an unresolved one) has no sized init image")
        return decode_init_image(self.init_image).resize((self.width, self.height), Image.Resampling.LANCZOS)

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys may share one pipeline call (model, LoRA set, size, steps, ...)."""
        strength = round(float(self.strength), 4) if self.init_image is not None else None
        guidance = None if self.guidance is None else round(float(self.guidance), 4)
        return (
            self.model,
            self.loras,
            self.mode,
            self.width,
            self.height,
            self.aspect if self.width is None else None,
            self.steps,
            guidance,
            strength,
            self.tile if self.init_image is not None else None,
            (self.control.mode, self.control.strength) if self.control is not None else None,
        )


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
    prompt_tokens: int  # CLIP (SD, SDXL) or T5 (SD3, FLUX) tokens in the prompt, without special tokens
    prompt_chunks: int  # 77-token windows the prompt was encoded in (1 = fits the window; T5: 1)
    nsfw: bool  # the safety checker flagged this image (kept as rendered: the studio redacts what it withholds)
    batch_size: int
    seconds: float  # wall time of the pipeline call this image came from
    model: str | None = None  # the MODELS name (None: DIFFUSION_MODEL)
    family: FamilyProfile | None = None
    loras: tuple[tuple[str, float], ...] = ()
    tiles: int = 1  # image-to-image pipeline calls the picture was refined in (tiled hires fix)
    backend: str = "diffusers"  # where it was rendered (pipeline.backends)
    fallback_from: str | None = None  # the backend that failed, when RENDER_FALLBACK rendered it
    control_mode: str | None = None  # the ControlNet mode this image was rendered with
    control_strength: float | None = None
    control_image: Image.Image | None = field(default=None, repr=False)  # the control image it saw

    def png_bytes(self) -> bytes:
        return image_to_png(self.image)


def redacted(image: Image.Image) -> Image.Image:
    """A flagged picture withheld: black, the same size (what diffusers' own checker shows)."""
    return Image.new("RGB", image.size)


def image_to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class RenderInterrupted(Exception):
    """The pipeline call was stopped at a step boundary because every job in it was cancelled."""


@dataclass(frozen=True)
class DiffusionPipelines:
    """The loaded text-to-image pipeline, an image-to-image view of the same components, and the
    family profile read from them."""

    text2img: Any
    img2img: Any
    family: FamilyProfile
    # The model's safety checker (SD 1.x/2.x ship one) and its image processor, taken out of the
    # pipelines: :meth:`Synthesizer.flag_unsafe` runs it on the pictures (and img2img start images)
    # and keeps them, so the caller decides what a flagged picture becomes (blacked out or spoilered).
    checker: Any = None
    feature_extractor: Any = None


#: Pipelines whose transformer was trained in bf16 (fp16 overflows): SD3 and FLUX on CUDA.
BF16_CLASSES = ("StableDiffusion3", "Flux")


class Synthesizer(LazyModel[DiffusionPipelines]):
    """Owns one diffusion pipeline. Not thread-safe: use from the GPU executor thread only."""

    setting = "DIFFUSION_MODEL"

    def __init__(
        self,
        model: str,
        device: str = "auto",
        *,
        safety_checker: bool = True,
        name: str | None = None,
        defaults: ModelDefaults | None = None,
    ) -> None:
        super().__init__(model, device)
        self.safety_checker = safety_checker
        self.name = name  # the MODELS name (None: the default model)
        self.defaults = defaults
        self.loras: LoraSet | None = None  # the LoRAs of LORA_DIR, when set
        self.controls: ControlNets | None = None  # the ControlNets of CONTROLNET_MODELS, when set
        self._control_pipes: dict[tuple[str, bool], Any] = {}  # (mode, img2img) -> pipeline over ours

    # -- loading -----------------------------------------------------------------------------
    def _load(self, device: torch.device, dtype: torch.dtype) -> DiffusionPipelines:
        from diffusers import (
            AutoPipelineForImage2Image,
            AutoPipelineForText2Image,
            DiffusionPipeline,
            EulerDiscreteScheduler,
        )

        kwargs: dict[str, Any] = {"dtype": dtype}
        if dtype == torch.float16:
            index = DiffusionPipeline.load_config(self.model_id)  # model_index.json: the class name
            if str(index.get("_class_name", "")).startswith(BF16_CLASSES):
                kwargs["dtype"] = dtype = torch.bfloat16
        if not self.safety_checker:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        pipe = AutoPipelineForText2Image.from_pretrained(self.model_id, **kwargs)  # type: ignore[no-untyped-call]
        family = families.detect(pipe, self.defaults)
        if family.scheduler == "euler":
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # type: ignore[no-untyped-call]
        pipe = pipe.to(device)
        if device.type == "cuda" and getattr(pipe, "unet", None) is not None:
            pipe.unet.to(memory_format=torch.channels_last)
        pipe.set_progress_bar_config(disable=True)
        # Same modules, no copy: from_pipe re-uses the loaded components.
        img2img = AutoPipelineForImage2Image.from_pipe(pipe)
        img2img.set_progress_bar_config(disable=True)
        checker = getattr(pipe, "safety_checker", None)
        extractor = getattr(pipe, "feature_extractor", None)
        if checker is not None:  # run by flag_unsafe instead: diffusers would black the picture out itself
            for view in (pipe, img2img):
                view.safety_checker = None
        self._dtype_used = dtype
        return DiffusionPipelines(
            text2img=pipe,
            img2img=img2img,
            family=family,
            checker=checker if extractor is not None else None,
            feature_extractor=extractor,
        )

    def unload(self) -> None:
        super().unload()
        self._control_pipes.clear()
        if self.loras is not None:
            self.loras = LoraSet(self.loras.lora_dir)  # adapters went with the weights

    def _loaded_note(self, weights: DiffusionPipelines) -> str:
        checker = weights.checker
        family = weights.family
        return (
            f", {family.label} at {family.native_width}x{family.native_height}, "
            f"{family.default_steps} steps, guidance {family.default_guidance:g}, "
            f"safety checker {'on' if checker is not None else 'off'}"
        )

    def flag_unsafe(self, images: list[Image.Image]) -> list[bool]:
        """Which of ``images`` the model's safety checker flags (all ``False`` without a checker).
        The images are left as they are: the caller redacts (:func:`redacted`) what it withholds."""
        weights = self.load()
        if weights.checker is None or not images:
            return [False] * len(images)
        import numpy as np

        parameter = next(weights.checker.parameters())
        inputs = weights.feature_extractor([image.convert("RGB") for image in images], return_tensors="pt")
        clip_input = inputs.pixel_values.to(device=parameter.device, dtype=parameter.dtype)
        arrays = [np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images]
        with torch.inference_mode():
            _, flags = weights.checker(images=arrays, clip_input=clip_input)
        return [bool(flag) for flag in flags]

    @property
    def _text2img(self) -> Any:
        return self.load().text2img

    @property
    def _img2img(self) -> Any:
        return self.load().img2img

    @property
    def family(self) -> FamilyProfile:
        return self.load().family

    @property
    def tokenizer(self) -> Any:
        """The tokenizer whose count the prompt is limited by: CLIP (SD, SDXL) or T5 (SD3, FLUX)."""
        pipe = self._text2img
        if self.family.prompt_encoding == "t5":
            return getattr(pipe, "tokenizer_3", None) or pipe.tokenizer_2
        return pipe.tokenizer

    def _clip_pairs(self) -> list[tuple[Any, Any]]:
        """(tokenizer, text encoder) of each CLIP encoder the UNet is conditioned on."""
        pipe = self._text2img
        pairs = [(pipe.tokenizer, pipe.text_encoder)]
        if self.family.architecture == "sdxl":
            pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
        return [(tok, enc) for tok, enc in pairs if tok is not None and enc is not None]

    # -- prompts -----------------------------------------------------------------------------
    @staticmethod
    def _tokenize_with(tokenizer: Any, text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False, truncation=False).input_ids)

    def _tokenize(self, text: str) -> list[int]:
        return self._tokenize_with(self.tokenizer, text)

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` without special tokens (CLIP: the window holds 75; T5: the model's limit)."""
        return len(self._tokenize(text))

    def token_ids(self, request: RenderRequest, text: str, tokenizer: Any = None) -> list[int]:
        """Token ids of ``text`` (``request``'s prompt or negative prompt) without the start/end
        tokens, tokenised on the first call and cached on the request after that."""
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        key = (f"{type(tokenizer).__name__}:{getattr(tokenizer, 'name_or_path', '')}:{id(tokenizer)}", text)
        ids = request.token_cache.get(key)
        if ids is None:
            ids = request.token_cache[key] = self._tokenize_with(tokenizer, text)
        return ids

    def _window(self) -> int:
        return int(self._text2img.tokenizer.model_max_length)  # 77 for CLIP

    def _chunks(self, tokens: int) -> int:
        return max(1, math.ceil(tokens / (self._window() - 2)))

    def _longest(self, request: RenderRequest) -> int:
        """The most tokens any CLIP tokenizer gives the prompt or the negative prompt."""
        texts = (request.prompt, request.negative_prompt)
        return max(len(self.token_ids(request, t, tok)) for t in texts for tok, _ in self._clip_pairs())

    def _sequence_length(self, request: RenderRequest) -> int:
        """T5 families: the padded T5 length for this prompt (a 64-token bucket, up to the limit)."""
        limit = self.family.max_prompt_tokens or families.T5_MAX_TOKENS
        texts = [request.prompt] + ([request.negative_prompt] if self.family.negative_prompts else [])
        needed = max(len(self.token_ids(request, t)) for t in texts) + 1  # + the end token
        return min(limit, max(64, math.ceil(needed / 64) * 64))

    def resolve(self, request: RenderRequest) -> RenderRequest:
        """``request`` with every default filled in from the model's family (steps, guidance, size
        from the native size or the aspect) and checked against the family. Raises :class:`BadRequest`."""
        family = self.family
        if request.width is not None and request.height is not None:
            width, height = request.width, request.height
            if width % family.side_multiple or height % family.side_multiple:
                raise BadRequest(
                    f"{family.label} needs a width and height that are multiples of {family.side_multiple} "
                    f"(got {width}x{height})."
                )
        elif request.aspect is not None:
            width, height = families.aspect_size(family.native_size, request.aspect)
        else:
            width, height = family.native_size
        steps = request.steps if request.steps is not None else family.default_steps
        guidance = float(request.guidance) if request.guidance is not None else family.default_guidance
        negative = request.negative_prompt if family.negative_prompts else ""
        if request.init_image is not None and int(steps * request.strength) < 1:
            raise BadRequest("With that strength and step count no denoising step would run; raise either.")
        resolved = replace(
            request, width=width, height=height, steps=steps, guidance=guidance, negative_prompt=negative
        )
        object.__setattr__(resolved, "token_cache", request.token_cache)  # one tokenisation per request
        if family.max_prompt_tokens is not None:
            tokens = len(self.token_ids(resolved, resolved.prompt))
            if tokens + 1 > family.max_prompt_tokens:
                raise BadRequest(
                    f"The prompt is {tokens} tokens long; {family.label} reads at most "
                    f"{family.max_prompt_tokens - 1}. Please shorten it."
                )
        return resolved

    def batch_key(self, request: RenderRequest) -> tuple[Any, ...]:
        """The resolved request's key plus how its text is encoded (CLIP chunks or the T5
        length): requests batch together only when batching changes nothing about any image."""
        resolved = self.resolve(request)
        if self.family.prompt_encoding == "t5":
            shape = self._sequence_length(resolved)
        else:
            shape = self._chunks(self._longest(resolved))
        return (*resolved.batch_key(), shape)

    def _encode(self, token_ids: list[list[int]], chunks: int) -> torch.Tensor:
        """SD: encode each text (its token ids) as ``chunks`` 77-token windows, concatenated: [B, chunks*77, D]."""
        tok, encoder = self._clip_pairs()[0]
        return self._encode_windows(tok, encoder, token_ids, chunks, penultimate=False)[0]

    def _encode_windows(
        self, tok: Any, encoder: Any, token_ids: list[list[int]], chunks: int, *, penultimate: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Windows of one CLIP encoder: hidden states [B, chunks*77, D] (SDXL: the penultimate
        layer) and, for an encoder with a projection, the pooled embedding of the first window."""
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
        input_ids = torch.tensor(rows, device=self.device)
        with torch.inference_mode():
            output = encoder(input_ids, output_hidden_states=penultimate)
        hidden = output.hidden_states[-2] if penultimate else output[0]
        hidden = hidden.reshape(len(token_ids), chunks * window, hidden.shape[-1])
        pooled = getattr(output, "text_embeds", None)
        if pooled is not None:
            pooled = pooled.reshape(len(token_ids), chunks, -1)[:, 0]
        return hidden, pooled

    def _encode_sdxl(self, requests: list[RenderRequest], texts: list[str], chunks: int) -> tuple[Any, Any]:
        hidden_parts: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for tok, encoder in self._clip_pairs():
            ids = [self.token_ids(r, t, tok) for r, t in zip(requests, texts, strict=True)]
            hidden, pool = self._encode_windows(tok, encoder, ids, chunks, penultimate=True)
            hidden_parts.append(hidden)
            pooled = pool if pool is not None else pooled
        embeds = torch.cat(hidden_parts, dim=-1)
        if pooled is None:
            raise ValueError("SDXL needs a text encoder with a projection (text_encoder_2)")
        return embeds, pooled

    def _text_arguments(self, requests: list[RenderRequest], shape: int) -> dict[str, Any]:
        family = self.family
        dtype = self._text2img.dtype
        if family.prompt_encoding == "t5":
            args: dict[str, Any] = {"prompt": [r.prompt for r in requests], "max_sequence_length": shape}
            if family.negative_prompts:  # SD3 (FLUX has none)
                args["negative_prompt"] = [r.negative_prompt for r in requests]
            return args
        if family.architecture == "sdxl":
            embeds, pooled = self._encode_sdxl(requests, [r.prompt for r in requests], shape)
            args = {"prompt_embeds": embeds.to(dtype), "pooled_prompt_embeds": pooled.to(dtype)}
            if family.negative_prompts:  # (a few-step model at guidance 0 never reads them)
                negative, negative_pooled = self._encode_sdxl(requests, [r.negative_prompt for r in requests], shape)
                if getattr(self._text2img.config, "force_zeros_for_empty_prompt", False):
                    # diffusers' SDXL rule: an empty negative prompt is zeros, not the encoded empty text.
                    empty = torch.tensor([not r.negative_prompt for r in requests], device=negative.device)
                    negative = torch.where(empty[:, None, None], torch.zeros_like(negative), negative)
                    negative_pooled = torch.where(empty[:, None], torch.zeros_like(negative_pooled), negative_pooled)
                args["negative_prompt_embeds"] = negative.to(dtype)
                args["negative_pooled_prompt_embeds"] = negative_pooled.to(dtype)
            return args
        args = {"prompt_embeds": self._encode([self.token_ids(r, r.prompt) for r in requests], shape).to(dtype)}
        if family.negative_prompts:  # (LatentConsistencyModelPipeline takes none)
            negative_ids = [self.token_ids(r, r.negative_prompt) for r in requests]
            args["negative_prompt_embeds"] = self._encode(negative_ids, shape).to(dtype)
        return args

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
        raised. Requests must be validated (seeded) and share :meth:`batch_key`; defaults left
        open (steps, guidance, size) are filled in from the model's family.
        """
        if not requests:
            return []
        self.load()
        keys = {self.batch_key(r) for r in requests}
        seeds = [r.seed for r in requests if r.seed is not None]
        if len(keys) != 1 or len(seeds) != len(requests):
            raise ValueError("render() needs validated requests that share one batch key")
        requests = [self.resolve(r) for r in requests]
        first = requests[0]
        shape = keys.pop()[-1]
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

        def on_step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            if progress is not None:
                progress(step + 1, pipe.num_timesteps)
            if should_stop is not None and should_stop():
                pipe._interrupt = True
            return callback_kwargs

        family = self.family
        common: dict[str, Any] = {
            "num_inference_steps": first.steps,
            "guidance_scale": float(first.guidance or 0.0),
            "generator": generators,
            "callback_on_step_end": on_step_end,
            "output_type": "pil",
        }
        if self.loras is not None:
            self.loras.apply(self._text2img, first.loras)
        elif first.loras:
            raise BadRequest("LoRAs are not set up here (LORA_DIR is empty).")
        control_images: list[Image.Image] = []
        if first.control is not None:
            control_images = self._control_images(requests)
        started = time.perf_counter()
        tiles = 1
        tile = self.tile_side(first)
        with torch.inference_mode():
            common.update(self._text_arguments(requests, shape))
            if first.control is not None:
                pipe = self._control_pipeline(first)
                scale = float(first.control.strength)
                if first.mode == "img2img":
                    images = [r.sized_init_image() for r in requests]
                    if any(self.flag_unsafe(images)):
                        raise UnsafeImage()
                    output = pipe(
                        image=images,
                        control_image=control_images,
                        strength=float(first.strength),
                        controlnet_conditioning_scale=scale,
                        **common,
                    )
                else:
                    output = pipe(
                        image=control_images,
                        height=first.height,
                        width=first.width,
                        controlnet_conditioning_scale=scale,
                        **common,
                    )
                if pipe.interrupt:
                    raise RenderInterrupted()
                pictures = list(output.images)
            elif first.mode == "img2img" and tile is not None:
                if any(self.flag_unsafe([r.sized_init_image() for r in requests])):
                    raise UnsafeImage()
                pictures, _, tiles = self._render_tiled(requests, seeds, tile, common, progress, should_stop)
            elif first.mode == "img2img":
                images = [r.sized_init_image() for r in requests]
                if any(self.flag_unsafe(images)):
                    raise UnsafeImage()
                pipe = self._img2img
                extra = {"height": first.height, "width": first.width} if family.architecture == "flux" else {}
                output = pipe(image=images, strength=float(first.strength), **extra, **common)
                if pipe.interrupt:
                    raise RenderInterrupted()
                pictures = list(output.images)
            else:
                pipe = self._text2img
                output = pipe(height=first.height, width=first.width, **common)
                if pipe.interrupt:
                    raise RenderInterrupted()
                pictures = list(output.images)
        seconds = time.perf_counter() - started
        flagged = self.flag_unsafe(pictures)  # the model's checker, run by us on the whole pictures
        chunks = 1 if family.prompt_encoding == "t5" else shape
        results: list[RenderedImage] = []
        for request, seed, image, nsfw in zip(requests, seeds, pictures, flagged, strict=True):
            results.append(
                RenderedImage(
                    image=image,
                    seed=seed,
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt,
                    steps=int(request.steps or 0),
                    guidance=float(request.guidance or 0.0),
                    width=int(request.width or 0),
                    height=int(request.height or 0),
                    mode=request.mode,
                    prompt_tokens=len(self.token_ids(request, request.prompt)),
                    prompt_chunks=chunks,
                    nsfw=bool(nsfw),
                    batch_size=len(requests),
                    seconds=seconds,
                    model=self.name,
                    family=family,
                    loras=first.loras,
                    tiles=tiles,
                    control_mode=first.control.mode if first.control is not None else None,
                    control_strength=first.control.strength if first.control is not None else None,
                    control_image=control_images[len(results)] if control_images else None,
                )
            )
        return results

    # -- tiled image-to-image (the U buttons' hires fix) ------------------------------------------
    def tile_side(self, request: RenderRequest) -> int | None:
        """The tile side a resolved image-to-image ``request`` is refined in, or None when it runs
        whole (no tile asked for, or the picture fits in one tile)."""
        if request.tile is None or request.init_image is None or request.width is None or request.height is None:
            return None
        side = request.tile or min(self.family.native_size)
        multiple = self.family.side_multiple
        side = max(multiple, side // multiple * multiple)
        if request.width <= side and request.height <= side:
            return None
        return side

    def _render_tiled(
        self,
        requests: list[RenderRequest],
        seeds: list[int],
        side: int,
        common: dict[str, Any],
        progress: ProgressFn | None,
        should_stop: StopFn | None,
    ) -> tuple[list[Image.Image], list[bool], int]:
        """Image-to-image over overlapping tiles of ``side`` px (pipeline.tiling), blended back
        with feathered seams. One pipeline call per tile for the whole batch (its tile of every
        request), each request's tile ``k`` seeded ``seed + k``, the prompt encoded once. Progress
        counts every tile's steps; a stop request ends it at the next step of the current tile."""
        from .tiling import Canvas, overlap_for, tile_boxes

        first = requests[0]
        width, height = int(first.width or 0), int(first.height or 0)
        multiple = self.family.side_multiple
        overlap = overlap_for(side, multiple)
        boxes = tile_boxes(width, height, side, overlap=overlap, multiple=multiple)
        sources = [r.sized_init_image() for r in requests]
        canvases = [Canvas(width, height, feather=overlap) for _ in requests]
        flagged = [False] * len(requests)
        pipe = self._img2img
        for k, box in enumerate(boxes):

            def on_step_end(
                pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any], k: int = k
            ) -> dict[str, Any]:
                if progress is not None:
                    per_tile = int(pipe.num_timesteps)
                    progress(k * per_tile + step + 1, len(boxes) * per_tile)
                if should_stop is not None and should_stop():
                    pipe._interrupt = True
                return callback_kwargs

            tile_w, tile_h = box.size
            extra = {"height": tile_h, "width": tile_w} if self.family.architecture == "flux" else {}
            arguments = {
                **common,
                "generator": [torch.Generator("cpu").manual_seed(seed + k) for seed in seeds],
                "callback_on_step_end": on_step_end,
            }
            output = pipe(
                image=[source.crop(box.crop()) for source in sources],
                strength=float(first.strength),
                **extra,
                **arguments,
            )
            if pipe.interrupt:
                raise RenderInterrupted()
            nsfw = getattr(output, "nsfw_content_detected", None) or [False] * len(requests)
            for i, (canvas, picture) in enumerate(zip(canvases, output.images, strict=True)):
                canvas.add(box, picture)
                flagged[i] = flagged[i] or bool(nsfw[i])
        log.debug("refined %dx%d in %d tiles of %d px (overlap %d)", width, height, len(boxes), side, overlap)
        return [canvas.image() for canvas in canvases], flagged, len(boxes)

    # -- ControlNet (pipeline.control) -------------------------------------------------------
    def _control_images(self, requests: list[RenderRequest]) -> list[Image.Image]:
        if self.controls is None:
            raise BadRequest("ControlNet is not set up here (CONTROLNET_MODELS is empty).")
        return [
            self.controls.control_image(r.control, int(r.width or 0), int(r.height or 0), self.device)
            for r in requests
            if r.control is not None
        ]

    def _control_pipeline(self, request: RenderRequest) -> Any:
        if self.controls is None or request.control is None:
            raise BadRequest("ControlNet is not set up here (CONTROLNET_MODELS is empty).")
        key = (request.control.mode, request.mode == "img2img")
        pipe = self._control_pipes.get(key)
        if pipe is None:
            pipe = self._control_pipes[key] = self.controls.pipeline(
                self._text2img, self.family.architecture, key[0], img2img=key[1]
            )
        return pipe
