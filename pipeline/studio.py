"""The self-correcting studio: transcribe → direct → render → review → (correct → review)*.

``Studio`` is the one entry point the bot, the CLI and the benchmarks share. It awaits GPU stages
through the :class:`~pipeline.executor.Executor` and network stages (Gemini) on the event loop,
so the GPU thread never waits on the network and the event loop never runs torch.

Provider policy: with ``GEMINI_API_KEY`` set, Gemini directs and judges; when Gemini fails after
its retries, times out or answers something unusable, the local director / CLIP critic take over
for that job and the reason is recorded in the :class:`Result`. With no key, everything is local.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ModelWrapValidatorHandler, model_validator

from . import families, limits, moderation
from .audio import SAMPLE_RATE, decode_audio
from .control import DEFAULT_CONTROL_STRENGTH, ControlSpec, check_control
from .critic import GeminiCritic, QAReport, build_correction_prompt
from .describe import Captioner, Described, GeminiDescriber
from .directors import GeminiDirector, LocalDirector, music_idea, music_prompt_for
from .errors import BadAudio, BadRequest, ProviderError
from .executor import Executor, Job, ProgressEvent, Stage
from .families import FamilyProfile
from .gemini import make_client
from .grid import make_grid
from .images import decode_init_image
from .knowledge import Knowledge
from .music import Music, MusicRequest, encode_ogg_opus, encode_wav
from .palette import extract_palette, swatch_png
from .scene import Scene
from .settings import Settings
from .styles import (
    STYLES,
    check_style,
    install_styles_file,
    keeping_unknown_styles,
    server_styles,
    style_from_dict,
)
from .synthesis import RenderedImage, RenderRequest, image_to_png, random_seed, redacted
from .tags import tags_for

if TYPE_CHECKING:
    from google import genai
    from PIL import Image


log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# What goes in and what comes out
# ------------------------------------------------------------------------------------------------
@dataclass
class Idea:
    """A request as a user made it: a text, or a voice note, plus options."""

    text: str | None = None
    audio: bytes | None = field(default=None, repr=False)
    audio_filename: str | None = None
    # A voice note kept on disk instead (the bot's queued jobs): read only when the job runs, so a
    # queue of voice notes does not hold up to MAX_AUDIO_BYTES each in memory.
    audio_path: Path | None = None
    style: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    init_image: bytes | None = field(default=None, repr=False)
    strength: float = limits.DEFAULT_STRENGTH
    task: Literal["auto", "transcribe", "translate"] = "auto"
    seconds: float | None = None  # music length (compose / soundtrack jobs); None: MUSIC_SECONDS
    aspect: str | None = None  # "16:9" ...: the model's native pixel budget at that ratio
    model: str | None = None  # a MODELS name; None: DIFFUSION_MODEL
    loras: tuple[tuple[str, float], ...] = ()  # (name, weight) from LORA_DIR
    candidates: int | None = None  # pictures in the first render, all scored (1-4); None: CANDIDATES
    candidate: int | None = None  # U/V buttons: which candidate (0-based) of the parent job
    upscale: bool = False  # a U button's job: the candidate (the init image) upscaled ×2
    remix: bool = False  # a Remix job: ``text`` is the edited diffusion prompt of the parent, used as is
    keep_flagged: bool = False  # where it was asked, flagged pictures may be shown (behind a spoiler): Job.keep_flagged
    reply_language: str | None = None  # the bot's replies (bot.i18n); None: the language heard (voice)
    control: str | None = None  # a ControlNet mode (pipeline.control): canny, depth, pose, palette
    control_image: bytes | None = field(default=None, repr=False)  # canny/depth/pose source; else init_image
    control_strength: float | None = None  # None: 1.0
    # A server's own style (/settings style) that ``style`` names, as recorded with the job
    # (pipeline.styles.style_to_dict): the job keeps it even if the server removes the style later.
    server_style: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        return "voice" if self.audio is not None or self.audio_path is not None else "text"

    async def read_audio(self) -> bytes:
        """The voice note's bytes: :attr:`audio`, or :attr:`audio_path` read now (off the event loop)."""
        if self.audio is not None:
            return self.audio
        if self.audio_path is None:
            raise BadRequest("There's no voice note in this request.")
        try:
            return await asyncio.to_thread(self.audio_path.read_bytes)
        except OSError as exc:
            log.error("can't read the voice note %s: %s", self.audio_path, exc)
            raise BadAudio("I couldn't read your voice note back from my disk — please send it again.") from exc


class Round(BaseModel):
    """One render and its review."""

    index: int
    prompt: str
    negative_prompt: str
    seed: int
    guidance: float
    steps: int
    width: int
    height: int
    mode: str = "text2img"
    strength: float | None = None
    prompt_tokens: int
    prompt_chunks: int
    nsfw: bool = False
    batch_size: int = 1
    model: str | None = None  # the MODELS name; None: DIFFUSION_MODEL
    family: str | None = None  # pipeline.families key: "sd", "sdxl", "sdxl-few-step", "flux-few-step" ...
    loras: list[tuple[str, float]] = Field(default_factory=list)
    backend: str = "diffusers"  # where it was rendered (pipeline.backends)
    backend_fallback: str | None = None  # the backend that failed when RENDER_FALLBACK rendered it
    control: str | None = None  # the ControlNet mode, when one guided this render
    control_strength: float | None = None
    score: int | None = None
    missing_elements: list[str] = Field(default_factory=list)
    correction_prompt: str | None = None
    critic_notes: str | None = None
    critic: str | None = None  # "gemini" | "local"
    render_s: float = 0.0
    review_s: float = 0.0
    tiles: int = 1  # image-to-image calls the picture was refined in (a tiled hires fix); 1: whole
    upscaler: str | None = None  # UPSCALER_MODEL's pass before the refinement ("x4 in 1 tile"); None: Lanczos


