"""The director writes the music prompt (local rule, Gemini through the real client against the
fake), a spoken or typed idea that asks for music goes straight to music, the studio composes a
picture's soundtrack, and the CLI writes music.wav."""

from __future__ import annotations

import io
import json

import pytest
import soundfile as sf

from pipeline.directors import GeminiDirector, LocalDirector, music_idea, music_prompt_for
from pipeline.executor import GPUExecutor
from pipeline.music import MUSIC_SAMPLE_RATE
from pipeline.studio import Idea, MusicOutput, Output, Studio

from .test_directors import make_director  # noqa: F401  (fixture)
from .test_studio import cli, cli_env  # noqa: F401  (helper and fixture)

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize(
    ("idea", "description"),
    [
        ("compose a calm seaside ambience", "a calm seaside ambience"),
        ("Please play some lofi beats for studying.", "lofi beats for studying"),
        ("could you write me a jazz tune", "a jazz tune"),
        ("Compose: rain on a tin roof", "rain on a tin roof"),
        ("a seaside at dusk", None),
        ("draw a piano in a forest", None),
        ("make a picture of a cat", None),
        ("a piano on a beach", None),
    ],
)
def test_music_ideas_are_told_from_pictures(idea, description):
    assert music_idea(idea) == description


def test_local_director_writes_a_music_prompt_from_the_scene():
    director = LocalDirector()
    storm = director.scene_for("a lighthouse on a stormy sea at night", style="cinematic")
    apple = director.scene_for("a red apple on a wooden table", style="oil painting")
    city = director.scene_for("a neon cyberpunk city street", style="pixel art")
    for scene in (storm, apple, city):
        assert scene.music_prompt == music_prompt_for(scene)  # deterministic, stored with the scene
        assert "bpm" in scene.music_prompt and len(scene.music_prompt) < 300
    assert "orchestral" in storm.music_prompt and "ocean waves" in storm.music_prompt
    assert "epic" in storm.music_prompt  # a storm drives the tempo up
    assert "chamber music" in apple.music_prompt and "cosy" in apple.music_prompt
    assert "chiptune" in city.music_prompt and "city hum" in city.music_prompt
    assert len({storm.music_prompt, apple.music_prompt, city.music_prompt}) == 3


async def test_gemini_writes_the_music_prompt_and_a_missing_one_is_filled(fake_gemini, make_director):  # noqa: F811
    director: GeminiDirector = make_director()
    scene = await director.direct("a red apple on a wooden table")
    assert scene.music_prompt == fake_gemini.default_scene["music_prompt"]
    assert "music_prompt" in fake_gemini.requests[0].response_schema["properties"]
    assert "music_prompt" in director.system_instruction

    del fake_gemini.default_scene["music_prompt"]  # an answer without one
    scene = await director.direct("a red apple on a wooden table")
    assert scene.music_prompt == music_prompt_for(scene)


@pytest.fixture
async def music_studio(make_settings, tiny_musicgen_dir):
    settings = make_settings(MUSIC_MODEL=str(tiny_musicgen_dir), MUSIC_SECONDS=2, STEPS=2)
    executor = GPUExecutor(settings, stage_timeout_s=120)
    await executor.start()
    studio = Studio(settings, executor)
    yield studio
    await studio.aclose()
    await executor.shutdown(timeout_s=10)


