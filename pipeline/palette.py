"""Colour palettes: parse and validate hex colours, extract a palette from an image, and render
the swatch PNG that goes next to every picture.

The swatch puts each hex label *on its own colour band* in black or white, whichever contrasts
more (WCAG relative luminance), and frames the strip in mid-grey, so it reads the same on
Discord's dark and light themes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from typing import cast

from PIL import Image, ImageDraw, ImageFont

from .errors import BadRequest

HEX_RE = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")
MIN_COLOURS, MAX_COLOURS = 1, 8


class InvalidColour(BadRequest, ValueError):
    """Not a hex colour. A ValueError too, so pydantic validators report it as a field error."""


def normalise_hex(value: str) -> str:
    """'#a1b2c3', 'A1B2C3', '#abc' → '#A1B2C3' / '#AABBCC'. Raises :class:`InvalidColour`."""
    match = HEX_RE.match(str(value).strip())
    if not match:
        raise InvalidColour(f"{value!r} is not a colour; use hex like #1E90FF.")
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(ch * 2 for ch in digits)
    return "#" + digits.upper()


def parse_palette(values: Iterable[str]) -> list[str]:
    """Validate and normalise a list of hex colours, dropping exact duplicates, order kept."""
    colours: list[str] = []
    for value in values:
        colour = normalise_hex(value)
        if colour not in colours:
            colours.append(colour)
    if not MIN_COLOURS <= len(colours) <= MAX_COLOURS:
        raise BadRequest(f"A palette needs {MIN_COLOURS} to {MAX_COLOURS} colours (got {len(colours)}).")
    return colours


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    digits = normalise_hex(colour)[1:]
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def rgb_to_hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02X}{:02X}{:02X}".format(*(int(c) for c in rgb[:3]))


def relative_luminance(colour: str) -> float:
    """WCAG 2 relative luminance in [0, 1]."""

    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = hex_to_rgb(colour)
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def label_colour(colour: str) -> str:
    """Black or white text, whichever has the higher WCAG contrast on ``colour``."""
    lum = relative_luminance(colour)
    contrast_black = (lum + 0.05) / 0.05
    contrast_white = 1.05 / (lum + 0.05)
    return "#000000" if contrast_black >= contrast_white else "#FFFFFF"


def extract_palette(image: Image.Image, count: int = 5) -> list[str]:
    """The ``count`` most used colours of ``image`` (median-cut quantisation, most used first).

    Deterministic for the same image. A flat image yields fewer colours than asked.
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    small = image.convert("RGB")
    small.thumbnail((128, 128))
    quantised = small.quantize(colors=count, method=Image.Quantize.MEDIANCUT)
    palette = quantised.getpalette() or []
    counts = sorted(quantised.getcolors() or [], reverse=True)  # [(pixels, index)]
    colours: list[str] = []
    for _, index in counts:
        i = cast(int, index) * 3  # a "P" image's colours are palette indices
        colour = rgb_to_hex((palette[i], palette[i + 1], palette[i + 2]))
        if colour not in colours:
            colours.append(colour)
    return colours[:count]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def render_swatch(colours: Iterable[str], *, band_width: int = 128, height: int = 96) -> Image.Image:
    """A horizontal strip, one band per colour, each labelled with its hex code."""
    palette = parse_palette(colours)
    border = 4
    width = band_width * len(palette) + 2 * border
    total_height = height + 2 * border
    swatch = Image.new("RGB", (width, total_height), (128, 128, 128))
    draw = ImageDraw.Draw(swatch)
    font = _font(max(12, height // 5))
    for i, colour in enumerate(palette):
        x0 = border + i * band_width
        draw.rectangle([x0, border, x0 + band_width - 1, border + height - 1], fill=colour)
        left, top, right, bottom = draw.textbbox((0, 0), colour, font=font)
        tx = x0 + (band_width - (right - left)) // 2 - left
        ty = border + height - (bottom - top) - height // 8 - top
        draw.text((tx, ty), colour, fill=label_colour(colour), font=font)
    return swatch


def swatch_png(colours: Iterable[str]) -> bytes:
    buffer = io.BytesIO()
    render_swatch(colours).save(buffer, format="PNG")
    return buffer.getvalue()
