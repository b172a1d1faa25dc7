"""Speech → English text with Whisper (transformers).

One :class:`Transcriber` per process, owned by the GPU executor thread: :meth:`Transcriber.load`
and :meth:`Transcriber.transcribe` run on whatever thread calls them and never touch asyncio.

What :meth:`~Transcriber.transcribe` does, in order:

1. **Features.** Up to 30 s: one log-mel window padded to 30 s. Longer: the whole recording,
   un-truncated (``truncation=False, padding="longest"``), which makes transformers' ``generate``
   decode it window after window (sequential long-form decoding with timestamp tokens) — nothing
   is cut off.
2. **Probe.** One decoder step after ``<|startoftranscript|>`` on the first 30 s window gives, from
   the same logits, the language distribution (over the language tokens only) and the no-speech
   probability (softmax probability of ``<|nospeech|>``/``<|nocaptions|>``), exactly as OpenAI's
   Whisper computes both. English-only checkpoints (``*.en``, ``is_multilingual`` false) report
   ``"en"``.
3. **Task.** ``"auto"``: English is transcribed, any other language is translated to English
   (the picture prompt must be English). ``"transcribe"``: in the spoken language.
   ``"translate"``: to English. ``Transcript.translated`` is true when the text was translated
   from another language.
4. **Decode** with beam search (``num_beams``, default 5 like Whisper's reference decoding) and a
   token budget proportional to the audio length (:data:`TOKENS_PER_SECOND`), so a
   hallucination loop over a hum ends after a few dozen tokens, not 448.

**No speech** → :class:`~pipeline.errors.NoSpeech`, never invented text. The rule:

* *energy*: the loudest 50 ms of the recording is below :data:`pipeline.audio.SILENCE_DBFS`
  (checked before any model runs);
* *Whisper's own rule, per 30 s window*: the window's no-speech probability is above
  :data:`NO_SPEECH_THRESHOLD` (0.6) **and** its average token log-probability is below
  :data:`LOGPROB_THRESHOLD` (−1.0) → the window is dropped (transformers' implementation of
  OpenAI's rule, ``no_speech_threshold``/``logprob_threshold``);
* *a confident loop over non-speech*: the no-speech probability is above the threshold **and** the
  transcript is a repetition loop (gzip compression ratio above
  :data:`COMPRESSION_RATIO_THRESHOLD`, 2.4 as in Whisper) — what Whisper typically "hears" in a
  steady tone or noise ("beep beep beep ...");
* *nothing left*: the transcript has no letter or digit once Whisper's non-speech annotations
  (``[BLANK_AUDIO]``, ``(music)``, ``♪``) are removed.

**Each 30 s window is encoded once.** The probe, ``generate`` and transformers' own no-speech
detector (a logits processor that re-runs the whole model on the window) would each run the
encoder on the same window — three encoder passes for one short note. :class:`EncoderReuse`
hands the second and third the first one's output. (``generate(encoder_outputs=...)`` is not used:
in transformers 5 the no-speech detector then calls the model without any input and fails, and
long-form decoding needs the features to walk through the recording.)

**Beam search does not copy the cross-attention cache.** After every generated token beam search
reorders the key/value cache along the beams it keeps; the cross-attention half (1,500 encoder
positions per beam and layer) is the same for every beam of a recording, so the copy changes
nothing. :class:`SharedCrossAttention` reorders the self-attention half only. Same tokens, same
text; about a fifth of a CPU transcription saved (see ``docs/benchmarks.md``).

A real voice has a no-speech probability far below 0.6 (≈ 0.05 for clear speech, ≈ 0.15 for a
quiet one with the tiny.en checkpoint), so the two probability-based rules need *both* signals and
never drop a clearly spoken sentence on the first alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .audio import SAMPLE_RATE, SILENCE_DBFS, loudest_dbfs
from .errors import NoSpeech
from .models import ProcessorAndModel, TransformersModel, pretrained_model

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Task = Literal["auto", "transcribe", "translate"]
TASKS: tuple[str, ...] = ("auto", "transcribe", "translate")

WINDOW_SECONDS = 30.0
"""Whisper's context: 3000 mel frames (1500 encoder positions)."""

NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4

TOKENS_PER_SECOND = 12
"""Token budget per second of audio (fast speech is ~5 tokens/s in English, more in some scripts),
plus :data:`TOKEN_BUDGET_BASE`."""
TOKEN_BUDGET_BASE = 24

