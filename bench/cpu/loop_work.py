"""End-of-job image work at the product's 512²: the milliseconds of per-job work ``Studio`` does after
the last review (PNG of the picture, palette from the image, palette swatch), on a synthetic
photo-like picture — small at the tiny models' 64², not at 512²."""

from __future__ import annotations

import time
from typing import Any

from ..report import median


def photo_like(size: int = 512, seed: int = 0):
    """A synthetic photo-like RGB picture (smooth gradients, soft blobs, mild noise): PNG cost
    depends on content, and random noise would be the worst case, not a picture."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    channels = []
    for _ in range(3):
        field = 0.5 + 0.3 * np.sin(2 * np.pi * (x * rng.uniform(0.5, 2) + y * rng.uniform(0.5, 2) + rng.random()))
        for _ in range(6):
            cx, cy, r = rng.random(), rng.random(), rng.uniform(0.05, 0.25)
            field += rng.uniform(-0.3, 0.3) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        channels.append(field)
    pixels = np.stack(channels, -1) * 255 + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"))


def measure_loop_work(repeats: int = 10) -> dict[str, Any]:
    """Milliseconds of the per-job work ``Studio`` does ON THE EVENT LOOP after the last review
    (the product's own functions: PNG of the picture, palette from the image, palette swatch), at the
    product's default 512² — small at the tiny 64² above, not at 512²."""
    from pipeline.palette import extract_palette, swatch_png
    from pipeline.synthesis import image_to_png

    image = photo_like(512)
    palette = extract_palette(image, 5)
    out: dict[str, Any] = {}
    for name, fn in (
        ("image_png_ms", lambda: image_to_png(image)),
        ("extract_palette_ms", lambda: extract_palette(image, 5)),
        ("swatch_png_ms", lambda: swatch_png(palette)),
    ):
        fn()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1000)
        out[name] = median(times)
    out["total_ms"] = out["image_png_ms"] + out["extract_palette_ms"] + out["swatch_png_ms"]
    out["png_kib"] = len(image_to_png(image)) / 1024
    return out
