"""pipeline.transcribe: a REAL trained Whisper (tiny.en) on spoken voice notes, and a tiny random
multilingual Whisper for languages, tasks and long-form decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from devkit import voice
from pipeline.audio import SAMPLE_RATE, decode_audio
from pipeline.errors import ModelUnavailable, NoSpeech
from pipeline.transcribe import Transcriber, Transcript, compression_ratio, has_words


@pytest.fixture(scope="module")
def trained(trained_whisper_dir) -> Transcriber:
    transcriber = Transcriber(str(trained_whisper_dir), "cpu")
    transcriber.load()
    return transcriber


@pytest.fixture(scope="module")
def tiny(tiny_whisper_dir) -> Transcriber:
    transcriber = Transcriber(str(tiny_whisper_dir), "cpu")
    transcriber.load()
    return transcriber


@pytest.fixture(scope="module")
def apple_audio() -> np.ndarray:
    """The apple sentence as a Discord voice note (OGG/Opus 48 kHz), decoded like the bot does."""
    voice.require_tools("espeak-ng", "ffmpeg")
    return decode_audio(voice.make_voice_note(voice.APPLE_SENTENCE), max_seconds=120)


class EncoderInputs:
    """What the model's encoder was actually given (a forward hook on the transformers module)."""

    def __init__(self, model) -> None:
        self.windows: list[torch.Tensor] = []
        self._handle = model.model.encoder.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        features = args[0] if args else kwargs["input_features"]
        self.windows.append(features.detach().clone())

    def close(self) -> None:
        self._handle.remove()


class DecoderPrompts:
    """The decoder input ids of every first decoding step (the prompt: sot, language, task...)."""

    def __init__(self, model) -> None:
        self.prompts: list[list[int]] = []
        self._handle = model.model.decoder.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[-1] > 1:
            self.prompts.append(ids[0].tolist())

    def close(self) -> None:
        self._handle.remove()


# --- the real, trained model ------------------------------------------------------------------------


def test_real_speech_voice_note(trained: Transcriber, apple_audio: np.ndarray):
    result = trained.transcribe(apple_audio)
    assert isinstance(result, Transcript)
    assert "apple" in result.text.lower(), result.text
    assert "table" in result.text.lower(), result.text
    assert result.language == "en" and result.translated is False
    assert result.duration_s == pytest.approx(apple_audio.size / SAMPLE_RATE)
    assert result.no_speech_prob is not None and result.no_speech_prob < 0.2
    assert not trained.multilingual


def test_quiet_real_voice_is_transcribed(trained: Transcriber, apple_audio: np.ndarray):
    quiet = apple_audio * (10 ** (-40 / 20) / np.max(np.abs(apple_audio)))  # peaks at -40 dBFS
    note = voice.samples_voice_note(quiet, SAMPLE_RATE)
    result = trained.transcribe(decode_audio(note, max_seconds=120))
    assert "apple" in result.text.lower(), result.text


def test_english_only_model_ignores_translate(trained: Transcriber, apple_audio: np.ndarray):
    prompts = DecoderPrompts(trained.model)
    try:
        result = trained.transcribe(apple_audio, task="translate")
    finally:
        prompts.close()
    assert "apple" in result.text.lower() and result.language == "en" and not result.translated
    tokenizer = trained.processor.tokenizer
    translate, transcribe = tokenizer.convert_tokens_to_ids(["<|translate|>", "<|transcribe|>"])
    assert prompts.prompts and all(translate not in p and transcribe not in p for p in prompts.prompts)


def test_long_voice_note_is_transcribed_whole(trained_whisper_dir):
    """37 s of real speech; the last sentence only starts after 33 s, past the first 30 s window."""
    voice.require_tools("espeak-ng", "ffmpeg")
    note, tail_starts = voice.long_voice_note()
    assert tail_starts > 31.0  # the keyword is well past the first window
    audio = decode_audio(note, max_seconds=120)

    transcriber = Transcriber(str(trained_whisper_dir), "cpu", num_beams=1)  # greedy: CPU time
    result = transcriber.transcribe(audio)
    text = result.text.lower()
    assert "apple" in text  # the first window
    assert "banana" in text, result.text  # said after 33 s: the second window
    assert "<|" not in result.text  # timestamp tokens of long-form decoding are not in the text
    assert result.duration_s > 33.0


def test_noise_is_no_speech(trained: Transcriber):
    """White noise: tiny.en "hears" a confident loop ("I'm going to do it. I'm going to ...") with a
    no-speech probability of ~0.85 — the loop rule refuses it instead of drawing it."""
    voice.require_tools("ffmpeg")
    audio = decode_audio(voice.samples_voice_note(voice.noise(3.0, amplitude=0.1)), max_seconds=120)
    with pytest.raises(NoSpeech):
        trained.transcribe(audio)


def test_silence_is_no_speech_without_running_the_model(trained: Transcriber):
    encoder = EncoderInputs(trained.model)
    try:
        with pytest.raises(NoSpeech):
            trained.transcribe(np.zeros(3 * SAMPLE_RATE, dtype=np.float32))
        with pytest.raises(NoSpeech):
            trained.transcribe(np.zeros(0, dtype=np.float32))
    finally:
        encoder.close()
    assert encoder.windows == []


