"""The Scene: validation and normalisation of every field, and its schema as google-genai sees it."""

from __future__ import annotations

import json
import random
import string
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline import limits
from pipeline.scene import Scene, SceneDraft, dedupe, shorten
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
        "music_prompt",
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


# ------------------------------------------------------------------------------------------------
# Bounds, idempotent validation, and the repair of a director's answer (issue #11, item 5)
# ------------------------------------------------------------------------------------------------
def test_lists_are_counted_after_their_repeats_are_removed():
    # Five spellings of one tag are one tag: too few for a Scene, whichever time it is validated.
    with pytest.raises(ValidationError, match="tags"):
        Scene(**scene_data(tags=["apple", "Apple", "#apple", " APPLE ", "apple"]))
    with pytest.raises(ValidationError, match="tags"):
        Scene(**scene_data(tags=["apple"] * 5))


def test_every_text_a_model_writes_is_bounded():
    word = "lorem "
    scene = Scene(
        **scene_data(
            title=word * 100,
            scene_description=word * 1000,
            elements=[f"{i} " + word * 40 for i in range(8)],
            negative_prompt=word * 400,
        )
    )
    assert len(scene.title) <= limits.MAX_TITLE_CHARS
    assert len(scene.scene_description) <= limits.MAX_SCENE_DESCRIPTION_CHARS
    assert scene.scene_description.endswith("…") and scene.scene_description.startswith("lorem lorem")
    assert all(len(e) <= limits.MAX_ELEMENT_CHARS for e in scene.elements) and len(scene.elements) == 8
    assert len(scene.negative_prompt) <= limits.MAX_NEGATIVE_PROMPT_CHARS
    assert Scene.model_validate(scene.model_dump()) == scene


def test_shorten_cuts_at_a_word_and_is_stable():
    assert shorten("a red apple", 80) == "a red apple"
    assert shorten("a red apple on a table", 12) == "a red apple…"
    assert shorten("a red apple on a table", 12, ellipsis=False) == "a red apple"
    assert shorten("x" * 50, 10) == "x" * 9 + "…"
    for text in ("a red apple on a table", "x" * 50, "--- ,,, ...", "word, word; word: word"):
        for limit in (3, 7, 12):
            once = shorten(text, limit)
            assert len(once) <= limit and shorten(once, limit) == once


def _random_text(rng: random.Random, max_words: int) -> str:
    alphabet = string.ascii_letters + "äöüéñ漢字"
    words = ["".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(rng.randint(1, max_words))]
    spaces = [" ", "  ", "\n", "\t ", " , ", ". "]
    return "".join(w + rng.choice(spaces) for w in words)


def _random_scene(rng: random.Random) -> dict[str, Any]:
    """Scene-shaped data as a careless model writes it: repeats in every spelling, over-long
    texts and lists, odd whitespace, tags with '#' and '_', too few of them."""
    pool = [_random_text(rng, 3) for _ in range(rng.randint(1, 6))]
    elements = [rng.choice(pool) for _ in range(rng.randint(1, 12))]
    elements += [e.upper() for e in elements[: rng.randint(0, 2)]]
    tag_pool = [_random_text(rng, 2)[:40] for _ in range(rng.randint(1, 12))]
    tags = [rng.choice(["#", "", " "]) + rng.choice(tag_pool).replace(" ", rng.choice([" ", "_"])) for _ in range(12)]
    tags = tags[: rng.randint(1, 12)]
    colours = [f"#{rng.randrange(1 << 24):06x}" for _ in range(rng.randint(1, 4))]
    palette = [rng.choice(colours).upper() if rng.random() < 0.5 else rng.choice(colours) for _ in range(8)]
    return scene_data(
        title=_random_text(rng, rng.choice([3, 40])) + rng.choice(["", ".", " ..."]),
        language=rng.choice(["en", "DE", "pt_BR"]),
        scene_description=_random_text(rng, rng.choice([20, 300])),
        elements=elements,
        diffusion_prompt=_random_text(rng, rng.choice([20, 200])),
        negative_prompt=_random_text(rng, rng.choice([5, 150])),
        palette=palette[: rng.randint(2, 8)],
        tags=tags,
        style=rng.choice([None, "Watercolor", "oil painting", "anime"]),
    )


