"""Hostile audio (issue #11, item 1): decompression bombs are refused from the header, decoding is
bounded in memory whatever the bytes claim, and decodes run a few at a time.

The bomb files are built here, for real: the issue's FLAC (8 channels at 655,350 Hz, 119 s of
silence, 0.7 MB; libsndfile writes that rate, ffmpeg's FLAC encoder refuses it), the same idea in
Matroska for the ffmpeg path (384 kHz, the highest rate ffmpeg's FLAC encoder takes), a FLAC whose
header says "length unknown" holding ten minutes, and long-but-legal notes (48 kHz stereo, 119 s)
that must still be accepted. Peak memory is measured in a fresh subprocess from its own high-water
mark (``VmHWM``) before and after decoding, and from ffmpeg's/ffprobe's (``RUSAGE_CHILDREN``).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from devkit import voice
from pipeline import limits
from pipeline import studio as studio_module
from pipeline.audio import SAMPLE_RATE, decode_audio
from pipeline.errors import AudioTooLarge, AudioTooLong, BadAudio, SilentAudio, UnsupportedAudio
from pipeline.executor import GPUExecutor
from pipeline.settings import Settings
from pipeline.studio import Idea, Studio

REPO = Path(__file__).resolve().parents[2]
MAX_GROWTH_MB = 100  # the issue's target: decoding any input costs at most ~100 MB above idle


def _write_flac(path: Path, rate: int, channels: int, seconds: int, second: np.ndarray | None = None) -> Path:
    """``seconds`` repeats of one second of int16 audio (silence by default), written a second at a
    time so building a bomb never holds it decoded."""
    block = np.zeros((rate, channels), dtype=np.int16) if second is None else second
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as f:
        for _ in range(seconds):
            f.write(block)
    return path


def _forget_length(flac: bytes) -> bytes:
    """Zero STREAMINFO's 36-bit total-samples field: a valid FLAC of "unknown length"."""
    data = bytearray(flac)
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # the first metadata block is STREAMINFO
    offset = 8 + 10  # after the block header and the block/frame size fields
    packed = int.from_bytes(data[offset : offset + 8], "big") & ~((1 << 36) - 1)
    data[offset : offset + 8] = packed.to_bytes(8, "big")
    return bytes(data)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    voice.require_tools("ffmpeg", "ffprobe")
    folder = tmp_path_factory.mktemp("hostile-audio")
    files = {"bomb-flac": _write_flac(folder / "bomb.flac", 655_350, 8, 119)}  # the issue's file
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=384000:cl=7.1", "-t", "119"]
        + ["-c:a", "flac", str(folder / "bomb.mka")],
        check=True,
    )
    files["bomb-mka"] = folder / "bomb.mka"
    hour = _write_flac(folder / "ten-minutes.flac", 48_000, 2, 600)
    files["unknown-length-flac"] = folder / "unknown-length.flac"
    files["unknown-length-flac"].write_bytes(_forget_length(hour.read_bytes()))
    second = (voice.tone(1.0, sample_rate=48_000) * 32767).astype(np.int16)
    files["legal-flac"] = _write_flac(folder / "legal.flac", 48_000, 2, 119, np.stack([second, second], axis=1))
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=f=440:r=48000:d=119", "-ac", "2"]
        + ["-c:a", "aac", "-b:a", "64k", str(folder / "legal.m4a")],
        check=True,
    )
    files["legal-m4a"] = folder / "legal.m4a"
    return files


_MEASURE = """
import json, resource, sys, time
from pipeline.audio import decode_audio

def peak_kb():  # this process's own high-water mark (see measure_decode)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

data = open(sys.argv[1], "rb").read()
idle_kb = peak_kb()
started = time.perf_counter()
try:
    outcome = {"seconds_decoded": decode_audio(data, max_seconds=float(sys.argv[2])).size / 16000}
except Exception as exc:
    outcome = {"error": type(exc).__name__, "message": str(exc)}
outcome["wall_s"] = time.perf_counter() - started
outcome["growth_mb"] = (peak_kb() - idle_kb) / 1024
outcome["children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(outcome))
"""


