"""The tiled hires fix: the tile layout, the feathered canvas, and a tiled image-to-image pass of
the tiny Stable Diffusion model (right size, deterministic, more than one tile, every UNet call
no larger than one tile)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import BadRequest
from pipeline.settings import Settings
from pipeline.synthesis import RenderRequest, Synthesizer
from pipeline.tiling import Box, Canvas, overlap_for, tile_boxes


@pytest.mark.parametrize(
    ("width", "height", "tile", "per_row", "rows"),
    [
        (512, 512, 512, 1, 1),
        (1024, 1024, 512, 3, 3),
        (1024, 512, 512, 3, 1),
        (2048, 1536, 1024, 3, 2),
        (128, 128, 64, 3, 3),
    ],
)
def test_boxes_cover_the_picture_with_overlap_and_tile_sized(width, height, tile, per_row, rows):
    boxes = tile_boxes(width, height, tile)
    assert len(boxes) == per_row * rows
    covered = np.zeros((height, width), dtype=bool)
    for box in boxes:
        assert box.size == (min(tile, width), min(tile, height))  # never more than a tile: bounded memory
        assert box.left % 8 == 0 and box.top % 8 == 0
        covered[box.top : box.bottom, box.left : box.right] = True
    assert covered.all()
    lefts = sorted({b.left for b in boxes})
    for a, b in zip(lefts, lefts[1:], strict=False):
        assert tile - (b - a) >= overlap_for(tile) - 8  # neighbours overlap (feathered seams)


def test_bad_tilings_are_refused():
    with pytest.raises(ValueError):
        tile_boxes(128, 128, 0)
    with pytest.raises(ValueError):
        tile_boxes(128, 128, 64, overlap=64)


def test_canvas_of_identical_tiles_is_the_picture_and_seams_blend():
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8), "RGB")
    boxes = tile_boxes(160, 96, 64, overlap=16)
    canvas = Canvas(160, 96, feather=16)
    for box in boxes:
        canvas.add(box, picture.crop(box.crop()))
    assert canvas.tiles == len(boxes) > 1
    assert np.array_equal(np.asarray(canvas.image()), np.asarray(picture))  # weights normalise exactly
    assert canvas.nbytes == 160 * 96 * 16  # 16 bytes a pixel, whatever the tile count

    # Two flat tiles, black then white, overlapping by 16: the seam ramps between them.
    canvas = Canvas(112, 64, feather=16)
    canvas.add(Box(0, 0, 64, 64), Image.new("RGB", (64, 64), (0, 0, 0)))
    canvas.add(Box(48, 0, 112, 64), Image.new("RGB", (64, 64), (255, 255, 255)))
    row = np.asarray(canvas.image())[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert list(row[48:64]) == sorted(row[48:64]) and 0 < row[56] < 255


def test_canvas_refuses_a_hole():
    canvas = Canvas(128, 64, feather=8)
    canvas.add(Box(0, 0, 64, 64), Image.new("RGB", (64, 64)))
    with pytest.raises(ValueError):
        canvas.image()


@pytest.fixture(scope="module")
def synth(tiny_sd_dir) -> Synthesizer:
    synthesizer = Synthesizer(str(tiny_sd_dir), "cpu")
    synthesizer.load()
    return synthesizer


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def hires_request(**kw) -> RenderRequest:
    """The U button's request for a 64 px picture: ×2 by Lanczos, refined at strength 0.3."""
    rng = np.random.default_rng(1)
    small = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    values = dict(
        prompt="a red apple", seed=11, steps=10, width=128, height=128, init_image=_png(small), strength=0.3, tile=0
    )
    values.update(kw)
    return RenderRequest(**values).validated()


def test_tiled_hires_fix_is_the_right_size_deterministic_and_bounded(synth):
    native = synth.family.native_size
    assert native == (64, 64)
    unet_sides: list[tuple[int, int]] = []
    hook = synth.load().text2img.unet.register_forward_pre_hook(
        lambda module, args: unet_sides.append(tuple(args[0].shape[-2:]))
    )
    steps: list[tuple[int, int]] = []
    try:
        first = synth.render([hires_request()], progress=lambda s, t: steps.append((s, t)))[0]
    finally:
        hook.remove()
    assert first.image.size == (128, 128) and first.mode == "img2img"
    assert first.tiles == 9  # 3 × 3 tiles of 64 px overlapping by 16
    assert unet_sides and max(max(side) for side in unet_sides) == 64 // 8  # never more than one tile's latents
    assert steps[-1] == (9 * 3, 9 * 3)  # strength 0.3 of 10 steps = 3 per tile, counted over all tiles
    again = synth.render([hires_request()])[0]
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    whole = synth.render([hires_request(tile=None)])[0]
    assert whole.tiles == 1 and whole.image.size == (128, 128)
    assert not np.array_equal(np.asarray(first.image), np.asarray(whole.image))


def test_a_tile_as_large_as_the_picture_runs_whole_and_batches_stay_per_request(synth):
    assert synth.render([hires_request(tile=128)])[0].tiles == 1
    one = synth.render([hires_request(seed=3)])[0]
    batch = synth.render([hires_request(seed=3), hires_request(seed=4)])
    assert [r.tiles for r in batch] == [9, 9] and [r.seed for r in batch] == [3, 4]
    assert np.abs(np.asarray(one.image, dtype=int) - np.asarray(batch[0].image, dtype=int)).max() <= 2


def test_tile_options_are_checked():
    with pytest.raises(BadRequest, match="tile"):
        RenderRequest(
            prompt="x", tile=100, init_image=_png(Image.new("RGB", (8, 8))), width=128, height=128
        ).validated()
    with pytest.raises(BadRequest, match="image-to-image"):
        RenderRequest(prompt="x", tile=64).validated()
    with pytest.raises(ValueError, match="UPSCALE_TILE"):
        Settings(UPSCALE_TILE=40, _env_file=None)
    assert Settings(UPSCALE_TILE=256, _env_file=None).UPSCALE_TILE == 256
