"""Text → music with MusicGen (transformers), and the encodings a soundtrack is delivered in.

One :class:`Composer` per process, owned by the GPU executor thread like every other model: it
loads ``MUSIC_MODEL`` (a hub id or a directory saved with ``save_pretrained``) through
``AutoProcessor`` + ``MusicgenForConditionalGeneration.from_pretrained`` on first use.

* **Length.** MusicGen writes EnCodec frames (50 per second for the released checkpoints) with a
  *delay pattern*: codebook *k* lags *k* steps, so ``frames + codebooks - 1`` decoder steps give
  ``frames`` frames. The output is cut to exactly ``seconds`` × the sample rate (32 kHz mono).
* **Progress** is reported per decoder step (tokens generated / total) and **interruption** is
  checked at every step, both through one ``StoppingCriteria`` that ``generate`` calls after each
  token: when ``should_stop()`` turns true it raises :class:`MusicInterrupted`, which leaves
  ``generate`` at once (no audio decoding of a cancelled piece).
* **Determinism.** ``generate`` samples with torch's global generator, so the composer seeds it
  (``torch.manual_seed``) right before the call. The executor thread owns every torch call, so no
  other work can draw from the generator in between: the same seed gives the same samples.
* **Encodings.** WAV (16-bit PCM, libsndfile) for the API and the CLI; OGG/Opus for Discord, which
  plays it inline. Opus has no 32 kHz mode, so ffmpeg resamples to 48 kHz while encoding (real
  ffmpeg via a bounded subprocess; libsndfile's Opus writer would need the resampling done first).

All of :class:`Composer` runs torch and must be called from the GPU executor thread only; the
encoders are plain blocking functions (call them with ``asyncio.to_thread`` on the event loop).
"""

from __future__ import annotations

import io
import logging
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from . import limits
from .errors import BadRequest, VoxCanvasError
from .models import ProcessorAndModel, TransformersModel, pretrained_model
from .synthesis import random_seed

if TYPE_CHECKING:
    import torch
    from numpy.typing import NDArray

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]  # (decoder steps done, total steps) -> None
StopFn = Callable[[], bool]  # True -> stop at the next step
BetweenFn = Callable[[], float]  # run other work between two steps; returns the seconds it took

MUSIC_SAMPLE_RATE = 32_000
"""MusicGen's EnCodec sample rate (the loaded model's own ``sampling_rate`` is what is used)."""
OPUS_SAMPLE_RATE = 48_000
OPUS_BITRATE = "96k"


class MusicInterrupted(Exception):
    """``generate`` was stopped at a step boundary because the job was cancelled."""


class EncodingFailed(VoxCanvasError):
    default_message = "I composed the music but could not encode it for Discord — please try again."


@dataclass(frozen=True)
class MusicRequest:
    """One piece to compose. ``seed=None`` means "pick one" (the chosen seed is recorded)."""

    prompt: str
    seconds: float = float(limits.MAX_MUSIC_SECONDS)
    seed: int | None = None
    guidance: float = limits.DEFAULT_MUSIC_GUIDANCE

    def validated(self) -> MusicRequest:
        """Check every option; return a copy with the seed fixed. Raises :class:`BadRequest`."""
        prompt = " ".join((self.prompt or "").split())
        if not prompt:
            raise BadRequest("The music description is empty — tell me what it should sound like.")
        if len(prompt) > limits.MAX_MUSIC_PROMPT_CHARS:
            raise BadRequest(
                f"The music description is {len(prompt)} characters long; "
                f"please keep it under {limits.MAX_MUSIC_PROMPT_CHARS}."
            )
        seconds = float(self.seconds)
        if not math.isfinite(seconds) or not limits.MIN_MUSIC_SECONDS <= seconds <= limits.MAX_MUSIC_SECONDS:
            raise BadRequest(
                f"Music can be {limits.MIN_MUSIC_SECONDS} to {limits.MAX_MUSIC_SECONDS} seconds long "
                f"(got {self.seconds:g})."
            )
        guidance = float(self.guidance)
        if not limits.MIN_MUSIC_GUIDANCE <= guidance <= limits.MAX_MUSIC_GUIDANCE:
            raise BadRequest(
                f"Music guidance must be between {limits.MIN_MUSIC_GUIDANCE:g} and "
                f"{limits.MAX_MUSIC_GUIDANCE:g} (got {guidance:g})."
            )
        if self.seed is not None and not 0 <= int(self.seed) <= limits.MAX_SEED:
            raise BadRequest(f"The seed must be between 0 and {limits.MAX_SEED} (got {self.seed}).")
        seed = random_seed() if self.seed is None else int(self.seed)
        return replace(self, prompt=prompt, seconds=seconds, guidance=guidance, seed=seed)


