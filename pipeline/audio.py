"""Voice note bytes → mono float32 samples at 16 kHz, or a refusal the user can act on.

The header comes first: what no voice note is (a sample rate outside 8-48 kHz, more than two
channels, a declared length over the limit, more bytes than ``MAX_AUDIO_BYTES``) is refused before a
single sample is decoded. A 0.7 MB FLAC of silence at 655,350 Hz x 8 channels would otherwise be
2.5 GB of floats.

Decoding order:

1. **soundfile / libsndfile** (in process, no subprocess): WAV, FLAC, OGG/Vorbis, OGG/Opus (Discord
   voice messages: ``audio/ogg`` Opus, 48 kHz mono) and MP3 (libsndfile ≥ 1.1). Decoded
   :data:`~pipeline.limits.AUDIO_DECODE_BLOCK_FRAMES` frames at a time into one reused buffer, each
   block mixed down to mono and fed to soxr's streaming resampler, and never more than one second
   past the limit, whatever the header says: memory is bounded by the 16 kHz mono *output*.
2. **ffmpeg** (only when libsndfile can't read the bytes and ``ffmpeg`` is on ``PATH``): M4A/AAC,
   WebM and anything else ffmpeg knows. The bytes go to a private temporary file (MP4-family
   containers usually keep their index after the audio, which a pipe can't seek back to);
   ``ffprobe`` reads the header, then ffmpeg mixes down, resamples and stops at the limit itself
   (``-ac 1 -ar 16000 -t … -fs …``), bounded in time by :data:`FFMPEG_TIMEOUT_S`.

Resampling uses soxr (librosa's own resampler, without librosa's import and JIT start-up cost).
Nothing here imports torch.

Refusals (all :class:`~pipeline.errors.BadAudio`, messages fit to show a user):

* :class:`EmptyAudio` — no bytes, or a valid container holding no samples;
* :class:`AudioTooLarge` — more bytes than ``max_bytes``;
* :class:`UnsupportedAudio` — a header no voice note has (see :func:`check_header`);
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
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from . import limits
from .errors import AudioTooLarge, AudioTooLong, EmptyAudio, SilentAudio, UndecodableAudio, UnsupportedAudio

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
            return float(info.frames / info.samplerate)
    except Exception:
        pass
    header = _ffprobe(data=data)
    return header.duration_s if header is not None else None


@dataclass(frozen=True)
class AudioHeader:
    """What a container says about its audio, read without decoding any of it (0: unknown)."""

    sample_rate: int
    channels: int
    duration_s: float | None = None


def check_header(header: AudioHeader, *, max_seconds: float, name: str = "<audio>") -> None:
    """Refuse what no voice note is, from the header alone: :class:`UnsupportedAudio` for a sample
    rate outside 8-48 kHz or more than two channels, :class:`AudioTooLong` for a declared length over
    the limit. Unknown values (0 / ``None``) pass; the bounded decode stops those."""
    rate, channels = header.sample_rate, header.channels
    if rate and not limits.MIN_AUDIO_SAMPLE_RATE <= rate <= limits.MAX_AUDIO_SAMPLE_RATE:
        log.info("%s: refused, sample rate %d Hz", name, rate)
        raise UnsupportedAudio(
            f"That recording's sample rate ({rate:,} Hz) is not a voice note's; I take "
            f"{limits.MIN_AUDIO_SAMPLE_RATE // 1000}-{limits.MAX_AUDIO_SAMPLE_RATE // 1000} kHz."
        )
    if channels > limits.MAX_AUDIO_CHANNELS:
        log.info("%s: refused, %d channels", name, channels)
        raise UnsupportedAudio(f"That recording has {channels} channels; I take mono or stereo voice notes.")
    if header.duration_s is not None and is_too_long(header.duration_s, max_seconds):
        raise audio_too_long(header.duration_s, max_seconds)


def decode_audio(
    data: bytes,
    *,
    max_seconds: float,
    filename: str | None = None,
    max_bytes: int = limits.MAX_AUDIO_BYTES,
) -> np.ndarray:
    """Decode any supported recording to mono float32 at :data:`SAMPLE_RATE`.

    The header is checked first (:func:`check_header`); then the audio is decoded
    :data:`~pipeline.limits.AUDIO_DECODE_BLOCK_FRAMES` at a time, each block mixed down to mono and
    resampled as a stream, so memory is bounded by the *output* (16 kHz mono, at most
    ``max_seconds``), never by what the header claims. ``filename`` is only used in log lines.
    Raises :class:`AudioTooLarge`, :class:`EmptyAudio`, :class:`UnsupportedAudio`,
    :class:`UndecodableAudio`, :class:`AudioTooLong` or :class:`SilentAudio` (see module docs).
    """
    name = filename or "<audio>"
    if not data:
        raise EmptyAudio()
    if len(data) > max_bytes:
        raise AudioTooLarge(
            f"That file is {len(data) / 1e6:.1f} MB; I can take up to {max_bytes / 1e6:.0f} MB of audio."
        )

    samples = _decode_soundfile(data, max_seconds=max_seconds, name=name)
    if samples is None:
        samples = _decode_ffmpeg(data, max_seconds=max_seconds, name=name)

    if samples.size == 0:
        raise EmptyAudio("That recording has no sound in it — please record the voice note again.")
    level = loudest_dbfs(samples)
    if level < SILENCE_DBFS:
        log.info("%s: silent (loudest %.1f dBFS < %.1f dBFS)", name, level, SILENCE_DBFS)
        raise SilentAudio()
    log.debug("%s: %.2f s, loudest %.1f dBFS", name, samples.size / SAMPLE_RATE, level)
    return samples


# --- decoders --------------------------------------------------------------------------------------


def _read_limit_s(max_seconds: float) -> float:
    """Decode one second past the limit (plus tolerance): enough to know a recording is too long."""
    return max_seconds + DURATION_TOLERANCE_S + 1.0


class _MonoResampler:
    """Blocks of ``(frames, channels)`` float32 at ``sample_rate`` → one mono float32 array at
    :data:`SAMPLE_RATE`, mixed down and resampled block by block (soxr's streaming resampler)."""

    def __init__(self, sample_rate: int) -> None:
        self._stream = (
            soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            if sample_rate != SAMPLE_RATE
            else None
        )
        self._parts: list[np.ndarray] = []

    def _mono(self, block: np.ndarray) -> np.ndarray:
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        return np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0).astype(np.float32, copy=False)

    def add(self, block: np.ndarray) -> None:
        mono = self._mono(block)
        if self._stream is not None:
            mono = self._stream.resample_chunk(mono, last=False)
        if mono.size:
            self._parts.append(np.array(mono, dtype=np.float32))  # a copy: ``block`` is a reused buffer

    def finish(self) -> np.ndarray:
        if self._stream is not None:
            tail = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if tail.size:
                self._parts.append(np.asarray(tail, dtype=np.float32))
        if not self._parts:
            return np.zeros(0, dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(self._parts), dtype=np.float32)


