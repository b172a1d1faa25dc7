"""Buttons whose restart case no other test covers (issue #13): Details, Regenerate and Delete on a
post made by a previous process — state comes from the store, never from memory. (U/V: see
test_candidates; Remix: test_remix; Imagine n: test_describe.)"""

from __future__ import annotations

import pytest

from devkit.helpers import custom_ids, footer_job

from .test_bot import imagine, wait_result

pytestmark = pytest.mark.timeout(240)


async def test_details_regenerate_and_delete_after_a_restart(start_bot, fake_discord, bot_settings):
    fake = fake_discord
    settings = bot_settings(QA_MAX_ROUNDS=0)
    first = await start_bot(settings)
    posted = await wait_result(fake, await imagine(fake, {"prompt": "a red apple on a wooden table", "count": 2}))
    job_id = footer_job(posted)
    ids = custom_ids(posted)
    assert {f"voxcanvas:details:{job_id}", f"voxcanvas:regen:{job_id}", f"voxcanvas:delete:{job_id}"} <= set(ids)
    await first.bot.close()

    harness = await start_bot(settings)  # a new process
    store = harness.bot.store

    details = await fake.click_button(posted["id"], f"voxcanvas:details:{job_id}")
    await fake.wait_for_response(details)
    assert details.ack_latency < 3.0 and details.response_type in (4, 5)

    regen = await fake.click_button(posted["id"], f"voxcanvas:regen:{job_id}")
    await fake.wait_for_response(regen)
    assert regen.response_type == 5 and regen.ack_latency < 3.0
    regenerated = await wait_result(fake, regen)
    regen_id = footer_job(regenerated)
    assert regen_id != job_id and (await store.get(regen_id)).parent_job_id == job_id

    # Someone else may not delete it, after a restart as before; the owner may.
    refused = await fake.click_button(posted["id"], f"voxcanvas:delete:{job_id}", user=fake.other_user)
    await fake.wait_for_response(refused)
    assert refused.ephemeral and "Only the person who asked" in refused.response_body["data"]["content"]
    job_dir = store.job_dir(job_id)
    assert job_dir.exists() and await store.get(job_id) is not None
    delete = await fake.click_button(posted["id"], f"voxcanvas:delete:{job_id}")
    await fake.wait_for_response(delete)
    assert delete.ack_latency < 3.0
    await fake.wait_until(lambda: int(posted["id"]) not in fake.world.messages or None, 10, "the post deleted")
    await fake.wait_until(lambda: fake.followups(delete) or None, 10, "the confirmation")
    assert "Deleted" in fake.followups(delete)[0]["content"]
    assert await store.get(job_id) is None and not job_dir.exists()
