"""Model families: what a loaded diffusers pipeline is, and how it wants to be driven.

A :class:`FamilyProfile` is read from the *loaded* pipeline (its class, its denoiser's and its
scheduler's configs), never from constants of the process:

===========  =======================  ===============  ===================  =========================
family       detected from            native size      prompt encoding      negative prompt
===========  =======================  ===============  ===================  =========================
``sd``       StableDiffusion*         unet.sample_size one CLIP, 75-token   yes
             (1.x and 2.x)            × VAE factor     windows, concatenated
``sdxl``     StableDiffusionXL*       same             two CLIPs, windows;  yes
                                                       pooled from window 1
``sd3``      StableDiffusion3*        transformer      T5 (CLIP pooled +    yes
                                      .sample_size × f 77 tokens)
``flux``     Flux*                    128 × VAE factor T5 (CLIP pooled)     no (FLUX has none)
===========  =======================  ===============  ===================  =========================

Native size is diffusers' own rule (``default_sample_size × vae_scale_factor``): SD 1.5 → 512,
SDXL → 1024, SD3/FLUX → 1024.

**Few-step distilled models** (SD-Turbo, SDXL-Turbo, LCM, Hyper-SD/TCD, FLUX.1-schnell) are the
same architectures trained to finish in 1–8 steps at guidance ≈ 0 with their own scheduler. They are
recognised from the scheduler the model ships (``LCMScheduler``, ``TCDScheduler``, or Euler
ancestral with ``"trailing"`` timesteps as the Turbo repositories have), from FLUX's transformer
config (no guidance embedding = schnell), or told explicitly in ``MODELS`` with ``few_step=true``
(e.g. a Hyper-SD LoRA merged into SDXL, whose repository looks like plain SDXL). A few-step
profile keeps the model's scheduler, renders 4 steps at guidance 0 (LCM: 1.0), refuses more than
8 steps of nothing, and its correction round adds one step and no guidance.

Everything a user could choose still wins over the profile (``/imagine steps:``, ``STEPS``, the
per-model defaults in ``MODELS``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Literal

from . import limits
from .errors import BadRequest

log = logging.getLogger(__name__)

Architecture = Literal["sd", "sdxl", "sd3", "flux"]
PromptEncoding = Literal["clip-windows", "t5"]

#: The aspect ratios a user may pick (``/imagine aspect:``, ``--aspect``).
ASPECTS: tuple[str, ...] = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9")

#: FLUX and SD3 read at most this many T5 tokens (diffusers refuses more).
T5_MAX_TOKENS = 512


@dataclass(frozen=True)
class FamilyProfile:
    """How to drive one loaded model. ``key`` ("sdxl", "sdxl-few-step", ...) names it in results."""

    architecture: Architecture
    few_step: bool
    native_width: int
    native_height: int
    default_steps: int
    default_guidance: float
    max_steps: int
    scheduler: Literal["euler", "model"]  # "euler": switch to Euler; "model": keep the model's own
    negative_prompts: bool  # False: a negative prompt would be ignored (FLUX; guidance 0)
    prompt_encoding: PromptEncoding
    max_prompt_tokens: int | None  # None: any length (windows); T5 families: their limit
    prompt_style: Literal["tags", "sentences"]  # what the director should write
    prompt_word_budget: int  # words the director aims for
    guidance_step: float  # each correction round adds this much guidance …
    steps_step: int  # … and this many steps
    side_multiple: int = limits.SIDE_MULTIPLE  # width and height must be multiples of this

    @property
    def key(self) -> str:
        return f"{self.architecture}-few-step" if self.few_step else self.architecture

    @property
    def label(self) -> str:
        names = {"sd": "Stable Diffusion", "sdxl": "SDXL", "sd3": "SD3", "flux": "FLUX"}
        return names[self.architecture] + (" (few-step)" if self.few_step else "")

    @property
    def native_size(self) -> tuple[int, int]:
        return self.native_width, self.native_height

    def with_overrides(self, options: ModelDefaults | None) -> FamilyProfile:
        """This profile with a model's configured defaults (``MODELS`` options) applied."""
        if options is None:
            return self
        profile = self
        if options.few_step and not self.few_step:
            profile = _few_step(profile)
        changes: dict[str, Any] = {}
        if options.steps is not None:
            changes["default_steps"] = options.steps
        if options.guidance is not None:
            changes["default_guidance"] = options.guidance
        if options.width is not None:
            changes["native_width"] = options.width
        if options.height is not None:
            changes["native_height"] = options.height
        return replace(profile, **changes) if changes else profile

    def correction(self, steps: int, guidance: float) -> tuple[int, float]:
        """Steps and guidance of the next correction round after one rendered at these."""
        return (
            min(self.max_steps, steps + self.steps_step),
            min(limits.MAX_GUIDANCE, guidance + self.guidance_step),
        )


