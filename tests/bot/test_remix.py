"""Remix against the fake Discord (issue #13): the button opens a modal (callback type 9) prefilled
from the job; submitting it (INTERACTION type 5) starts a new job with the edited text."""

from __future__ import annotations

import pytest

from devkit.helpers import footer_job
from pipeline.studio import Result

from .test_bot import delivered_record, imagine, wait_result

pytestmark = pytest.mark.timeout(180)


def modal_defaults(interaction) -> dict[str, str | None]:
    from devkit.discord.world import walk_components

    return {
        c["custom_id"]: c.get("value") for c in walk_components(interaction.modal["components"]) if "custom_id" in c
    }


async def test_remix_modal_prefilled_and_submitted_after_a_restart(start_bot, fake_discord, bot_settings):
    fake = fake_discord
    settings = bot_settings(QA_MAX_ROUNDS=0)
    first = await start_bot(settings)
    grid = await wait_result(
        fake, await imagine(fake, {"prompt": "a fox in the snow", "seed": 42, "count": 2, "negative_prompt": "dogs"})
    )
    job_id = footer_job(grid)
    parent = Result.model_validate_json((await first.bot.store.get(job_id)).result_json)
    await first.bot.close()
    harness = await start_bot(settings)  # the Remix button survives a restart

    opened = await fake.click_button(grid["id"], f"voxcanvas:remix:{job_id}", user=fake.other_user)
    await fake.wait_for_response(opened)
    assert opened.response_type == 9 and opened.ack_latency < 3.0
    defaults = modal_defaults(opened)
    best = parent.best
    assert defaults["prompt"] == (best.correction_prompt or best.prompt)
    assert defaults["negative"] == best.negative_prompt and "dogs" in defaults["negative"]
    assert defaults["seed"] == "42" and defaults["style"] == (parent.style or None)

    edited = "a red fox in deep snow, winter forest, soft light"
    submitted = await fake.submit_modal(opened, {"prompt": edited, "negative": "blur"}, user=fake.other_user)
    await fake.wait_for_response(submitted)
    assert submitted.response_type == 5 and submitted.ack_latency < 3.0
    message = await wait_result(fake, submitted)
    remix_id = footer_job(message)
    record = await delivered_record(harness, remix_id)
    assert record.parent_job_id == job_id and record.user_id == fake.other_user.id
    remixed = Result.model_validate_json(record.result_json)
    assert remixed.kind == "remix" and len(remixed.candidates) == 2
    assert remixed.rounds[0].prompt.startswith(edited) and remixed.rounds[0].negative_prompt == "blur"
    assert [c.seed for c in remixed.candidates] == [42, 43]  # same seed, as it was not changed

    # A bad seed is refused privately; nothing starts.
    opened = await fake.click_button(message["id"], f"voxcanvas:remix:{remix_id}")
    await fake.wait_for_response(opened)
    refused = await fake.submit_modal(opened, {"seed": "minus one"})
    await fake.wait_for_response(refused)
    assert refused.ephemeral and "seed must be a whole number" in refused.response_body["data"]["content"]
