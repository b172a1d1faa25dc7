"""The self-correcting loop with the real google-genai client against the fake Gemini, the tiny
diffusion model and the tiny CLIP, through the real GPU executor; and the CLI end to end."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from devkit.gemini import FAST_RETRY, Delay, Raw, Status
from pipeline.executor import GPUExecutor
from pipeline.studio import Idea, Provenance, Result, Studio
from tests.pipeline.scenes import scene_data

pytestmark = pytest.mark.timeout(120)

IDEA = "Please draw a red apple on a wooden table"


@pytest.fixture
async def make_studio(make_settings):
    made: list[tuple[Studio, GPUExecutor]] = []

    async def factory(settings=None, **overrides) -> Studio:
        settings = settings or make_settings(**overrides)
        executor = GPUExecutor(settings, stage_timeout_s=60)
        await executor.start()
        studio = Studio(settings, executor)
        for provider in (studio.gemini_director, studio.gemini_critic):
            if provider is not None:
                provider.retry = FAST_RETRY
        made.append((studio, executor))
        return studio

    yield factory
    for studio, executor in made:
        await studio.aclose()
        await executor.shutdown(timeout_s=10)


def gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir, **overrides):
    values = dict(DIFFUSION_MODEL=str(tiny_sd_dir), CLIP_MODEL=str(tiny_clip_dir), WIDTH=64, HEIGHT=64, STEPS=4)
    values.update(overrides)
    return gemini_settings(**values)


async def run(studio: Studio, idea: Idea | str, user: str = "u"):
    job = studio.executor.admit(user)
    try:
        return await studio.run(job, Idea(text=idea) if isinstance(idea, str) else idea)
    finally:
        job.finish()


async def test_low_score_reruns_once_with_the_correction(
    make_studio, gemini_settings, tiny_sd_dir, tiny_clip_dir, fake_gemini
):
    correction = "prominent wooden table, wooden table clearly visible, a red apple on a wooden table"
    fake_gemini.script(
        "critic",
        {
            "alignment_score": 40,
            "missing_elements": ["wooden table"],
            "correction_prompt": correction,
            "notes": "no table",
        },
        {"alignment_score": 92, "missing_elements": [], "correction_prompt": "", "notes": "good"},
    )
    studio = await make_studio(gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir))
    output = await run(studio, IDEA)
    result = output.result

    assert result.director == "gemini" and result.critic == "gemini"
    assert result.director_fallback is None and result.critic_fallback is None
    assert [r.score for r in result.rounds] == [40, 92]
    first, second = result.rounds
    assert second.prompt == correction
    assert (first.guidance, second.guidance) == (7.5, 9.0)
    assert (first.steps, second.steps) == (4, 9)
    assert first.seed != second.seed
    assert first.missing_elements == ["wooden table"]
    assert result.best_round == 1 and result.score == 92 and result.corrected
    assert Image.open(io.BytesIO(output.image_png)).size == (64, 64)

    director_calls = fake_gemini.requests_for("director")
    critic_calls = fake_gemini.requests_for("critic")
    assert len(director_calls) == 1 and len(critic_calls) == 2
    assert director_calls[0].response_mime_type == "application/json"
    assert director_calls[0].response_schema is not None
    assert IDEA in director_calls[0].text
    ((mime, png),) = critic_calls[0].images
    assert mime == "image/png" and Image.open(io.BytesIO(png)).size == (64, 64)
    assert critic_calls[0].response_schema is not None
    assert {"timings", "rounds"} <= set(json.loads(result.model_dump_json()))
    assert set(result.timings) >= {"direct", "render", "review"}


async def test_the_best_round_is_kept_not_the_last(
    make_studio, gemini_settings, tiny_sd_dir, tiny_clip_dir, fake_gemini
):
    fake_gemini.script(
        "critic",
        {"alignment_score": 70, "missing_elements": [], "correction_prompt": "a red apple, close-up", "notes": ""},
        {"alignment_score": 50, "missing_elements": ["apple"], "correction_prompt": "an apple", "notes": ""},
    )
    studio = await make_studio(gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir))
    result = (await run(studio, IDEA)).result
    assert [r.score for r in result.rounds] == [70, 50]
    assert result.best_round == 0 and result.score == 70 and not result.corrected


async def test_retries_429_and_503_then_success(make_studio, gemini_settings, tiny_sd_dir, tiny_clip_dir, fake_gemini):
    fake_gemini.script("director", Status(429, "slow down"), Status(503, "busy"))
    studio = await make_studio(gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir))
    result = (await run(studio, IDEA)).result
    assert result.director == "gemini" and result.director_fallback is None
    assert len(fake_gemini.requests_for("director")) == 3


@pytest.mark.parametrize(
    "entry, reason",
    [
        (Status(500, "internal"), "500"),
        (Delay(3.0, None), "within"),
        (Raw("I think the picture should be lovely!"), "JSON"),
        ({"title": "only a title"}, ""),
    ],
    ids=["always-500", "timeout", "not-json", "wrong-schema"],
)
async def test_gemini_failures_fall_back_to_local_and_the_job_completes(
    make_studio, gemini_settings, tiny_sd_dir, tiny_clip_dir, fake_gemini, entry, reason
):
    fake_gemini.always("director", entry)
    fake_gemini.always("critic", entry)
    studio = await make_studio(
        gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir, GEMINI_TIMEOUT_S=0.5, GEMINI_RETRIES=1)
    )
    started = asyncio.get_running_loop().time()
    output = await run(studio, IDEA)
    result = output.result
    assert result.director == "local" and result.critic == "local"
    assert result.director_fallback and reason.lower() in result.director_fallback.lower()
    assert result.critic_fallback
    assert 0 <= result.score <= 100 and output.image_png.startswith(b"\x89PNG")
    assert "apple" in result.scene.diffusion_prompt
    assert asyncio.get_running_loop().time() - started < 30


async def test_no_key_runs_fully_locally(make_studio):
    studio = await make_studio(STEPS=4, QA_MAX_ROUNDS=1)
    assert studio.gemini_director is None and studio.gemini_critic is None
    output = await run(studio, Idea(text="a lighthouse in a storm, watercolor", seed=5))
    result = output.result
    assert (result.director, result.critic) == ("local", "local")
    assert result.style == "watercolour" or result.scene.style == "watercolour"
    assert result.rounds[0].seed == 5
    for r in result.rounds:
        assert isinstance(r.score, int) and 0 <= r.score <= 100
    if result.rounds[0].score < 85:
        assert len(result.rounds) == 2 and result.rounds[1].guidance == 9.0
    else:
        assert len(result.rounds) == 1
    # No colour named: the palette comes from the picture itself.
    assert result.palette_source == "image" and 1 <= len(result.palette) <= 5


async def test_regenerate_uses_the_last_correction_new_seed_more_guidance(
    make_studio, gemini_settings, tiny_sd_dir, tiny_clip_dir, fake_gemini
):
    fake_gemini.script(
        "critic",
        {
            "alignment_score": 60,
            "missing_elements": ["table"],
            "correction_prompt": "apple on a big table",
            "notes": "",
        },
        {
            "alignment_score": 70,
            "missing_elements": ["table"],
            "correction_prompt": "apple on a huge wooden table",
            "notes": "",
        },
        {"alignment_score": 95, "missing_elements": [], "correction_prompt": "", "notes": ""},
    )
    studio = await make_studio(gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir))
    first = (await run(studio, IDEA)).result
    assert first.rounds[-1].correction_prompt == "apple on a huge wooden table"
    job = studio.executor.admit("u")
    again = (await studio.regenerate(job, first)).result
    job.finish()
    assert again.kind == "regenerate" and again.parent_job_id == first.job_id
    assert again.rounds[0].prompt == "apple on a huge wooden table"
    assert again.rounds[0].guidance == first.rounds[-1].guidance + 1.5 == 10.5
    assert again.rounds[0].seed not in {r.seed for r in first.rounds}
    assert again.score == 95 and len(again.rounds) == 1


async def test_empty_idea_is_refused(make_studio):
    from pipeline.errors import BadRequest

    studio = await make_studio()
    with pytest.raises(BadRequest):
        await run(studio, "   ")


# ------------------------------------------------------------------------------------------------
# The CLI, as a user runs it
# ------------------------------------------------------------------------------------------------
async def cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        *args,
        cwd=cwd,
        env={**os.environ, **env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def cli_env(tiny_sd_dir, tiny_clip_dir, trained_whisper_dir, tmp_path):
    return {
        "DIFFUSION_MODEL": str(tiny_sd_dir),
        "CLIP_MODEL": str(tiny_clip_dir),
        "WHISPER_MODEL": str(trained_whisper_dir),
        "WIDTH": "64",
        "HEIGHT": "64",
        "STEPS": "4",
        "DEVICE": "cpu",
        "GEMINI_API_KEY": "",
        "DATA_DIR": str(tmp_path / "data"),
    }


async def test_cli_voice_note_end_to_end(cli_env, tmp_path):
    from devkit.voice import make_voice_note

    note = tmp_path / "note.ogg"
    make_voice_note(IDEA, note)
    code, out, err = await cli([str(note), "--out", "out", "--quiet"], cli_env, tmp_path)
    assert code == 0, err
    out_dir = tmp_path / "out"
    assert Image.open(out_dir / "image.png").size == (64, 64)
    assert Image.open(out_dir / "palette.png").width > 0
    result = json.loads((out_dir / "result.json").read_text())
    assert "apple" in result["transcript"].lower() and result["language"] == "en"
    assert result["rounds"] and {"prompt", "seed", "steps", "guidance", "score"} <= set(result["rounds"][0])
    assert {"transcribe", "direct", "render", "review"} <= set(result["timings"])
    assert "score:" in out and "rounds:" in out and "director:  local" in out


async def test_cli_text_with_fake_gemini(cli_env, tmp_path, fake_gemini):
    env = {**cli_env, "GEMINI_API_KEY": "test-key", "GOOGLE_GEMINI_BASE_URL": fake_gemini.url}
    code, out, err = await cli(["--text", "a red apple", "--out", "out", "--seed", "3"], env, tmp_path)
    assert code == 0, err
    assert "director:  gemini" in out and "critic:    gemini" in out and "92/100" in out
    assert "Rendering" in err or "Directing" in err  # the progress display
    assert len(fake_gemini.requests_for("director")) == 1


async def test_cli_bad_input_one_line_error(cli_env, tmp_path):
    junk = tmp_path / "notes.ogg"
    junk.write_text("definitely not audio\n" * 100)
    code, out, err = await cli([str(junk), "--out", "out"], cli_env, tmp_path)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "out").exists()

    code, _, err = await cli(
        ["--text", "x", "--out", "out"], {**cli_env, "DIFFUSION_MODEL": str(tmp_path / "nope")}, tmp_path
    )
    assert code == 3 and "DIFFUSION_MODEL" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# Provenance: where an idea came from, carried into follow-ups; Result's JSON keeps its flat shape
# ------------------------------------------------------------------------------------------------
RESULT_KEYS = {
    "job_id", "kind", "parent_job_id", "idea", "transcript", "language", "translated", "audio_seconds", "style",
    "scene", "palette", "palette_source", "tags", "rounds", "best_round", "threshold", "director",
    "director_fallback", "critic", "critic_fallback", "timings", "total_s", "candidates", "best_candidate",
    "flagged_kept",
}  # fmt: skip


def voice_result() -> Result:
    """A finished voice-note job as the store keeps it: flat JSON."""
    return Result.model_validate(
        {
            "job_id": "parent123456",
            "kind": "voice",
            "idea": "Bitte zeichne einen roten Apfel",
            "transcript": "Please draw a red apple",
            "language": "de",
            "translated": True,
            "audio_seconds": 2.5,
            "style": "oil painting",
            "scene": scene_data(),
            "palette": ["#C0392B"],
            "palette_source": "director",
            "tags": ["apple"],
            "rounds": [
                {
                    "index": 0,
                    "prompt": "a red apple",
                    "negative_prompt": "",
                    "seed": 1,
                    "guidance": 7.5,
                    "steps": 4,
                    "width": 64,
                    "height": 64,
                    "prompt_tokens": 3,
                    "prompt_chunks": 1,
                    "score": 70,
                }
            ],
            "best_round": 0,
            "threshold": 85,
            "director": "gemini",
            "critic": "local",
        }
    )


def test_result_json_keeps_its_flat_shape_and_reads_back():
    result = voice_result()
    data = json.loads(result.model_dump_json())
    assert set(data) == RESULT_KEYS
    assert data["transcript"] == "Please draw a red apple" and data["scene"]["title"] == "A red apple"
    assert Result.model_validate_json(result.model_dump_json()) == result


def test_a_follow_up_carries_the_parents_provenance_with_its_own_kind_and_parent():
    parent = voice_result()
    follow_up = parent.follow_up("vary", parent_job_id=parent.job_id)
    assert type(follow_up) is Provenance
    assert (follow_up.kind, follow_up.parent_job_id) == ("vary", "parent123456")
    unchanged = set(Provenance.model_fields) - {"kind", "parent_job_id"}
    assert {name: getattr(follow_up, name) for name in unchanged} == {name: getattr(parent, name) for name in unchanged}
    assert (parent.kind, parent.parent_job_id) == ("voice", None)  # the parent itself is untouched


async def test_turbo_model_correction_adds_a_step_not_guidance(
    make_studio, gemini_settings, tiny_sdxl_turbo_dir, tiny_clip_dir, fake_gemini
):
    """Issue #12: the correction round follows the family — a few-step model at guidance 0 gets
    one more step and stays at guidance 0; its native size and defaults need no setting; the
    director is told the family (sentences, no negative prompt)."""
    fake_gemini.script(
        "critic",
        {"alignment_score": 30, "missing_elements": ["table"], "correction_prompt": "a red apple", "notes": "x"},
        {"alignment_score": 95, "missing_elements": [], "correction_prompt": "", "notes": "good"},
    )
    settings = gemini_settings(DIFFUSION_MODEL=str(tiny_sdxl_turbo_dir), CLIP_MODEL=str(tiny_clip_dir))
    studio = await make_studio(settings)
    await studio.executor.warm_up(whisper=False, clip=False)  # loaded: the director knows the family
    result = (await run(studio, IDEA)).result
    first, second = result.rounds
    assert (first.steps, first.guidance, first.width, first.height) == (4, 0.0, 64, 64)
    assert (second.steps, second.guidance) == (5, 0.0)
    assert first.family == "sdxl-few-step" and first.negative_prompt == ""
    asked = json.dumps(fake_gemini.requests_for("director")[0].body)
    assert "SDXL (few-step)" in asked and "natural English sentences" in asked
    judged = json.dumps(fake_gemini.requests_for("critic")[0].body)
    assert "write correction_prompt as one to three natural English sentences" in judged


async def test_cli_aspect_model_and_lora(cli_env, tmp_path, tiny_sd_dir, tiny_lora_dir):
    """Issue #12: ``--aspect``, ``--model`` and ``--lora name:weight`` reach the picture; with
    WIDTH/HEIGHT empty the size comes from the model (16:9 of its native 64 px budget)."""
    env = {**cli_env, "WIDTH": "", "HEIGHT": "", "MODELS": f"tiny={tiny_sd_dir}", "LORA_DIR": str(tiny_lora_dir)}
    args = ["--text", "a red apple", "--aspect", "16:9", "--model", "tiny", "--lora", "tiny-style:0.5"]
    code, out, err = await cli([*args, "--out", "out", "--quiet"], env, tmp_path)
    assert code == 0, err
    assert Image.open(tmp_path / "out" / "image.png").size == (88, 64)
    best = json.loads((tmp_path / "out" / "result.json").read_text())["rounds"][0]
    assert (best["model"], best["loras"], best["family"]) == ("tiny", [["tiny-style", 0.5]], "sd")
    assert "size 88x64" in out and "model:     tiny (sd)" in out
    code, _, err = await cli(["--text", "a red apple", "--lora", "nope", "--out", "o2", "--quiet"], env, tmp_path)
    assert code == 2 and "no LoRA called 'nope'" in err