def measure_decode(path: Path, max_seconds: float = 120) -> dict[str, object]:
    """Decode ``path`` in a fresh interpreter: its peak resident memory above idle (imports done,
    bytes read), from ``VmHWM``, and an upper bound on its subprocesses' (ffmpeg, ffprobe) peak.

    Linux carries a parent's resident size into a child's ``ru_maxrss`` across fork and exec, so
    ``ru_maxrss`` of a process started by pytest (hundreds of MB with torch loaded) would hide
    gigabytes; ``VmHWM`` belongs to the new address space alone. For ffmpeg/ffprobe,
    ``RUSAGE_CHILDREN`` is max(the decoding interpreter's size when it spawned them, their own peak):
    an upper bound, which is what the test needs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), str(max_seconds)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
        check=True,
    )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- the bombs are refused from the header, before decoding ----------------------------------------


def test_the_issues_bomb_is_refused_from_the_header_at_once(hostile: dict[str, Path]):
    data = hostile["bomb-flac"].read_bytes()
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, round(info.duration)) == (655_350, 8, 119)
    assert len(data) < 1_000_000  # 0.7 MB on the wire; 2.5 GB as float32
    started = time.perf_counter()
    with pytest.raises(UnsupportedAudio) as refused:
        decode_audio(data, max_seconds=120)
    assert time.perf_counter() - started < 1.0  # nothing decoded (it took 12-18 s before)
    assert str(refused.value) == "That recording's sample rate (655,350 Hz) is not a voice note's; I take 8-48 kHz."


@pytest.mark.parametrize(
    ("case", "expected_error", "expected_message"),
    [
        ("bomb-flac", "UnsupportedAudio", "655,350 Hz"),
        ("bomb-mka", "UnsupportedAudio", "384,000 Hz"),  # the ffmpeg path: ffprobe reads the header
        ("unknown-length-flac", "AudioTooLong", "That recording is longer than 2:00; I can take up to 2:00."),
        ("legal-flac", None, None),
        ("legal-m4a", None, None),
    ],
)
def test_decoding_any_input_stays_within_100_mb(case, expected_error, expected_message, hostile):
    outcome = measure_decode(hostile[case])
    assert float(str(outcome["growth_mb"])) <= MAX_GROWTH_MB, outcome
    assert float(str(outcome["children_mb"])) <= MAX_GROWTH_MB, outcome  # ffmpeg / ffprobe, if used
    assert outcome.get("error") == expected_error, outcome
    if expected_message is not None:
        assert expected_message in str(outcome["message"]), outcome
    else:
        assert outcome["seconds_decoded"] == pytest.approx(119.0, abs=0.1), outcome


@pytest.mark.parametrize(
    ("rate", "channels", "message"),
    [
        (96_000, 1, "sample rate (96,000 Hz)"),
        (192_000, 2, "sample rate (192,000 Hz)"),
        (4_000, 1, "sample rate (4,000 Hz)"),
        (16_000, 3, "3 channels"),
        (48_000, 6, "6 channels"),
    ],
)
def test_what_no_voice_note_is_gets_a_friendly_refusal(rate: int, channels: int, message: str):
    samples = np.tile(voice.tone(1.0, sample_rate=rate)[:, None], (1, channels))
    with pytest.raises(UnsupportedAudio) as refused:
        decode_audio(voice.wav_bytes(samples, rate), max_seconds=120)
    assert message in str(refused.value)
    assert isinstance(refused.value, BadAudio)


@pytest.mark.parametrize(("rate", "channels"), [(8_000, 1), (16_000, 2), (44_100, 2), (48_000, 1), (48_000, 2)])
def test_every_voice_note_shape_is_still_accepted(rate: int, channels: int):
    samples = np.tile(voice.tone(1.5, sample_rate=rate)[:, None], (1, channels))
    decoded = decode_audio(voice.flac_bytes(samples, rate), max_seconds=120)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(decoded.size - 1.5 * SAMPLE_RATE) <= 2


def test_a_file_over_the_byte_limit_is_refused_before_decoding():
    data = voice.wav_bytes(voice.tone(2.0, sample_rate=16_000), 16_000)
    with pytest.raises(AudioTooLarge) as refused:
        decode_audio(data, max_seconds=120, max_bytes=len(data) - 1)
    assert (
        str(refused.value)
        == f"That file is {len(data) / 1e6:.1f} MB; I can take up to {(len(data) - 1) / 1e6:.0f} MB of audio."
    )
    assert decode_audio(data, max_seconds=120, max_bytes=len(data)).size == 2 * SAMPLE_RATE


def test_a_header_that_hides_the_length_cannot_make_us_decode_it_all(hostile: dict[str, Path]):
    """Ten minutes behind "length unknown": decoding stops one second past the limit."""
    data = hostile["unknown-length-flac"].read_bytes()
    started = time.perf_counter()
    with pytest.raises(AudioTooLong) as refused:
        decode_audio(data, max_seconds=10)
    assert str(refused.value) == "That recording is longer than 0:10; I can take up to 0:10."
    assert time.perf_counter() - started < 5.0


# --- block-by-block decoding gives the same audio ----------------------------------------------------


def test_streaming_mixdown_and_resample_match_the_one_shot_result():
    """Blocks of :data:`limits.AUDIO_DECODE_BLOCK_FRAMES`, mixed down and resampled as a stream, are
    the same samples as mixing and resampling the whole recording at once."""
    rate, seconds = 44_100, 5.0  # several blocks, and a rate that doesn't divide 16 kHz
    assert seconds * rate > 4 * limits.AUDIO_DECODE_BLOCK_FRAMES
    left = voice.tone(seconds, 440, amplitude=0.4, sample_rate=rate)
    right = voice.noise(seconds, amplitude=0.05, sample_rate=rate)
    stereo = np.stack([left, right], axis=1)
    decoded = decode_audio(voice.wav_bytes(stereo, rate, subtype="FLOAT"), max_seconds=120)
    whole = soxr.resample(stereo.mean(axis=1).astype(np.float32), rate, SAMPLE_RATE, quality="HQ")
    assert decoded.size == whole.size
    np.testing.assert_allclose(decoded, whole, atol=1e-5)


# --- decodes run a few at a time --------------------------------------------------------------------


async def test_concurrent_decodes_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Six voice notes arriving together: at most MAX_CONCURRENT_DECODES decode at once (the rest
    wait without holding a thread), and they do overlap up to that bound. The real decoder runs;
    the spy only counts and holds each decode long enough for the others to arrive."""
    lock = threading.Lock()
    in_flight = peak = 0

    def counting_decode(*args: object, **kwargs: object) -> np.ndarray:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            time.sleep(0.3)
            return decode_audio(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(studio_module, "decode_audio", counting_decode)
    settings = Settings(GEMINI_API_KEY="", DATA_DIR=tmp_path / "data", DEVICE="cpu", _env_file=None)
    executor = GPUExecutor(settings, stage_timeout_s=30)
    await executor.start()
    studio = Studio(settings, executor)
    silent_note = voice.wav_bytes(voice.silence(1.0, sample_rate=16_000), 16_000)  # refused after decoding

    async def one(user: int) -> BaseException | None:
        job = executor.admit(f"user-{user}")
        try:
            await studio.run(job, Idea(audio=silent_note, audio_filename=f"note-{user}.wav"))
        except SilentAudio as exc:
            return exc
        finally:
            job.finish()
        return None

    try:
        outcomes = await asyncio.gather(*(one(user) for user in range(6)))
    finally:
        await studio.aclose()
        await executor.shutdown(timeout_s=10)
    assert all(isinstance(outcome, SilentAudio) for outcome in outcomes)
    assert peak == limits.MAX_CONCURRENT_DECODES