# --- the tiny random multilingual model ----------------------------------------------------------------


def test_tiny_multilingual_transcript(tiny: Transcriber, apple_audio: np.ndarray):
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    assert tiny.multilingual
    result = tiny.transcribe(apple_audio)
    assert isinstance(result, Transcript) and result.text
    assert result.language in LANGUAGES  # an ISO code such as "en", "de"
    assert 0.0 < result.language_prob <= 1.0
    assert result.translated is (result.language != "en")  # "auto": translate anything not English


@pytest.mark.parametrize("task", ["auto", "transcribe", "translate"])
def test_tiny_tasks_reach_the_decoder(tiny: Transcriber, apple_audio: np.ndarray, task: str):
    prompts = DecoderPrompts(tiny.model)
    try:
        result = tiny.transcribe(apple_audio, task=task)
    finally:
        prompts.close()
    tokenizer = tiny.processor.tokenizer
    sot, lang, translate, transcribe = tokenizer.convert_tokens_to_ids(
        ["<|startoftranscript|>", f"<|{result.language}|>", "<|translate|>", "<|transcribe|>"]
    )
    expected_task = {
        "auto": translate if result.language != "en" else transcribe,
        "transcribe": transcribe,
        "translate": translate,
    }[task]
    generated = [p for p in prompts.prompts if len(p) >= 3]
    assert generated and all(p[:3] == [sot, lang, expected_task] for p in generated), prompts.prompts
    assert result.translated is (expected_task == translate and result.language != "en")


def test_tiny_long_clip_is_given_to_the_model_whole(tiny: Transcriber, apple_audio: np.ndarray):
    """A 47 s clip: the encoder must be fed the audio after 30 s too, not a truncated 30 s."""
    audio = np.concatenate([apple_audio] * 16)
    assert audio.size / SAMPLE_RATE > 45
    encoder = EncoderInputs(tiny.model)
    try:
        result = tiny.transcribe(audio, task="transcribe")
    finally:
        encoder.close()
    assert result.duration_s == pytest.approx(audio.size / SAMPLE_RATE)

    full = tiny.processor.feature_extractor(
        audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False, padding="longest"
    )["input_features"][0]
    assert full.shape[-1] > 4_500  # 100 frames per second
    late = full[:, 4_000:4_400]  # 40 s .. 44 s into the recording
    seen = False
    for window in encoder.windows:  # any window holding frames 4000..4400 at some offset
        assert window.shape[-1] == 3_000
        w = window[0]
        for offset in torch.nonzero(torch.isclose(w[0], late[0, 0], atol=1e-5)).flatten().tolist():
            if offset + late.shape[-1] <= w.shape[-1] and torch.allclose(
                w[:, offset : offset + late.shape[-1]], late, atol=1e-4
            ):
                seen = True
    assert seen, "the model never saw the audio after 40 s"


def test_tiny_silence_and_bad_input(tiny: Transcriber):
    with pytest.raises(NoSpeech):
        tiny.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))
    with pytest.raises(ValueError):
        tiny.transcribe(np.zeros((2, SAMPLE_RATE), dtype=np.float32))
    with pytest.raises(ValueError):
        tiny.transcribe(np.ones(SAMPLE_RATE, dtype=np.float32), task="summarise")  # type: ignore[arg-type]


def test_load_is_idempotent(tiny: Transcriber):
    model, processor = tiny.model, tiny.processor
    tiny.load()
    assert tiny.model is model and tiny.processor is processor
    assert tiny.model.dtype == torch.float32 and tiny.device == torch.device("cpu")


def test_missing_model_is_model_unavailable(tmp_path):
    transcriber = Transcriber(str(tmp_path / "no-such-whisper"), "cpu")
    with pytest.raises(ModelUnavailable) as info:
        transcriber.load()
    assert "WHISPER_MODEL" in str(info.value)
    assert not transcriber.loaded
    with pytest.raises(ModelUnavailable):  # transcribe loads first, and fails the same way
        transcriber.transcribe(np.ones(SAMPLE_RATE, dtype=np.float32))


def test_broken_model_dir_is_model_unavailable(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelUnavailable) as info:
        Transcriber(str(tmp_path), "cpu").load()
    assert "WHISPER_MODEL" in str(info.value) and "local directory" in str(info.value)


# --- the text rules ------------------------------------------------------------------------------------


def test_has_words():
    assert has_words("Please draw a red apple.")
    assert has_words("Zeichne einen Apfel")
    assert has_words("猫を描いて")
    assert has_words("42")
    for empty in ("", "   ", ". . . .", "...", "[BLANK_AUDIO]", "(music)", "♪ ♪", "[Music] ♪ ..."):
        assert not has_words(empty), empty


def test_compression_ratio_flags_loops():
    assert compression_ratio("Please draw a red apple on a wooden table.") < 2.4
    assert compression_ratio("beep " * 30) > 2.4
    assert compression_ratio("") == 0.0


