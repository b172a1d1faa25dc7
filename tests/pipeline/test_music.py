"""The music stage: a tiny random-weight MusicGen loaded with the real ``from_pretrained``, composed
on the GPU executor thread (length, sample rate, progress, determinism, cancel, errors, fairness
with image jobs) and encoded as WAV and OGG/Opus that decode back."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from pipeline import limits
from pipeline.errors import BadRequest, JobCancelled, ModelUnavailable
from pipeline.executor import GPUExecutor, ProgressEvent
from pipeline.music import MUSIC_SAMPLE_RATE, MusicRequest, encode_ogg_opus, encode_wav
from pipeline.synthesis import RenderRequest

from .test_executor import GpuGate

SECONDS = 2.0


@pytest.fixture
async def music_executor(make_settings, tiny_musicgen_dir):
    created: list[GPUExecutor] = []

    async def factory(**overrides) -> GPUExecutor:
        overrides.setdefault("MUSIC_MODEL", str(tiny_musicgen_dir))
        executor = GPUExecutor(make_settings(**overrides), stage_timeout_s=120)
        await executor.start()
        created.append(executor)
        return executor

    yield factory
    for executor in created:
        await executor.shutdown(timeout_s=10)


async def test_compose_length_rate_progress_and_determinism(music_executor):
    ex = await music_executor()
    events: list[ProgressEvent] = []
    job = ex.admit("u1")
    job.listener = events.append
    music = await ex.compose(job, MusicRequest("a calm seaside ambience", seconds=SECONDS, seed=7))
    job.finish()
    await asyncio.sleep(0)  # let the last progress callbacks run

    assert music.sample_rate == MUSIC_SAMPLE_RATE
    assert music.samples.dtype == np.float32 and music.samples.ndim == 1
    assert len(music.samples) == int(SECONDS * MUSIC_SAMPLE_RATE)
    assert music.duration_s == pytest.approx(SECONDS)
    assert np.isfinite(music.samples).all() and np.abs(music.samples).max() <= 1.0
    composer = ex.engine.composer
    total = composer.steps_for(SECONDS)  # 100 frames at 50 Hz + 3 steps of codebook delay
    assert total == int(SECONDS * composer.frame_rate) + 3
    assert music.tokens == total
    steps = [(e.step, e.total) for e in events if e.stage == "music" and e.total]
    assert steps[-1] == (total, total)
    assert [s for s, _ in steps] == sorted(s for s, _ in steps) and len(steps) >= total // 2
    assert music.info()["seed"] == 7 and music.info()["sample_rate"] == MUSIC_SAMPLE_RATE

    job2 = ex.admit("u1")
    again = await ex.compose(job2, MusicRequest("a calm seaside ambience", seconds=SECONDS, seed=7))
    other = await ex.compose(job2, MusicRequest("a calm seaside ambience", seconds=SECONDS, seed=8))
    job2.finish()
    assert np.array_equal(music.samples, again.samples)
    assert not np.array_equal(music.samples, other.samples)


async def test_cancel_mid_generation_frees_the_thread(music_executor):
    ex = await music_executor()
    job = ex.admit("u1")
    seen: list[int] = []

    def listener(event: ProgressEvent) -> None:
        if event.stage == "music" and event.total:
            seen.append(event.step)
            if event.step >= 10:
                job.cancel()

    job.listener = listener
    with pytest.raises(JobCancelled):
        await ex.compose(job, MusicRequest("slow piano", seconds=limits.MAX_MUSIC_SECONDS, seed=1))
    job.finish("cancelled")
    total = ex.engine.composer.steps_for(limits.MAX_MUSIC_SECONDS)
    assert 10 <= max(seen) < total // 2, "generation stopped soon after the cancel, not at the end"
    # The thread is free for the next job at once.
    nxt = ex.admit("u2")
    music = await ex.compose(nxt, MusicRequest("fast drums", seconds=1, seed=2))
    nxt.finish()
    assert music.duration_s == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (MusicRequest("", seconds=5), "empty"),
        (MusicRequest("piano", seconds=0.5), "1 to 30 seconds"),
        (MusicRequest("piano", seconds=31), "1 to 30 seconds"),
        (MusicRequest("piano", seconds=float("nan")), "1 to 30 seconds"),
        (MusicRequest("x" * (limits.MAX_MUSIC_PROMPT_CHARS + 1)), "characters long"),
        (MusicRequest("piano", guidance=50), "guidance"),
        (MusicRequest("piano", seed=-1), "seed"),
    ],
)
def test_bad_requests_are_refused_with_a_friendly_message(request_, message):
    with pytest.raises(BadRequest, match=message):
        request_.validated()


async def test_missing_model_names_the_setting(music_executor, tmp_path):
    ex = await music_executor(MUSIC_MODEL=str(tmp_path / "no-such-musicgen"))
    job = ex.admit("u1")
    with pytest.raises(ModelUnavailable, match="MUSIC_MODEL"):
        await ex.compose(job, MusicRequest("piano", seconds=1, seed=1))
    job.finish("failed")


def test_wav_and_ogg_opus_decode_back():
    t = np.arange(int(SECONDS * MUSIC_SAMPLE_RATE)) / MUSIC_SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    wav = encode_wav(tone, MUSIC_SAMPLE_RATE)
    back, rate = sf.read(io.BytesIO(wav), dtype="float32")
    assert rate == MUSIC_SAMPLE_RATE and back.shape == tone.shape
    assert np.abs(back - tone).max() < 1e-3  # 16-bit PCM

    ogg = encode_ogg_opus(tone, MUSIC_SAMPLE_RATE)
    assert ogg.startswith(b"OggS") and len(ogg) < len(wav) / 3  # 96 kbit/s vs 512 kbit/s PCM
    decoded, rate = sf.read(io.BytesIO(ogg), dtype="float32")  # libsndfile's own Opus decoder
    assert rate == 48_000 and decoded.ndim == 1
    assert len(decoded) / rate == pytest.approx(SECONDS, abs=0.03)
    ffprobe = shutil.which("ffprobe")
    if ffprobe:  # and what ffmpeg (like Discord's player) reads in it
        out = subprocess.run(
            [ffprobe, "-v", "error", "-show_entries", "stream=codec_name,sample_rate,channels", "-of", "csv=p=0", "-"],
            input=ogg,
            capture_output=True,
            text=False,
            timeout=30,
            check=True,
        ).stdout.decode()
        assert out.strip() == "opus,48000,1"
    # The tone survives: its spectrum peaks at 440 Hz.
    spectrum = np.abs(np.fft.rfft(decoded[4800:-4800]))
    peak_hz = np.argmax(spectrum) * rate / len(decoded[4800:-4800])
    assert abs(peak_hz - 440) < 5


async def test_music_and_image_jobs_share_the_queue_fairly(music_executor):
    """A user's music job takes its turn in the per-user round robin like a picture: it neither
    jumps the queue nor lets one user's pictures starve another's."""
    ex = await music_executor(DYNAMIC_BATCHING=False, MAX_JOBS_PER_USER=2)
    gate = GpuGate()
    held = await gate.hold(ex)
    order: list[str] = []

    def track(name: str):
        def listener(event: ProgressEvent) -> None:
            if event.stage in ("music", "render") and name not in order:
                order.append(name)

        return listener

    a_music, a_image = ex.admit("alice"), ex.admit("alice")
    b_image1, b_image2 = ex.admit("bob"), ex.admit("bob")
    for job, name in ((a_music, "alice-music"), (a_image, "alice-image"), (b_image1, "bob-1"), (b_image2, "bob-2")):
        job.listener = track(name)
    render = RenderRequest(prompt="a red apple", steps=2, width=64, height=64, seed=1)
    tasks = [
        asyncio.create_task(ex.compose(a_music, MusicRequest("warm jazz", seconds=1, seed=3))),
        asyncio.create_task(ex.render(a_image, render)),
        asyncio.create_task(ex.render(b_image1, render)),
        asyncio.create_task(ex.render(b_image2, render)),
    ]
    await asyncio.sleep(0.05)
    assert [ex.position_of(j) for j in (a_music, b_image1, a_image, b_image2)] == [1, 2, 3, 4]
    gate.release.set()
    await held
    results = await asyncio.gather(*tasks)
    for job in (a_music, a_image, b_image1, b_image2):
        job.finish()
    assert order == ["alice-music", "bob-1", "alice-image", "bob-2"]
    assert results[0].duration_s == pytest.approx(1.0)
    assert results[1].image.size == (64, 64)
    assert ex.metrics().running_jobs == 0


async def test_pictures_run_between_the_steps_of_a_long_piece(music_executor):
    """A 30 s piece does not hold a picture back: the picture, submitted while the piece composes,
    runs between two decoder steps and is done long before the piece; the piece is the same as one
    composed alone (renders draw from their own generators, never MusicGen's)."""
    ex = await music_executor(DYNAMIC_BATCHING=False)
    alone_job = ex.admit("carol")
    alone = await ex.compose(alone_job, MusicRequest("slow strings", seconds=limits.MAX_MUSIC_SECONDS, seed=11))
    alone_job.finish()
    warm = ex.admit("bob")
    render = RenderRequest(prompt="a red apple", steps=2, width=64, height=64, seed=1)
    await ex.render(warm, render)  # the diffusion model is loaded
    warm.finish()

    composer, painter = ex.admit("alice"), ex.admit("bob")
    steps: list[int] = []
    started = asyncio.Event()

    def listener(event: ProgressEvent) -> None:
        if event.stage == "music" and event.total:
            steps.append(event.step)
            if event.step >= 20:
                started.set()

    composer.listener = listener
    piece = asyncio.create_task(
        ex.compose(composer, MusicRequest("slow strings", seconds=limits.MAX_MUSIC_SECONDS, seed=11))
    )
    await asyncio.wait_for(started.wait(), 60)
    image = await ex.render(painter, render)
    step_when_done = steps[-1]
    painter.finish()
    music = await piece
    composer.finish()

    total = ex.engine.composer.steps_for(limits.MAX_MUSIC_SECONDS)
    assert image.image.size == (64, 64)
    assert step_when_done < total - 100, "the picture finished while the piece was still composing"
    assert np.array_equal(music.samples, alone.samples)
    assert music.tokens == total
