"""/describe against the fake Discord (issue #13): an attached image → numbered prompts, the
palette, and "Imagine n" buttons that start a job from suggestion n (also after a restart)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from cogs.describe import NO_IMAGE
from devkit.helpers import custom_ids, footer_job
from pipeline.studio import Result

from .test_bot import delivered_record, wait_result

pytestmark = pytest.mark.timeout(180)


def png() -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (96, 64), (200, 30, 30))
    image.paste((30, 60, 200), (0, 0, 48, 64))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def described(fake, interaction) -> dict:
    def answered():
        message = fake.original_response(interaction)
        return (
            message if message and (message.get("embeds") or (message.get("content") or "").startswith("⚠️")) else None
        )

    return await fake.wait_until(answered, 60, "the description", poll=0.05)


async def test_describe_then_imagine_a_suggestion_after_a_restart(start_bot, fake_discord, bot_settings, tiny_blip_dir):
    fake = fake_discord
    settings = bot_settings(QA_MAX_ROUNDS=0, CAPTION_MODEL=str(tiny_blip_dir))
    first = await start_bot(settings)
    commands = {(c["name"], c.get("type", 1)) for c in fake.commands(fake.guild.id)}
    assert ("describe", 1) in commands and ("Describe image", 3) in commands  # the message context menu

    interaction = await fake.slash_command(
        "describe", {"count": 3}, attachments={"image": ("photo.png", png(), "image/png")}
    )
    await fake.wait_for_response(interaction)
    assert interaction.response_type == 5 and interaction.ack_latency < 3.0
    message = await described(fake, interaction)
    fields = {f["name"]: f["value"] for f in message["embeds"][0]["fields"]}
    numbered = [fields[str(n)] for n in range(1, 4) if str(n) in fields]
    assert 1 <= len(numbered) <= 3 and all(p.strip() for p in numbered)
    assert fields["Palette"].count("#") >= 2
    assert [a["filename"] for a in message["attachments"]] == ["palette.png"]
    assert custom_ids(message) == [f"voxcanvas:suggest:{n}" for n in range(1, len(numbered) + 1)]
    await first.bot.close()

    harness = await start_bot(settings)
    click = await fake.click_button(message["id"], f"voxcanvas:suggest:{len(numbered)}", user=fake.other_user)
    await fake.wait_for_response(click)
    assert click.response_type == 5 and click.ack_latency < 3.0
    result_message = await wait_result(fake, click)
    record = await delivered_record(harness, footer_job(result_message))
    assert record.user_id == fake.other_user.id and record.idea["text"] == numbered[-1]
    assert Result.model_validate_json(record.result_json).kind == "text"


async def test_describe_refuses_a_non_image(start_bot, fake_discord, tiny_blip_dir):
    await start_bot(CAPTION_MODEL=str(tiny_blip_dir))
    fake = fake_discord
    interaction = await fake.slash_command("describe", attachments={"image": ("notes.txt", b"hello", "text/plain")})
    await fake.wait_for_response(interaction)
    assert interaction.ephemeral and "PNG, JPEG or WebP" in interaction.response_body["data"]["content"]


async def test_describe_with_gemini(start_bot, fake_discord, bot_settings, fake_gemini, tiny_blip_dir):
    settings = bot_settings(
        QA_MAX_ROUNDS=0,
        CAPTION_MODEL=str(tiny_blip_dir),
        GEMINI_API_KEY="fake-key",
        GOOGLE_GEMINI_BASE_URL=fake_gemini.url,
        GEMINI_RETRIES=0,
    )
    await start_bot(settings)
    fake = fake_discord
    interaction = await fake.slash_command(
        "describe", {"count": 2}, attachments={"image": ("photo.png", png(), "image/png")}
    )
    message = await described(fake, interaction)
    fields = {f["name"]: f["value"] for f in message["embeds"][0]["fields"]}
    assert [fields["1"], fields["2"]] == fake_gemini.default_description["prompts"]
    assert "Gemini" in message["embeds"][0]["footer"]["text"]


async def test_describe_image_message_menu(start_bot, fake_discord, tiny_blip_dir):
    """The message context menu "Describe image": a command interaction of type 3 whose
    ``target_id`` names the message and ``resolved.messages`` carries it, as Discord sends it."""
    await start_bot(QA_MAX_ROUNDS=0, CAPTION_MODEL=str(tiny_blip_dir))
    fake = fake_discord
    posted = await fake.send_message(
        content="look at this",
        author=fake.other_user,
        attachments=[{"filename": "holiday.png", "data": png(), "content_type": "image/png"}],
    )
    interaction = await fake.message_command("Describe image", posted["id"])
    assert interaction.payload["data"]["type"] == 3 and interaction.payload["data"]["target_id"] == str(posted["id"])
    await fake.wait_for_response(interaction)
    assert interaction.response_type == 5 and interaction.ack_latency < 3.0
    message = await described(fake, interaction)
    fields = {f["name"]: f["value"] for f in message["embeds"][0]["fields"]}
    numbered = [fields[str(n)] for n in range(1, 5) if str(n) in fields]
    assert 1 <= len(numbered) <= 4 and all(p.strip() for p in numbered)  # count: the default, up to 4
    assert fields["Palette"].count("#") >= 2
    assert custom_ids(message) == [f"voxcanvas:suggest:{n}" for n in range(1, len(numbered) + 1)]

    # A message with no picture: a private, friendly refusal, nothing downloaded.
    text_only = await fake.send_message(content="just words")
    refused = await fake.message_command("Describe image", text_only["id"])
    await fake.wait_for_response(refused)
    assert refused.response_type == 4 and refused.ephemeral
    assert refused.response_body["data"]["content"] == NO_IMAGE
