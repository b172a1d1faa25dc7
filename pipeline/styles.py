"""Style templates: how each named style shapes a diffusion prompt, and style names as users or
models spell them (:func:`resolve_style`, :func:`check_style`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import BadRequest


@dataclass(frozen=True)
class StyleTemplate:
    """How one style shapes a prompt. ``keywords`` both select the style and are removed from
    the subject (they become the medium); ``hints`` only select it and stay in the subject."""

    name: str
    medium: str
    modifiers: tuple[str, ...]
    lighting: str
    composition: str
    quality: tuple[str, ...]
    negative: tuple[str, ...]
    palette: tuple[str, ...]
    keywords: tuple[str, ...] = ()
    hints: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for a language model: medium, descriptors, lighting."""
        return ", ".join((self.medium, *self.modifiers, self.lighting, self.composition))


STYLES: dict[str, StyleTemplate] = {
    t.name: t
    for t in (
        StyleTemplate(
            name="photographic",
            medium="professional photograph",
            modifiers=("realistic", "sharp focus", "natural colours", "35mm lens"),
            lighting="soft natural light",
            composition="shallow depth of field",
            quality=("highly detailed", "high resolution"),
            negative=(
                "painting",
                "drawing",
                "illustration",
                "cartoon",
                "anime",
                "3d render",
                "cgi",
            ),
            palette=("#2F3E46", "#84A98C", "#CAD2C5", "#E9C46A", "#52796F"),
            keywords=(
                "photorealistic",
                "photo realistic",
                "photograph",
                "photography",
                "photo",
                "realistic",
                "dslr",
                "polaroid",
            ),
            hints=("portrait", "macro", "close-up", "close up", "35mm", "bokeh"),
            tags=("photo", "realistic"),
        ),
        StyleTemplate(
            name="cinematic",
            medium="cinematic film still",
            modifiers=("dramatic atmosphere", "anamorphic lens", "film grain", "color graded"),
            lighting="moody volumetric lighting",
            composition="wide shot",
            quality=("highly detailed", "epic"),
            negative=("cartoon", "anime", "flat lighting", "overexposed"),
            palette=("#0B132B", "#1C2541", "#3A506B", "#F4A261", "#E76F51"),
            keywords=("cinematic", "movie still", "film still", "movie scene", "movie", "film"),
            hints=("noir", "blockbuster", "dramatic"),
            tags=("cinematic", "film"),
        ),
        StyleTemplate(
            name="watercolour",
            medium="watercolour painting",
            modifiers=("soft washes", "wet-on-wet", "visible paper texture", "delicate brushwork"),
            lighting="gentle diffused light",
            composition="airy composition",
            quality=("beautiful", "artistic"),
            negative=("photo", "photorealistic", "3d render", "harsh outlines", "oversaturated"),
            palette=("#A8DADC", "#F1FAEE", "#E5989B", "#B5838D", "#6D6875"),
            keywords=("watercolour", "watercolor", "aquarelle"),
            tags=("watercolour", "painting"),
        ),
        StyleTemplate(
            name="anime",
            medium="anime illustration",
            modifiers=("cel shading", "clean line art", "vibrant colours", "studio anime style"),
            lighting="bright soft lighting",
            composition="dynamic composition",
            quality=("highly detailed", "masterpiece"),
            negative=("photo", "photorealistic", "3d render", "western cartoon", "bad anatomy"),
            palette=("#FFB7C5", "#8EC5FC", "#FDFD96", "#2E294E", "#F8F8FF"),
            keywords=("anime", "manga"),
            hints=("ghibli", "chibi", "kawaii"),
            tags=("anime", "illustration"),
        ),
        StyleTemplate(
            name="oil painting",
            medium="oil painting on canvas",
            modifiers=("rich impasto brushstrokes", "classical fine art", "textured canvas"),
            lighting="warm chiaroscuro lighting",
            composition="balanced composition",
            quality=("masterpiece", "museum quality"),
            negative=("photo", "photorealistic", "3d render", "digital art", "flat colours"),
            palette=("#5C3D2E", "#B85C38", "#E0C097", "#2D4263", "#C8553D"),
            keywords=("oil painting", "oil on canvas", "oil paint", "painting"),
            hints=(
                "van gogh",
                "impressionist",
                "impressionism",
                "renaissance",
                "baroque",
                "rembrandt",
            ),
            tags=("oil painting", "fine art"),
        ),
        StyleTemplate(
            name="pixel art",
            medium="pixel art",
            modifiers=("16-bit retro game style", "crisp pixels", "limited colour palette"),
            lighting="flat lighting",
            composition="centered sprite composition",
            quality=("clean", "detailed pixel work"),
            negative=("blurry", "smooth gradients", "photo", "photorealistic", "anti-aliasing"),
            palette=("#1A1C2C", "#5D275D", "#B13E53", "#EF7D57", "#FFCD75", "#41A6F6"),
            keywords=(
                "pixel art",
                "pixelart",
                "pixelated",
                "8-bit",
                "8 bit",
                "16-bit",
                "16 bit",
                "pixel",
            ),
            hints=("retro game", "video game", "sprite"),
            tags=("pixel art", "retro"),
        ),
        StyleTemplate(
            name="digital art",
            medium="digital painting",
            modifiers=(
                "concept art",
                "vivid colours",
                "painterly details",
                "trending on artstation",
            ),
            lighting="dramatic rim lighting",
            composition="rule of thirds",
            quality=("highly detailed", "sharp focus"),
            negative=("photo", "sketch", "unfinished"),
            palette=("#264653", "#2A9D8F", "#E9C46A", "#F4A261", "#E76F51"),
            keywords=("digital art", "digital painting", "concept art", "illustration"),
            hints=("fantasy", "sci-fi", "scifi", "cyberpunk", "steampunk"),
            tags=("digital art", "illustration"),
        ),
        StyleTemplate(
            name="3d render",
            medium="3d render",
            modifiers=(
                "octane render",
                "physically based materials",
                "smooth surfaces",
                "ray tracing",
            ),
            lighting="soft studio lighting",
            composition="centered composition",
            quality=("highly detailed", "8k"),
            negative=("painting", "sketch", "flat", "2d", "low poly artifacts"),
            palette=("#4CC9F0", "#4361EE", "#7209B7", "#F72585", "#F1F1F1"),
            keywords=("3d render", "3d rendering", "3d model", "3d", "cgi", "blender render"),
            hints=("isometric", "low poly", "claymation", "pixar"),
            tags=("3d", "render"),
        ),
        StyleTemplate(
            name="sketch",
            medium="pencil sketch",
            modifiers=("graphite on paper", "loose hatching", "expressive lines", "monochrome"),
            lighting="soft shading",
            composition="simple composition",
            quality=("detailed linework",),
            negative=("color", "colour", "photo", "3d render", "painting", "saturated"),
            palette=("#1B1B1B", "#4A4A4A", "#8C8C8C", "#D9D9D9", "#F5F2EA"),
            keywords=(
                "pencil sketch",
                "pencil drawing",
                "charcoal drawing",
                "line drawing",
                "line art",
                "sketch",
                "doodle",
            ),
            hints=("pencil", "charcoal", "graphite", "ink drawing"),
            tags=("sketch", "drawing"),
        ),
        StyleTemplate(
            name="comic book",
            medium="comic book illustration",
            modifiers=("bold ink outlines", "halftone shading", "flat vibrant colours"),
            lighting="high contrast lighting",
            composition="dynamic panel composition",
            quality=("detailed", "clean lines"),
            negative=("photo", "photorealistic", "3d render", "blurry", "watercolour"),
            palette=("#E63946", "#FFD60A", "#1D3557", "#F1FAEE", "#000000"),
            keywords=("comic book", "comic", "cartoon", "graphic novel"),
            hints=("superhero", "pop art"),
            tags=("comic", "cartoon"),
        ),
    )
}