@dataclass(frozen=True)
class ModelDefaults:
    """Per-model options from ``MODELS`` (``name=source;steps=4;guidance=0;few_step=true``)."""

    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    few_step: bool = False


# ------------------------------------------------------------------------------------------------
# Detection
# ------------------------------------------------------------------------------------------------
_BASE: dict[Architecture, dict[str, Any]] = {
    # diffusers' own defaults per pipeline, except SD (the product's long-standing 25 / 7.5).
    "sd": dict(
        default_steps=25,
        default_guidance=7.5,
        prompt_style="tags",
        prompt_word_budget=60,
        guidance_step=1.5,
        steps_step=5,
        prompt_encoding="clip-windows",
        negative_prompts=True,
    ),
    "sdxl": dict(
        default_steps=30,
        default_guidance=6.0,
        prompt_style="sentences",
        prompt_word_budget=60,
        guidance_step=1.0,
        steps_step=5,
        prompt_encoding="clip-windows",
        negative_prompts=True,
    ),
    "sd3": dict(
        default_steps=28,
        default_guidance=7.0,
        prompt_style="sentences",
        prompt_word_budget=120,
        guidance_step=1.0,
        steps_step=4,
        prompt_encoding="t5",
        negative_prompts=True,
    ),
    "flux": dict(
        default_steps=28,
        default_guidance=3.5,
        prompt_style="sentences",
        prompt_word_budget=120,
        guidance_step=0.5,
        steps_step=4,
        prompt_encoding="t5",
        negative_prompts=False,
    ),
}

FEW_STEP_MAX_STEPS = 8


def architecture_of(pipe: Any) -> Architecture:
    name = type(pipe).__name__
    if name.startswith("Flux"):
        return "flux"
    if name.startswith("StableDiffusion3"):
        return "sd3"
    if name.startswith("StableDiffusionXL"):
        return "sdxl"
    if name.startswith("StableDiffusion") or name.startswith("LatentConsistency"):
        return "sd"
    raise BadRequest(
        f"{name} is not a model family VoxCanvas renders with (SD 1.x/2.x, SDXL, SD3 or FLUX text-to-image)."
    )


def native_size(pipe: Any) -> tuple[int, int]:
    """diffusers' own default size: ``sample_size × vae_scale_factor``."""
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    if type(pipe).__name__.startswith("Flux") or not sample:
        sample = getattr(pipe, "default_sample_size", None) or 128
    if isinstance(sample, (list, tuple)):
        height, width = int(sample[0]), int(sample[1])
    else:
        height = width = int(sample)
    return width * factor, height * factor


def looks_few_step(pipe: Any, architecture: Architecture) -> bool:
    scheduler = getattr(pipe, "scheduler", None)
    name = type(scheduler).__name__
    config = getattr(scheduler, "config", {}) or {}
    if name in ("LCMScheduler", "TCDScheduler"):
        return True
    if name == "EulerAncestralDiscreteScheduler" and config.get("timestep_spacing") == "trailing":
        return True  # SD-Turbo and SDXL-Turbo ship exactly this
    if architecture == "flux":
        transformer = getattr(pipe, "transformer", None)
        return not bool(getattr(getattr(transformer, "config", None), "guidance_embeds", False))  # schnell
    return False


def _few_step(profile: FamilyProfile, *, lcm: bool = False) -> FamilyProfile:
    return replace(
        profile,
        few_step=True,
        default_steps=4,
        default_guidance=1.0 if lcm else 0.0,
        max_steps=FEW_STEP_MAX_STEPS,
        scheduler="model",
        negative_prompts=profile.negative_prompts and lcm,  # guidance 0: a negative prompt does nothing
        guidance_step=0.0,
        steps_step=1,
    )