class Candidate(BaseModel):
    """One of a job's candidates (a cell of its grid): its seed and the critic's score. The best
    one's cell shows the job's final picture (its correction when one scored higher)."""

    index: int  # 0-based; shown as index + 1
    seed: int
    score: int | None = None
    corrected: bool = False  # this cell shows the correction round's picture
    nsfw: bool = False  # the safety checker flagged this candidate


class Provenance(BaseModel):
    """Where a picture's idea came from: what was asked or said, what was heard, and the scene
    the director made of it. Regenerate and Vary carry their parent's provenance unchanged."""

    kind: str  # "text" | "voice" | "regenerate" | "vary"
    parent_job_id: str | None = None
    idea: str
    transcript: str | None = None
    language: str | None = None
    translated: bool = False
    audio_seconds: float | None = None
    style: str | None = None
    scene: Scene
    director: str
    director_fallback: str | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _stored_styles(cls, data: Any, handler: ModelWrapValidatorHandler[Provenance]) -> Provenance:
        """A job read back keeps a style name that is no style any more (a server style removed
        since): its prompts already carry the style. A director's new scene is still checked strictly."""
        with keeping_unknown_styles():
            return handler(data)

    def follow_up(self, kind: str, parent_job_id: str) -> Provenance:
        """The same origin for a new job made from this one (``kind`` "regenerate" or "vary")."""
        origin = {name: getattr(self, name) for name in Provenance.model_fields}
        return Provenance(**{**origin, "kind": kind, "parent_job_id": parent_job_id})


class Result(Provenance):
    """Everything about a finished job except the image bytes (see :class:`Output`): its
    :class:`Provenance` (the same flat fields) and what the studio made of it."""

    job_id: str
    palette: list[str]
    palette_source: str  # "director" | "image"
    tags: list[str]
    rounds: list[Round]
    best_round: int
    threshold: int
    critic: str
    critic_fallback: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    total_s: float = 0.0
    candidates: list[Candidate] = Field(default_factory=list)  # empty: one picture (older jobs too)
    best_candidate: int = 0
    # The safety checker flagged a picture shown (see :attr:`flagged`) and it was kept as rendered
    # (``Job.keep_flagged``: to be shown behind a spoiler); False: flagged pictures are black.
    flagged_kept: bool = False

    @property
    def flagged(self) -> bool:
        """The safety checker flagged the shown picture or one of the candidates."""
        return self.best.nsfw or any(c.nsfw for c in self.candidates)

    @property
    def best(self) -> Round:
        return self.rounds[self.best_round]

    @property
    def score(self) -> int | None:
        return self.best.score

    @property
    def corrected(self) -> bool:
        """The picture shown came from an automatic correction round."""
        return self.best_round > 0 and self.kind in ("text", "voice")


@dataclass
class Output:
    result: Result
    image_png: bytes = field(repr=False)
    palette_png: bytes = field(repr=False)
    # Several candidates: each one's PNG (the best cell holds image_png) and the labelled grid.
    candidate_pngs: list[bytes] = field(default_factory=list, repr=False)
    grid_png: bytes | None = field(default=None, repr=False)
    control_png: bytes | None = field(default=None, repr=False)  # the ControlNet's control image, if any

    @property
    def shown_png(self) -> bytes:
        """What a reply shows: the grid of candidates, or the picture."""
        return self.grid_png or self.image_png


class MusicResult(BaseModel):
    """Everything about a composed piece except the audio bytes (see :class:`MusicOutput`)."""

    job_id: str
    kind: str  # "compose" (a description) | "voice" (a spoken music idea) | "soundtrack" (a picture's)
    parent_job_id: str | None = None  # the picture a soundtrack was composed for
    idea: str  # what was asked, said, or the picture's title
    transcript: str | None = None
    music_prompt: str
    director: str  # "user" (the description as given) | "gemini" | "local" (the scene's music prompt)
    seed: int
    seconds: float
    duration_s: float
    sample_rate: int
    guidance: float
    tokens: int
    compose_s: float
    realtime_factor: float
    tags: list[str] = Field(
        default_factory=list
    )  # pipeline.tags over the picture's prompt (soundtrack) and the music's
    timings: dict[str, float] = Field(default_factory=dict)
    total_s: float = 0.0


@dataclass
class MusicOutput:
    """A composed piece: WAV (API, CLI) and, when asked for, OGG/Opus (Discord plays it inline)."""

    result: MusicResult
    wav: bytes = field(repr=False)
    ogg: bytes | None = field(default=None, repr=False)


StageListener = Callable[[ProgressEvent], None]


