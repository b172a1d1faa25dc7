"""Style templates as data (issue #18): the shipped styles file, a deployment's STYLES_FILE that
adds and overrides styles, broken files refused at start-up naming the file and line, and the
knowledge folder (STYLE_KNOWLEDGE) searched with BM25 and given to the Gemini director."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline import styles
from pipeline.directors import LocalDirector
from pipeline.knowledge import MAX_CONTEXT_CHARS, Knowledge, words
from pipeline.scene import Scene
from pipeline.settings import Settings
from pipeline.styles import (
    BUILTIN_STYLES,
    FAMILY_KEYS,
    STYLES,
    StyleFileError,
    install_styles_file,
    load_styles_file,
    matching_styles,
    parse_styles,
    resolve_style,
)
from tests.pipeline.scenes import scene_data
from tests.pipeline.test_studio import gemini, make_studio, run  # noqa: F401 (make_studio is a fixture)

VAPORWAVE = """\
[[style]]
name = "Vaporwave"
description = "80s neon nostalgia: pink and cyan grids, palm trees, sunsets."
medium = "vaporwave artwork"
modifiers = ["neon grid", "retro 80s"]
lighting = "neon glow"
composition = "centered composition"
quality = ["detailed"]
negative_keywords = ["photo", "muted colours"]
palette = ["#ff71ce", "#01CDFE", "#05FFA1", "#B967FF"]
keywords = ["vaporwave", "synthwave"]
aliases = ["vapor wave", "outrun"]
example_prompts = ["a marble bust among palm trees, vaporwave artwork, neon grid, pink sunset"]
families = ["sd", "sdxl"]

