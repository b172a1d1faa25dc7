"""``/imagine image:`` against the fake Discord: acknowledged before the start image is fetched from
the CDN, and a start image that can't be used refused in words after the acknowledgement."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from devkit.helpers import footer_job
from pipeline.studio import Result
from tests.pipeline.test_images import png_bomb

from .test_bot import wait_result

pytestmark = pytest.mark.timeout(180)

CALLBACK = "POST /interactions/{interaction_id}/{token}/callback"


def png(size: tuple[int, int] = (80, 48), colour: tuple[int, int, int] = (200, 30, 30), format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=format)
    return buffer.getvalue()


def attachment_url(interaction) -> str:
    (attachment,) = interaction.payload["data"]["resolved"]["attachments"].values()
    return attachment["url"]


async def refusal(fake, interaction) -> str:
    """The text the deferred ("thinking…") response was edited to."""

    def refused():
        message = fake.original_response(interaction)
        return message["content"] if message and (message.get("content") or "").startswith("🚫") else None

    return await fake.wait_until(refused, 10, "the refusal", poll=0.05)


async def test_imagine_image_is_acknowledged_before_the_image_is_downloaded(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    interaction = await fake.slash_command(
        "imagine",
        {"prompt": "make it a sunset", "strength": 0.5},
        attachments={"image": ("sketch.png", png(), "image/png")},
    )
    message = await wait_result(fake, interaction)
    assert interaction.response_type == 5  # deferred: "thinking…"
    (callback,) = fake.find_calls(route=CALLBACK, predicate=lambda c: c.params["interaction_id"] == str(interaction.id))
    url = attachment_url(interaction)
    (download,) = [c for c in fake.downloads if url.endswith(c.path)]
    assert callback.index < download.index and callback.at <= download.at
    result = Result.model_validate_json((await harness.bot.store.get(footer_job(message))).result_json)
    assert result.rounds[0].mode == "img2img"
    assert await harness.bot.store.read_init_image(result.job_id) == png()


async def test_unusable_start_images_are_refused_after_the_acknowledgement(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0, MAX_JOBS_PER_USER=1)
    fake = fake_discord
    tiff_named_png = png(format="TIFF")
    bomb = png_bomb(13000, 13000)  # 0.49 MB on the wire, 0.5 GB decoded
    cases = [
        (("photo.png", tiff_named_png, "image/png"), "isn't an image I can read (PNG, JPEG or WebP)"),
        (("huge.png", bomb, "image/png"), "too large"),
        (
            {
                "filename": "gone.png",
                "data": png(),
                "content_type": "image/png",
                "url": f"{fake.base_url}/attachments/1/2/gone.png",
            },
            "couldn't download that image",
        ),
    ]
    for spec, expected in cases:
        interaction = await fake.slash_command("imagine", {"prompt": "x"}, attachments={"image": spec})
        text = await refusal(fake, interaction)
        assert interaction.response_type == 5 and interaction.ack_latency < 3.0
        assert expected in text, text
    # Nothing was queued or stored, and the user's one slot is free again.
    assert harness.bot.executor.jobs_of(fake.user.id) == []
    assert await harness.bot.store.history(fake.user.id, limit=10) == []
    interaction = await fake.slash_command(
        "imagine", {"prompt": "a sunset", "strength": 0.5}, attachments={"image": ("ok.png", png(), "image/png")}
    )
    message = await wait_result(fake, interaction)
    assert footer_job(message)
