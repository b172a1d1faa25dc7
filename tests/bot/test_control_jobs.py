"""The ControlNet source image is a job input (issue #18): stored with the job as
``control-input.png``, so Regenerate / Vary / V / Remix render with the same control, and a canny
job that was queued when the bot process was SIGKILLed completes after the restart with it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import sqlite3
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from devkit import builders
from devkit.helpers import footer_job
from pipeline.studio import Result

from .test_bot import delivered_record, imagine, wait_result
from .test_reliability import bot_env, processes, results_by_job, start_process  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tiny_controlnet(tiny_sd_dir, tmp_path_factory):
    return builders.build_tiny_controlnet(tiny_sd_dir, tmp_path_factory.mktemp("controlnet") / "net")


def edges_png(seed: int = 0) -> bytes:
    image = Image.new("RGB", (64, 64), (10, 10, 10))
    ImageDraw.Draw(image).ellipse((8 + seed, 12, 52, 52 - seed), fill=(250, 250, 250))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def assert_controlled(store, job_id: str, source: bytes, *, strength: float = 0.7) -> Result:
    """The job was rendered with the canny control at ``strength`` from ``source``, kept as its input."""
    result = Result.model_validate_json((await store.get(job_id)).result_json)
    assert all((r.control, r.control_strength) == ("canny", strength) for r in result.rounds), result.rounds
    assert await store.read_control_input(job_id) == source
    control = await store.read_control(job_id)  # the edge map computed from it (a result)
    assert control is not None and control != source
    assert Image.open(io.BytesIO(control)).size == (result.best.width, result.best.height)
    return result


async def test_regenerate_vary_v_and_remix_keep_the_control(start_bot, fake_discord, tiny_controlnet):
    harness = await start_bot(QA_MAX_ROUNDS=0, CONTROLNET_MODELS=f"canny={tiny_controlnet}")
    fake, store = fake_discord, harness.bot.store
    source = edges_png()
    interaction = await fake.slash_command(
        "imagine",
        {"prompt": "a glowing moon over the sea", "control": "canny", "control_strength": 0.7, "count": 2},
        attachments={"control_image": ("edges.png", source, "image/png")},
    )
    grid = await wait_result(fake, interaction)
    job_id = footer_job(grid)
    await assert_controlled(store, job_id, source)
    assert (await store.get(job_id)).idea["has_control_image"] is True

    for custom_id, kind in (
        (f"voxcanvas:regen:{job_id}", "regenerate"),
        (f"voxcanvas:var:{job_id}:2", "vary"),
    ):
        click = await fake.click_button(grid["id"], custom_id)
        await fake.wait_for_response(click)
        assert click.response_type == 5 and click.ack_latency < 3.0
        child_id = footer_job(await wait_result(fake, click))
        record = await delivered_record(harness, child_id)
        assert record.parent_job_id == job_id and record.idea["control"] == "canny"
        result = await assert_controlled(store, child_id, source)
        assert result.kind == kind

    opened = await fake.click_button(grid["id"], f"voxcanvas:remix:{job_id}")
    await fake.wait_for_response(opened)
    submitted = await fake.submit_modal(opened, {"prompt": "a glowing moon over a calm lake"})
    await fake.wait_for_response(submitted)
    assert submitted.response_type == 5 and submitted.ack_latency < 3.0
    remix_id = footer_job(await wait_result(fake, submitted))
    await delivered_record(harness, remix_id)
    remixed = await assert_controlled(store, remix_id, source)
    assert remixed.kind == "remix" and remixed.rounds[0].prompt.startswith("a glowing moon over a calm lake")

    # a plain job keeps no control input, and its Regenerate stays plain
    plain = await wait_result(fake, await imagine(fake, {"prompt": "a plain lighthouse"}))
    plain_id = footer_job(plain)
    assert await store.read_control_input(plain_id) is None
    click = await fake.click_button(plain["id"], f"voxcanvas:regen:{plain_id}")
    await fake.wait_for_response(click)
    child_id = footer_job(await wait_result(fake, click))
    result = Result.model_validate_json((await delivered_record(harness, child_id)).result_json)
    assert result.best.control is None and await store.read_control(child_id) is None


async def test_sigkill_then_restart_completes_queued_canny_jobs_with_their_control(
    bot_env,  # noqa: F811
    fake_discord,
    tmp_path,
    processes,  # noqa: F811
    tiny_controlnet,
):
    fake = fake_discord
    bot_env = {**bot_env, "CONTROLNET_MODELS": f"canny={tiny_controlnet}"}
    first = await start_process(bot_env, fake, tmp_path, processes, "first")
    sources = [edges_png(i) for i in range(4)]
    interactions = []
    for i, source in enumerate(sources):
        interaction = await fake.slash_command(
            "imagine",
            {"prompt": f"a lighthouse number {i}", "seed": i, "control": "canny", "control_strength": 0.7},
            attachments={"control_image": (f"edges{i}.png", source, "image/png")},
        )
        interactions.append(interaction)
    for interaction in interactions:
        await fake.wait_for_response(interaction)
        assert interaction.response_type == 5 and interaction.ack_latency < 3.0

    await fake.wait_until(lambda: results_by_job(fake) or None, 120, "the first result", poll=0.02)
    first.proc.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    delivered_before = set(results_by_job(fake))
    assert 1 <= len(delivered_before) < 4, "the kill came too late to leave jobs behind"

    await start_process(bot_env, fake, tmp_path, processes, "second")
    await fake.wait_until(lambda: len(results_by_job(fake)) >= 4 or None, 180, "all four results", poll=0.05)
    await asyncio.sleep(0.5)
    by_job = results_by_job(fake)
    assert len(by_job) == 4 and all(len(messages) == 1 for messages in by_job.values())

    # Read the store beside the running bot, as an operator would.
    with contextlib.closing(sqlite3.connect(Path(bot_env["DATA_DIR"]) / "voxcanvas.db")) as db:
        rows = {row[0]: row[1:] for row in db.execute("SELECT id, idea, result_json FROM jobs")}
    assert set(by_job) - delivered_before, "no job was left for the second process"
    data = Path(bot_env["DATA_DIR"]) / "jobs"
    for job_id in by_job:
        idea, result_json = json.loads(rows[job_id][0]), Result.model_validate_json(rows[job_id][1])
        assert idea["has_control_image"] and (result_json.best.control, result_json.best.control_strength) == (
            "canny",
            0.7,
        )
        number = int(idea["text"].rsplit(" ", 1)[1])
        assert (data / job_id / "control-input.png").read_bytes() == sources[number]
        assert (data / job_id / "control.png").exists()  # rendered with its control, after the restart too