# ------------------------------------------------------------------------------------------------
class Studio:
    """Runs jobs through the engine. One per process; shares the executor."""

    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        *,
        gemini_client: genai.Client | None = None,
    ) -> None:
        self.settings = settings
        install_styles_file(settings.STYLES_FILE)  # checked when the settings were read
        self.knowledge = Knowledge.load(settings.STYLE_KNOWLEDGE) if settings.STYLE_KNOWLEDGE is not None else None
        self.executor = executor
        self.local_director = LocalDirector()
        self._decode_slots = asyncio.Semaphore(limits.MAX_CONCURRENT_DECODES)
        self.gemini_director: GeminiDirector | None = None
        self.gemini_critic: GeminiCritic | None = None
        self._own_client = False
        self._gemini_client: genai.Client | None = None
        self._captioner: Captioner | None = None
        if settings.gemini_enabled:
            if gemini_client is None:
                gemini_client = make_client(settings)
                self._own_client = True
            self._gemini_client = gemini_client
            # One client (one connection pool) for both; the diffusion tokenizer counts tokens
            # exactly once it is loaded, a conservative estimate is used before.
            self.gemini_director = GeminiDirector(settings, client=gemini_client, count_tokens=executor.count_tokens)
            self.gemini_critic = GeminiCritic(settings, client=gemini_client, count_tokens=executor.count_tokens)

    async def describe(self, image_bytes: bytes, count: int = limits.MAX_CANDIDATES) -> Described:
        """/describe: 1–4 prompts that would draw the picture, and its palette. Gemini when a key
        is set (the local captioner if it fails), else ``CAPTION_MODEL``. Raises :class:`BadRequest`
        for an image that is not PNG/JPEG/WebP, too large, or corrupt."""
        count = self.candidate_count(count)
        image = await asyncio.to_thread(decode_init_image, image_bytes)
        palette = await asyncio.to_thread(extract_palette, image, 5)
        reason = None
        if self._gemini_client is not None:
            describer = GeminiDescriber(self.settings, client=self._gemini_client)
            try:
                png = await asyncio.to_thread(image_to_png, image)
                prompts = await describer.describe(png, count)
                return Described(prompts=prompts, palette=palette, source="gemini")
            except ProviderError as exc:
                log.warning("Gemini describer failed, using the local captioner: %s", exc)
                reason = str(exc)
        if self._captioner is None:
            self._captioner = Captioner(self.settings.CAPTION_MODEL, self.settings.DEVICE)
        prompts = await self.executor.call(None, "tool", self._captioner.captions, image, count)
        return Described(prompts=list(prompts), palette=palette, source="local", fallback=reason)

    async def aclose(self) -> None:
        """Close the Gemini client's connections (when this Studio created it)."""
        if self._own_client and self._gemini_client is not None:
            await self._gemini_client.aio.aclose()
            self._gemini_client = None

    # --- public entry points -------------------------------------------------------------------
    async def run(self, job: Job, idea: Idea) -> Output:
        """The whole loop for a new idea (text or voice note); a server style the idea carries is
        one of :data:`~.styles.STYLES` for the director meanwhile."""
        template = style_from_dict(idea.server_style) if idea.server_style else None
        with server_styles({template.name: template} if template is not None else None):
            return await self._run(job, idea)

    async def _run(self, job: Job, idea: Idea) -> Output:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        transcript = language = None
        translated = False
        audio_seconds = None
        if idea.kind == "voice":
            self._stage(job, "decode")
            t0 = time.perf_counter()
            async with self._decode_slots:  # decoding is CPU and memory: a few at a time, never a burst
                audio = await asyncio.to_thread(
                    decode_audio,
                    await idea.read_audio(),
                    max_seconds=self.settings.MAX_AUDIO_SECONDS,
                    max_bytes=self.settings.MAX_AUDIO_BYTES,
                    filename=idea.audio_filename,
                )
            timings["decode"] = time.perf_counter() - t0
            audio_seconds = len(audio) / SAMPLE_RATE
            t0 = time.perf_counter()
            heard = await self.executor.transcribe(job, audio, idea.task)
            timings["transcribe"] = time.perf_counter() - t0
            transcript, language, translated = heard.text, heard.language, heard.translated
            text = heard.text
        else:
            text = (idea.text or "").strip()
        if not text.strip():
            raise BadRequest("There's nothing to draw yet — describe your idea in a few words.")
        moderation.screen(text, "spoken idea" if transcript is not None else "typed idea")

        self._stage(job, "direct")
        t0 = time.perf_counter()
        family = self.executor.family(idea.model)  # the model's profile when it is loaded
        scene, director, director_fallback = await self._direct(text, idea.style, language or "en", family)
        timings["direct"] = time.perf_counter() - t0
        moderation.screen(scene.diffusion_prompt, "director's prompt")

        # Left empty, steps, guidance and size are the model's: its MODELS options, else the
        # STEPS/GUIDANCE/WIDTH/HEIGHT settings, else its family's (pipeline.registry, .families).
        first = RenderRequest(
            prompt=scene.diffusion_prompt,
            negative_prompt=_join_negative(scene.negative_prompt, idea.negative_prompt),
            seed=idea.seed,
            steps=idea.steps,
            guidance=idea.guidance,
            width=idea.width,
            height=idea.height,
            init_image=idea.init_image,
            strength=idea.strength,
            aspect=idea.aspect,
            model=idea.model,
            loras=tuple(idea.loras),
            control=_control_spec(idea, scene),
        )
        provenance = Provenance(
            kind=idea.kind,
            idea=idea.text or text,
            transcript=transcript,
            language=language or scene.language,
            translated=translated,
            audio_seconds=audio_seconds,
            style=idea.style or scene.style,
            scene=scene,
            director=director,
            director_fallback=director_fallback,
        )
        count = self.candidate_count(idea.candidates)
        return await self._render_and_correct(job, first, provenance, timings=timings, started=started, count=count)

    def candidate_count(self, asked: int | None) -> int:
        """``asked`` (1-4), else ``CANDIDATES``, else 4 on CUDA and 1 on CPU."""
        if asked is not None:
            if not 1 <= int(asked) <= limits.MAX_CANDIDATES:
                raise BadRequest(f"Ask for 1 to {limits.MAX_CANDIDATES} candidates (got {asked}).")
            return int(asked)
        if self.settings.CANDIDATES is not None:
            return self.settings.CANDIDATES
        if self.settings.DEVICE == "cpu":
            return 1
        import torch

        return limits.MAX_CANDIDATES if torch.cuda.is_available() else 1

    async def regenerate(
        self, job: Job, previous: Result, *, init_image: bytes | None = None, control_image: bytes | None = None
    ) -> Output:
        """The Regenerate button: the last correction prompt (or the prompt), a new seed,
        guidance +1.5; then review again (and correct again if still below the threshold). A
        ControlNet job keeps its control (mode, strength, ``control_image``)."""
        last = previous.rounds[-1]
        request = _request_like(
            last,
            prompt=last.correction_prompt or last.prompt,
            guidance=min(limits.MAX_GUIDANCE, last.guidance + families.guidance_step_of(last.family)),
            init_image=init_image,
        )
        request = replace(request, control=_follow_up_control(last, previous, control_image, init_image))
        return await self._follow_up(job, previous, request, kind="regenerate")

    async def vary(
        self,
        job: Job,
        previous: Result,
        *,
        init_image: bytes | None = None,
        candidate: int | None = None,
        control_image: bytes | None = None,
    ) -> Output:
        """The Vary button: the shown picture's prompt and settings with a new seed. A V button
        (``candidate`` n, ``init_image`` that candidate's picture): variations of it, as many as
        the parent had candidates, image-to-image at VARY_STRENGTH with new seeds. A ControlNet
        job keeps its control (mode, strength, ``control_image``)."""
        if candidate is None:
            best = previous.best
            request = _request_like(best, prompt=best.prompt, guidance=best.guidance, init_image=init_image)
            request = replace(request, control=_follow_up_control(best, previous, control_image, init_image))
            return await self._follow_up(job, previous, request, kind="vary")
        if init_image is None:
            raise BadRequest("There's no picture to vary.")
        round_ = candidate_round(previous, candidate)
        request = replace(
            _request_like(round_, prompt=round_.prompt, guidance=round_.guidance, init_image=init_image),
            strength=limits.VARY_STRENGTH,
            steps=max(round_.steps, math.ceil(1 / limits.VARY_STRENGTH)),
            control=_follow_up_control(round_, previous, control_image, None),
        )
        count = max(1, len(previous.candidates))
        return await self._follow_up(job, previous, request, kind="vary", count=count)

    async def remix(
        self,
        job: Job,
        previous: Result,
        *,
        prompt: str,
        negative_prompt: str | None,
        style: str | None,
        seed: int | None,
        control_image: bytes | None = None,
    ) -> Output:
        """The Remix modal: the parent's settings with the prompt, negative prompt and style as the
        user edited them, and its seed unless they changed it; as many candidates as the parent
        (and its ControlNet control: mode, strength, ``control_image``)."""
        best = previous.best
        style_key = check_style(style)
        text = prompt.strip()
        if style_key is not None and style_key != check_style(previous.style):
            template = STYLES[style_key]
            text = ", ".join([text, template.medium, *template.modifiers])
        first_seed = previous.candidates[0].seed if previous.candidates else best.seed
        request = replace(
            _request_like(best, prompt=text, guidance=best.guidance, init_image=None),
            negative_prompt=(negative_prompt or "").strip(),
            seed=first_seed if seed is None else seed,
            control=_follow_up_control(best, previous, control_image, None),
        )
        provenance = previous.follow_up("remix", parent_job_id=previous.job_id)
        if style_key is not None:
            provenance.style = style_key
        return await self._render_and_correct(
            job,
            request,
            provenance,
            timings={},
            started=time.perf_counter(),
            count=max(1, len(previous.candidates)),
        )

    async def upscale(self, job: Job, previous: Result, *, init_image: bytes | None, candidate: int | None) -> Output:
        """A U button: candidate ``candidate``'s picture (``init_image``) enlarged ×2 with Lanczos,
        then refined by image-to-image with the same model, prompt and seed at a low strength (a
        "hires fix": no extra weights), in tiles of the model's native size (``UPSCALE_TILE``) when
        it is larger than one. With ``UPSCALER_MODEL`` set, that model enlarges it instead of
        Lanczos (then Lanczos brings it to ×2) before the same refinement. Refused politely past
        :data:`limits.MAX_SIDE`. Reviewed, never corrected (a correction would draw a new picture,
        not this one larger)."""
        if init_image is None:
            raise BadRequest("There's no picture to upscale.")
        round_ = candidate_round(previous, candidate)
        width, height = round_.width * limits.UPSCALE_FACTOR, round_.height * limits.UPSCALE_FACTOR
        if max(width, height) > limits.MAX_SIDE:
            raise BadRequest(
                f"That picture is {round_.width}×{round_.height}; twice that would pass my limit of "
                f"{limits.MAX_SIDE} pixels a side, so I can't upscale it further."
            )
        request = RenderRequest(
            prompt=round_.prompt,
            negative_prompt=round_.negative_prompt,
            seed=round_.seed,
            steps=max(round_.steps, math.ceil(1 / limits.UPSCALE_STRENGTH)),
            guidance=round_.guidance,
            width=width,
            height=height,
            init_image=init_image,  # resized to width × height with Lanczos (RenderRequest.sized_init_image)
            strength=limits.UPSCALE_STRENGTH,
            model=round_.model,
            loras=tuple((name, weight) for name, weight in round_.loras),
            tile=self.settings.UPSCALE_TILE,  # refined in tiles of the model's native size (0) or this side
        )
        upscaler_note: str | None = None
        if self.settings.UPSCALER_MODEL:
            from .upscaler import UpscaleRequest

            self._stage(job, "render")
            # On the executor's model thread, or the Ray cluster's upscale replicas (EXECUTOR=ray).
            enlarged, scale, tiles = await self.executor.upscale(
                job,
                UpscaleRequest(
                    init_image,
                    (width, height),
                    prompt=round_.prompt,
                    negative_prompt=round_.negative_prompt,
                    seed=round_.seed,
                    steps=min(limits.UPSCALER_STEPS, round_.steps),  # never more than the picture took
                ),
            )
            request = replace(request, init_image=enlarged)
            upscaler_note = f"x{scale} in {tiles} tile{'s' if tiles != 1 else ''}"
        output = await self._follow_up(job, previous, request, kind="upscale", corrections=0)
        for round_done in output.result.rounds:
            round_done.upscaler = upscaler_note
        return output

    # --- music -----------------------------------------------------------------------------------
    async def compose(
        self,
        job: Job,
        description: str,
        *,
        seconds: float | None = None,
        seed: int | None = None,
        ogg: bool = True,
        kind: str = "compose",
        transcript: str | None = None,
    ) -> MusicOutput:
        """Music from a description as the user wrote (or said) it."""
        return await self._compose(
            job,
            MusicRequest(description, seconds=seconds or self.settings.MUSIC_SECONDS, seed=seed),
            kind=kind,
            idea=description,
            transcript=transcript,
            director="user",
            ogg=ogg,
        )

    async def soundtrack(
        self, job: Job, previous: Result, *, seconds: float | None = None, seed: int | None = None, ogg: bool = True
    ) -> MusicOutput:
        """The Soundtrack button: music for a finished picture, from its scene's music prompt
        (written by the director that made the scene; pictures made before there was one get the
        local director's)."""
        scene = previous.scene
        prompt = scene.music_prompt or music_prompt_for(scene)
        director = previous.director if scene.music_prompt else "local"
        return await self._compose(
            job,
            MusicRequest(prompt, seconds=seconds or self.settings.MUSIC_SECONDS, seed=seed),
            kind="soundtrack",
            idea=scene.title,
            director=director,
            parent_job_id=previous.job_id,
            image_prompt=previous.best.prompt,
            ogg=ogg,
        )

    async def listen(self, job: Job, idea: Idea, *, music_seconds: float | None = None) -> Output | MusicOutput:
        """A spoken or typed idea: music when it asks for music ("compose a calm seaside
        ambience"), else :meth:`run`'s picture. The voice note is transcribed once."""
        if idea.kind == "voice":
            started = time.perf_counter()
            timings: dict[str, float] = {}
            text, heard = await self._hear(job, idea, timings)
            description = music_idea(text)
            if description is None:
                picture = replace(idea, text=text, audio=None, audio_path=None)
                output = await self.run(job, picture)
                output.result.kind = "voice"
                output.result.transcript = heard.get("transcript")
                output.result.language = heard.get("language") or output.result.language
                output.result.translated = bool(heard.get("translated"))
                output.result.audio_seconds = heard.get("audio_seconds")
                output.result.idea = text
                output.result.timings = {**{k: round(v, 4) for k, v in timings.items()}, **output.result.timings}
                output.result.total_s = round(time.perf_counter() - started, 4)
                return output
            return await self.compose(
                job, description, seconds=music_seconds, seed=idea.seed, kind="voice", transcript=text
            )
        description = music_idea(idea.text or "")
        if description is None:
            return await self.run(job, idea)
        return await self.compose(job, description, seconds=music_seconds, seed=idea.seed)

    async def _hear(self, job: Job, idea: Idea, timings: dict[str, float]) -> tuple[str, dict[str, Any]]:
        self._stage(job, "decode")
        t0 = time.perf_counter()
        async with self._decode_slots:
            audio = await asyncio.to_thread(
                decode_audio,
                await idea.read_audio(),
                max_seconds=self.settings.MAX_AUDIO_SECONDS,
                max_bytes=self.settings.MAX_AUDIO_BYTES,
                filename=idea.audio_filename,
            )
        timings["decode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        heard = await self.executor.transcribe(job, audio, idea.task)
        timings["transcribe"] = time.perf_counter() - t0
        if not heard.text.strip():
            raise BadRequest("There's nothing to go on yet — say your idea in a few words.")
        moderation.screen(heard.text, "spoken idea")
        info = {
            "transcript": heard.text,
            "language": heard.language,
            "translated": heard.translated,
            "audio_seconds": len(audio) / SAMPLE_RATE,
        }
        return heard.text, info

    async def _compose(
        self,
        job: Job,
        request: MusicRequest,
        *,
        kind: str,
        idea: str,
        director: str,
        ogg: bool,
        transcript: str | None = None,
        parent_job_id: str | None = None,
        image_prompt: str = "",
    ) -> MusicOutput:
        started = time.perf_counter()
        request = request.validated()  # BadRequest before queueing
        music: Music = await self.executor.compose(job, request)
        t0 = time.perf_counter()
        wav = await asyncio.to_thread(encode_wav, music.samples, music.sample_rate)
        ogg_bytes = await asyncio.to_thread(encode_ogg_opus, music.samples, music.sample_rate) if ogg else None
        info = music.info()
        result = MusicResult(
            job_id=job.id,
            kind=kind,
            parent_job_id=parent_job_id,
            idea=idea,
            transcript=transcript,
            music_prompt=music.prompt,
            director=director,
            seed=music.seed,
            seconds=music.seconds,
            duration_s=info["duration_s"],
            sample_rate=music.sample_rate,
            guidance=music.guidance,
            tokens=music.tokens,
            compose_s=info["elapsed_s"],
            realtime_factor=info["realtime_factor"],
            tags=tags_for(image_prompt[: limits.MAX_IDEA_CHARS], music.prompt[: limits.MAX_IDEA_CHARS]),
            timings={"compose": info["elapsed_s"], "encode": round(time.perf_counter() - t0, 4)},
            total_s=round(time.perf_counter() - started, 4),
        )
        return MusicOutput(result=result, wav=wav, ogg=ogg_bytes)

    # --- internals -------------------------------------------------------------------------------
    async def _follow_up(
        self,
        job: Job,
        previous: Result,
        request: RenderRequest,
        *,
        kind: str,
        count: int = 1,
        corrections: int | None = None,
    ) -> Output:
        provenance = previous.follow_up(kind, parent_job_id=previous.job_id)
        return await self._render_and_correct(
            job, request, provenance, timings={}, started=time.perf_counter(), count=count, corrections=corrections
        )

    async def _render_and_correct(
        self,
        job: Job,
        request: RenderRequest,
        provenance: Provenance,
        *,
        timings: dict[str, float],
        started: float,
        count: int = 1,
        corrections: int | None = None,
    ) -> Output:
        scene = provenance.scene
        max_corrections = self.settings.QA_MAX_ROUNDS if corrections is None else corrections
        rounds: list[Round] = []
        images: list[RenderedImage] = []
        critic_used = "local"
        critic_fallback: str | None = None
        job.candidates = count
        candidates: list[RenderedImage] = []
        candidate_reports: list[QAReport] = []
        best_candidate = 0
        while True:
            if rounds:
                self._stage(job, "correct", step=len(rounds), total=self.settings.QA_MAX_ROUNDS)
            t0 = time.perf_counter()
            if count > 1:
                # One batch: the executor puts the candidates' renders in one pipeline call (same
                # batch key, each with its own seed and generator). A correction round renders as
                # many (new seeds, one batch) and keeps its best-scored one.
                requests = _candidate_requests(request, count)
                batch = list(await asyncio.gather(*(self.executor.render(job, r) for r in requests)))
                batch = [_screened(job, c) for c in batch]
                render_s = time.perf_counter() - t0
                timings["render"] = timings.get("render", 0.0) + render_s
                self._stage(job, "review", total=count)
                t0 = time.perf_counter()
                reports, critic_used, fallback = await self._review_many(job, batch, scene)
                # The best-scored candidate (the earliest wins a tie) goes on; correction starts from it.
                pick = max(range(count), key=lambda i: (reports[i].alignment_score, -i))
                rendered, report = batch[pick], reports[pick]
                if not rounds:
                    candidates, candidate_reports, best_candidate = batch, reports, pick
            else:
                rendered = _screened(job, await self.executor.render(job, request))
                render_s = time.perf_counter() - t0
                timings["render"] = timings.get("render", 0.0) + render_s

                self._stage(job, "review")
                t0 = time.perf_counter()
                report, critic_used, fallback = await self._review(job, rendered, scene)
            critic_fallback = critic_fallback or fallback
            review_s = time.perf_counter() - t0
            timings["review"] = timings.get("review", 0.0) + review_s

            rounds.append(
                Round(
                    index=len(rounds),
                    prompt=rendered.prompt,
                    negative_prompt=rendered.negative_prompt,
                    seed=rendered.seed,
                    guidance=rendered.guidance,
                    steps=rendered.steps,
                    width=rendered.width,
                    height=rendered.height,
                    mode=rendered.mode,
                    strength=request.strength if rendered.mode == "img2img" else None,
                    prompt_tokens=rendered.prompt_tokens,
                    prompt_chunks=rendered.prompt_chunks,
                    nsfw=rendered.nsfw,
                    batch_size=rendered.batch_size,
                    model=rendered.model,
                    family=rendered.family.key if rendered.family is not None else None,
                    loras=[(name, weight) for name, weight in rendered.loras],
                    backend=rendered.backend,
                    backend_fallback=rendered.fallback_from,
                    control=rendered.control_mode,
                    control_strength=rendered.control_strength,
                    score=report.alignment_score,
                    missing_elements=list(report.missing_elements),
                    correction_prompt=report.correction_prompt or None,
                    critic_notes=report.notes or None,
                    critic=critic_used,
                    render_s=render_s,
                    review_s=review_s,
                    tiles=rendered.tiles,
                )
            )
            images.append(rendered)
            corrections_done = len(rounds) - 1
            if report.alignment_score >= self.settings.QA_THRESHOLD or corrections_done >= max_corrections:
                break
            if report.correction_prompt and moderation.active().find(report.correction_prompt) is not None:
                log.info("moderation: the critic's correction prompt broke a rule; no correction round")
                break
            # Below the threshold: the critic's correction, more guidance and steps as the model's
            # family takes them (a Turbo model at guidance 0 gets one more step, no guidance), a new seed.
            if rendered.family is not None:
                steps, guidance = rendered.family.correction(rendered.steps, rendered.guidance)
            else:
                steps = min(limits.MAX_STEPS, rendered.steps + limits.STEPS_STEP)
                guidance = min(limits.MAX_GUIDANCE, rendered.guidance + limits.GUIDANCE_STEP)
            request = replace(
                request,
                prompt=report.correction_prompt or request.prompt,
                seed=None,
                steps=steps,
                guidance=guidance,
                width=rendered.width,
                height=rendered.height,
            )

        # Keep the best-scoring image, not merely the last (the earliest wins a tie).
        best = max(range(len(rounds)), key=lambda i: (rounds[i].score or 0, -i))
        best_image = images[best].image
        # PNG encoding and palette work take tens of ms at 512²: off the event loop.
        palette, palette_source = await asyncio.to_thread(_palette_for, scene, best_image)
        image_png, palette_png = await asyncio.to_thread(_encode_outputs, best_image, palette)
        shown: list[Candidate] = []
        candidate_pngs: list[bytes] = []
        grid_png: bytes | None = None
        if candidates:
            for i, (picture, review) in enumerate(zip(candidates, candidate_reports, strict=True)):
                shown.append(Candidate(index=i, seed=picture.seed, score=review.alignment_score, nsfw=picture.nsfw))
            if best > 0:  # the correction won: it takes the best candidate's cell
                shown[best_candidate] = Candidate(
                    index=best_candidate,
                    seed=rounds[best].seed,
                    score=rounds[best].score,
                    corrected=True,
                    nsfw=rounds[best].nsfw,
                )
            cells = [c.image for c in candidates]
            cells[best_candidate] = best_image
            candidate_pngs, grid_png = await asyncio.to_thread(_encode_candidates, cells, best_candidate, image_png)
        control = images[best].control_image
        control_png = await asyncio.to_thread(image_to_png, control) if control is not None else None
        result = Result(
            **dict(provenance),
            job_id=job.id,
            palette=palette,
            palette_source=palette_source,
            tags=list(scene.tags),
            rounds=rounds,
            best_round=best,
            threshold=self.settings.QA_THRESHOLD,
            critic=critic_used,
            critic_fallback=critic_fallback,
            timings={k: round(v, 4) for k, v in timings.items()},
            total_s=round(time.perf_counter() - started, 4),
            candidates=shown,
            best_candidate=best_candidate,
        )
        result.flagged_kept = result.flagged and getattr(job, "keep_flagged", False)
        return Output(
            result=result,
            image_png=image_png,
            palette_png=palette_png,
            candidate_pngs=candidate_pngs,
            grid_png=grid_png,
            control_png=control_png,
        )

    async def _direct(
        self, text: str, style: str | None, language: str, family: FamilyProfile | None = None
    ) -> tuple[Scene, str, str | None]:
        if self.gemini_director is not None:
            context = self.knowledge.context(text, check_style(style)) if self.knowledge is not None else ""
            try:
                scene = await self.gemini_director.direct(
                    text, style=style, language=language, family=family, context=context
                )
                return scene, "gemini", None
            except ProviderError as exc:
                log.warning("Gemini director failed, using the local director: %s", exc)
                reason = str(exc)
            except Exception as exc:  # an SDK bug must not lose the job
                log.exception("Gemini director crashed, using the local director")
                reason = f"{type(exc).__name__}: {exc}"
            scene = await self.local_director.direct(text, style=style, language=language, family=family)
            return scene, "local", reason
        scene = await self.local_director.direct(text, style=style, language=language, family=family)
        return scene, "local", None

    async def _review(self, job: Job, rendered: RenderedImage, scene: Scene) -> tuple[QAReport, str, str | None]:
        reason = None
        if self.gemini_critic is not None:
            try:
                png = await asyncio.to_thread(rendered.png_bytes)
                report = await self.gemini_critic.review(png, scene, rendered.prompt, rendered.family)
                return report, "gemini", None
            except ProviderError as exc:
                log.warning("Gemini critic failed, using the CLIP critic: %s", exc)
                reason = str(exc)
            except Exception as exc:
                log.exception("Gemini critic crashed, using the CLIP critic")
                reason = f"{type(exc).__name__}: {exc}"
        report = await self.executor.review(job, rendered.image, scene, rendered.prompt)
        family = rendered.family
        if family is not None and family.max_prompt_tokens is not None and report.missing_elements:
            # T5 families read long prompts: the correction keeps more of the original than CLIP's 75 tokens.
            correction = build_correction_prompt(
                rendered.prompt, report.missing_elements, limit=families.prompt_token_limit(family)
            )
            report = report.model_copy(update={"correction_prompt": correction})
        return report, "local", reason

    async def _review_many(
        self, job: Job, rendered: list[RenderedImage], scene: Scene
    ) -> tuple[list[QAReport], str, str | None]:
        """Every candidate scored: Gemini in one call with all pictures, else CLIP in one pass."""
        reason = None
        prompt = rendered[0].prompt
        family = rendered[0].family
        if self.gemini_critic is not None:
            try:
                pngs = await asyncio.to_thread(lambda: [r.png_bytes() for r in rendered])
                reports = await self.gemini_critic.review_many(pngs, scene, prompt, family)
                return reports, "gemini", None
            except ProviderError as exc:
                log.warning("Gemini critic failed on %d candidates, using the CLIP critic: %s", len(rendered), exc)
                reason = str(exc)
            except Exception as exc:
                log.exception("Gemini critic crashed, using the CLIP critic")
                reason = f"{type(exc).__name__}: {exc}"
        reports = await self.executor.review_many(job, [r.image for r in rendered], scene, prompt)
        if family is not None and family.max_prompt_tokens is not None:
            limit = families.prompt_token_limit(family)
            reports = [
                r.model_copy(
                    update={"correction_prompt": build_correction_prompt(prompt, r.missing_elements, limit=limit)}
                )
                if r.missing_elements
                else r
                for r in reports
            ]
        return reports, "local", reason

    @staticmethod
    def _stage(job: Job, stage: Stage, step: int = 0, total: int = 0) -> None:
        job.stage = stage
        if job.listener is not None:
            try:
                job.listener(ProgressEvent(job.id, stage, step, total))
            except Exception:
                log.exception("progress listener failed")


def candidate_round(previous: Result, candidate: int | None) -> Round:
    """The round that made candidate ``candidate`` (0-based) of ``previous``, with that candidate's
    seed and score; the shown picture's round for a job with one picture (or ``None``)."""
    if candidate is None or not previous.candidates:
        if candidate not in (None, 0):
            raise BadRequest("That picture has only one candidate.")
        return previous.best
    if not 0 <= candidate < len(previous.candidates):
        raise BadRequest(f"That picture has {len(previous.candidates)} candidates, not {candidate + 1}.")
    cell = previous.candidates[candidate]
    if cell.corrected:
        return previous.best
    first = previous.rounds[0]
    return first.model_copy(update={"seed": cell.seed, "score": cell.score})


def _screened(job: Job, rendered: RenderedImage) -> RenderedImage:
    """``rendered`` as the job may see it: a picture the safety checker flagged is blacked out here,
    before the critic, the store or a user sees it — unless the job keeps flagged pictures (the bot
    shows them behind a spoiler where the server allows it)."""
    if rendered.nsfw and not getattr(job, "keep_flagged", False):
        log.info("job %s: the safety checker flagged a picture; it is withheld", job.id)
        return replace(rendered, image=redacted(rendered.image))
    return rendered


def _request_like(round_: Round, *, prompt: str, guidance: float, init_image: bytes | None) -> RenderRequest:
    """A new render with a round's size, steps, negative prompt and strength, and a new seed."""
    return RenderRequest(
        prompt=prompt,
        negative_prompt=round_.negative_prompt,
        seed=None,
        steps=round_.steps,
        guidance=guidance,
        width=round_.width,
        height=round_.height,
        init_image=init_image,
        strength=round_.strength or limits.DEFAULT_STRENGTH,
        model=round_.model,  # Regenerate and Vary stay on the job's model and LoRAs
        loras=tuple((name, weight) for name, weight in round_.loras),
    )


def _control_spec(idea: Idea, scene: Scene) -> ControlSpec | None:
    """The ControlNet part of a new idea's request: the user's control image (else the init
    image) for canny/depth/pose, the director's palette for palette."""
    mode, strength = check_control(idea.control, idea.control_strength)
    if mode is None:
        return None
    source = idea.control_image if idea.control_image is not None else idea.init_image
    return ControlSpec(mode, strength, source=source, palette=tuple(scene.palette))


def _follow_up_control(
    round_: Round, previous: Result, control_image: bytes | None, init_image: bytes | None
) -> ControlSpec | None:
    """The ControlNet part of a Regenerate / Vary / V / Remix: the round's mode and strength with
    the job's stored control image (else its start image) or, for palette, the job's palette.
    None when the round had no control — or its source image is gone (then it renders plain)."""
    if round_.control is None:
        return None
    source = control_image if control_image is not None else init_image
    if round_.control != "palette" and source is None:
        log.warning("a %s control's source image is gone; rendering without it", round_.control)
        return None
    strength = round_.control_strength if round_.control_strength is not None else DEFAULT_CONTROL_STRENGTH
    return ControlSpec(round_.control, strength, source=source, palette=tuple(previous.palette))


def _candidate_requests(request: RenderRequest, count: int) -> list[RenderRequest]:
    """``count`` copies of ``request`` with consecutive seeds from its own (or a random one), so a
    job's candidates can be rendered again one by one (U/V buttons) from their recorded seeds."""
    base = random_seed() if request.seed is None else int(request.seed)
    return [replace(request, seed=(base + i) % (limits.MAX_SEED + 1)) for i in range(count)]


def _encode_candidates(cells: list[Image.Image], best: int, best_png: bytes) -> tuple[list[bytes], bytes]:
    pngs = [best_png if i == best else image_to_png(cell) for i, cell in enumerate(cells)]
    return pngs, image_to_png(make_grid(cells, best=best))


def _join_negative(scene_negative: str, user_negative: str | None) -> str:
    parts = [p.strip() for p in (user_negative or "", scene_negative or "") if p and p.strip()]
    return ", ".join(parts)


def _palette_for(scene: Scene, image: Image.Image) -> tuple[list[str], str]:
    """The director's palette when it chose one on purpose; else the rendered image's colours."""
    if scene.palette and scene.palette_source != "default":
        return list(scene.palette), "director"
    return extract_palette(image, 5), "image"


def _encode_outputs(image: Image.Image, palette: list[str]) -> tuple[bytes, bytes]:
    return image_to_png(image), swatch_png(palette)


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]
