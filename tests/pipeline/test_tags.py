"""Tags for POST /generate/tags (and the soundtrack): the director's tags of both texts."""

from __future__ import annotations

import pytest

from pipeline.directors.local import LocalDirector
from pipeline.errors import BadRequest
from pipeline.tags import tags_for


def test_tags_of_both_texts_lowercase_and_deduplicated():
    tags = tags_for("A RED Apple on a wooden table", "Soft rain and an apple, a slow piano")
    assert tags == [t.lower() for t in tags] and len(tags) == len(set(tags))
    picture = LocalDirector().scene_for("A RED Apple on a wooden table").tags
    assert tags[: len(picture)] == picture  # the picture's own tags first, as its director made them
    assert {"rain", "piano"} <= set(tags[len(picture) :])
    assert tags.count("apple") == 1


def test_a_sound_brings_only_what_it_names():
    tags = tags_for("", "thunder over the sea")
    assert {"thunder", "sea"} <= set(tags)
    assert "digital art" not in tags and "artwork" not in tags  # a picture's style and padding tags


@pytest.mark.parametrize(("image", "sound"), [("", ""), ("   ", "\n"), ("x" * 1001, "")])
def test_nothing_or_too_much_is_a_bad_request(image, sound):
    with pytest.raises(BadRequest):
        tags_for(image, sound)