_UNKNOWN_FRAMES = 2**62
"""libsndfile reports a stream of unknown length (a FLAC whose header says 0 samples) as
``SF_COUNT_MAX`` frames."""


def _decode_soundfile(data: bytes, *, max_seconds: float, name: str) -> np.ndarray | None:
    """libsndfile, block by block; ``None`` when it doesn't recognise or can't decode the bytes."""
    try:
        sound = sf.SoundFile(io.BytesIO(data))
    except Exception as exc:
        log.debug("%s: soundfile can't read it (%s)", name, exc)
        return None
    with sound:
        sample_rate, channels = sound.samplerate, sound.channels
        known = 0 < sound.frames < _UNKNOWN_FRAMES and sample_rate > 0
        declared_s = sound.frames / sample_rate if known else None
        check_header(AudioHeader(sample_rate, channels, declared_s), max_seconds=max_seconds, name=name)
        if sample_rate <= 0 or channels <= 0:
            return None
        # Never read more than the limit allows (a lying header can't make us decode hours).
        limit = int(_read_limit_s(max_seconds) * sample_rate)
        block = np.empty((limits.AUDIO_DECODE_BLOCK_FRAMES, channels), dtype=np.float32)
        mono = _MonoResampler(sample_rate)
        frames_read = 0
        try:
            while frames_read < limit:
                want = min(len(block), limit - frames_read)
                got = sound.read(frames=want, dtype="float32", always_2d=True, out=block[:want])
                if len(got) == 0:
                    break
                frames_read += len(got)
                mono.add(got)
        except Exception as exc:
            log.debug("%s: soundfile failed while decoding (%s)", name, exc)
            return None
    if frames_read >= limit:
        raise audio_too_long(
            declared_s if declared_s is not None and declared_s * sample_rate > limit else None, max_seconds
        )
    duration = frames_read / sample_rate
    if is_too_long(duration, max_seconds):
        raise audio_too_long(duration, max_seconds)
    return mono.finish()


