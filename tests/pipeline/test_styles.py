"""Style templates and style names as users and models spell them."""

from __future__ import annotations

import pytest

from pipeline.errors import BadRequest
from pipeline.scene import Scene
from pipeline.styles import STYLES, check_style, resolve_style
from tests.pipeline.scenes import scene_data


def test_resolve_style_aliases():
    assert resolve_style("Watercolor") == "watercolour"
    assert resolve_style("3D") == "3d render"
    assert resolve_style("oil_painting") == "oil painting"
    assert resolve_style(None) is None and resolve_style("auto") is None
    with pytest.raises(ValueError):
        resolve_style("vaporwave")


def test_styles_are_complete_templates():
    assert 8 <= len(STYLES) <= 12
    for name, template in STYLES.items():
        assert template.name == name
        assert template.medium and template.modifiers and template.negative and template.quality
        assert 3 <= len(template.palette) <= 6
        Scene(**scene_data(palette=list(template.palette), style=name))  # valid as a Scene


def test_check_style_turns_an_unknown_name_into_a_bad_request_naming_the_choices():
    assert check_style("Watercolor") == "watercolour" and check_style(None) is None
    with pytest.raises(BadRequest, match="vaporwave") as raised:
        check_style("vaporwave")
    assert all(name in str(raised.value) for name in STYLES)
