"""The Scene: validation and normalisation of every field, and its schema as google-genai sees it."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipeline.scene import Scene, dedupe
from pipeline.styles import STYLES
from tests.pipeline.scenes import scene_data


def test_palette_is_validated_and_normalised():
    scene = Scene(**scene_data(palette=["#abc123", "ff8800", " #0a0B0c ", "#fff"]))
    assert scene.palette == ["#ABC123", "#FF8800", "#0A0B0C", "#FFFFFF"]
    scene = Scene(**scene_data(palette=["#ABC123", "#abc123", "#000000", "#FFFFFF"]))
    assert scene.palette == ["#ABC123", "#000000", "#FFFFFF"]  # duplicates dropped, order kept

    for bad in (
        ["#GG0000", "#000000", "#FFFFFF"],
        ["red", "#000000", "#FFFFFF"],
        ["#12345", "#000000", "#111111"],
    ):
        with pytest.raises(ValidationError, match="palette"):
            Scene(**scene_data(palette=bad))
    with pytest.raises(ValidationError, match="palette"):
        Scene(**scene_data(palette=["#000000", "#FFFFFF"]))  # too few
    with pytest.raises(ValidationError, match="palette"):
        Scene(**scene_data(palette=[f"#{i:06X}" for i in range(7)]))  # too many
    with pytest.raises(ValidationError, match="palette"):
        Scene(**scene_data(palette=["#000000", "#000", "#FFFFFF"]))  # 2 distinct colours


def test_scene_normalises_tags_language_style_and_rejects_nonsense():
    scene = Scene(
        **scene_data(
            tags=["#Apple", "Still  Life", "FRUIT", "fruit", "table", "oil_painting"],
            language="PT_br",
            style="Watercolor",
        )
    )
    assert scene.tags == ["apple", "still life", "fruit", "table", "oil painting"]
    assert scene.language == "pt-br"
    assert scene.style == "watercolour"
    assert Scene(**scene_data(style=None)).style is None
    with pytest.raises(ValidationError, match="style"):
        Scene(**scene_data(style="vaporwave"))
    with pytest.raises(ValidationError, match="language"):
        Scene(**scene_data(language="english please"))
    with pytest.raises(ValidationError, match="tags"):
        Scene(**scene_data(tags=["a", "b", "c", "d"]))
    with pytest.raises(ValidationError, match="elements"):
        Scene(**scene_data(elements=[]))
    with pytest.raises(ValidationError, match="diffusion_prompt"):
        Scene(**scene_data(diffusion_prompt="   "))
    with pytest.raises(ValidationError, match="diffusion_prompt"):
        Scene(**scene_data(diffusion_prompt="word " * 600))
    long_title = Scene(**scene_data(title="A very long title " * 10)).title
    assert len(long_title) <= 80


def test_scene_schema_is_accepted_by_google_genai_and_hides_internal_fields():
    from google.genai import _transformers, types

    schema = _transformers.t_schema(None, Scene)  # what generate_content does with the class
    assert isinstance(schema, types.Schema)
    assert schema.type == types.Type.OBJECT
    assert set(schema.properties) == {
        "title",
        "language",
        "scene_description",
        "elements",
        "diffusion_prompt",
        "negative_prompt",
        "palette",
        "tags",
        "style",
    }
    assert "palette_source" not in schema.properties  # internal, not asked of the model
    assert (schema.properties["palette"].min_items, schema.properties["palette"].max_items) == (
        3,
        6,
    )
    assert (schema.properties["tags"].min_items, schema.properties["tags"].max_items) == (5, 10)
    assert schema.properties["style"].nullable is True
    assert set(schema.properties["style"].enum) == set(STYLES)


def test_dedupe_ignores_case_and_keeps_the_first_spelling_in_order():
    assert dedupe(["Red apple", "table", "red APPLE", "Table", "cup"]) == ["Red apple", "table", "cup"]
    assert dedupe(iter(["a", "A", "a"])) == ["a"]
    assert dedupe([]) == []


def test_fake_default_scene_is_a_valid_scene(fake_gemini=None):
    from devkit.gemini import FakeGemini

    Scene.model_validate(FakeGemini().default_scene)
    json.dumps(FakeGemini().default_scene)
