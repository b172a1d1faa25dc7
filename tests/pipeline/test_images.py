"""Init images: decompression bombs refused from the header, only PNG/JPEG/WebP, EXIF orientation,
a bound on bytes — through the renderer's own validation (what the executor runs) and the CLI."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from pipeline import limits
from pipeline.errors import BadRequest
from pipeline.images import decode_init_image, inspect_init_image, read_init_image_file
from pipeline.synthesis import RenderRequest

REPO = Path(__file__).resolve().parents[2]


def png_bomb(width: int, height: int, mode: str = "RGB") -> bytes:
    """A valid PNG of one colour (black) that is tiny on disk and ``width × height`` when decoded:
    13,000 × 13,000 RGB is 0.49 MB of file and 0.5 GB of pixels.

    Built without holding the pixels: the rows are deflated in 4 MB blocks, each ended with a
    full flush (which resets the compressor's history), so every block compresses to the same
    bytes and is compressed once; the zlib checksum is computed over the blocks separately."""
    channels, colour_type = {"L": (1, 0), "RGB": (3, 2)}[mode]
    row = b"\x00" * (1 + width * channels)  # filter byte "none", then black pixels
    rows_per_block = max(1, (4 << 20) // len(row))
    blocks, rest = divmod(height, rows_per_block)
    block = row * rows_per_block
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: zlib header and checksum added below
    compressed_block = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH) if blocks else b""
    body = compressed_block * blocks + deflate.compress(row * rest) + deflate.flush()
    checksum = 1  # Adler-32 of nothing
    for _ in range(blocks):
        checksum = zlib.adler32(block, checksum)
    checksum = zlib.adler32(row * rest, checksum)
    idat = b"\x78\xda" + body + struct.pack(">I", checksum)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


#: A lossless WebP of 12,000 × 12,000 black pixels in 34 bytes (Pillow: ``Image.new("L", (12000, 12000))``
#: saved with ``lossless=True, quality=0, method=0``); 144 megapixels, under Pillow's default refusal.
WEBP_BOMB = bytes.fromhex("524946461a000000574542505650384c0e0000002fdfeeb70b071011fd0f4444ff03")


def encoded(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def img2img(data: bytes, **options: object) -> RenderRequest:
    return RenderRequest(prompt="make it a sunset", init_image=data, strength=0.5, **options)  # type: ignore[arg-type]


def test_the_bomb_builder_makes_a_real_png():
    small = png_bomb(300, 1501)  # several 4 MB blocks and a remainder, small enough to decode here
    with Image.open(io.BytesIO(small)) as image:
        image.load()
        assert image.size == (300, 1501) and image.getextrema() == ((0, 0), (0, 0), (0, 0))
    assert len(png_bomb(13000, 13000)) < 500_000


# Measured in a fresh process: its high-water mark (ru_maxrss) before and after validating each bomb
# the way the executor does (RenderRequest.validated), and the time each refusal took.
MEASURE = """
import json, resource, sys, time
from pipeline.errors import BadRequest
from pipeline.synthesis import RenderRequest

def high_water_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

bombs = [open(path, "rb").read() for path in sys.argv[1:]]
RenderRequest(prompt="warm-up").validated()
idle = high_water_mb()
report = []
for data in bombs:
    start = time.perf_counter()
    try:
        RenderRequest(prompt="x", init_image=data, strength=0.5).validated()
        refusal = None
    except BadRequest as exc:
        refusal = str(exc)
    report.append({"seconds": time.perf_counter() - start, "above_idle_mb": high_water_mb() - idle, "refusal": refusal})
print(json.dumps(report))
"""


def test_png_bombs_are_refused_from_the_header_in_bounded_memory_and_time(tmp_path):
    # 13,000² RGB (169 megapixels, under Pillow's default refusal): decoded whole before refusal
    # before this check moved to the header (+646 MB, 2.6 s); 20,000² grey (400 megapixels); a
    # 12,000² WebP (144 megapixels).
    sizes = [(13000, 13000, "RGB"), (20000, 20000, "L")]
    paths = []
    for width, height, mode in sizes:
        path = tmp_path / f"bomb-{width}-{mode}.png"
        path.write_bytes(png_bomb(width, height, mode))
        assert path.stat().st_size < 600_000
        paths.append(str(path))
    (tmp_path / "bomb.webp").write_bytes(WEBP_BOMB)
    sizes.append((12000, 12000, "WebP"))
    paths.append(str(tmp_path / "bomb.webp"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *paths], capture_output=True, text=True, timeout=120, cwd=REPO, env=env
    )
    assert done.returncode == 0, done.stderr
    for (width, height, _), outcome in zip(sizes, json.loads(done.stdout), strict=True):
        assert outcome["refusal"] and "too large" in outcome["refusal"], (width, height, outcome)
        assert "16 megapixels" in outcome["refusal"]
        assert outcome["above_idle_mb"] <= 100, outcome
        assert outcome["seconds"] < 1.0, outcome


def test_too_many_pixels_is_refused_from_the_header_with_the_size():
    data = png_bomb(5000, 4000)  # 20 megapixels: over our limit, under twice it (Pillow only warns)
    with warnings.catch_warnings(), pytest.raises(BadRequest, match=r"too large \(5000 × 4000 pixels\); please"):
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img2img(data).validated()
    accepted = png_bomb(4096, 4096)  # exactly the limit
    assert inspect_init_image(accepted).pixels == limits.MAX_IMAGE_PIXELS


def test_pillow_refuses_bombs_process_wide_from_the_same_limit():
    assert Image.MAX_IMAGE_PIXELS == limits.MAX_IMAGE_PIXELS
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(png_bomb(20000, 20000, "L")))


@pytest.mark.parametrize("format", ["TIFF", "BMP", "GIF", "ICO"])
def test_only_png_jpeg_and_webp_by_their_bytes_not_their_name(tmp_path, format):
    """TIFF bytes in a file named .png were accepted (Pillow opens whatever it recognises)."""
    data = encoded(Image.new("RGB", (32, 32), (200, 30, 30)), format)
    with pytest.raises(BadRequest, match="isn't an image I can read \\(PNG, JPEG or WebP\\)"):
        img2img(data).validated()
    named_png = tmp_path / "photo.png"
    named_png.write_bytes(data)
    with pytest.raises(BadRequest, match="isn't an image I can read"):
        read_init_image_file(named_png)


@pytest.mark.parametrize(
    ("format", "mode"),
    [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "L"), ("PNG", "I;16"), ("JPEG", "RGB"), ("JPEG", "CMYK")]
    + [("WEBP", "RGB"), ("WEBP", "RGBA")],
)
def test_accepted_formats_decode_to_rgb(format, mode):
    data = encoded(Image.new(mode, (40, 24)), format)
    header = inspect_init_image(data)
    assert (header.format, header.width, header.height) == (format, 40, 24)
    image = decode_init_image(data)
    assert (image.mode, image.size) == ("RGB", (40, 24))
    assert img2img(data, width=64, height=64).sized_init_image().size == (64, 64)


def sideways_photo() -> bytes:
    """A phone photo as cameras store it: 64 × 32 pixels, left half red, right half blue, with
    EXIF orientation 6 ("rotate 90° clockwise to view"): upright it is 32 × 64, red on top."""
    image = Image.new("RGB", (64, 32), (220, 20, 20))
    image.paste((20, 20, 220), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    return encoded(image, "JPEG", exif=exif, quality=95)


def test_exif_orientation_is_applied():
    upright = decode_init_image(sideways_photo())
    assert upright.size == (32, 64)
    red, blue = upright.getpixel((16, 8)), upright.getpixel((16, 56))
    assert red[0] > 180 > red[2] and blue[2] > 180 > blue[0], (red, blue)
    sized = img2img(sideways_photo(), width=64, height=64).sized_init_image()  # what the renderer starts from
    top, bottom = sized.getpixel((32, 8)), sized.getpixel((32, 56))
    assert top[0] > 180 > top[2] and bottom[2] > 180 > bottom[0], (top, bottom)


def test_bytes_are_bounded_before_decoding():
    small = encoded(Image.new("RGB", (32, 32)), "PNG")
    padded = small + b"\x00" * (limits.MAX_IMAGE_BYTES + 1 - len(small))  # a readable PNG, one byte too many
    with pytest.raises(BadRequest, match="please attach one under 10 MB"):
        img2img(padded).validated()
    img2img(padded[: limits.MAX_IMAGE_BYTES]).validated()  # at the limit: accepted


def test_truncated_or_junk_images_are_refused_in_words():
    data = encoded(Image.effect_noise((256, 256), 64).convert("RGB"), "PNG")
    for junk in (data[: len(data) // 2], b"not an image", b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(BadRequest, match="isn't an image I can read"):
            img2img(junk).validated()


def test_cli_refuses_an_oversized_image_without_reading_it_or_loading_models(tmp_path):
    huge = tmp_path / "holiday.png"
    with huge.open("wb") as file:  # a sparse 2 GB file: the CLI read all of it before
        file.truncate(2 * 1024**3)
    env = {**os.environ, "PYTHONPATH": str(REPO), "GEMINI_API_KEY": "", "DATA_DIR": str(tmp_path / "data")}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--text", "a red apple", "--image", str(huge), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {huge}: The image is 2147.5 MB; please attach one under 10 MB."
    )
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()
