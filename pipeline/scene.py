"""The :class:`Scene`: a director's picture plan, validated (one line per text field, ``#RRGGBB``
palette, ISO 639 language, lowercase tags, a known style, every text and list bounded by
:mod:`pipeline.limits`), as read by the renderer, the critic and the Discord embed. Its JSON schema
is what Gemini is asked to fill in.

Validation is idempotent: a validated Scene, dumped and validated again, is the same Scene
(lists are de-duplicated *before* their lengths are checked, over-long texts are cut to a length
that is then kept). :class:`SceneDraft` is how a director's answer is read: it first repairs what
can be repaired (repeated or unusable tags and elements, too few tags, over-long lists), then
checks the result as a Scene.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from .limits import (
    MAX_ELEMENT_CHARS,
    MAX_ELEMENTS,
    MAX_MUSIC_PROMPT_CHARS,
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PALETTE_COLOURS,
    MAX_PROMPT_CHARS,
    MAX_SCENE_DESCRIPTION_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TITLE_CHARS,
    MIN_ELEMENTS,
    MIN_PALETTE_COLOURS,
    MIN_TAGS,
)
from .palette import normalise_hex
from .prompts import PROMPT_WORD_LIMIT
from .styles import STYLES, StyleTemplate, resolve_style, stored_style


def _style_schema(schema: dict[str, Any]) -> None:
    """The style's JSON schema lists the styles in use when it is made (STYLES_FILE's included),
    so a language model is offered exactly the names the Scene accepts."""
    for option in schema.get("anyOf", []):
        if option.get("type") == "string":
            option["enum"] = list(STYLES)


def normalise_hex_colour(value: str) -> str:
    """``'#a1b2c3'``, ``'A1B2C3'``, ``'#abc'`` → ``'#A1B2C3'``, ``'#AABBCC'``; else ValueError."""
    return normalise_hex(value)


def one_line(value: str) -> str:
    """``value`` with every run of whitespace (newlines included) as one space, trimmed."""
    return " ".join(str(value).split())


def shorten(value: str, limit: int, *, ellipsis: bool = True) -> str:
    """``value`` cut at a word boundary to at most ``limit`` characters (with "…" when
    ``ellipsis``); unchanged when it fits, so shortening twice is shortening once."""
    if len(value) <= limit:
        return value
    room = limit - 1 if ellipsis else limit
    head = value[: room + 1]
    cut = head.rsplit(" ", 1)[0] if " " in head else head[:room]
    cut = cut[:room].rstrip(" ,.;:-") or value[:room].rstrip()
    return cut + "…" if ellipsis else cut


def _non_empty(value: str) -> str:
    value = one_line(value)
    if not value:
        raise ValueError("must not be empty")
    return value


def _short_title(value: str) -> str:
    value = _non_empty(value).strip(" .")
    return shorten(value, MAX_TITLE_CHARS) if value else "…"


def _description(value: str) -> str:
    return shorten(_non_empty(value), MAX_SCENE_DESCRIPTION_CHARS)


def _element(value: str) -> str:
    return shorten(_non_empty(value), MAX_ELEMENT_CHARS, ellipsis=False)


def _negative(value: str) -> str:
    return shorten(one_line(value), MAX_NEGATIVE_PROMPT_CHARS, ellipsis=False)


def _prompt_text(value: str) -> str:
    # Longer than MAX_PROMPT_CHARS: a model that ignored its brief, rejected outright; anything
    # shorter that does not fit the CLIP window is trimmed by the director (pipeline.prompts.fit_prompt).
    value = _non_empty(value)
    if len(value) > MAX_PROMPT_CHARS:
        raise ValueError(f"is far too long for a diffusion prompt (over {MAX_PROMPT_CHARS} characters)")
    return value


def _music_prompt(value: str) -> str:
    return shorten(one_line(value), MAX_MUSIC_PROMPT_CHARS, ellipsis=False)


def language_code(value: str) -> str:
    """``'PT_br'`` → ``'pt-br'``; ValueError for anything that is not an ISO 639 code."""
    value = str(value).strip().lower().replace("_", "-")
    if not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]{2,8})?", value):
        raise ValueError(f"{value!r} is not an ISO 639 language code like 'en' or 'pt-br'")
    return value


def tag_text(value: str) -> str:
    """``'#Still_Life'`` → ``'still life'``: a tag as it is kept (it may still be empty or long)."""
    return " ".join(str(value).strip().lstrip("#").lower().replace("_", " ").split())


def _tag(value: str) -> str:
    value = tag_text(value)
    if not value:
        raise ValueError("tags must not be empty")
    if len(value) > MAX_TAG_CHARS:
        raise ValueError(f"tag {value!r} is longer than {MAX_TAG_CHARS} characters")
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


def _dedupe_texts(value: Any, normalise: Any) -> Any:
    """A list's strings normalised and de-duplicated (anything else is left for the item checks),
    so the list's length is checked on what will be kept."""
    if not isinstance(value, (list, tuple)):
        return value
    out: list[Any] = []
    seen: set[str] = set()
    for item in value:
        if isinstance(item, str):
            item = normalise(item)
            if item.lower() in seen:
                continue
            seen.add(item.lower())
        out.append(item)
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
    scene_description: Annotated[str, AfterValidator(_description)] = Field(
        description="Two or three sentences in English describing the picture: subject, setting, "
        f"mood, lighting and composition (at most {MAX_SCENE_DESCRIPTION_CHARS} characters)."
    )
    elements: list[Annotated[str, AfterValidator(_element)]] = Field(
        min_length=MIN_ELEMENTS,
        max_length=MAX_ELEMENTS,
        description=f"The key visible things the picture must show ({MIN_ELEMENTS} to {MAX_ELEMENTS} short "
        "English noun phrases, e.g. 'red apple', 'wooden table'), most important first.",
    )
    diffusion_prompt: Annotated[str, AfterValidator(_prompt_text)] = Field(
        description=f"The Stable Diffusion 1.5 prompt in English: at most {PROMPT_WORD_LIMIT} "
        "words (75 CLIP tokens), comma-separated, subject first, then descriptors, medium and "
        "style, lighting, composition and quality terms. No weights or brackets."
    )
    negative_prompt: Annotated[str, AfterValidator(_negative)] = Field(
        default="",
        description="Comma-separated things to avoid (artifacts, wrong media, unwanted objects), at most 40 words.",
    )
    palette: list[str] = Field(
        min_length=MIN_PALETTE_COLOURS,
        max_length=MAX_PALETTE_COLOURS,
        description=f"{MIN_PALETTE_COLOURS} to {MAX_PALETTE_COLOURS} colours of the intended palette "
        "as '#RRGGBB' hex strings.",
    )
    tags: list[Annotated[str, AfterValidator(_tag)]] = Field(
        min_length=MIN_TAGS,
        max_length=MAX_TAGS,
        description=f"{MIN_TAGS} to {MAX_TAGS} short lowercase English tags (one or two words each).",
    )
    style: str | None = Field(
        default=None,
        description="The visual style, one of the allowed names, or null.",
        json_schema_extra=_style_schema,
    )
    music_prompt: Annotated[str, AfterValidator(_music_prompt)] = Field(
        default="",
        description="A MusicGen prompt for a soundtrack to the picture, in English, one line, at most 40 words: "
        "mood, genre, instruments, the setting's sounds, warm or cool tone (from the palette), tempo in bpm.",
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

    @field_validator("elements", mode="before")
    @classmethod
    def _unique_elements(cls, value: Any) -> Any:
        return _dedupe_texts(value, _element_key)

    @field_validator("tags", mode="before")
    @classmethod
    def _unique_tags(cls, value: Any) -> Any:
        return _dedupe_texts(value, tag_text)

    @field_validator("elements", "tags", mode="after")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return dedupe(value)

    @field_validator("style", mode="before")
    @classmethod
    def _style(cls, value: Any) -> Any:
        return stored_style(value) if isinstance(value, str) else value

    @property
    def style_template(self) -> StyleTemplate | None:
        return STYLES.get(self.style) if self.style else None


def _element_key(value: str) -> str:
    return shorten(one_line(value), MAX_ELEMENT_CHARS, ellipsis=False)


# Words that make no tag on their own (padding tags from a scene's elements and title).
_NOT_TAGS = frozenset(
    "a an and at by for from in into of on or over the to under with without its their his her".split()
)


class SceneDraft(Scene):
    """A director's answer, read leniently: repaired where it can be, then checked as a
    :class:`Scene` (same fields, same JSON schema, titled "Scene").

    Repairs: elements and tags normalised and de-duplicated, empty and over-long tags dropped,
    too few tags made up from the scene's own elements, style and title, lists longer than their
    maximum cut (most important first, as the schema asks). What can't be repaired — no elements,
    too few colours, an unknown style, a prompt far too long — still fails validation."""

    # What Gemini is shown is the Scene's schema, description included (not this docstring).
    model_config = ConfigDict(title="Scene", json_schema_extra={"description": inspect.cleandoc(Scene.__doc__ or "")})

    @model_validator(mode="before")
    @classmethod
    def _repair(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        elements = data.get("elements")
        if isinstance(elements, (list, tuple)) and all(isinstance(e, str) for e in elements):
            data["elements"] = dedupe(e for e in map(_element_key, elements) if e)[:MAX_ELEMENTS]
        palette = data.get("palette")
        if isinstance(palette, (list, tuple)):
            try:
                data["palette"] = dedupe(normalise_hex_colour(c) for c in palette)[:MAX_PALETTE_COLOURS]
            except (ValueError, TypeError):
                pass  # a colour that is no colour: the Scene's own check names it
        tags = data.get("tags")
        if isinstance(tags, (list, tuple)) and all(isinstance(t, str) for t in tags):
            data["tags"] = _repaired_tags(tags, data)
        return data


def _repaired_tags(tags: Iterable[str], data: dict[str, Any]) -> list[str]:
    """``tags`` usable, unique and at most MAX_TAGS; below MIN_TAGS, padded with the scene's
    elements, their words, its style and the words of its title (whatever of those is usable)."""
    usable = [t for t in map(tag_text, tags) if t and len(t) <= MAX_TAG_CHARS]
    if len(dedupe(usable)) < MIN_TAGS:
        texts = [e for e in data.get("elements") or [] if isinstance(e, str)]
        style = data.get("style")
        words = [w for text in texts for w in re.findall(r"[^\W\d_]{3,}", text.lower())]
        title = data.get("title")
        if isinstance(title, str):
            words += re.findall(r"[^\W\d_]{3,}", title.lower())
        usable += [t for t in map(tag_text, texts) if t and len(t) <= MAX_TAG_CHARS]
        if isinstance(style, str):
            try:
                usable.append(tag_text(resolve_style(style) or ""))
            except ValueError:
                pass  # an unknown style: the Scene's own check names it
        usable += [w for w in words if w not in _NOT_TAGS]
    return dedupe(t for t in usable if t and len(t) <= MAX_TAG_CHARS)[:MAX_TAGS]
