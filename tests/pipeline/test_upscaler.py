"""UPSCALER_MODEL: a tiny random Stable Diffusion x4 upscaler loaded through the product's own
from_pretrained code, tiled on the input (tile count, ×4 size, determinism), a load failure that
names the setting, and the studio's U path with it set (×2 result, refined in tiles, recorded)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ModelUnavailable
from pipeline.studio import Idea
from pipeline.upscaler import Upscaler
from tests.pipeline import test_studio

make_studio = test_studio.make_studio  # the studio fixture, shared

pytestmark = pytest.mark.timeout(300)


def noise(side: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "RGB")


def test_x4_upscaler_tiles_the_input_and_is_deterministic(tiny_upscaler_dir):
    upscaler = Upscaler(str(tiny_upscaler_dir), "cpu", tile=24)
    assert upscaler.scale == 4
    picture = noise(32)
    first, tiles = upscaler.upscale(picture, prompt="a red apple", seed=5, steps=2)
    assert first.size == (128, 128)
    assert tiles == 4  # 32 px in tiles of 24 overlapping by 8: 2 × 2
    again, _ = upscaler.upscale(picture, prompt="a red apple", seed=5, steps=2)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    png, scale, count = upscaler.upscale_png(
        _png(picture), (64, 64), prompt="a red apple", negative_prompt="", seed=5, steps=2
    )
    assert scale == 4 and count == 4 and Image.open(io.BytesIO(png)).size == (64, 64)


def test_a_wrong_upscaler_names_the_setting(tiny_sd_dir):
    with pytest.raises(ModelUnavailable, match="UPSCALER_MODEL"):
        Upscaler(str(tiny_sd_dir), "cpu").load()  # a text-to-image model is not an upscaler


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


async def test_u_button_with_upscaler_model_doubles_the_size_in_tiles(make_studio, tiny_upscaler_dir):
    studio = await make_studio(STEPS=2, QA_MAX_ROUNDS=0, UPSCALER_MODEL=str(tiny_upscaler_dir))
    job = studio.executor.admit("u")
    try:
        parent = await studio.run(job, Idea(text="a red apple on a wooden table", seed=21))
    finally:
        job.finish()
    up_job = studio.executor.admit("u")
    try:
        output = await studio.upscale(up_job, parent.result, init_image=parent.image_png, candidate=None)
    finally:
        up_job.finish()
    assert Image.open(io.BytesIO(output.image_png)).size == (128, 128)
    round_ = output.result.rounds[0]
    assert output.result.kind == "upscale" and round_.mode == "img2img"
    assert round_.upscaler == "x4 in 1 tile"  # the 64 px picture fits one 128 px upscaler tile
    assert round_.tiles == 9  # then refined in 3 × 3 tiles of the tiny model's native 64 px
