"""Voice note bytes → mono float32 samples at 16 kHz, or a refusal the user can act on.

Decoding order:

1. **soundfile / libsndfile** (in process, no subprocess): WAV, FLAC, OGG/Vorbis, OGG/Opus (Discord
   voice messages: ``audio/ogg`` Opus, 48 kHz mono) and MP3 (libsndfile ≥ 1.1).
2. **ffmpeg** (only when libsndfile can't read the bytes and ``ffmpeg`` is on ``PATH``): M4A/AAC,
   WebM and anything else ffmpeg knows. The bytes go in on stdin and come back as ``f32le`` 16 kHz
   mono on stdout. MP4-family containers (M4A) usually keep their index (``moov``) after the audio,
   which a pipe can't seek back to, so those are handed to ffmpeg as a temporary file instead.
   The subprocess is bounded in time (:data:`FFMPEG_TIMEOUT_S`) and in output (it is told to stop
   one second past the length limit).

Resampling uses soxr (librosa's own resampler, without librosa's import and JIT start-up cost).
Nothing here imports torch.

Refusals (all :class:`~pipeline.errors.BadAudio`, messages fit to show a user):

* :class:`EmptyAudio` — no bytes, or a valid container holding no samples;
* :class:`UndecodableAudio` — not audio, or no decoder could read it;
* :class:`AudioTooLong` — longer than ``max_seconds`` (checked from the header before decoding
  where the header says, and again on the decoded samples);
* :class:`SilentAudio` — see :func:`is_silent`: the loudest 50 ms stretch stays below
  :data:`SILENCE_DBFS` (−55 dBFS RMS, DC removed). Digital silence and a muted microphone's noise
  floor (−70 dBFS and below) are refused; a quiet voice (−40 dBFS and up) passes. Sound that is
  not speech (a hum, noise, music) is *not* refused here — the transcriber decides that
  (:class:`~pipeline.errors.NoSpeech`).
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf

from .errors import AudioTooLong, EmptyAudio, SilentAudio, UndecodableAudio

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
"""What Whisper's feature extractor expects."""

SILENCE_DBFS = -55.0
"""A recording whose loudest :data:`SILENCE_WINDOW_S` stretch has an RMS below this is silent."""

SILENCE_WINDOW_S = 0.05

DURATION_TOLERANCE_S = 0.25
"""Codec priming and padding may add a few milliseconds to a recording cut at exactly the limit."""

FFMPEG_TIMEOUT_S = 30.0
"""Decoding two minutes of audio takes well under a second; a stuck ffmpeg is killed after this."""

FFPROBE_TIMEOUT_S = 5.0


# --- public helpers --------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``134.2`` → ``"2:15"`` (rounded *up* to the second, so a recording just over a limit never
    reads as equal to it)."""
    total = max(0, math.ceil(seconds - 1e-9))
    minutes, secs = divmod(total, 60)
    return f"{minutes}:{secs:02d}"


def audio_too_long(duration_s: float | None, max_seconds: float) -> AudioTooLong:
    """The :class:`AudioTooLong` error for a recording of ``duration_s`` (``None``: unknown) — the
    bot uses it too, to refuse from Discord's ``attachment.duration`` before downloading."""
    limit = format_duration(max_seconds)
    if duration_s is None:
        return AudioTooLong(f"That recording is longer than {limit}; I can take up to {limit}.")
    return AudioTooLong(f"That recording is {format_duration(duration_s)} long; I can take up to {limit}.")


def is_too_long(duration_s: float, max_seconds: float) -> bool:
    return duration_s > max_seconds + DURATION_TOLERANCE_S