_ANNOTATION_RE = re.compile(r"\[[^\]]*\]|\([^)]*\)|[♪♫]")
_WORD_RE = re.compile(r"[^\W_]")  # a letter or a digit, in any script
_SPACES_RE = re.compile(r"\s+")


@dataclass
class Transcript:
    text: str
    """What was said, in English unless ``task="transcribe"`` kept another language."""
    language: str
    """ISO 639-1 code (``"en"``, ``"de"`` ...) of the spoken language."""
    translated: bool
    """True when the text was translated from another language into English."""
    duration_s: float
    """Length of the audio that was transcribed, in seconds."""
    no_speech_prob: float | None = None
    """Whisper's no-speech probability for the first 30 s window."""
    language_prob: float | None = None
    """Probability of the detected language (``None`` for English-only checkpoints)."""


def compression_ratio(text: str) -> float:
    """Whisper's repetition signal: raw UTF-8 length / zlib-compressed length."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def has_words(text: str) -> bool:
    """False for empty or punctuation-only text and Whisper's non-speech annotations."""
    return bool(_WORD_RE.search(_ANNOTATION_RE.sub(" ", text)))


class EncoderReuse:
    """While active, the encoder computes each distinct input window once (issue #19).

    The encoder's ``forward`` is wrapped on the instance; a call whose input features equal (by
    value) those of a recent call, with the same other arguments, gets that call's output back.
    Arguments left at their defaults count as absent (``generate`` passes ``output_attentions=None,
    output_hidden_states=None, return_dict=True``; the model's own forward passes none), and so does
    ``attention_mask``, which Whisper's encoder documents as unused. The wrapper keeps the original's
    signature, so ``generate`` passes it exactly what it passed before.
    ``size`` windows are remembered: long-form decoding encodes window *k*, then the no-speech
    detector asks for window *k* again. Restored on exit. Runs on the executor thread only.
    """

    def __init__(self, encoder: torch.nn.Module, size: int = 2) -> None:
        self.encoder = encoder
        self.size = size
        self.computed = 0
        self.reused = 0
        self._recent: list[tuple[torch.Tensor, dict[str, Any], Any]] = []
        self._original: Callable[..., Any] | None = None

    def __enter__(self) -> EncoderReuse:
        self._original = original = self.encoder.forward
        reuse = self._forward

        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any) -> Any:
            return reuse(*args, **kwargs)

        self.encoder.forward = forward
        return self

    def __exit__(self, *exc: object) -> None:
        del self.encoder.forward  # back to the class's method
        self._recent.clear()
        self._original = None

    def _forward(self, input_features: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        import torch

        assert self._original is not None
        options = {
            k: v
            for k, v in kwargs.items()
            if v is not None and k != "attention_mask" and not (k == "return_dict" and v is True)
        }
        if args or any(isinstance(v, torch.Tensor) for v in options.values()) or torch.compiler.is_compiling():
            # a call this class does not know, or one traced by torch.compile (no data-dependent checks)
            return self._original(input_features, *args, **kwargs)
        for features, seen_options, output in self._recent:
            if (
                features.shape == input_features.shape
                and features.dtype == input_features.dtype
                and seen_options == options
                and torch.equal(features, input_features)
            ):
                self.reused += 1
                return _shallow_copy(output)
        output = self._original(input_features, *args, **kwargs)
        self.computed += 1
        self._recent = [*self._recent[-(self.size - 1) :], (input_features.detach(), options, output)]
        return _shallow_copy(output)


class SharedCrossAttention:
    """While active, beam search leaves the cross-attention cache alone (issue #19).

    After every step beam search reorders the whole key/value cache along the beams it keeps:
    for Whisper that includes the cross-attention keys and values, 1,500 encoder positions × every
    beam × every decoder layer, copied with ``index_select`` at every generated token — a fifth of a
    CPU transcription. The copy changes nothing: ``generate`` expands the encoder output per beam
    (``repeat_interleave``), so all the beams of one recording hold the same cross-attention keys
    and values, and beam search only ever picks beams of the same recording. This sets the hook
    transformers' beam search asks first (``model._reorder_cache(cache, beam_idx)``, the one RAG and
    other special models use) to reorder the self-attention cache only. A cache of another kind is
    reordered whole, as before. Removed on exit. Runs on the executor thread only.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.reordered = 0
        """Steps at which the self-attention cache alone was reordered."""

    def __enter__(self) -> SharedCrossAttention:
        if "_reorder_cache" in vars(self.model) or hasattr(type(self.model), "_reorder_cache"):
            raise RuntimeError("the model already has a _reorder_cache hook")
        vars(self.model)["_reorder_cache"] = self._reorder  # an instance attribute, as transformers looks it up
        return self

    def __exit__(self, *exc: object) -> None:
        vars(self.model).pop("_reorder_cache", None)

    def _reorder(self, cache: Any, beam_idx: torch.LongTensor) -> Any:
        from transformers.cache_utils import EncoderDecoderCache

        if isinstance(cache, EncoderDecoderCache):
            cache.self_attention_cache.reorder_cache(beam_idx)
            self.reordered += 1
        else:
            cache.reorder_cache(beam_idx)
        return cache


def _shallow_copy(output: Any) -> Any:
    """A new ``ModelOutput`` holding the same tensors: ``generate`` expands the encoder output for
    beam search by replacing its fields in place, which must not reach the remembered one."""
    return type(output)(**output) if isinstance(output, dict) else output


class Transcriber(TransformersModel):
    """Whisper through transformers: ``WhisperProcessor`` + ``WhisperForConditionalGeneration``.

    ``model`` is a hub id or a local directory saved with ``save_pretrained`` (the
    ``WHISPER_MODEL`` setting); ``device`` is the ``DEVICE`` setting (``auto``/``cuda``/``cpu``).
    fp16 + SDPA attention on CUDA, fp32 on the CPU. Loaded on first use (:meth:`load`).
    """

    setting = "WHISPER_MODEL"

    def __init__(
        self,
        model: str,
        device: str = "auto",
        *,
        num_beams: int = 5,
        no_speech_threshold: float = NO_SPEECH_THRESHOLD,
    ) -> None:
        super().__init__(model, device)
        self.num_beams = num_beams
        self.no_speech_threshold = no_speech_threshold
        self.reuse_encoder = True
        """Encode each window once (:class:`EncoderReuse`); ``False`` only to benchmark the old path."""
        self.share_cross_attention = True
        """Beam search keeps the cross-attention cache in place (:class:`SharedCrossAttention`);
        ``False`` only to benchmark the old path."""

    # --- loading -------------------------------------------------------------------------------

    def _load(self, device: torch.device, dtype: torch.dtype) -> ProcessorAndModel:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        processor = WhisperProcessor.from_pretrained(self.model_id)
        options: dict[str, Any] = {"attn_implementation": "sdpa"} if device.type == "cuda" else {}
        model = pretrained_model(WhisperForConditionalGeneration, self.model_id, device, dtype, **options)
        return ProcessorAndModel(processor=processor, model=model)

    def _loaded_note(self, weights: ProcessorAndModel) -> str:
        return ", multilingual" if self.multilingual else ", English-only"

    @property
    def multilingual(self) -> bool:
        """Whether the checkpoint knows languages other than English."""
        generation_config = self.model.generation_config
        flag = getattr(generation_config, "is_multilingual", None)
        if flag is not None:
            return bool(flag) and bool(getattr(generation_config, "lang_to_id", None))
        if self.model_id.rstrip("/").endswith(".en"):
            return False
        return bool(getattr(generation_config, "lang_to_id", None))

    # --- transcription -----------------------------------------------------------------------

    def transcribe(self, audio: np.ndarray, *, task: Task = "auto") -> Transcript:
        """Mono float32 samples at 16 kHz (see :func:`pipeline.audio.decode_audio`) → text.

        Raises :class:`NoSpeech` when nothing was said (see the module docs for the rule).
        """
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {task!r}")
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"expected mono samples (1-D), got shape {samples.shape}")
        self.load()
        import torch

        duration = samples.size / SAMPLE_RATE
        if samples.size == 0 or loudest_dbfs(samples) < SILENCE_DBFS:
            log.info("no speech: %.2f s of silence", duration)
            raise NoSpeech()

        started = time.perf_counter()
        features, attention_mask = self._features(samples)
        reuse = EncoderReuse(self.model.model.encoder) if self.reuse_encoder else contextlib.nullcontext()
        shared = SharedCrossAttention(self.model) if self.share_cross_attention else contextlib.nullcontext()
        with torch.inference_mode(), reuse, shared:
            language, language_prob, no_speech_prob = self._probe(features)
            if self.multilingual:
                gen_task = task
                if task == "auto":
                    gen_task = "transcribe" if language == "en" else "translate"
                translated = gen_task == "translate" and language != "en"
                task_kwargs: dict[str, Any] = {"language": language, "task": gen_task}
            else:
                if task == "translate":
                    log.debug("English-only Whisper: task='translate' is plain transcription")
                translated = False
                task_kwargs = {}
            sequences = self._generate(features, attention_mask, duration, task_kwargs)
        text = self._decode(sequences)

        ratio = compression_ratio(text)
        log.info(
            "transcribed %.1f s in %.2f s: lang=%s%s no_speech=%.2f ratio=%.2f chars=%d",
            duration,
            time.perf_counter() - started,
            language,
            " (translated)" if translated else "",
            no_speech_prob,
            ratio,
            len(text),
        )
        if not has_words(text):
            log.info("no speech: no words in %r", text[:80])
            raise NoSpeech()
        if no_speech_prob > self.no_speech_threshold and ratio > COMPRESSION_RATIO_THRESHOLD:
            log.info("no speech: a loop over non-speech (%r...)", text[:40])
            raise NoSpeech()
        return Transcript(
            text=text,
            language=language,
            translated=translated,
            duration_s=duration,
            no_speech_prob=no_speech_prob,
            language_prob=language_prob,
        )

    # --- steps ---------------------------------------------------------------------------------

    def _window_frames(self) -> int:
        encoder = self.model.model.encoder
        return int(self.model.config.max_source_positions * encoder.conv1.stride[0] * encoder.conv2.stride[0])

    def _features(self, samples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        extractor = self.processor.feature_extractor
        if samples.size <= extractor.n_samples:  # one window, padded to 30 s like Whisper expects
            inputs = extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            attention_mask = None
        else:  # long-form: the whole recording, not truncated; generate() walks through it
            inputs = extractor(
                samples,
                sampling_rate=SAMPLE_RATE,
                return_tensors="pt",
                truncation=False,
                padding="longest",
                return_attention_mask=True,
            )
            attention_mask = inputs["attention_mask"].to(self.device)
        features = inputs["input_features"].to(self.device, self.dtype)
        return features, attention_mask

    def _probe(self, features: torch.Tensor) -> tuple[str, float | None, float]:
        """One decoder step on the first window → (language, its probability, no-speech prob)."""
        import torch

        generation_config = self.model.generation_config
        first = features[..., : self._window_frames()]
        start = torch.tensor([[generation_config.decoder_start_token_id]], device=self.device)
        logits = self.model(input_features=first, decoder_input_ids=start, use_cache=False).logits
        logits = logits[0, -1].float()
        # <|nospeech|> (<|nocaptions|> in older vocabularies) sits right before <|notimestamps|>
        no_speech_id = int(generation_config.no_timestamps_token_id) - 1
        no_speech_prob = float(logits.softmax(-1)[no_speech_id])
        if not self.multilingual:
            return "en", None, no_speech_prob
        lang_to_id: dict[str, int] = generation_config.lang_to_id
        tokens = list(lang_to_id)
        lang_probs = logits[[lang_to_id[t] for t in tokens]].softmax(-1)
        best = int(lang_probs.argmax())
        return tokens[best].strip("<|>"), float(lang_probs[best]), no_speech_prob

    def _generate(
        self,
        features: torch.Tensor,
        attention_mask: torch.Tensor | None,
        duration: float,
        task_kwargs: dict[str, Any],
    ) -> torch.Tensor:
        long_form = features.shape[-1] > self._window_frames()
        window_seconds = WINDOW_SECONDS if long_form else min(duration, WINDOW_SECONDS)
        budget = TOKEN_BUDGET_BASE + math.ceil(TOKENS_PER_SECOND * window_seconds)
        # room for <|startoftranscript|> <|lang|> <|task|> <|notimestamps|>
        budget = min(budget, int(self.model.config.max_target_positions) - 4)
        kwargs: dict[str, Any] = dict(
            num_beams=self.num_beams,
            max_new_tokens=budget,
            no_speech_threshold=self.no_speech_threshold,
            logprob_threshold=LOGPROB_THRESHOLD,
            temperature=0.0,
            **task_kwargs,
        )
        if long_form:
            kwargs.update(return_timestamps=True, attention_mask=attention_mask)
        output = self.model.generate(features, **kwargs)
        return output["sequences"] if isinstance(output, dict) else output

    def _decode(self, sequences: torch.Tensor) -> str:
        text = self.processor.batch_decode(sequences, skip_special_tokens=True)[0]
        return _SPACES_RE.sub(" ", text).strip()
