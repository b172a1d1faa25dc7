"""Real audio for tests: Discord-like voice notes spoken by espeak-ng, and non-speech clips.

``make_voice_note`` produces exactly what Discord sends for a voice message: an OGG container with
one Opus stream, 48 kHz, mono (``espeak-ng -w`` → ``ffmpeg -c:a libopus -ar 48000 -ac 1``). The
other helpers write WAV/FLAC/MP3/M4A variants of any samples, and silence, tones and noise.

Needs the Debian packages ``espeak-ng`` and ``ffmpeg`` (``make system-deps``); tests that use them
are skipped with a clear reason where they are missing (see :func:`require_tools`).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

VOICE_NOTE_RATE = 48_000

# Spoken at 140 words per minute — a calm dictation pace. espeak-ng's default (175 wpm) is fast
# and robotic enough that the tiny.en checkpoint mishears words ("a red apple" → "a rent-up").
SPEECH_WPM = 140

APPLE_SENTENCE = "Please draw a red apple on a wooden table"

# A long voice note, made of an intro of ~33 s at 140 wpm and a tail sentence that therefore
# starts after Whisper's first 30 s window (see ``long_voice_note``).
LONG_INTRO = (
    "Please draw a red apple on a wooden table. The table stands in a small kitchen with white "
    "walls. There is a window behind it, and the morning sun shines through the glass. Next to "
    "the apple there is a glass of water. The light makes long soft shadows on the floor. Near "
    "the door there is a green chair with a striped cushion. On the wall hangs a round clock. "
    "A grey cat sleeps under the chair, and a small plant grows in a blue pot. "
    "Outside the window, birds sit on a fence."
)
LONG_TAIL = "Finally, put a yellow banana next to the apple."


def require_tools(*tools: str) -> None:
    """Skip the calling test when a command-line tool it needs is not installed."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install espeak-ng ffmpeg; make system-deps)")


def _run(cmd: list[str], data: bytes | None = None) -> bytes:
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.decode(errors='replace')[-500:]}")
    return proc.stdout


def speak_wav(text: str, *, voice: str = "en", wpm: int = SPEECH_WPM) -> bytes:
    """espeak-ng's own WAV (22.05 kHz mono 16-bit) of ``text``."""
    require_tools("espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        _run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(wav), text])
        return wav.read_bytes()


def ffmpeg_encode(data: bytes, *args: str, fmt: str) -> bytes:
    """Re-encode any audio bytes with ffmpeg (input on stdin, ``fmt`` container on stdout)."""
    require_tools("ffmpeg")
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", "pipe:0", *args, "-f", fmt]
    if fmt in ("ipod", "mp4"):  # MP4 muxers need a seekable output: go through a file
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.m4a"
            _run([*cmd, str(out)], data)
            return out.read_bytes()
    return _run([*cmd, "pipe:1"], data)


def to_voice_note(data: bytes) -> bytes:
    """Any audio → a Discord-style voice message: OGG/Opus, 48 kHz, mono."""
    return ffmpeg_encode(data, "-c:a", "libopus", "-ar", str(VOICE_NOTE_RATE), "-ac", "1", fmt="ogg")


def make_voice_note(text: str, path: Path | None = None, *, voice: str = "en", wpm: int = SPEECH_WPM) -> bytes:
    """``text`` spoken by espeak-ng (``voice`` is an espeak-ng voice: ``en``, ``de``, ``fr`` ...) as
    OGG/Opus 48 kHz mono bytes, like a Discord voice message; also written to ``path`` if given."""
    note = to_voice_note(speak_wav(text, voice=voice, wpm=wpm))
    if path is not None:
        Path(path).write_bytes(note)
    return note


# --- raw samples → files ---------------------------------------------------------------------------


def wav_bytes(samples: np.ndarray, sample_rate: int, *, subtype: str = "PCM_16") -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples, dtype=np.float32), sample_rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def flac_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples, dtype=np.float32), sample_rate, format="FLAC")
    return buffer.getvalue()


def mp3_bytes(data: bytes) -> bytes:
    return ffmpeg_encode(data, "-c:a", "libmp3lame", "-b:a", "64k", fmt="mp3")


def m4a_bytes(data: bytes, *, faststart: bool = False) -> bytes:
    """AAC in an M4A container; by default with the index at the end, like most recorders."""
    args = ["-c:a", "aac", "-b:a", "64k"] + (["-movflags", "+faststart"] if faststart else [])
    return ffmpeg_encode(data, *args, fmt="ipod")


# --- non-speech ------------------------------------------------------------------------------------


def silence(seconds: float, sample_rate: int = VOICE_NOTE_RATE) -> np.ndarray:
    return np.zeros(int(seconds * sample_rate), dtype=np.float32)


def tone(seconds: float, freq: float = 440.0, amplitude: float = 0.3, sample_rate: int = VOICE_NOTE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, amplitude: float = 0.1, sample_rate: int = VOICE_NOTE_RATE, seed: int = 0) -> np.ndarray:
    """White Gaussian noise with standard deviation ``amplitude``."""
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(int(seconds * sample_rate))).astype(np.float32)


def samples_voice_note(samples: np.ndarray, sample_rate: int = VOICE_NOTE_RATE) -> bytes:
    """Raw samples → a Discord-style OGG/Opus voice note."""
    return to_voice_note(wav_bytes(samples, sample_rate))


def long_voice_note(gap_s: float = 0.8) -> tuple[bytes, float]:
    """A real spoken voice note longer than Whisper's 30 s window: :data:`LONG_INTRO`, a pause,
    :data:`LONG_TAIL`. Returns the OGG/Opus bytes and the second at which the tail starts."""
    import soundfile as sf

    intro, rate = sf.read(io.BytesIO(speak_wav(LONG_INTRO)), dtype="float32")
    tail, _ = sf.read(io.BytesIO(speak_wav(LONG_TAIL)), dtype="float32")
    gap = np.zeros(int(gap_s * rate), dtype=np.float32)
    tail_starts = (intro.size + gap.size) / rate
    return samples_voice_note(np.concatenate([intro, gap, tail]), rate), tail_starts
