"""The creative directors: a spoken idea → a :class:`~pipeline.scene.Scene` (diffusion prompt,
palette, elements).

Every director answers the :class:`Director` protocol, ``async direct(idea, *, style=None,
language="en") -> Scene``:

* :class:`GeminiDirector` (:mod:`.gemini`) asks Gemini for a Scene as structured JSON; any
  failure is a :class:`~pipeline.errors.ProviderError` with a reason, and the studio falls back
  to the local director and records the reason.
* :class:`LocalDirector` (:mod:`.local`) is deterministic and needs nothing.
* :mod:`.soundtrack`: the local rule for ``Scene.music_prompt`` (a MusicGen prompt from the
  scene's mood, setting, style and palette) and :func:`music_idea`, which spots an idea that
  asks for music ("compose a calm seaside ambience") instead of a picture.

Both fit their prompts to the CLIP window with :mod:`pipeline.prompts` and take their styles from
:mod:`pipeline.styles`.
"""

from __future__ import annotations

from typing import Protocol

from ..families import FamilyProfile
from ..scene import Scene
from .gemini import DIRECTOR_INSTRUCTION, GeminiDirector
from .local import ABSTRACT_SUBJECT, COLOUR_WORDS, LocalDirector
from .soundtrack import music_idea, music_prompt_for

__all__ = [
    "ABSTRACT_SUBJECT",
    "COLOUR_WORDS",
    "DIRECTOR_INSTRUCTION",
    "Director",
    "GeminiDirector",
    "LocalDirector",
    "music_idea",
    "music_prompt_for",
]


class Director(Protocol):
    """Turns an idea into a :class:`Scene`. ``name`` is what a result records as its director
    ("local", "gemini"). ``style`` is a style name as a user spells it (an unknown one is a
    :class:`~pipeline.errors.BadRequest`); ``language`` is the speech recogniser's guess."""

    name: str

    async def direct(
        self, idea: str, *, style: str | None = None, language: str = "en", family: FamilyProfile | None = None
    ) -> Scene:
        """``family``: the rendering model's profile when known (prompt style, budget, negatives)."""