async def test_studio_picture_then_its_soundtrack_and_a_typed_music_idea(music_studio):
    studio = music_studio
    job = studio.executor.admit("u")
    picture = await studio.listen(job, Idea(text="a calm seaside at dusk", seed=1))
    assert isinstance(picture, Output)
    music = await studio.soundtrack(job, picture.result, seed=4)
    job.finish()
    assert music.result.kind == "soundtrack" and music.result.parent_job_id == picture.result.job_id
    assert music.result.music_prompt == picture.result.scene.music_prompt != ""
    assert music.result.director == "local" and music.result.duration_s == 2.0
    wav, rate = sf.read(io.BytesIO(music.wav))
    assert rate == MUSIC_SAMPLE_RATE and len(wav) == 2 * MUSIC_SAMPLE_RATE
    assert music.ogg is not None
    ogg, rate = sf.read(io.BytesIO(music.ogg))
    assert rate == 48_000 and len(ogg) / rate == pytest.approx(2.0, abs=0.03)

    job = studio.executor.admit("u")
    composed = await studio.listen(job, Idea(text="compose a calm seaside ambience", seed=4), music_seconds=1)
    job.finish()
    assert isinstance(composed, MusicOutput)
    assert composed.result.music_prompt == "a calm seaside ambience" and composed.result.director == "user"
    assert composed.result.duration_s == 1.0 and composed.result.kind == "compose"


async def test_cli_music_writes_music_wav(cli_env, tiny_musicgen_dir, tmp_path):  # noqa: F811
    env = {**cli_env, "MUSIC_MODEL": str(tiny_musicgen_dir)}
    args = ["--music", "a calm seaside ambience", "--seconds", "3", "--seed", "5", "--out", "out", "--quiet"]
    code, out, err = await cli(args, env, tmp_path)
    assert code == 0, err
    samples, rate = sf.read(tmp_path / "out" / "music.wav")
    assert rate == MUSIC_SAMPLE_RATE and len(samples) == 3 * MUSIC_SAMPLE_RATE
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["music_prompt"] == "a calm seaside ambience" and result["seed"] == 5
    assert result["duration_s"] == 3.0 and result["sample_rate"] == MUSIC_SAMPLE_RATE
    assert "music:" in out and "real time" in out
    assert not (tmp_path / "out" / "image.png").exists()

    code, _, err = await cli(["--music", "piano", "--seconds", "45", "--out", "bad"], env, tmp_path)
    assert code == 2 and "1 to 30 seconds" in err and "Traceback" not in err


async def test_cli_voice_note_with_soundtrack(cli_env, tiny_musicgen_dir, tmp_path):  # noqa: F811
    from devkit.voice import make_voice_note

    note = tmp_path / "note.ogg"
    make_voice_note("Please draw a red apple on a wooden table", note)
    env = {**cli_env, "MUSIC_MODEL": str(tiny_musicgen_dir)}
    code, out, err = await cli([str(note), "--soundtrack", "--seconds", "2", "--out", "out", "--quiet"], env, tmp_path)
    assert code == 0, err
    out_dir = tmp_path / "out"
    assert {p.name for p in out_dir.iterdir()} == {"image.png", "palette.png", "music.wav", "result.json"}
    result = json.loads((out_dir / "result.json").read_text())
    assert "apple" in result["transcript"].lower() and result["kind"] == "voice"
    assert result["soundtrack"]["music_prompt"] == result["scene"]["music_prompt"]
    assert result["soundtrack"]["parent_job_id"] == result["job_id"]
    info = sf.info(out_dir / "music.wav")
    assert info.samplerate == MUSIC_SAMPLE_RATE and info.frames == 2 * MUSIC_SAMPLE_RATE


async def test_a_spoken_music_idea_is_composed_not_drawn(
    make_settings, tiny_musicgen_dir, trained_whisper_dir, make_voice_note
):
    settings = make_settings(
        MUSIC_MODEL=str(tiny_musicgen_dir), WHISPER_MODEL=str(trained_whisper_dir), MUSIC_SECONDS=2
    )
    executor = GPUExecutor(settings, stage_timeout_s=120)
    await executor.start()
    studio = Studio(settings, executor)
    try:
        job = executor.admit("u")
        note = make_voice_note("Compose some calm piano music.")
        output = await studio.listen(job, Idea(audio=note, audio_filename="note.ogg", seed=3))
        job.finish()
    finally:
        await studio.aclose()
        await executor.shutdown(timeout_s=10)
    assert isinstance(output, MusicOutput), output.result.transcript
    assert output.result.kind == "voice" and "compose" in (output.result.transcript or "").lower()
    assert "piano" in output.result.music_prompt and output.result.duration_s == 2.0
