"""Time to first sign of life (issue #19): with an empty queue, the first progress edit of an
/imagine answer reaches Discord within a second of the command, and shows the stage the job is in."""

from __future__ import annotations

from bot.progress import FIRST_PROGRESS_DELAY_S

STAGES = ("Directing", "Rendering", "Reviewing")


async def test_first_progress_edit_within_a_second_with_an_empty_queue(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0, STEPS=100, WIDTH=256, HEIGHT=256)  # seconds of rendering
    await harness.bot.executor.warm_up(whisper=False, clip=True)  # as the bot does after connecting
    fake = fake_discord
    interaction = await fake.slash_command("imagine", {"prompt": "a lighthouse at dusk"})

    def first_edit():
        for call in fake.calls:
            if call.method == "PATCH" and interaction.token in call.path and call.path.endswith("/@original"):
                return call
        return None

    edit = await fake.wait_until(first_edit, 30, "the first edit of the response", poll=0.005)
    assert interaction.ack_latency is not None and interaction.ack_latency < 3.0
    content = (edit.json or {}).get("content") or ""
    assert any(stage in content for stage in STAGES), content  # a stage, not "queued", not the result
    assert not edit.files
    # The first edit waits FIRST_PROGRESS_DELAY_S (1.0 s before issue #19: never within a second).
    assert edit.at - interaction.created_at < 1.0
    assert edit.at - interaction.created_at >= FIRST_PROGRESS_DELAY_S
