"""/imagine count: against the fake Discord (issue #13): one grid of candidates, every score in the
embed with the best marked, each candidate and the grid stored with the job."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot import render
from devkit.helpers import custom_ids, footer_job
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


def picture_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


async def test_u_and_v_buttons_work_after_a_restart(start_bot, fake_discord, bot_settings):
    """grid → (restart) → U3 upscales candidate 3 ×2 (Vary, Details under it) → V2 varies
    candidate 2 into a new grid; every press acknowledged within 3 s."""
    fake = fake_discord
    settings = bot_settings(QA_MAX_ROUNDS=0)
    first = await start_bot(settings)
    grid = await wait_result(fake, await imagine(fake, {"prompt": "a castle on a hill at night", "count": 4}))
    job_id = footer_job(grid)
    assert custom_ids(grid) == [
        *(f"voxcanvas:up:{job_id}:{n}" for n in range(1, 5)),
        *(f"voxcanvas:var:{job_id}:{n}" for n in range(1, 5)),
        f"voxcanvas:regen:{job_id}",
        f"voxcanvas:remix:{job_id}",
        f"voxcanvas:music:{job_id}",
        f"voxcanvas:details:{job_id}",
        f"voxcanvas:delete:{job_id}",
    ]
    assert [len(row["components"]) for row in grid["components"]] == [4, 4, 5]
    parent = Result.model_validate_json((await first.bot.store.get(job_id)).result_json)
    third = await first.bot.store.read_candidate(job_id, 2)
    second_candidate = await first.bot.store.read_candidate(job_id, 1)
    await first.bot.close()

    harness = await start_bot(settings)  # a new process: state comes from the store
    click = await fake.click_button(grid["id"], f"voxcanvas:up:{job_id}:3", user=fake.other_user)
    await fake.wait_for_response(click)
    assert click.response_type == 5 and click.ack_latency < 3.0
    upscaled_message = await wait_result(fake, click)
    up_id = footer_job(upscaled_message)
    record = await delivered_record(harness, up_id)
    assert record.parent_job_id == job_id and record.user_id == fake.other_user.id
    assert await harness.bot.store.read_init_image(up_id) == third  # started from candidate 3
    upscaled = Result.model_validate_json(record.result_json)
    assert upscaled.kind == "upscale" and len(upscaled.rounds) == 1 and upscaled.candidates == []
    round_ = upscaled.rounds[0]
    assert (round_.width, round_.height) == (128, 128) and round_.mode == "img2img" and round_.strength == 0.3
    assert round_.seed == parent.candidates[2].seed and round_.prompt == parent.rounds[0].prompt
    assert picture_size(uploaded(fake, "image.png")) == (128, 128)  # the hires fix doubled the size
    assert picture_size(await harness.bot.store.read_image(up_id)) == (128, 128)
    assert custom_ids(upscaled_message) == [
        f"voxcanvas:vary:{up_id}",
        f"voxcanvas:details:{up_id}",
        f"voxcanvas:delete:{up_id}",
    ]

    click = await fake.click_button(grid["id"], f"voxcanvas:var:{job_id}:2")
    await fake.wait_for_response(click)
    assert click.response_type == 5 and click.ack_latency < 3.0
    varied_message = await wait_result(fake, click)
    var_id = footer_job(varied_message)
    varied = Result.model_validate_json((await delivered_record(harness, var_id)).result_json)
    assert varied.kind == "vary" and varied.parent_job_id == job_id
    assert await harness.bot.store.read_init_image(var_id) == second_candidate
    assert len(varied.candidates) == 4 and varied.rounds[0].mode == "img2img" and varied.rounds[0].strength == 0.6
    assert varied.rounds[0].prompt == parent.rounds[0].prompt
    assert picture_size(uploaded(fake, "image.png")) == (128 + GAP, 128 + GAP)  # a new grid of four
    assert f"voxcanvas:up:{var_id}:4" in custom_ids(varied_message)


async def test_single_candidate_upscale_button_and_the_size_limit(start_bot, fake_discord):
    await start_bot(QA_MAX_ROUNDS=0, WIDTH=1536, HEIGHT=64, STEPS=2)
    fake = fake_discord
    message = await wait_result(fake, await imagine(fake, {"prompt": "a long thin banner of waves"}))
    job_id = footer_job(message)
    assert custom_ids(message) == [
        f"voxcanvas:regen:{job_id}",
        f"voxcanvas:vary:{job_id}",
        f"voxcanvas:up:{job_id}:1",
        f"voxcanvas:remix:{job_id}",
        f"voxcanvas:music:{job_id}",
        f"voxcanvas:details:{job_id}",
        f"voxcanvas:delete:{job_id}",
    ]
    assert [c.get("label") for row in message["components"] for c in row["components"]][2] == "Upscale"
    # 1536 wide: ×2 would pass MAX_SIDE (2048): refused in words, after the acknowledgement.
    click = await fake.click_button(message["id"], f"voxcanvas:up:{job_id}:1")
    await fake.wait_for_response(click)
    assert click.response_type == 5 and click.ack_latency < 3.0
    refused = await wait_result(fake, click)
    assert refused["content"].startswith("⚠️") and "can't upscale it further" in refused["content"]