# --- each window is encoded once (issue #19) ---------------------------------------------------------


class EncoderComputations:
    """How many times the encoder really computed (a forward hook on its first convolution: a
    window handed back by :class:`~pipeline.transcribe.EncoderReuse` never reaches it)."""

    def __init__(self, model) -> None:
        self.count = 0
        self._handle = model.model.encoder.conv1.register_forward_hook(self._record)

    def _record(self, module, args, output) -> None:
        self.count += 1

    def close(self) -> None:
        self._handle.remove()


def transcribe_counting(transcriber: Transcriber, audio: np.ndarray, *, reuse: bool, **kw) -> tuple[Transcript, int]:
    computations = EncoderComputations(transcriber.model)
    transcriber.reuse_encoder = reuse
    try:
        return transcriber.transcribe(audio, **kw), computations.count
    finally:
        transcriber.reuse_encoder = True
        computations.close()


def test_real_voice_note_is_encoded_once_with_the_same_transcript(trained: Transcriber, apple_audio: np.ndarray):
    """The probe, generate() and transformers' no-speech detector each used to encode the window."""
    before, encoded_before = transcribe_counting(trained, apple_audio, reuse=False)
    after, encoded_after = transcribe_counting(trained, apple_audio, reuse=True)
    assert encoded_before == 3  # the old path, kept switchable for the benchmark
    assert encoded_after == 1
    assert after == before  # text, language, no-speech probability: all identical
    assert "apple" in after.text.lower()


def test_long_form_encodes_each_window_once_with_the_same_transcript(tiny: Transcriber, apple_audio: np.ndarray):
    audio = np.concatenate([apple_audio] * 16)  # 47 s: two 30 s windows and more
    windows = EncoderInputs(tiny.model)
    try:
        after, encoded_after = transcribe_counting(tiny, audio, reuse=True, task="transcribe")
    finally:
        windows.close()
    distinct: list[torch.Tensor] = []
    for window in windows.windows:
        if not any(w.shape == window.shape and torch.equal(w, window) for w in distinct):
            distinct.append(window)
    assert len(distinct) >= 2  # long-form walked through more than one window
    assert encoded_after == len(distinct) < len(windows.windows)
    before, encoded_before = transcribe_counting(tiny, audio, reuse=False, task="transcribe")
    assert encoded_before > encoded_after
    assert after == before


# --- beam search leaves the cross-attention cache in place (issue #19) --------------------------------


class CrossAttentionReorders:
    """Counts beam-search reorders of the cross-attention cache (wraps ``DynamicCache.reorder_cache``
    of transformers, not our code, on the cross-attention half of every cache generate creates)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from transformers.cache_utils import EncoderDecoderCache

        self.self_attention = 0
        self.cross_attention = 0
        original_init = EncoderDecoderCache.__init__
        counter = self

        def init(cache, *caches):
            original_init(cache, *caches)
            for name in ("self_attention_cache", "cross_attention_cache"):
                part = getattr(cache, name)
                reorder = part.reorder_cache

                def counted(beam_idx, _reorder=reorder, _name=name):
                    setattr(counter, _name.removesuffix("_cache"), getattr(counter, _name.removesuffix("_cache")) + 1)
                    return _reorder(beam_idx)

                part.reorder_cache = counted

        monkeypatch.setattr(EncoderDecoderCache, "__init__", init)


@pytest.mark.parametrize("which", ["trained", "tiny-long-form"])
def test_beam_search_skips_the_cross_attention_reorder_with_the_same_transcript(
    which: str, trained: Transcriber, tiny: Transcriber, apple_audio: np.ndarray, monkeypatch: pytest.MonkeyPatch
):
    transcriber, audio, kw = (
        (trained, apple_audio, {})
        if which == "trained"
        else (tiny, np.concatenate([apple_audio] * 16), {"task": "transcribe"})
    )
    assert transcriber.num_beams > 1
    reorders = CrossAttentionReorders(monkeypatch)
    transcriber.share_cross_attention = False
    try:
        before = transcriber.transcribe(audio, **kw)
    finally:
        transcriber.share_cross_attention = True
    assert reorders.cross_attention == reorders.self_attention > 0  # the old path copied both every step
    steps = reorders.self_attention
    reorders.self_attention = reorders.cross_attention = 0
    after = transcriber.transcribe(audio, **kw)
    assert reorders.cross_attention == 0
    assert reorders.self_attention == steps  # same search, same number of steps
    assert after == before
    assert "_reorder_cache" not in vars(transcriber.model)  # the hook is gone after the call


def test_shared_cross_attention_hook_is_removed_on_error(tiny: Transcriber):
    from pipeline.transcribe import SharedCrossAttention

    with pytest.raises(RuntimeError, match="boom"), SharedCrossAttention(tiny.model):
        assert "_reorder_cache" in vars(tiny.model)
        raise RuntimeError("boom")
    assert "_reorder_cache" not in vars(tiny.model)
