"""pipeline.audio: real bytes in every format we accept, and every refusal, with real files."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import soundfile as sf

from devkit import voice
from pipeline import audio
from pipeline.audio import SAMPLE_RATE, audio_duration, decode_audio, format_duration, loudest_dbfs
from pipeline.errors import AudioTooLong, BadAudio, EmptyAudio, SilentAudio, UndecodableAudio


@pytest.fixture(scope="module")
def speech_wav() -> bytes:
    """espeak-ng's own WAV (22.05 kHz, 16-bit, mono) of the apple sentence."""
    voice.require_tools("espeak-ng", "ffmpeg")
    return voice.speak_wav(voice.APPLE_SENTENCE)


@pytest.fixture(scope="module")
def speech(speech_wav: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(speech_wav), dtype="float32")
    return samples, rate


@pytest.fixture(scope="module")
def voice_note(speech_wav: bytes) -> bytes:
    return voice.to_voice_note(speech_wav)


def assert_decoded(samples: np.ndarray, seconds: float, *, tolerance_s: float) -> None:
    assert isinstance(samples, np.ndarray)
    assert samples.dtype == np.float32 and samples.ndim == 1 and samples.flags["C_CONTIGUOUS"]
    assert abs(samples.size - seconds * SAMPLE_RATE) <= tolerance_s * SAMPLE_RATE, (
        samples.size / SAMPLE_RATE,
        seconds,
    )
    assert np.all(np.isfinite(samples)) and np.max(np.abs(samples)) <= 1.5


# --- the voice-note maker makes what Discord sends ----------------------------------------------


def test_voice_note_is_ogg_opus_48k_mono(voice_note: bytes):
    info = sf.info(io.BytesIO(voice_note))
    assert (info.format, info.subtype) == ("OGG", "OPUS")
    assert info.samplerate == 48_000 and info.channels == 1
    assert 2.0 < info.duration < 5.0


# --- accepted formats ------------------------------------------------------------------------------


def test_discord_voice_note_decodes_to_16k_mono(voice_note: bytes, speech):
    samples, rate = speech
    seconds = len(samples) / rate
    decoded = decode_audio(voice_note, max_seconds=120, filename="voice-message.ogg")
    assert_decoded(decoded, seconds, tolerance_s=0.02)
    # the same sound, not just the same length: level within 3 dB of the source
    assert abs(loudest_dbfs(decoded) - loudest_dbfs(samples, rate)) < 3.0


@pytest.mark.parametrize(
    "fmt",
    ["wav-22k-pcm16", "wav-44k-float-stereo", "flac", "mp3", "m4a", "m4a-faststart"],
)
def test_formats_decode_to_the_same_length_and_level(fmt: str, speech, speech_wav: bytes):
    samples, rate = speech
    seconds = len(samples) / rate
    if fmt == "wav-22k-pcm16":
        data = speech_wav
    elif fmt == "wav-44k-float-stereo":
        up = np.interp(np.arange(int(seconds * 44_100)) / 44_100, np.arange(len(samples)) / rate, samples)
        data = voice.wav_bytes(np.stack([up, up], axis=1), 44_100, subtype="FLOAT")
    elif fmt == "flac":
        data = voice.flac_bytes(samples, rate)
    elif fmt == "mp3":
        data = voice.mp3_bytes(speech_wav)
    else:
        data = voice.m4a_bytes(speech_wav, faststart=fmt == "m4a-faststart")
    decoded = decode_audio(data, max_seconds=120, filename=f"note.{fmt}")
    # lossy codecs add encoder delay/padding (MP3 ~50 ms, AAC ~1024 samples)
    assert_decoded(decoded, seconds, tolerance_s=0.02 if fmt.startswith(("wav", "flac")) else 0.08)
    assert abs(loudest_dbfs(decoded) - loudest_dbfs(samples, rate)) < 3.0


def test_m4a_goes_through_ffmpeg_with_the_index_at_the_end(speech_wav: bytes):
    data = voice.m4a_bytes(speech_wav)
    assert data[4:8] == b"ftyp" and data.find(b"moov") > data.find(b"mdat")  # unreadable from a pipe
    with pytest.raises(sf.LibsndfileError):
        sf.info(io.BytesIO(data))  # libsndfile can't: this is the ffmpeg fallback at work
    assert decode_audio(data, max_seconds=120).size > SAMPLE_RATE


def test_stereo_is_mixed_down_to_mono():
    left = voice.tone(1.0, 440, amplitude=0.4, sample_rate=16_000)
    data = voice.wav_bytes(np.stack([left, np.zeros_like(left)], axis=1), 16_000, subtype="FLOAT")
    decoded = decode_audio(data, max_seconds=10)
    np.testing.assert_allclose(decoded, left / 2, atol=1e-6)


def test_a_quiet_real_voice_is_not_silence(speech):
    samples, rate = speech
    quiet = samples * (10 ** (-40 / 20) / np.max(np.abs(samples)))  # peaks at -40 dBFS
    decoded = decode_audio(voice.samples_voice_note(quiet, rate), max_seconds=120)  # no SilentAudio
    assert audio.SILENCE_DBFS < loudest_dbfs(decoded) < -40


# --- refusals --------------------------------------------------------------------------------------


