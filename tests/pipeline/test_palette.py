"""Hex colours, palette extraction and the swatch PNG."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.errors import BadRequest
from pipeline.palette import (
    extract_palette,
    hex_to_rgb,
    label_colour,
    normalise_hex,
    parse_palette,
    render_swatch,
    swatch_png,
)


@pytest.mark.parametrize("raw, expected", [("#a1b2c3", "#A1B2C3"), ("A1B2C3", "#A1B2C3"), (" #abc ", "#AABBCC")])
def test_normalise_hex(raw, expected):
    assert normalise_hex(raw) == expected


@pytest.mark.parametrize("raw", ["#12345", "red", "#GGGGGG", "", "#1234567"])
def test_bad_hex_is_refused_as_a_value_error_and_a_user_error(raw):
    with pytest.raises(BadRequest) as refused:
        normalise_hex(raw)
    assert isinstance(refused.value, ValueError)  # pydantic validators report it as a field error


def test_parse_palette_dedupes_and_bounds():
    assert parse_palette(["#ff0000", "FF0000", "#00f"]) == ["#FF0000", "#0000FF"]
    with pytest.raises(BadRequest):
        parse_palette([])
    with pytest.raises(BadRequest):
        parse_palette([f"#0000{i:02X}" for i in range(9)])


def test_extract_palette_orders_colours_by_area_and_is_deterministic():
    image = Image.new("RGB", (90, 60), (200, 30, 30))
    image.paste((20, 40, 220), (0, 0, 30, 60))  # a third blue, two thirds red
    colours = extract_palette(image, 5)
    assert colours == extract_palette(image, 5)
    assert [hex_to_rgb(c) for c in colours[:2]] == [(200, 30, 30), (20, 40, 220)]


def test_extract_palette_from_noise_gives_the_count_asked():
    import numpy as np

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert len(extract_palette(noise, 5)) == 5


def test_label_colour_contrasts():
    assert label_colour("#FFFF00") == "#000000"
    assert label_colour("#1F2A44") == "#FFFFFF"
    assert label_colour("#FFFFFF") == "#000000" and label_colour("#000000") == "#FFFFFF"


def test_swatch_has_one_labelled_band_per_colour_inside_a_neutral_frame():
    colours = ["#D62828", "#F77F00", "#FCBF49", "#003049"]
    swatch = render_swatch(colours, band_width=100, height=80)
    assert swatch.size == (4 * 100 + 8, 80 + 8)
    assert swatch.getpixel((0, 0)) == (128, 128, 128)  # frame: visible on dark and light themes
    for i, colour in enumerate(colours):
        assert swatch.getpixel((4 + i * 100 + 5, 4 + 5)) == hex_to_rgb(colour)  # band colour
        band = swatch.crop((4 + i * 100, 4, 4 + (i + 1) * 100, 84))
        label = hex_to_rgb(label_colour(colour))
        assert any(px == label for px in band.getdata()), f"no label text on band {colour}"
    png = swatch_png(colours)
    assert Image.open(io.BytesIO(png)).format == "PNG"