@pytest.mark.parametrize("model", [Scene, SceneDraft])
def test_validation_is_idempotent_over_generated_scenes(model):
    """validate(validate(x)) == validate(x): a scene that validated once validates again, the same."""
    rng = random.Random(11)
    valid = 0
    for _ in range(400):
        data = _random_scene(rng)
        try:
            scene = model.model_validate(data)
        except ValidationError:
            continue
        valid += 1
        dumped = scene.model_dump()
        assert model.model_validate(dumped) == scene, data
        assert Scene.model_validate(dumped).model_dump() == dumped, data  # a draft is a Scene
        assert len(scene.tags) >= limits.MIN_TAGS and len(set(scene.tags)) == len(scene.tags)
    assert valid >= 25  # the generator makes valid scenes too, so the property is exercised


def test_a_draft_repairs_what_can_be_repaired():
    draft = SceneDraft.model_validate(
        scene_data(
            title="A " + "very long title " * 20,
            tags=["apple"] * 5,
            elements=[f"thing {i}" for i in range(12)] + ["THING 0"],
            palette=["#C0392B", "#c0392b", "#8E5B3A", "#F3E9DC", "#000000", "#111111", "#222222", "#333333"],
        )
    )
    assert draft.tags[0] == "apple" and limits.MIN_TAGS <= len(draft.tags) <= limits.MAX_TAGS
    assert draft.tags[1:3] == ["thing 0", "thing 1"]  # made up from the scene's own elements
    assert draft.elements == [f"thing {i}" for i in range(8)]  # most important first
    assert draft.palette == ["#C0392B", "#8E5B3A", "#F3E9DC", "#000000", "#111111", "#222222"]
    assert len(draft.title) <= limits.MAX_TITLE_CHARS
    long_tags = SceneDraft.model_validate(scene_data(tags=["", "x" * 40, "#Apple", "apple", "fruit", "table"]))
    assert long_tags.tags[:3] == ["apple", "fruit", "table"] and len(long_tags.tags) >= limits.MIN_TAGS
    assert type(Scene.model_validate(draft.model_dump())) is Scene


def test_a_draft_still_refuses_what_cannot_be_repaired():
    with pytest.raises(ValidationError, match="tags"):  # nothing in the scene to make tags of
        SceneDraft.model_validate(
            scene_data(title="Ox", elements=["ox"], tags=["ox"] * 5, style=None, scene_description="An ox.")
        )
    with pytest.raises(ValidationError, match="palette"):
        SceneDraft.model_validate(scene_data(palette=["#000000", "#000"]))
    with pytest.raises(ValidationError, match="style"):
        SceneDraft.model_validate(scene_data(style="vaporwave", tags=["a"]))
    with pytest.raises(ValidationError, match="elements"):
        SceneDraft.model_validate(scene_data(elements=[]))


def test_the_draft_schema_is_the_scene_schema():
    assert SceneDraft.model_json_schema() == Scene.model_json_schema()


def test_critic_report_texts_are_bounded_and_validate_the_same_twice():
    from pipeline.critic import QAReport

    report = QAReport(
        alignment_score=40.4,
        missing_elements=["red apple", "Red  apple", " RED APPLE"] * 3 + ["a " + "very " * 40 + "long thing"],
        correction_prompt="apple, " * 600,
        notes="The picture is fine. " * 200,
    )
    assert report.missing_elements[0] == "red apple" and len(report.missing_elements) == 2
    assert all(len(m) <= limits.MAX_ELEMENT_CHARS for m in report.missing_elements)
    assert len(report.correction_prompt) <= limits.MAX_PROMPT_CHARS
    assert len(report.notes) <= limits.MAX_CRITIC_NOTES_CHARS and report.notes.endswith("…")
    assert QAReport.model_validate(report.model_dump()) == report