def detect(pipe: Any, options: ModelDefaults | None = None) -> FamilyProfile:
    """The profile of a loaded text-to-image pipeline (plus its ``MODELS`` options)."""
    architecture = architecture_of(pipe)
    width, height = native_size(pipe)
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    if architecture == "flux":
        multiple = factor * 2  # latents are packed 2 × 2
    elif architecture == "sd3":
        multiple = factor * int(getattr(pipe.transformer.config, "patch_size", 2))
    else:
        multiple = factor
    max_tokens = None
    if _BASE[architecture]["prompt_encoding"] == "t5":
        t5 = getattr(pipe, "tokenizer_3", None) or getattr(pipe, "tokenizer_2", None)
        max_tokens = min(T5_MAX_TOKENS, int(getattr(t5, "model_max_length", T5_MAX_TOKENS)))
    profile = FamilyProfile(
        architecture=architecture,
        few_step=False,
        native_width=width,
        native_height=height,
        max_steps=limits.MAX_STEPS,
        scheduler="euler" if architecture in ("sd", "sdxl") else "model",
        max_prompt_tokens=max_tokens,
        side_multiple=max(limits.SIDE_MULTIPLE, multiple),
        **_BASE[architecture],
    )
    if looks_few_step(pipe, architecture):
        profile = _few_step(profile, lcm=type(pipe.scheduler).__name__ == "LCMScheduler")
    if type(pipe).__name__.startswith("LatentConsistency"):
        profile = replace(profile, negative_prompts=False)  # an LCM-distilled UNet: guidance is embedded
    return profile.with_overrides(options)


def prompt_token_limit(profile: FamilyProfile | None) -> int:
    """Tokens a director should fit its prompt into: CLIP's 75-token window for SD and SDXL
    (longer prompts are encoded in windows, but the model was trained on one), and up to 200 of
    T5's tokens for SD3 and FLUX (their limit is 512; natural sentences of ~120 words fit)."""
    from .prompts import PROMPT_TOKEN_LIMIT

    if profile is None or profile.max_prompt_tokens is None:
        return PROMPT_TOKEN_LIMIT
    return min(200, profile.max_prompt_tokens - 1)


def director_brief(profile: FamilyProfile | None, field: str = "diffusion_prompt", *, negative: bool = True) -> str:
    """One paragraph telling a language model how this family wants its prompt (``field``: the
    answer's field it writes; ``negative``: also say what to do with the negative prompt)."""
    if profile is None:
        return ""
    words = profile.prompt_word_budget
    if profile.prompt_style == "sentences":
        how = (
            f"write {field} as one to three natural English sentences describing the picture "
            f"(at most {words} words), not a list of tags"
        )
    else:
        how = f"write {field} as comma-separated phrases (at most {words} words)"
    text = f"The picture is rendered with {profile.label}: {how}."
    if negative:
        text += (
            " negative_prompt: leave it empty (this model does not use one)."
            if not profile.negative_prompts
            else " negative_prompt: as usual."
        )
    return text


def guidance_step_of(key: str | None) -> float:
    """The correction-round guidance bump of a family named by its :attr:`FamilyProfile.key`
    (what a stored round records; unknown or missing: SD 1.x's)."""
    if not key:
        return limits.GUIDANCE_STEP
    if key.endswith("-few-step"):
        return 0.0
    base = _BASE.get(key)  # type: ignore[call-overload]
    return float(base["guidance_step"]) if base else limits.GUIDANCE_STEP


# ------------------------------------------------------------------------------------------------
# Aspect ratios
# ------------------------------------------------------------------------------------------------
def parse_aspect(aspect: str) -> tuple[int, int]:
    """``"16:9"`` → (16, 9); anything not in :data:`ASPECTS` is a :class:`BadRequest`."""
    text = (aspect or "").strip()
    if text not in ASPECTS:
        raise BadRequest(f"The aspect ratio must be one of {', '.join(ASPECTS)} (got {aspect!r}).")
    w, h = text.split(":")
    return int(w), int(h)


def aspect_size(native: tuple[int, int], aspect: str) -> tuple[int, int]:
    """The native pixel budget (``width × height``) at ``aspect``, each side rounded to a multiple
    of 64 (of 8 for models whose native size is under 512 px: tiny test models), within the
    renderer's bounds. SDXL (1024²) at 16:9 → 1344 × 768; SD 1.5 (512²) at 16:9 → 704 × 384."""
    rw, rh = parse_aspect(aspect)
    budget = native[0] * native[1]
    multiple = 64 if min(native) >= 512 else limits.SIDE_MULTIPLE
    width = math.sqrt(budget * rw / rh)
    height = budget / width

    def snap(side: float) -> int:
        value = max(multiple, round(side / multiple) * multiple)
        return int(min(max(value, limits.MIN_SIDE), limits.MAX_SIDE // multiple * multiple))

    return snap(width), snap(height)
