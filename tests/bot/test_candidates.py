"""/imagine count: against the fake Discord (issue #13): one grid of candidates, every score in the
embed with the best marked, each candidate and the grid stored with the job."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot import render
from devkit.helpers import footer_job
from pipeline.executor import ProgressEvent
from pipeline.grid import GAP
from pipeline.studio import Result

from .test_bot import delivered_record, field, imagine, wait_result

pytestmark = pytest.mark.timeout(180)


def uploaded(fake, name: str) -> bytes:
    upload = [c for c in fake.calls if c.files and any(f.filename == name for f in c.files)][-1]
    return next(f.data for f in upload.files if f.filename == name)


async def test_imagine_four_candidates_grid_scores_and_best(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    (command,) = [c for c in fake.commands(fake.guild.id) if c["name"] == "imagine"]
    (count,) = [o for o in command["options"] if o["name"] == "count"]
    assert (count["min_value"], count["max_value"]) == (1, 4)

    interaction = await imagine(fake, {"prompt": "a red apple on a wooden table", "seed": 500, "count": 4})
    assert interaction.response_type == 5 and interaction.ack_latency < 3.0
    message = await wait_result(fake, interaction)
    job_id = footer_job(message)
    record = await delivered_record(harness, job_id)
    result = Result.model_validate_json(record.result_json)

    assert [c.seed for c in result.candidates] == [500, 501, 502, 503]
    scores = [c.score for c in result.candidates]
    best = result.best_candidate
    assert scores[best] == max(scores) and result.rounds[0].seed == 500 + best

    # The picture shown is the 2×2 grid of the four 64² candidates, as stored.
    grid = uploaded(fake, "image.png")
    assert Image.open(io.BytesIO(grid)).size == (128 + GAP, 128 + GAP)
    assert await harness.bot.store.read_grid(job_id) == grid
    for n in range(4):
        picture = await harness.bot.store.read_candidate(job_id, n)
        assert Image.open(io.BytesIO(picture)).size == (64, 64)
    assert await harness.bot.store.read_candidate(job_id, best) == await harness.bot.store.read_image(job_id)

    # The embed lists each candidate's score and marks the best.
    listed = field(message, "Candidates")
    assert listed is not None
    for n, score in enumerate(scores, start=1):
        assert f"{n} · {score}" in listed
    assert f"**{best + 1} · {scores[best]} ★**" in listed and listed.count("★") == 1


async def test_one_candidate_job_keeps_its_single_picture(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    message = await wait_result(fake, await imagine(fake, {"prompt": "a lighthouse at dusk", "seed": 3}))
    job_id = footer_job(message)
    assert Image.open(io.BytesIO(uploaded(fake, "image.png"))).size == (64, 64)
    assert field(message, "Candidates") is None
    assert await harness.bot.store.read_grid(job_id) is None
    assert await harness.bot.store.read_candidate(job_id, 0) == await harness.bot.store.read_image(job_id)


def test_progress_lines_name_the_candidates():
    rendering = render.progress_line(ProgressEvent("j", "render", 12, 25), candidates=4)
    assert "Rendering 4 candidates" in rendering and rendering.endswith("12/25")
    assert render.progress_line(ProgressEvent("j", "review", 0, 4), candidates=4) == "🔍 Reviewing 4 candidates…"
    # The executor's own review event (no total) says the same while candidates are reviewed.
    assert "4 candidates" in render.progress_line(ProgressEvent("j", "review"), candidates=4)
    # A correction round renders one picture; one candidate reads as before.
    assert "Correcting" in render.progress_line(ProgressEvent("j", "render", 3, 9), corrections=1, candidates=4)
    assert render.progress_line(ProgressEvent("j", "render", 1, 2)).startswith("🎨 Rendering █")
