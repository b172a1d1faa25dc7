"""Tags for a generation: the director's tags of a picture idea and of a sound description.

``POST /generate/tags`` answers with these, and the soundtrack (music) reuses them. Pure string
work: the local director's own tagging (:meth:`pipeline.directors.local.LocalDirector.scene_for`)
applied to both texts; from the sound description only what it names (the style and padding
tags a picture gets would say nothing about a sound). Lowercase, de-duplicated, first seen first.
"""

from __future__ import annotations

import logging

from . import limits
from .directors.local import LocalDirector
from .errors import BadRequest
from .scene import dedupe
from .styles import DEFAULT_STYLE, STYLES

log = logging.getLogger(__name__)

MAX_TAGS_OUT = 2 * limits.MAX_TAGS  # a picture's tags and a sound's
NOTHING_TO_TAG = "Give an image prompt or a sound description to tag."
_GENERIC = frozenset({"artwork", "ai art", "voxcanvas", "art", "picture"})


def tags_for(image_prompt: str = "", sound_description: str = "") -> list[str]:
    """Lowercase, de-duplicated tags from ``image_prompt`` (the director's picture tags) and
    ``sound_description`` (what it names). :class:`BadRequest` when both are empty or too long."""
    image_prompt, sound_description = image_prompt.strip(), sound_description.strip()
    if not image_prompt and not sound_description:
        raise BadRequest(NOTHING_TO_TAG)
    for name, text in (("image prompt", image_prompt), ("sound description", sound_description)):
        if len(text) > limits.MAX_IDEA_CHARS:
            raise BadRequest(f"The {name} is too long (at most {limits.MAX_IDEA_CHARS} characters).")
    director = LocalDirector()
    tags: list[str] = []
    if image_prompt:
        tags += director.scene_for(image_prompt).tags
    if sound_description:
        scene = director.scene_for(sound_description)
        template = STYLES[scene.style or DEFAULT_STYLE]
        generic = _GENERIC | {template.name, *template.tags}
        tags += [tag for tag in scene.tags if tag not in generic]
    return dedupe(tag.strip().lower() for tag in tags if tag.strip())[:MAX_TAGS_OUT]
