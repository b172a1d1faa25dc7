"""The candidates of a job as one picture: a grid (2×2 for four) with small 1–4 labels, the best
one framed. Pillow only; runs off the event loop (tens of ms at 512² cells)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

MAX_CELL_SIDE = 768  # cells are scaled down beyond this, so a grid of SDXL pictures stays ≤ 1536 px
GAP = 4
BEST_COLOUR = (255, 196, 0)
LABEL_BACKGROUND = (0, 0, 0)
LABEL_TEXT = (255, 255, 255)


def grid_shape(count: int) -> tuple[int, int]:
    """(columns, rows): 1 → 1×1, 2 → 2×1, 3 and 4 → 2×2."""
    if count < 1:
        raise ValueError("a grid needs at least one picture")
    if count == 1:
        return 1, 1
    if count == 2:
        return 2, 1
    return 2, (count + 1) // 2


def make_grid(images: Sequence[Image.Image], *, best: int | None = None) -> Image.Image:
    """The pictures side by side (row-major), each labelled with its 1-based number; ``best``
    (0-based) gets a coloured frame and a ★ by its number."""
    columns, rows = grid_shape(len(images))
    width = max(im.width for im in images)
    height = max(im.height for im in images)
    scale = min(1.0, MAX_CELL_SIDE / max(width, height))
    cell_w, cell_h = max(1, round(width * scale)), max(1, round(height * scale))
    grid = Image.new("RGB", (columns * cell_w + (columns - 1) * GAP, rows * cell_h + (rows - 1) * GAP), (24, 24, 24))
    draw = ImageDraw.Draw(grid)
    font_size = max(12, cell_h // 14)
    font = ImageFont.load_default(size=font_size)
    for index, image in enumerate(images):
        x = (index % columns) * (cell_w + GAP)
        y = (index // columns) * (cell_h + GAP)
        cell = image.convert("RGB")
        if cell.size != (cell_w, cell_h):
            cell = cell.resize((cell_w, cell_h), Image.Resampling.LANCZOS)
        grid.paste(cell, (x, y))
        label = f"{index + 1}" + (" ★" if index == best else "")
        pad = max(3, font_size // 4)
        left, top, right, bottom = draw.textbbox((x + pad * 2, y + pad * 2), label, font=font)
        draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=LABEL_BACKGROUND)
        draw.text((x + pad * 2, y + pad * 2), label, font=font, fill=BEST_COLOUR if index == best else LABEL_TEXT)
        if index == best:
            frame = max(2, cell_w // 128)
            draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), outline=BEST_COLOUR, width=frame)
    return grid


def cell_box(count: int, index: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixel box of cell ``index`` in a grid of ``count`` pictures whose size is ``size``."""
    columns, rows = grid_shape(count)
    cell_w = (size[0] - (columns - 1) * GAP) // columns
    cell_h = (size[1] - (rows - 1) * GAP) // rows
    x = (index % columns) * (cell_w + GAP)
    y = (index // columns) * (cell_h + GAP)
    return x, y, x + cell_w, y + cell_h