def test_empty_bytes():
    with pytest.raises(EmptyAudio) as info:
        decode_audio(b"", max_seconds=120)
    assert "empty" in str(info.value)


def test_container_without_samples():
    with pytest.raises(EmptyAudio):
        decode_audio(voice.wav_bytes(np.zeros(0, dtype=np.float32), 16_000), max_seconds=120)


@pytest.mark.parametrize(
    "data",
    [
        b"<html><body>404 Not Found</body></html>",
        b'{"error": "unauthorized"}' * 40,
        np.random.default_rng(1).bytes(20_000),
        b"OggS" + bytes(200),  # a magic number and nothing behind it
    ],
    ids=["html", "json", "random", "fake-ogg"],
)
def test_not_audio(data: bytes):
    with pytest.raises(UndecodableAudio) as info:
        decode_audio(data, max_seconds=120)
    assert "OGG" in str(info.value)  # tells the user what we can read


def test_truncated_voice_note_header(voice_note: bytes):
    with pytest.raises(UndecodableAudio):
        decode_audio(voice_note[:100], max_seconds=120)


def test_too_long_message_says_length_and_limit():
    data = voice.wav_bytes(voice.tone(134.0, sample_rate=8_000), 8_000)  # 2:14, read from the header
    with pytest.raises(AudioTooLong) as info:
        decode_audio(data, max_seconds=120)
    assert str(info.value) == "That recording is 2:14 long; I can take up to 2:00."


def test_too_long_voice_note(voice_note: bytes):
    with pytest.raises(AudioTooLong) as info:
        decode_audio(voice_note, max_seconds=1.5)
    assert str(info.value).endswith("I can take up to 0:02.")  # 1.5 s shown rounded up
    assert "That recording is 0:03 long" in str(info.value)


def test_too_long_through_ffmpeg(speech_wav: bytes):
    data = voice.m4a_bytes(speech_wav)
    with pytest.raises(AudioTooLong) as info:
        decode_audio(data, max_seconds=1.0)
    assert str(info.value) == "That recording is 0:03 long; I can take up to 0:01."


def test_at_the_limit_is_accepted():
    data = voice.wav_bytes(voice.tone(2.0, sample_rate=16_000), 16_000)
    assert decode_audio(data, max_seconds=2.0).size == 2 * SAMPLE_RATE


@pytest.mark.parametrize(
    "samples",
    [voice.silence(2.0), voice.noise(2.0, amplitude=10 ** (-75 / 20))],
    ids=["digital-silence", "mic-noise-floor-75dBFS"],
)
def test_silence(samples: np.ndarray):
    voice.require_tools("ffmpeg")
    with pytest.raises(SilentAudio) as info:
        decode_audio(voice.samples_voice_note(samples), max_seconds=120)
    assert "silent" in str(info.value)


def test_dc_offset_alone_is_silence():
    samples = np.full(16_000, 0.2, dtype=np.float32)
    with pytest.raises(SilentAudio):
        decode_audio(voice.wav_bytes(samples, 16_000, subtype="FLOAT"), max_seconds=10)


def test_noise_is_not_refused_here():
    """Sound without words is the transcriber's call (NoSpeech), not the decoder's."""
    decoded = decode_audio(voice.wav_bytes(voice.noise(1.0, sample_rate=16_000), 16_000), max_seconds=10)
    assert decoded.size == SAMPLE_RATE


def test_all_refusals_are_bad_audio():
    for cls in (EmptyAudio, UndecodableAudio, AudioTooLong, SilentAudio):
        assert issubclass(cls, BadAudio)


# --- the ffmpeg fallback's edges ---------------------------------------------------------------------


def test_without_ffmpeg_m4a_is_undecodable(speech_wav: bytes, monkeypatch, tmp_path):
    data = voice.m4a_bytes(speech_wav)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no ffmpeg to be found
    with pytest.raises(UndecodableAudio):
        decode_audio(data, max_seconds=120)
    # soundfile formats don't need ffmpeg at all
    assert decode_audio(speech_wav, max_seconds=120).size > SAMPLE_RATE


def test_ffmpeg_is_bounded_in_time(speech_wav: bytes, monkeypatch):
    data = voice.m4a_bytes(speech_wav)
    monkeypatch.setattr(audio, "FFMPEG_TIMEOUT_S", 0.001)
    started = time.perf_counter()
    with pytest.raises(UndecodableAudio):
        decode_audio(data, max_seconds=120)
    assert time.perf_counter() - started < 5


# --- header probe and message helpers ------------------------------------------------------------------


def test_audio_duration_from_headers(voice_note: bytes, speech, speech_wav: bytes):
    samples, rate = speech
    seconds = len(samples) / rate
    assert audio_duration(voice_note) == pytest.approx(seconds, abs=0.02)
    assert audio_duration(speech_wav) == pytest.approx(seconds, abs=1e-6)
    assert audio_duration(voice.m4a_bytes(speech_wav)) == pytest.approx(seconds, abs=0.08)  # ffprobe
    assert audio_duration(b"") is None
    assert audio_duration(b"definitely not audio" * 10) is None


def test_format_duration():
    assert format_duration(134.0) == "2:14"
    assert format_duration(120.0) == "2:00"
    assert format_duration(120.2) == "2:01"  # just over the limit never reads as the limit
    assert format_duration(0.4) == "0:01"
    assert format_duration(3600) == "60:00"
