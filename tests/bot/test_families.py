"""Issue #12 end to end against the fake Discord: ``/imagine aspect:16:9``, ``model:`` and
``lora:`` (with autocomplete), the size, model and LoRA shown in the result and Details, and
Regenerate/Vary staying on the job's model and LoRA."""

from __future__ import annotations

import pytest

from devkit.helpers import footer_job
from pipeline.studio import Result

from .test_bot import field, imagine, wait_result

pytestmark = pytest.mark.timeout(180)


async def test_imagine_aspect_model_and_lora(start_bot, fake_discord, tiny_sd_dir, tiny_lora_dir):
    harness = await start_bot(
        QA_MAX_ROUNDS=0, WIDTH=None, HEIGHT=None, MODELS=f"tiny={tiny_sd_dir};steps=3", LORA_DIR=str(tiny_lora_dir)
    )
    fake = fake_discord
    assert [c["value"] for c in await fake.autocomplete("imagine", {"prompt": "x", "model": "ti"}, "model")] == ["tiny"]
    assert [c["value"] for c in await fake.autocomplete("imagine", {"prompt": "x", "lora": ""}, "lora")] == [
        "tiny-style"
    ]

    interaction = await imagine(
        fake,
        {"prompt": "a lighthouse at dusk", "aspect": "16:9", "model": "tiny", "lora": "tiny-style", "weight": 0.5},
    )
    message = await wait_result(fake, interaction)
    assert interaction.ack_latency < 3.0
    job_id = footer_job(message)
    result = Result.model_validate_json((await harness.bot.store.get(job_id)).result_json)
    best = result.best
    assert (best.width, best.height) == (88, 64)  # 16:9 at the tiny model's native 64x64 budget
    assert (best.model, best.family, best.steps) == ("tiny", "sd", 3)  # the model's own default steps
    assert best.loras == [("tiny-style", 0.5)]
    settings = field(message, "Settings") or ""
    assert "88×64" in settings and "tiny" in settings and "tiny-style:0.5" in settings

    click = await fake.click_button(message["id"], f"voxcanvas:vary:{job_id}")
    varied = Result.model_validate_json(
        (await harness.bot.store.get(footer_job(await wait_result(fake, click)))).result_json
    )
    assert (varied.best.model, varied.best.loras, varied.best.width) == ("tiny", [("tiny-style", 0.5)], 88)

    click = await fake.click_button(message["id"], f"voxcanvas:details:{job_id}")
    await fake.wait_for_response(click)
    body = click.response_body["data"]["content"]
    assert "**Model:** tiny (sd)" in body and "88×64" in body


async def test_unknown_model_or_lora_is_refused_in_words(start_bot, fake_discord):
    await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    for options, words in (({"model": "nope"}, "no model called 'nope'"), ({"lora": "nope"}, "no LoRA called")):
        interaction = await imagine(fake, {"prompt": "a cat", **options})
        await fake.wait_for_response(interaction)
        assert interaction.ephemeral and words in interaction.response_body["data"]["content"]
