"""Init images (the start image of image-to-image): the one place they are checked and decoded.

Image files are small on the wire and large in memory — a 0.5 MB PNG of one colour can declare
13,000 × 13,000 pixels, half a gigabyte once decoded. So every check that does not need the
pixels runs first, on what the file's header says (Pillow's ``Image.open`` is lazy: it reads the
header, not the pixels):

1. the number of bytes (:data:`~.limits.MAX_IMAGE_BYTES`);
2. the format, as decoded from the bytes (not the file name): PNG, JPEG or WebP only;
3. the dimensions (:data:`~.limits.MAX_IMAGE_PIXELS`).

Only then are the pixels decoded, turned upright by their EXIF orientation (phone photos are
stored sideways with an orientation tag) and converted to RGB. Pillow's own process-wide limit
is set from the same bound, so no other code in the process decodes a bomb either.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from . import limits
from .errors import BadRequest

log = logging.getLogger(__name__)

#: Pillow's format names of the image formats we accept, and how users know them.
ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
#: What users are told when a file is none of them (or is not an image at all).
NOT_AN_IMAGE = "The attached file isn't an image I can read (PNG, JPEG or WebP)."

# Pillow warns above this many pixels and refuses above twice as many, in Image.open itself.
Image.MAX_IMAGE_PIXELS = limits.MAX_IMAGE_PIXELS


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What an image file says about itself before any pixel is decoded."""

    format: str  # Pillow's name: "PNG", "JPEG" or "WEBP"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def check_image_bytes(size: int) -> None:
    """Refuse a file of ``size`` bytes if it is over :data:`~.limits.MAX_IMAGE_BYTES`
    (usable from an attachment's metadata, before downloading it)."""
    if size > limits.MAX_IMAGE_BYTES:
        raise BadRequest(
            f"The image is {size / 1e6:.1f} MB; please attach one under {limits.MAX_IMAGE_BYTES // 1_000_000} MB."
        )


def inspect_init_image(data: bytes) -> ImageHeader:
    """Check an init image from its size and header alone; no pixel is decoded.

    Raises :class:`~.errors.BadRequest` (with a message for the user) when it has too many bytes,
    is not PNG, JPEG or WebP, or has too many pixels."""
    with _open_checked(data) as image:
        return ImageHeader(image.format or "", image.width, image.height)


def decode_init_image(data: bytes) -> Image.Image:
    """The init image checked (as :func:`inspect_init_image`), decoded, upright and in RGB."""
    image = _open_checked(data)
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as exc:  # truncated or corrupt pixel data: PIL raises many types
        image.close()
        raise BadRequest(NOT_AN_IMAGE) from exc


def read_init_image_file(path: Path) -> bytes:
    """An init image file's bytes, read only if there are at most :data:`~.limits.MAX_IMAGE_BYTES`
    of them, and checked from its header. Raises :class:`OSError` or :class:`~.errors.BadRequest`."""
    with path.open("rb") as file:
        data = file.read(limits.MAX_IMAGE_BYTES + 1)
        if len(data) > limits.MAX_IMAGE_BYTES:
            check_image_bytes(path.stat().st_size)
    inspect_init_image(data)
    return data


def _open_checked(data: bytes) -> Image.Image:
    """``Image.open`` (lazy: header only) of an accepted format with accepted dimensions."""
    check_image_bytes(len(data))
    try:
        image = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # over twice the limit
        log.info("init image refused: %s", exc)
        raise BadRequest(_too_many_pixels()) from exc
    except Exception as exc:  # PIL raises many types for junk, and UnidentifiedImageError for other formats
        raise BadRequest(NOT_AN_IMAGE) from exc
    if image.format not in ACCEPTED_FORMATS:  # Image.open(formats=...) already ensures it; never decode others
        image.close()
        raise BadRequest(NOT_AN_IMAGE)
    if image.width * image.height > limits.MAX_IMAGE_PIXELS:
        log.info("init image refused: %s %d×%d", image.format, image.width, image.height)
        image.close()
        raise BadRequest(_too_many_pixels(image.width, image.height))
    return image


def _too_many_pixels(width: int | None = None, height: int | None = None) -> str:
    limit = f"please send one under {limits.MAX_IMAGE_PIXELS // 1_000_000} megapixels"
    if width is None or height is None:
        return f"The attached image is too large; {limit}."
    return f"The attached image is too large ({width} × {height} pixels); {limit}."