def _ffprobe(*, path: str | None = None, data: bytes | None = None) -> AudioHeader | None:
    """The first audio stream's rate, channels and duration from ``ffprobe`` (a file, or bytes on
    stdin); ``None`` when ffprobe is missing, fails, or finds no audio stream."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    cmd = [ffprobe, "-v", "error", "-select_streams", "a:0", "-of", "json"]
    cmd += ["-show_entries", "stream=sample_rate,channels,duration:format=duration", "-i", path or "pipe:0"]
    try:
        proc = subprocess.run(
            cmd,
            input=data if path is None else None,
            stdin=subprocess.DEVNULL if path is not None else None,
            capture_output=True,
            timeout=FFPROBE_TIMEOUT_S,
            check=False,
        )
        found = json.loads(proc.stdout or b"{}")
    except (subprocess.TimeoutExpired, OSError, ValueError):
        return None
    streams = found.get("streams") or []
    if proc.returncode != 0 or not streams:
        return None
    stream = streams[0]

    def number(value: object) -> float:
        try:
            result = float(str(value))
        except ValueError:
            return 0.0
        return result if math.isfinite(result) and result > 0 else 0.0

    duration = number(stream.get("duration")) or number((found.get("format") or {}).get("duration"))
    return AudioHeader(int(number(stream.get("sample_rate"))), int(number(stream.get("channels"))), duration or None)


_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")


def _decode_ffmpeg(data: bytes, *, max_seconds: float, name: str) -> np.ndarray:
    """ffmpeg does the mixdown and resampling (``-ac 1 -ar 16000``) and stops at the limit
    (``-t``, ``-fs``): its output is bounded whatever the input claims. The bytes go through a
    private temporary file, so ffprobe can read the header first and MP4-family containers whose
    index (``moov``) follows the audio can be read at all."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        log.info("%s: not readable by libsndfile and ffmpeg is not installed", name)
        raise UndecodableAudio()
    stop_after = _read_limit_s(max_seconds)
    max_output = int(math.ceil(stop_after * SAMPLE_RATE)) * 4 + 4096
    fd, tmp_path = tempfile.mkstemp(suffix=".audio", prefix="voxcanvas-")  # created 0600
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
        if shutil.which("ffprobe") is not None:
            header = _ffprobe(path=tmp_path)
            if header is None:
                log.info("%s: ffprobe finds no audio stream in it", name)
                raise UndecodableAudio()
            check_header(header, max_seconds=max_seconds, name=name)
        cmd = [ffmpeg, "-nostdin", "-hide_banner", "-i", tmp_path, "-t", f"{stop_after:.3f}"]
        cmd += ["-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-fs", str(max_output)]
        cmd += ["-f", "f32le", "pipe:1"]
        try:
            proc = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            log.warning("%s: ffmpeg took longer than %.0f s; killed", name, FFMPEG_TIMEOUT_S)
            raise UndecodableAudio() from None
        except OSError as exc:
            log.warning("%s: could not run ffmpeg: %s", name, exc)
            raise UndecodableAudio() from None
    finally:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass

    stderr = proc.stderr.decode("utf-8", "replace")
    output = proc.stdout[:max_output]
    usable = len(output) - len(output) % 4
    samples = np.frombuffer(output[:usable], dtype="<f4")
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
        elif samples.size >= stop_after * SAMPLE_RATE - 1:
            # we stopped reading at the limit; the real length is unknown
            raise audio_too_long(None, max_seconds)
        raise audio_too_long(duration, max_seconds)
    return np.ascontiguousarray(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0), dtype=np.float32)
