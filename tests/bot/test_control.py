"""``/imagine control:`` against the fake Discord (issue #18): a canny control from an attached
control image and a palette control from the director's palette, rendered through a tiny random
ControlNet; the control image is stored with the job and shown (attached) in Details; bad
control options are refused privately before anything is queued."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from devkit import builders
from devkit.helpers import footer_job
from pipeline.studio import Result

from .test_bot import imagine, wait_result

pytestmark = pytest.mark.timeout(240)

CALLBACK = "POST /interactions/{interaction_id}/{token}/callback"


@pytest.fixture(scope="module")
def tiny_controlnet(tiny_sd_dir, tmp_path_factory):
    return builders.build_tiny_controlnet(tiny_sd_dir, tmp_path_factory.mktemp("controlnet") / "net")


def square_png() -> bytes:
    image = Image.new("RGB", (64, 64), (10, 10, 10))
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=(250, 250, 250))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def test_canny_and_palette_controls_end_to_end_with_details(start_bot, fake_discord, tiny_controlnet):
    harness = await start_bot(QA_MAX_ROUNDS=0, CONTROLNET_MODELS=f"canny={tiny_controlnet}, palette={tiny_controlnet}")
    fake = fake_discord
    interaction = await fake.slash_command(
        "imagine",
        {"prompt": "a glowing moon over the sea", "control": "canny", "control_strength": 0.7},
        attachments={"control_image": ("edges.png", square_png(), "image/png")},
    )
    message = await wait_result(fake, interaction)
    assert interaction.response_type == 5
    job_id = footer_job(message)
    result = Result.model_validate_json((await harness.bot.store.get(job_id)).result_json)
    assert (result.best.control, result.best.control_strength) == ("canny", 0.7)
    control = await harness.bot.store.read_control(job_id)
    assert control is not None and Image.open(io.BytesIO(control)).size == (result.best.width, result.best.height)

    click = await fake.click_button(message["id"], f"voxcanvas:details:{job_id}")
    await fake.wait_for_response(click)
    assert click.ephemeral and click.ack_latency < 3.0
    assert "**Control:** canny at strength 0.7" in click.response_body["data"]["content"]
    (callback,) = fake.find_calls(route=CALLBACK, predicate=lambda c: c.params["interaction_id"] == str(click.id))
    assert [f.filename for f in callback.files] == ["control.png"] and callback.files[0].data == control

    # palette: no image needed, the colours come from the director's palette ("red and blue")
    message = await wait_result(fake, await imagine(fake, {"prompt": "a red and blue kite", "control": "palette"}))
    job_id = footer_job(message)
    result = Result.model_validate_json((await harness.bot.store.get(job_id)).result_json)
    assert result.best.control == "palette"
    band = Image.open(io.BytesIO(await harness.bot.store.read_control(job_id))).convert("RGB").getpixel((2, 2))
    assert band[0] > 150 and band[2] < 100  # the first band is the palette's red (#D62828)

    # a plain picture has no control image and no Control line
    message = await wait_result(fake, await imagine(fake, {"prompt": "a plain lighthouse"}))
    assert await harness.bot.store.read_control(footer_job(message)) is None


@pytest.mark.parametrize(
    "options, words",
    [
        ({"control": "canny"}, "needs an image"),
        ({"control": "depth"}, "no depth control here (canny)"),
        ({"style": "vaporwave"}, "Unknown style 'vaporwave'"),
    ],
)
async def test_bad_control_and_style_options_are_refused_privately(
    start_bot, fake_discord, tiny_controlnet, options, words
):
    await start_bot(QA_MAX_ROUNDS=0, CONTROLNET_MODELS=f"canny={tiny_controlnet}")
    fake = fake_discord
    interaction = await imagine(fake, {"prompt": "a cat", **options})
    await fake.wait_for_response(interaction)
    assert interaction.response_type == 4 and interaction.ephemeral
    assert words in interaction.response_body["data"]["content"]


async def test_style_autocomplete_offers_styles_from_the_file(start_bot, fake_discord, tmp_path):
    extra = tmp_path / "styles.toml"
    extra.write_text(
        '[[style]]\nname = "vaporwave"\ndescription = "80s neon nostalgia"\nmedium = "vaporwave artwork"\n'
        'modifiers = ["neon grid"]\nlighting = "neon glow"\ncomposition = "centered"\nquality = ["detailed"]\n'
        'negative_keywords = ["photo"]\npalette = ["#FF71CE", "#01CDFE", "#05FFA1"]\n',
        encoding="utf-8",
    )
    harness = await start_bot(QA_MAX_ROUNDS=0, STYLES_FILE=str(extra))
    fake = fake_discord
    choices = await fake.autocomplete("imagine", {"prompt": "x", "style": "vapor"}, "style")
    assert [c["value"] for c in choices] == ["vaporwave"]
    choices = await fake.autocomplete("imagine", {"prompt": "x", "style": "neon"}, "style")
    assert "vaporwave" in [c["value"] for c in choices]
    message = await wait_result(fake, await imagine(fake, {"prompt": "a palm tree", "style": "vaporwave"}))
    result = Result.model_validate_json((await harness.bot.store.get(footer_job(message))).result_json)
    assert result.scene.style == "vaporwave" and "vaporwave artwork" in result.best.prompt
