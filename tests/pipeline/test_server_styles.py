"""Server styles in the pipeline (issue #18 item 4): validation and bounds of a server's own style,
the context-scoped view of STYLES (one server's styles never leak to another task), the local
director applying one exactly like a file style, and a stored scene that names a style removed
since still reading back (while a director's new scene with an unknown style is still refused)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from pipeline.directors import LocalDirector
from pipeline.errors import BadRequest
from pipeline.scene import Scene
from pipeline.studio import Provenance
from pipeline.styles import (
    MAX_STYLE_KEYWORDS,
    STYLES,
    check_style,
    matching_styles,
    server_style,
    server_styles,
    style_from_dict,
    style_to_dict,
)
from tests.pipeline.scenes import scene_data


def moss():
    return server_style("Moss  Glow", "Soft bioluminescent moss", "moss diorama, glowing spores", "chrome, neon signs")


def test_server_style_is_validated_and_bounded():
    template = moss()
    assert template.name == "moss glow" and template.medium == "moss diorama"
    assert template.modifiers == ("glowing spores",) and template.negative == ("chrome", "neon signs")
    assert template.keywords == () and template.hints == ()  # never picked from a user's words
    assert style_from_dict(style_to_dict(template)) == template
    with pytest.raises(BadRequest, match="already a built-in style"):
        server_style("photographic", "x", "y")
    with pytest.raises(BadRequest, match="already a built-in style"):
        server_style("watercolor", "x", "y")  # an alias of a built-in one
    with pytest.raises(BadRequest, match="A style name"):
        server_style("Bad/Name!", "x", "y")
    with pytest.raises(BadRequest, match="description"):
        server_style("ok", "   ", "y")
    with pytest.raises(BadRequest, match="at least one keyword"):
        server_style("ok", "x", " , ")
    with pytest.raises(BadRequest, match=f"at most {MAX_STYLE_KEYWORDS}"):
        server_style("ok", "x", ",".join(f"k{i}" for i in range(MAX_STYLE_KEYWORDS + 1)))
    with pytest.raises(BadRequest, match="at most"):
        server_style("ok", "x", "y", "z" * 61)


async def test_server_styles_are_seen_only_in_their_context():
    template = moss()
    seen_elsewhere: list[bool] = []

    async def other_server() -> None:
        seen_elsewhere.append("moss glow" in STYLES)

    with server_styles({template.name: template}):
        task = asyncio.create_task(other_server())  # copies this context: sees it
        await task
        assert "moss glow" in STYLES and check_style("Moss Glow") == "moss glow"
        assert list(STYLES)[-1] == "moss glow" and len(STYLES) == len(STYLES.deployment) + 1
        scene = LocalDirector().scene_for("a frog on a log", style="moss glow")
        assert "moss diorama" in scene.diffusion_prompt and "glowing spores" in scene.diffusion_prompt
        assert "neon signs" in scene.negative_prompt and scene.style == "moss glow"
    assert seen_elsewhere == [True]
    assert "moss glow" not in STYLES and "moss glow" not in matching_styles("moss")
    assert matching_styles("moss", extra=["moss glow"]) == ["moss glow"]
    with pytest.raises(BadRequest, match="Unknown style"):
        check_style("moss glow")
    results = await asyncio.gather(asyncio.to_thread(lambda: "moss glow" in STYLES))
    assert results == [False]


def test_a_stored_scene_keeps_a_removed_style_but_a_new_one_is_checked():
    template = moss()
    with server_styles({template.name: template}):
        provenance = Provenance(kind="text", idea="a frog", scene=Scene(**scene_data(style="moss glow")), director="x")
    stored = provenance.model_dump_json()
    assert "moss glow" not in STYLES  # removed since
    back = Provenance.model_validate_json(stored)
    assert back.scene.style == "moss glow" and back.scene.style_template is None
    with pytest.raises(ValidationError):
        Scene(**scene_data(style="moss glow"))  # a director's new scene: still strict
