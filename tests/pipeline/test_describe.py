"""/describe in the pipeline (issue #13): the local BLIP captioner (a tiny random one, loaded with
the product's own from_pretrained path) and Gemini (the fake, the real client)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from devkit.gemini import Status
from pipeline.errors import BadRequest
from tests.pipeline import test_studio

pytestmark = pytest.mark.timeout(120)

make_studio = test_studio.make_studio  # the studio fixture, shared


def png(colour=(200, 30, 30), size=(80, 60)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, colour)
    image.paste((20, 20, 200), (0, 0, size[0] // 2, size[1]))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def test_describe_locally_with_the_captioner(make_studio, tiny_blip_dir):
    studio = await make_studio(CAPTION_MODEL=str(tiny_blip_dir))
    described = await studio.describe(png(), 3)
    assert described.source == "local" and described.fallback is None
    assert 1 <= len(described.prompts) <= 3 and len(set(described.prompts)) == len(described.prompts)
    assert all(isinstance(p, str) and p.strip() for p in described.prompts)
    assert 2 <= len(described.palette) <= 5 and all(c.startswith("#") and len(c) == 7 for c in described.palette)
    again = await studio.describe(png(), 3)
    assert again.prompts == described.prompts  # beam search: deterministic


async def test_describe_refuses_what_is_not_an_image(make_studio, tiny_blip_dir):
    studio = await make_studio(CAPTION_MODEL=str(tiny_blip_dir))
    with pytest.raises(BadRequest):
        await studio.describe(b"GIF89a not really", 2)
    with pytest.raises(BadRequest):
        await studio.describe(png(), 5)


async def test_describe_with_gemini_and_its_fallback(
    make_studio, gemini_settings, tiny_sd_dir, tiny_clip_dir, tiny_blip_dir, fake_gemini
):
    settings = test_studio.gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir, CAPTION_MODEL=str(tiny_blip_dir))
    studio = await make_studio(settings)
    described = await studio.describe(png(), 2)
    assert described.source == "gemini"
    assert described.prompts == fake_gemini.default_description["prompts"]
    (request,) = fake_gemini.requests_for("describe")
    assert len(request.images) == 1 and "2 different prompts" in request.text

    fake_gemini.script("describe", *[Status(500)] * 5)
    fallback = await studio.describe(png(), 2)
    assert fallback.source == "local" and fallback.fallback and fallback.prompts
