"""Issue #18 end to end against the fake Discord: /imagine with RENDER_BACKEND=a1111 pointing at
the fake A1111 — progress from the backend in the Discord message ("Rendering 12/20"), the CLIP
critic and the correction round on top, the backend named in the reply, Vary on the same backend;
and a backend that is down, with a fallback configured, named in the reply."""

from __future__ import annotations

import re

import pytest

from devkit.backends import FakeA1111, FakeComfyUI
from devkit.helpers import footer_job
from pipeline.studio import Result

from .test_bot import field, imagine, wait_result

pytestmark = pytest.mark.timeout(180)


async def test_imagine_on_a1111_with_critic_correction_and_progress(start_bot, fake_discord):
    async with FakeA1111(step_s=0.15) as a1111:
        harness = await start_bot(
            RENDER_BACKEND="a1111", A1111_URL=a1111.url, STEPS=20, QA_THRESHOLD=100, QA_MAX_ROUNDS=1
        )
        fake = fake_discord
        interaction = await imagine(fake, {"prompt": "a lighthouse at dusk"})
        assert interaction.ack_latency < 3.0

        def rendering() -> str | None:
            content = (fake.original_response(interaction) or {}).get("content") or ""
            return content if re.search(r"Rendering [█░]+ ([1-9][0-9]*)/20", content) else None

        line = await fake.wait_until(rendering, 20, "backend progress in the message", poll=0.02)
        message = await wait_result(fake, interaction)
        job_id = footer_job(message)
        result = Result.model_validate_json((await harness.bot.store.get(job_id)).result_json)
        assert len(result.rounds) == 2 and all(r.backend == "a1111" for r in result.rounds)
        assert [p["steps"] for p in a1111.payloads] == [20, 25]  # the correction round's bump
        assert "rendered on A1111/Forge" in (field(message, "Settings") or "")
        assert not harness.bot.executor.engine.models.resident  # the GPU thread loaded no diffusion model
        assert line.startswith("🎨")

        click = await fake.click_button(message["id"], f"voxcanvas:vary:{job_id}")
        varied = await wait_result(fake, click)
        assert footer_job(varied) and len(a1111.payloads) >= 3


async def test_backend_down_moves_to_the_fallback_and_says_so(start_bot, fake_discord):
    async with FakeA1111() as down, FakeComfyUI() as spare:
        down.fail("/", 503, times=1000)
        await start_bot(
            RENDER_BACKEND="a1111",
            A1111_URL=down.url,
            RENDER_FALLBACK="comfyui",
            COMFYUI_URL=spare.url,
            REMOTE_RETRIES=1,
            QA_MAX_ROUNDS=0,
        )
        interaction = await imagine(fake_discord, {"prompt": "a windmill"})
        message = await wait_result(fake_discord, interaction)
        assert "rendered on ComfyUI — A1111/Forge was unavailable" in (field(message, "Settings") or "")
        assert spare.renders_finished == 1


async def test_backend_down_without_fallback_is_a_clear_message(start_bot, fake_discord):
    async with FakeA1111() as down:
        down.fail("/", 502, times=1000)
        await start_bot(RENDER_BACKEND="a1111", A1111_URL=down.url, REMOTE_RETRIES=0, QA_MAX_ROUNDS=0)
        interaction = await imagine(fake_discord, {"prompt": "a windmill"})
        message = await wait_result(fake_discord, interaction)
        assert "A1111/Forge renderer is unavailable" in (message.get("content") or ""), message.get("content")


async def test_imagine_with_a_canny_control_on_a1111(start_bot, fake_discord):
    """ControlNet on a remote backend (#18 item 3): the edges are made here and sent to the
    extension's unit with the configured model; the result records the control like a local one."""
    from tests.bot.test_control import square_png

    async with FakeA1111(step_s=0.01) as a1111:
        harness = await start_bot(RENDER_BACKEND="a1111", A1111_URL=a1111.url, QA_MAX_ROUNDS=0)
        fake = fake_discord
        interaction = await fake.slash_command(
            "imagine",
            {"prompt": "a red kite", "control": "canny", "control_strength": 0.7},
            attachments={"control_image": ("edges.png", square_png(), "image/png")},
        )
        message = await wait_result(fake, interaction)
        job_id = footer_job(message)
        result = Result.model_validate_json((await harness.bot.store.get(job_id)).result_json)
        assert result.best.backend == "a1111" and (result.best.control, result.best.control_strength) == ("canny", 0.7)
        (unit,) = a1111.payloads[0]["alwayson_scripts"]["controlnet"]["args"]
        assert unit["model"] == "control_v11p_sd15_canny" and unit["module"] == "none" and unit["weight"] == 0.7
        assert a1111.controlnet_images[0].size == (result.best.width, result.best.height)
        assert await harness.bot.store.read_control(job_id) is not None  # shown in Details


async def test_four_candidates_on_a1111_are_one_batched_request(start_bot, fake_discord):
    async with FakeA1111(step_s=0.01) as a1111:
        harness = await start_bot(
            RENDER_BACKEND="a1111", A1111_URL=a1111.url, STEPS=4, QA_MAX_ROUNDS=0, WIDTH=64, HEIGHT=64
        )
        interaction = await imagine(fake_discord, {"prompt": "a red apple", "seed": 700, "count": 4})
        assert interaction.ack_latency < 3.0
        message = await wait_result(fake_discord, interaction)
        job_id = footer_job(message)
        result = Result.model_validate_json((await harness.bot.store.get(job_id)).result_json)
        assert [(p["batch_size"], p["seed"]) for p in a1111.payloads] == [(4, 700)]
        assert [c.seed for c in result.candidates] == [700, 701, 702, 703]
        assert field(message, "Candidates") is not None