def loudest_dbfs(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """RMS level (dBFS) of the loudest :data:`SILENCE_WINDOW_S` stretch, DC offset removed."""
    if samples.size == 0:
        return -math.inf
    x = samples.astype(np.float64, copy=False) - float(np.mean(samples))
    window = max(1, int(sample_rate * SILENCE_WINDOW_S))
    usable = (x.size // window) * window
    if usable == 0:
        rms = math.sqrt(float(np.mean(x * x)))
    else:
        frames = x[:usable].reshape(-1, window)
        rms = math.sqrt(float(np.max(np.mean(frames * frames, axis=1))))
        if usable < x.size:  # the tail shorter than a window counts too
            tail = x[usable:]
            rms = max(rms, math.sqrt(float(np.mean(tail * tail))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def is_silent(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bool:
    """True when nothing in the recording rises above :data:`SILENCE_DBFS` (see module docs)."""
    return loudest_dbfs(samples, sample_rate) < SILENCE_DBFS


def audio_duration(data: bytes) -> float | None:
    """Duration in seconds from the container header, without decoding; ``None`` if unknown.

    libsndfile's header probe first, then ``ffprobe`` (if installed, bounded in time).
    """
    if not data:
        return None
    try:
        info = sf.info(io.BytesIO(data))
        if info.samplerate > 0 and info.frames > 0:
            return info.frames / info.samplerate
    except Exception:
        pass
    return _ffprobe_duration(data)


def decode_audio(data: bytes, *, max_seconds: float, filename: str | None = None) -> np.ndarray:
    """Decode any supported recording to mono float32 at :data:`SAMPLE_RATE`.

    ``filename`` is only used in log lines. Raises :class:`EmptyAudio`, :class:`UndecodableAudio`,
    :class:`AudioTooLong` or :class:`SilentAudio` (see module docs).
    """
    name = filename or "<audio>"
    if not data:
        raise EmptyAudio()

    decoded = _decode_soundfile(data, max_seconds=max_seconds, name=name)
    if decoded is None:
        decoded = _decode_ffmpeg(data, max_seconds=max_seconds, name=name)
    samples, sample_rate = decoded

    if samples.size == 0:
        raise EmptyAudio("That recording has no sound in it — please record the voice note again.")
    duration = samples.size / sample_rate
    if is_too_long(duration, max_seconds):
        raise audio_too_long(duration, max_seconds)

    samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    if sample_rate != SAMPLE_RATE:
        samples = _resample(samples, sample_rate, SAMPLE_RATE)
    samples = np.ascontiguousarray(samples, dtype=np.float32)

    level = loudest_dbfs(samples)
    if level < SILENCE_DBFS:
        log.info("%s: silent (loudest %.1f dBFS < %.1f dBFS)", name, level, SILENCE_DBFS)
        raise SilentAudio()
    log.debug("%s: %.2f s at %d Hz, loudest %.1f dBFS", name, duration, sample_rate, level)
    return samples


# --- decoders --------------------------------------------------------------------------------------


def _to_mono(samples: np.ndarray) -> np.ndarray:
    if samples.ndim == 2:
        samples = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return np.asarray(samples, dtype=np.float32)


def _decode_soundfile(data: bytes, *, max_seconds: float, name: str) -> tuple[np.ndarray, int] | None:
    """libsndfile; ``None`` when it doesn't recognise or can't decode the bytes."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sample_rate = f.samplerate
            header_s = f.frames / sample_rate if f.frames > 0 and sample_rate > 0 else None
            if header_s is not None and is_too_long(header_s, max_seconds):
                raise audio_too_long(header_s, max_seconds)  # refused before decoding anything
            # Never read more than the limit allows (a lying header can't make us decode hours).
            limit = int((max_seconds + DURATION_TOLERANCE_S + 1.0) * sample_rate)
            samples = f.read(frames=limit, dtype="float32", always_2d=True)
            if len(samples) >= limit:
                duration = f.frames / sample_rate if f.frames > limit else None
                raise audio_too_long(duration, max_seconds)
    except AudioTooLong:
        raise
    except Exception as exc:
        log.debug("%s: soundfile can't read it (%s)", name, exc)
        return None
    return _to_mono(samples), sample_rate


def _is_mp4_family(data: bytes) -> bool:
    """ISO base media (M4A, MP4, 3GP, MOV): an ``ftyp`` box at offset 4."""
    return len(data) >= 12 and data[4:8] == b"ftyp"


_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")


def _decode_ffmpeg(data: bytes, *, max_seconds: float, name: str) -> tuple[np.ndarray, int]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        log.info("%s: not readable by libsndfile and ffmpeg is not installed", name)
        raise UndecodableAudio()
    # Stop one second past the limit: enough to know it is too long, never hours of output.
    stop_after = f"{max_seconds + DURATION_TOLERANCE_S + 1.0:.3f}"
    out_args = ["-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1"]
    tmp_path: str | None = None
    try:
        if _is_mp4_family(data):  # the index may follow the audio: give ffmpeg a seekable file
            fd, tmp_path = tempfile.mkstemp(suffix=".m4a", prefix="voxcanvas-")
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
            cmd = [ffmpeg, "-nostdin", "-hide_banner", "-i", tmp_path, "-t", stop_after, *out_args]
            stdin_data: bytes | None = None
        else:
            cmd = [ffmpeg, "-hide_banner", "-i", "pipe:0", "-t", stop_after, *out_args]
            stdin_data = data
        try:
            proc = subprocess.run(
                cmd,
                input=stdin_data,
                stdin=subprocess.DEVNULL if stdin_data is None else None,
                capture_output=True,
                timeout=FFMPEG_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            log.warning("%s: ffmpeg took longer than %.0f s; killed", name, FFMPEG_TIMEOUT_S)
            raise UndecodableAudio() from None
        except OSError as exc:
            log.warning("%s: could not run ffmpeg: %s", name, exc)
            raise UndecodableAudio() from None
    finally:
        if tmp_path is not None:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass

    stderr = proc.stderr.decode("utf-8", "replace")
    usable = len(proc.stdout) - len(proc.stdout) % 4
    samples = np.frombuffer(proc.stdout[:usable], dtype="<f4").astype(np.float32)
    if proc.returncode != 0 or samples.size == 0:
        log.info(
            "%s: ffmpeg could not decode it (exit %s): %s",
            name,
            proc.returncode,
            stderr.strip().splitlines()[-1:] or "",
        )
        if proc.returncode == 0 and _DURATION_RE.search(stderr):  # a real, empty container
            raise EmptyAudio("That recording has no sound in it — please record the voice note again.")
        raise UndecodableAudio()
    duration = samples.size / SAMPLE_RATE
    if is_too_long(duration, max_seconds):
        match = _DURATION_RE.search(stderr)
        if match:
            hours, minutes, seconds = match.groups()
            duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        elif samples.size >= float(stop_after) * SAMPLE_RATE - 1:
            # we stopped reading at the limit; the real length is unknown
            raise audio_too_long(None, max_seconds)
        raise audio_too_long(duration, max_seconds)
    return samples, SAMPLE_RATE


def _ffprobe_duration(data: bytes) -> float | None:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    cmd = [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"]
    cmd += ["-i", "pipe:0"]
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, timeout=FFPROBE_TIMEOUT_S, check=False)
    except (subprocess.TimeoutExpired, OSError):
        return None
    try:
        value = float(proc.stdout.decode().strip().splitlines()[0])
    except (ValueError, IndexError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    try:
        import soxr  # librosa's resampling backend (a dependency of librosa >= 0.10)

        resampled = soxr.resample(samples, orig_sr, target_sr, quality="HQ")
        return resampled.astype(np.float32, copy=False)
    except ImportError:  # pragma: no cover - librosa without soxr
        import librosa

        return librosa.resample(samples, orig_sr=orig_sr, target_sr=target_sr).astype(np.float32)
