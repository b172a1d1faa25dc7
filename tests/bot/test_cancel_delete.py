"""Cancel (owner only, while a job waits or renders) and Delete (owner, or Manage Messages) against
the fake Discord (issue #13)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from devkit.discord.protocol import DEFAULT_PERMISSIONS
from devkit.helpers import custom_ids, footer_job
from pipeline.executor import ProgressEvent

from .test_bot import imagine, wait_result

pytestmark = pytest.mark.timeout(180)

MANAGE_MESSAGES = 1 << 13


def job_of(harness, interaction) -> str:
    (job_id,) = [j.id for j in harness.bot.executor.jobs_of(interaction.user_id)]
    return job_id


async def with_cancel(fake, interaction, job_id: str) -> dict:
    """The job's progress message once it carries the Cancel button."""

    def shown():
        message = fake.original_response(interaction)
        return message if message and f"voxcanvas:cancel:{job_id}" in custom_ids(message) else None

    return await fake.wait_until(shown, 20, "the Cancel button", poll=0.02)


async def cancelled(fake, interaction) -> dict:
    def said():
        message = fake.original_response(interaction)
        return message if message and message["content"] == "🛑 Cancelled." else None

    return await fake.wait_until(said, 20, "the Cancelled message", poll=0.02)


async def test_cancel_a_queued_job_leaves_the_queue_at_once(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    executor = harness.bot.executor
    gate = threading.Event()
    holding = asyncio.create_task(executor.call(None, "tool", gate.wait, 30))  # the model thread is busy
    try:
        await asyncio.sleep(0.05)
        interaction = await imagine(fake, {"prompt": "a windmill in a tulip field"})
        job_id = job_of(harness, interaction)
        await fake.wait_until(lambda: executor.metrics().pending_items or None, 10, "the render queued", poll=0.02)
        progress = await with_cancel(fake, interaction, job_id)

        # Not the owner: refused privately, the job goes on.
        click = await fake.click_button(progress["id"], f"voxcanvas:cancel:{job_id}", user=fake.other_user)
        await fake.wait_for_response(click)
        assert click.ephemeral and "Only the person who asked" in click.response_body["data"]["content"]
        assert executor.get_job(job_id) is not None and not executor.get_job(job_id).cancelled

        click = await fake.click_button(progress["id"], f"voxcanvas:cancel:{job_id}")
        await fake.wait_for_response(click)
        assert click.ack_latency < 3.0 and click.ephemeral
        assert executor.metrics().pending_items == 0  # out of the queue at once, while the thread is still busy
        message = await cancelled(fake, interaction)
        assert custom_ids(message) == []
        assert not gate.is_set()
        record = await harness.bot.store.get(job_id)
        assert record.state == "cancelled"
    finally:
        gate.set()
        await holding


async def test_cancel_a_running_render_stops_at_its_next_step(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0, STEPS=100, WIDTH=256, HEIGHT=256)  # seconds of rendering
    fake = fake_discord
    interaction = await imagine(fake, {"prompt": "a lighthouse on a cliff"})
    job_id = job_of(harness, interaction)
    job = harness.bot.executor.get_job(job_id)
    progress = await with_cancel(fake, interaction, job_id)  # the runner's progress listener is in place
    steps: list[int] = []
    shown = job.listener

    def listener(event: ProgressEvent) -> None:
        if event.stage == "render":
            steps.append(event.step)
        shown(event)

    job.listener = listener
    await fake.wait_until(lambda: (steps and steps[-1] >= 2) or None, 60, "the render running", poll=0.02)
    click = await fake.click_button(progress["id"], f"voxcanvas:cancel:{job_id}")
    await fake.wait_for_response(click)
    assert click.ack_latency < 3.0
    message = await cancelled(fake, interaction)
    assert custom_ids(message) == []
    assert max(steps) < 100  # stopped at a step boundary, long before the end
    assert (await harness.bot.store.get(job_id)).state == "cancelled"


async def test_delete_by_owner_and_by_a_moderator_refused_for_others(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    store = harness.bot.store
    first = await wait_result(fake, await imagine(fake, {"prompt": "a red apple", "count": 2}))
    second = await wait_result(fake, await imagine(fake, {"prompt": "a green pear"}))
    first_id, second_id = footer_job(first), footer_job(second)
    assert f"voxcanvas:delete:{first_id}" in custom_ids(first)
    first_dir = store.job_dir(first_id)
    assert (first_dir / "grid.png").exists()

    # Someone else, without Manage Messages: refused, nothing removed.
    click = await fake.click_button(first["id"], f"voxcanvas:delete:{first_id}", user=fake.other_user)
    await fake.wait_for_response(click)
    assert click.ephemeral and "Only the person who asked" in click.response_body["data"]["content"]
    assert fake.get_message(first["id"]) and await store.get(first_id) is not None

    # The owner: the post, the files and the record go.
    click = await fake.click_button(first["id"], f"voxcanvas:delete:{first_id}")
    await fake.wait_for_response(click)
    assert click.ack_latency < 3.0 and click.ephemeral
    await fake.wait_until(lambda: int(first["id"]) not in fake.world.messages or None, 10, "the post deleted")
    await fake.wait_until(lambda: fake.followups(click) or None, 10, "the confirmation")
    assert "Deleted" in fake.followups(click)[0]["content"]
    assert await store.get(first_id) is None and not first_dir.exists()

    # A moderator (Manage Messages) may delete someone else's picture.
    click = await fake.click_button(
        second["id"],
        f"voxcanvas:delete:{second_id}",
        user=fake.other_user,
        member_permissions=DEFAULT_PERMISSIONS | MANAGE_MESSAGES,
    )
    await fake.wait_for_response(click)
    await fake.wait_until(lambda: int(second["id"]) not in fake.world.messages or None, 10, "the post deleted")
    await fake.wait_until(lambda: fake.followups(click) or None, 10, "the confirmation")
    assert await store.get(second_id) is None and not store.job_dir(second_id).exists()
