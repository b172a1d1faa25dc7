"""Tiles for the upscale passes: overlapping boxes over a large picture, and a canvas that blends
the processed tiles back with feathered (linearly ramped) edges.

The "hires fix" of the U buttons refines a ×2 picture by image-to-image. Run whole, the UNet's
activations and the VAE grow with the picture (SD 1.5 at 2048² is sixteen times its native area);
run in tiles of the model's native size, every pipeline call sees at most ``batch × tile²`` pixels
whatever the picture's size, and the model works at the scale it was trained at. What stays
in memory for the whole picture is this canvas: two float32 planes (colour sum and weight sum),
16 bytes a pixel — 64 MiB at 2048². The same layout serves a dedicated upscaler model
(``UPSCALER_MODEL``): boxes on the small picture, placed ×scale on the large one.

No torch here: pure layout and NumPy, testable on its own.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

log = logging.getLogger(__name__)

#: Neighbouring tiles overlap by this fraction of a tile side (rounded down to ``multiple``).
OVERLAP_FRACTION = 0.25


@dataclass(frozen=True)
class Box:
    """A tile: ``left``, ``top`` inclusive, ``right``, ``bottom`` exclusive (PIL's crop box)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def size(self) -> tuple[int, int]:
        return self.right - self.left, self.bottom - self.top

    def crop(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.right, self.bottom

    def scaled(self, factor: int) -> Box:
        return Box(self.left * factor, self.top * factor, self.right * factor, self.bottom * factor)


def overlap_for(tile: int, multiple: int = 8) -> int:
    """The overlap of neighbouring tiles of side ``tile``: a quarter of it, a multiple of ``multiple``."""
    return max(multiple, int(tile * OVERLAP_FRACTION) // multiple * multiple)


def _starts(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Tile starts along one side: evenly spread, each a multiple of ``multiple``, the first at 0
    and the last flush with the end, neighbours overlapping by at least ``overlap - multiple``."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    last = length - tile
    starts = [min(last, round(i * last / (count - 1)) // multiple * multiple) for i in range(count)]
    starts[-1] = last
    return sorted(set(starts))


def tile_boxes(width: int, height: int, tile: int, *, overlap: int | None = None, multiple: int = 8) -> list[Box]:
    """Boxes of at most ``tile`` × ``tile`` covering ``width`` × ``height``, row by row. A picture
    no larger than a tile is one box. ``tile`` must exceed ``overlap``; with sides and tile that are
    multiples of ``multiple`` (the VAE's 8), every box is a size the model takes."""
    if tile <= 0 or width <= 0 or height <= 0:
        raise ValueError(f"bad tiling: {width}x{height} in tiles of {tile}")
    overlap = overlap_for(tile, multiple) if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise ValueError(f"the overlap ({overlap}) must be smaller than the tile ({tile})")
    side_w, side_h = min(tile, width), min(tile, height)
    return [
        Box(left, top, left + side_w, top + side_h)
        for top in _starts(height, tile, overlap, multiple)
        for left in _starts(width, tile, overlap, multiple)
    ]


def _ramp(length: int, before: int, after: int) -> NDArray[np.float32]:
    """1 in the middle, rising linearly over ``before`` pixels at the start and falling over
    ``after`` at the end (never 0, so every covered pixel has weight)."""
    weights = np.ones(length, dtype=np.float32)
    if before > 0:
        n = min(before, length)
        weights[:n] = np.minimum(weights[:n], (np.arange(n, dtype=np.float32) + 0.5) / before)
    if after > 0:
        n = min(after, length)
        weights[length - n :] = np.minimum(weights[length - n :], (np.arange(n, dtype=np.float32)[::-1] + 0.5) / after)
    return weights


class Canvas:
    """The full-size picture, assembled from tiles: each tile's colours weighted by a feather
    that ramps over ``feather`` pixels on every side that borders another tile (not the picture's
    edge), so seams fade instead of cutting."""

    def __init__(self, width: int, height: int, feather: int) -> None:
        self.width, self.height, self.feather = width, height, feather
        self._sum = np.zeros((height, width, 3), dtype=np.float32)
        self._weight = np.zeros((height, width, 1), dtype=np.float32)
        self.tiles = 0

    def add(self, box: Box, tile: Image.Image) -> None:
        if tile.size != box.size:
            tile = tile.resize(box.size, Image.Resampling.LANCZOS)
        pixels = np.asarray(tile.convert("RGB"), dtype=np.float32)
        f = self.feather
        across = _ramp(box.right - box.left, f if box.left > 0 else 0, f if box.right < self.width else 0)
        down = _ramp(box.bottom - box.top, f if box.top > 0 else 0, f if box.bottom < self.height else 0)
        weight = (down[:, None] * across[None, :])[..., None]
        self._sum[box.top : box.bottom, box.left : box.right] += pixels * weight
        self._weight[box.top : box.bottom, box.left : box.right] += weight
        self.tiles += 1

    def image(self) -> Image.Image:
        if not np.all(self._weight > 0):
            raise ValueError("the tiles do not cover the whole canvas")
        pixels = np.clip(np.rint(self._sum / self._weight), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, "RGB")

    @property
    def nbytes(self) -> int:
        """Bytes the canvas holds for the whole picture (the part of the memory that grows with it)."""
        return int(self._sum.nbytes + self._weight.nbytes)