DEFAULT_STYLE = "digital art"
StyleName = Literal[tuple(STYLES)]  # type: ignore[valid-type]

# fmt: off
_STYLE_ALIASES = {
    "photo": "photographic", "photography": "photographic", "photorealistic": "photographic",
    "realistic": "photographic", "film": "cinematic", "movie": "cinematic",
    "watercolor": "watercolour", "aquarelle": "watercolour", "manga": "anime",
    "oil": "oil painting", "oil-painting": "oil painting", "oilpainting": "oil painting",
    "painting": "oil painting", "pixel": "pixel art", "pixel-art": "pixel art",
    "pixelart": "pixel art", "digital": "digital art", "digital-art": "digital art",
    "concept art": "digital art", "illustration": "digital art", "3d": "3d render",
    "3d-render": "3d render", "3d rendering": "3d render", "render": "3d render",
    "pencil sketch": "sketch", "drawing": "sketch", "comic": "comic book",
    "comic-book": "comic book", "cartoon": "comic book",
}
# fmt: on

# fmt: off
BASE_NEGATIVE = (
    "lowres", "blurry", "low quality", "jpeg artifacts", "watermark", "text", "signature",
    "deformed", "bad anatomy", "extra limbs", "cropped", "out of frame",
)
# fmt: on


def check_style(name: str | None) -> str | None:
    """:func:`resolve_style` for a user's request: an unknown name is a :class:`BadRequest`."""
    try:
        return resolve_style(name)
    except ValueError as exc:
        raise BadRequest(f"Unknown style {name!r}. Choose one of: {', '.join(STYLES)}.") from exc


def resolve_style(name: str | None) -> str | None:
    """A style name as a user or a model might spell it → a key of :data:`STYLES`, or ``None``.

    Raises ``ValueError`` for a name that is not a style."""
    if name is None:
        return None
    key = " ".join(str(name).strip().lower().replace("_", " ").split())
    if not key or key in {"none", "null", "auto", "any"}:
        return None
    if key in STYLES:
        return key
    key = _STYLE_ALIASES.get(key, _STYLE_ALIASES.get(key.replace(" ", "-"), key))
    if key in STYLES:
        return key
    raise ValueError(f"unknown style {name!r}; choose one of: {', '.join(STYLES)}")