[[style]]
name = "watercolour"
medium = "loose watercolour sketch"
"""


@pytest.fixture
def restore_styles():
    yield
    install_styles_file(None)


def test_the_shipped_file_holds_every_field_of_the_source_design():
    assert len(BUILTIN_STYLES) == 10 and STYLES.keys() >= BUILTIN_STYLES.keys()
    for name, template in BUILTIN_STYLES.items():
        assert template.name == name and template.description and template.keywords and template.negative
        assert len(template.examples) >= 2 and all(len(e.split()) >= 5 for e in template.examples)
        assert template.families and set(template.families) <= set(FAMILY_KEYS)
        Scene(**scene_data(palette=list(template.palette), style=name))
    # the aliases users typed before the move still resolve
    assert resolve_style("watercolor") == "watercolour" and resolve_style("comic-book") == "comic book"
    assert resolve_style("concept art") == "digital art"


def test_a_styles_file_adds_and_overrides_styles(tmp_path: Path, restore_styles):
    path = tmp_path / "mine.toml"
    path.write_text(VAPORWAVE, encoding="utf-8")
    install_styles_file(path)
    assert list(STYLES)[-1] == "vaporwave" and len(STYLES) == len(BUILTIN_STYLES) + 1
    vapor = STYLES["vaporwave"]
    assert vapor.palette == ("#FF71CE", "#01CDFE", "#05FFA1", "#B967FF") and vapor.families == ("sd", "sdxl")
    assert resolve_style("Outrun") == "vaporwave" and resolve_style("vapor_wave") == "vaporwave"
    # an override changes only what it gives
    water = STYLES["watercolour"]
    assert water.medium == "loose watercolour sketch"
    assert water.palette == BUILTIN_STYLES["watercolour"].palette and water.keywords
    # a Scene accepts the new style, and the schema a language model sees offers it
    assert Scene(**scene_data(style="vaporwave")).style == "vaporwave"
    assert "vaporwave" in Scene.model_json_schema()["properties"]["style"]["anyOf"][0]["enum"]
    # the local director picks it from its keyword and writes its medium
    scene = LocalDirector().scene_for("a synthwave city at night")
    assert scene.style == "vaporwave" and "vaporwave artwork" in scene.diffusion_prompt
    assert "muted colours" in scene.negative_prompt
    # autocomplete: by prefix, then by description
    assert matching_styles("vap") == ["vaporwave"]
    assert "vaporwave" in matching_styles("neon") and matching_styles("")[:2] == ["photographic", "cinematic"]
    # back to the built-in styles
    install_styles_file(None)
    assert "vaporwave" not in STYLES and STYLES["watercolour"] == BUILTIN_STYLES["watercolour"]
    with pytest.raises(ValidationError):
        Scene(**scene_data(style="vaporwave"))


@pytest.mark.parametrize(
    "text, line, words",
    [
        ('[[style]]\nname = "a"\nmedium = "x\n', 3, "not valid TOML"),
        ('[[style]]\nname = "neon"\ncolour = "pink"\n', 3, "unknown field 'colour'"),
        (VAPORWAVE.replace('"#05FFA1", ', '"teal", '), 10, "palette must be 3 to 6"),
        ('# a comment\n\n[[style]]\nname = "neon"\nmedium = "neon art"\n', 3, "lacks modifiers, lighting"),
        (VAPORWAVE.replace('"sd", "sdxl"', '"sd", "dalle"'), 14, "unknown family 'dalle'"),
        (VAPORWAVE.replace('name = "watercolour"', 'name = "vaporwave"'), 17, "defined twice"),
        ('[[style]]\nname = "x"\nmodifiers = "one"\n', 3, "must be a list of non-empty strings"),
        ('[[style]]\nname = "Bad/Name"\n', 2, "lowercase letters"),
        ('[[style]]\nmedium = "x"\n', 1, "needs a name"),
    ],
)
def test_a_broken_styles_file_is_refused_naming_the_file_and_line(tmp_path: Path, text, line, words):
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StyleFileError) as refused:
        load_styles_file(path, base=BUILTIN_STYLES)
    message = str(refused.value)
    assert str(path) in message and words in message and f"line {line}" in message
    # at start-up: the settings refuse it, and nothing was installed
    with pytest.raises(ValidationError) as settings_error:
        Settings(STYLES_FILE=str(path), _env_file=None)
    assert "STYLES_FILE" in str(settings_error.value) and f"line {line}" in str(settings_error.value)
    assert STYLES.keys() == BUILTIN_STYLES.keys()


def test_unreadable_and_oversized_styles_files_are_refused(tmp_path: Path):
    with pytest.raises(StyleFileError, match="can't be read"):
        load_styles_file(tmp_path / "missing.toml")
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (styles.MAX_STYLES_FILE_BYTES + 1))
    with pytest.raises(StyleFileError, match="at most"):
        load_styles_file(big)
    with pytest.raises(StyleFileError, match="unknown top-level key"):
        parse_styles('title = "x"\n', "inline")


# ------------------------------------------------------------------------------------------------
# Knowledge (STYLE_KNOWLEDGE)
# ------------------------------------------------------------------------------------------------
NOTES = {
    "watercolour.md": "# Watercolour\n\nUse wet-on-wet washes for skies and granulating pigments for texture.\n\n"
    "Leave white paper for highlights; avoid black, mix darks from ultramarine and burnt sienna.",
    "portraits.txt": "Portraits: an 85mm lens, eye level, soft key light from a window, catchlights in the eyes.",
    "night-cities.txt": "Night cities: wet streets reflect neon signs; sodium vapour lamps are orange.",
    "ignored.json": '{"not": "read"}',
}


@pytest.fixture
def notes_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "knowledge"
    folder.mkdir()
    for name, text in NOTES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_bm25_ranks_the_passages_that_share_the_ideas_rare_words(notes_dir: Path):
    knowledge = Knowledge.load(notes_dir)
    assert len(knowledge.passages) == 4  # watercolour.md has two passages; .json is not read
    assert {p.topic for p in knowledge.passages} == {"watercolour", "portraits", "night cities"}
    best = knowledge.search("a portrait of my grandmother by the window")
    assert best[0].topic == "portraits"
    city = knowledge.search("a rainy city street with neon at night")
    assert city[0].topic == "night cities"
    assert knowledge.search("zebra quantum") == []  # nothing shared: nothing given
    context = knowledge.context("a lighthouse at dusk", "watercolour")
    assert context.startswith("- [watercolour]") and len(context) <= MAX_CONTEXT_CHARS
    assert words("The Apples, please!") == ["apple"]
    scores = knowledge.score("wet streets")
    assert scores == knowledge.score("wet streets") and max(scores) > 0  # deterministic


def test_settings_refuse_a_knowledge_path_that_is_not_a_folder(tmp_path: Path):
    with pytest.raises(ValidationError, match="STYLE_KNOWLEDGE"):
        Settings(STYLE_KNOWLEDGE=str(tmp_path / "nope"), _env_file=None)
    assert Settings(STYLE_KNOWLEDGE="", _env_file=None).STYLE_KNOWLEDGE is None


async def test_the_gemini_director_gets_knowledge_and_the_styles_examples(
    make_studio,  # noqa: F811 (the fixture imported from test_studio)
    gemini_settings,
    tiny_sd_dir,
    tiny_clip_dir,
    fake_gemini,
    notes_dir,
):
    settings = gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir, QA_MAX_ROUNDS=0, STYLE_KNOWLEDGE=str(notes_dir))
    studio = await make_studio(settings)
    from pipeline.studio import Idea

    await run(studio, Idea(text="a portrait of an old sailor", style="watercolour"))
    text = fake_gemini.requests[0].text
    notes = text[text.index("<notes>") : text.index("</notes>")]
    assert "[portraits] Portraits: an 85mm lens" in notes and "[watercolour]" in notes
    assert "night cities" not in notes
    assert BUILTIN_STYLES["watercolour"].examples[0] in text  # the style's example prompts
    assert text.index("</notes>") < text.index("<idea>")  # the idea stays last, as data

    plain = await make_studio(gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir, QA_MAX_ROUNDS=0))
    assert plain.knowledge is None  # off by default
    await run(plain, "a portrait of an old sailor")
    assert "<notes>" not in fake_gemini.requests[-1].text
