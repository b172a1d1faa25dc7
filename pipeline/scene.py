"""The :class:`Scene`: a director's picture plan, validated (one line per text field, ``#RRGGBB``
palette, ISO 639 language, lowercase tags, a known style), as read by the renderer, the critic and
the Discord embed. Its JSON schema is what Gemini is asked to fill in."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from .limits import MAX_PROMPT_CHARS
from .palette import normalise_hex
from .prompts import PROMPT_WORD_LIMIT
from .styles import STYLES, StyleName, StyleTemplate, resolve_style


def normalise_hex_colour(value: str) -> str:
    """``'#a1b2c3'``, ``'A1B2C3'``, ``'#abc'`` → ``'#A1B2C3'``, ``'#AABBCC'``; else ValueError."""
    return normalise_hex(value)


def _one_line(value: str) -> str:
    return " ".join(str(value).split())


def _non_empty(value: str) -> str:
    value = _one_line(value)
    if not value:
        raise ValueError("must not be empty")
    return value


def _short_title(value: str) -> str:
    value = _non_empty(value).strip(" .")
    if len(value) > 80:
        value = value[:79].rsplit(" ", 1)[0].rstrip(" ,.;:") + "…"
    return value


def _prompt_text(value: str) -> str:
    # Longer than MAX_PROMPT_CHARS: a model that ignored its brief, rejected outright; anything
    # shorter that does not fit the CLIP window is trimmed by the director (pipeline.prompts.fit_prompt).
    value = _non_empty(value)
    if len(value) > MAX_PROMPT_CHARS:
        raise ValueError(f"is far too long for a diffusion prompt (over {MAX_PROMPT_CHARS} characters)")
    return value


def language_code(value: str) -> str:
    """``'PT_br'`` → ``'pt-br'``; ValueError for anything that is not an ISO 639 code."""
    value = str(value).strip().lower().replace("_", "-")
    if not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]{2,8})?", value):
        raise ValueError(f"{value!r} is not an ISO 639 language code like 'en' or 'pt-br'")
    return value


def _tag(value: str) -> str:
    value = " ".join(str(value).strip().lstrip("#").lower().replace("_", " ").split())
    if not value:
        raise ValueError("tags must not be empty")
    if len(value) > 32:
        raise ValueError(f"tag {value!r} is longer than 32 characters")
    return value


def dedupe(values: Iterable[str]) -> list[str]:
    """``values`` without case-insensitive repeats, first spelling and order kept."""
    seen: set[str] = set()
    out = []
    for value in values:
        key = value.lower()
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


class Scene(BaseModel):
    """A picture plan: what to draw and how. Written by a director, read by the renderer, the
    critic and the Discord embed."""

    title: Annotated[str, AfterValidator(_short_title)] = Field(
        description="A short, evocative title for the picture, at most 60 characters, in the language of the idea."
    )
    language: Annotated[str, AfterValidator(language_code)] = Field(
        description="ISO 639-1 code of the language the idea was spoken in, e.g. 'en', 'de', 'ja'."
    )
    scene_description: Annotated[str, AfterValidator(_non_empty)] = Field(
        description="Two or three sentences in English describing the picture: subject, setting, "
        "mood, lighting and composition."
    )
    elements: list[Annotated[str, AfterValidator(_non_empty)]] = Field(
        min_length=1,
        max_length=8,
        description="The key visible things the picture must show (1 to 8 short English noun "
        "phrases, e.g. 'red apple', 'wooden table'), most important first.",
    )
    diffusion_prompt: Annotated[str, AfterValidator(_prompt_text)] = Field(
        description=f"The Stable Diffusion 1.5 prompt in English: at most {PROMPT_WORD_LIMIT} "
        "words (75 CLIP tokens), comma-separated, subject first, then descriptors, medium and "
        "style, lighting, composition and quality terms. No weights or brackets."
    )
    negative_prompt: Annotated[str, AfterValidator(_one_line)] = Field(
        default="",
        description="Comma-separated things to avoid (artifacts, wrong media, unwanted objects), at most 40 words.",
    )
    palette: list[str] = Field(
        min_length=3,
        max_length=6,
        description="3 to 6 colours of the intended palette as '#RRGGBB' hex strings.",
    )
    tags: list[Annotated[str, AfterValidator(_tag)]] = Field(
        min_length=5,
        max_length=10,
        description="5 to 10 short lowercase English tags (one or two words each).",
    )
    style: StyleName | None = Field(  # type: ignore[valid-type]
        default=None, description="The visual style, one of the allowed names, or null."
    )
    #: "director": the palette was chosen for this idea; "default": a style's stock palette (the
    #: idea named no colours), which the loop replaces with the rendered image's own colours.
    #: Not part of the schema a language model sees.
    palette_source: SkipJsonSchema[Literal["director", "default"]] = "director"

    @field_validator("palette", mode="before")
    @classmethod
    def _palette(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return dedupe(normalise_hex_colour(v) for v in value)
        return value

    @field_validator("elements", "tags", mode="after")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return dedupe(value)

    @field_validator("style", mode="before")
    @classmethod
    def _style(cls, value: Any) -> Any:
        return resolve_style(value) if isinstance(value, str) else value

    @property
    def style_template(self) -> StyleTemplate | None:
        return STYLES.get(self.style) if self.style else None