@dataclass
class Music:
    """A composed piece: mono float32 samples in [-1, 1] and how they were made."""

    samples: NDArray[np.float32] = field(repr=False)
    sample_rate: int
    prompt: str
    seed: int
    seconds: float  # requested length
    guidance: float
    tokens: int  # decoder steps run
    elapsed_s: float  # wall time of generate + decode

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio per second of compute."""
        return self.duration_s / self.elapsed_s if self.elapsed_s > 0 else math.inf

    def wav_bytes(self) -> bytes:
        return encode_wav(self.samples, self.sample_rate)

    def ogg_bytes(self) -> bytes:
        return encode_ogg_opus(self.samples, self.sample_rate)

    def info(self) -> dict[str, Any]:
        """What ``result.json`` and the store record about the piece."""
        return {
            "prompt": self.prompt,
            "seed": self.seed,
            "seconds": self.seconds,
            "duration_s": round(self.duration_s, 3),
            "sample_rate": self.sample_rate,
            "guidance": self.guidance,
            "tokens": self.tokens,
            "elapsed_s": round(self.elapsed_s, 3),
            "realtime_factor": round(self.realtime_factor, 3),
        }


class _StepWatch:
    """A transformers ``StoppingCriteria``: reports progress after every decoder step and raises
    :class:`MusicInterrupted` when the job no longer wants the piece."""

    def __init__(
        self,
        start_len: int,
        total: int,
        progress: ProgressFn | None,
        should_stop: StopFn | None,
        between_steps: BetweenFn | None = None,
    ) -> None:
        self.start_len = start_len
        self.total = total
        self.progress = progress
        self.should_stop = should_stop
        self.between_steps = between_steps
        self.steps = 0
        self.paused_s = 0.0  # time spent in between_steps (other work), not composing

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        import torch

        self.steps = max(0, int(input_ids.shape[-1]) - self.start_len)
        if self.progress is not None:
            self.progress(min(self.steps, self.total), self.total)
        if self.should_stop is not None and self.should_stop():
            raise MusicInterrupted()
        if self.between_steps is not None and self.steps < self.total:
            self.paused_s += self.between_steps()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class Composer(TransformersModel):
    """Owns MusicGen. Not thread-safe: use from the GPU executor thread only."""

    setting = "MUSIC_MODEL"

    def _load(self, device: torch.device, dtype: torch.dtype) -> ProcessorAndModel:
        from transformers import AutoProcessor, MusicgenForConditionalGeneration

        processor = AutoProcessor.from_pretrained(self.model_id)  # type: ignore[no-untyped-call]
        model = pretrained_model(MusicgenForConditionalGeneration, self.model_id, device, dtype)
        return ProcessorAndModel(processor=processor, model=model)

    def _loaded_note(self, weights: ProcessorAndModel) -> str:
        config = weights.model.config
        return f", {config.audio_encoder.sampling_rate} Hz, {config.decoder.num_codebooks} codebooks"

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.audio_encoder.sampling_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.model.config.audio_encoder.frame_rate)

    def steps_for(self, seconds: float) -> int:
        """Decoder steps for ``seconds`` of audio (the delay pattern adds codebooks - 1)."""
        frames = math.ceil(seconds * self.frame_rate)
        return frames + int(self.model.config.decoder.num_codebooks) - 1

    def compose(
        self,
        request: MusicRequest,
        *,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
        between_steps: BetweenFn | None = None,
    ) -> Music:
        """Compose one piece. Raises :class:`MusicInterrupted` when ``should_stop()`` turns true.
        ``between_steps()`` runs after every decoder step (the executor runs other jobs' waiting
        work there); the time it takes is not counted as the piece's compute time."""
        import torch
        from transformers import StoppingCriteriaList

        request = request.validated()
        assert request.seed is not None
        weights = self.load()
        processor, model = weights.processor, weights.model
        total = self.steps_for(request.seconds)
        started = time.perf_counter()
        inputs = processor(text=[request.prompt], padding=True, truncation=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        # The decoder's first input is its start token, one position per codebook.
        watch = _StepWatch(1, total, progress, should_stop, between_steps)
        torch.manual_seed(request.seed)
        with torch.inference_mode():
            audio = model.generate(
                **inputs,
                do_sample=True,
                guidance_scale=request.guidance,
                max_new_tokens=total,
                stopping_criteria=StoppingCriteriaList([watch]),
            )
        samples = audio[0, 0].float().cpu().numpy().astype(np.float32, copy=False)
        wanted = round(request.seconds * self.sample_rate)
        samples = np.clip(samples[:wanted], -1.0, 1.0)
        elapsed = time.perf_counter() - started - watch.paused_s
        music = Music(
            samples=samples,
            sample_rate=self.sample_rate,
            prompt=request.prompt,
            seed=request.seed,
            seconds=request.seconds,
            guidance=request.guidance,
            tokens=watch.steps,
            elapsed_s=elapsed,
        )
        log.info(
            "composed %.1f s of music in %.1f s (%.2fx real time, %d steps)",
            music.duration_s,
            elapsed,
            music.realtime_factor,
            watch.steps,
        )
        return music


# --- encodings ----------------------------------------------------------------------------------
def encode_wav(samples: NDArray[np.float32], sample_rate: int) -> bytes:
    """16-bit PCM WAV (what the API and the CLI hand out)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def encode_ogg_opus(
    samples: NDArray[np.float32], sample_rate: int, *, timeout_s: float = limits.MUSIC_ENCODE_TIMEOUT_S
) -> bytes:
    """OGG/Opus at 48 kHz mono (what Discord plays inline), encoded by ffmpeg; the raw samples go
    in on stdin, the file comes out on stdout. Raises :class:`EncodingFailed`."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise EncodingFailed("ffmpeg is not installed, so I can't encode the music for Discord.")
    pcm = np.ascontiguousarray(samples, dtype="<f4").tobytes()
    cmd = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "f32le",
        "-ar",
        str(sample_rate),
        "-ac",
        "1",
        "-i",
        "pipe:0",
        "-ar",
        str(OPUS_SAMPLE_RATE),
        "-c:a",
        "libopus",
        "-b:a",
        OPUS_BITRATE,
        "-f",
        "ogg",
        "pipe:1",
    ]
    try:
        done = subprocess.run(cmd, input=pcm, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        log.warning("ffmpeg took longer than %.0f s to encode music; killed", timeout_s)
        raise EncodingFailed() from None
    except OSError as exc:
        log.warning("could not run ffmpeg: %s", exc)
        raise EncodingFailed() from exc
    if done.returncode != 0 or not done.stdout.startswith(b"OggS"):
        log.warning("ffmpeg could not encode music (exit %s): %s", done.returncode, done.stderr[-500:])
        raise EncodingFailed()
    return done.stdout


def wav_to_ogg_opus(wav: bytes) -> bytes:
    """A WAV made by :func:`encode_wav` as OGG/Opus."""
    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=False)
    return encode_ogg_opus(samples, int(rate))
