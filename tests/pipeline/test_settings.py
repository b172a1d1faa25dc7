"""Settings validation: a rendering default the renderer would refuse is refused at start, with a
message naming the setting, and the bounds are the renderer's own (pipeline/limits.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline import limits
from pipeline.errors import BadRequest
from pipeline.settings import Settings
from pipeline.synthesis import RenderRequest


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # no .env file: only what the test says


@pytest.mark.parametrize(
    "values, words",
    [
        (dict(STEPS=150), "between 1 and 100"),
        (dict(STEPS=0), "between 1 and 100"),
        (dict(WIDTH=4096), "between 64 and 2048"),
        (dict(WIDTH=500), "multiple of 8"),
        (dict(HEIGHT=4096), "between 64 and 2048"),
        (dict(HEIGHT=56), "between 64 and 2048"),
        (dict(GUIDANCE=30.5), "between 0 and 30"),
        (dict(GUIDANCE=-1), "between 0 and 30"),
    ],
)
def test_a_default_the_renderer_refuses_is_refused_at_start_naming_the_setting(values, words):
    ((name, value),) = values.items()
    with pytest.raises(ValidationError) as refused:
        settings(**values)
    (error,) = refused.value.errors()
    assert error["loc"] == (name,)
    assert name in error["msg"] and words in error["msg"] and str(value) in error["msg"]


def test_the_same_values_from_the_environment_are_refused(monkeypatch):
    monkeypatch.setenv("STEPS", "150")
    with pytest.raises(ValidationError, match="STEPS must be between 1 and 100"):
        settings()


@pytest.mark.parametrize(
    "values",
    [
        dict(STEPS=limits.MAX_STEPS, WIDTH=limits.MAX_SIDE, HEIGHT=limits.MIN_SIDE, GUIDANCE=limits.MAX_GUIDANCE),
        dict(STEPS=limits.MIN_STEPS, WIDTH=limits.MIN_SIDE, HEIGHT=limits.MAX_SIDE, GUIDANCE=limits.MIN_GUIDANCE),
        dict(WIDTH=768, HEIGHT=512, STEPS=25, GUIDANCE=7.5),
    ],
)
def test_every_default_settings_accept_is_a_request_the_renderer_accepts(values):
    chosen = settings(**values)
    request = RenderRequest(
        prompt="a red apple",
        steps=chosen.STEPS,
        guidance=chosen.GUIDANCE,
        width=chosen.WIDTH,
        height=chosen.HEIGHT,
    ).validated()
    assert (request.steps, request.guidance, request.width, request.height) == (
        values["STEPS"],
        values["GUIDANCE"],
        values["WIDTH"],
        values["HEIGHT"],
    )


@pytest.mark.parametrize("name, value", [("STEPS", 150), ("WIDTH", 4096), ("WIDTH", 500), ("GUIDANCE", 31.0)])
def test_what_settings_refuse_the_renderer_refuses_too(name, value):
    request = dict(prompt="a red apple", steps=25, guidance=7.5, width=512, height=512)
    request[name.lower()] = value
    with pytest.raises(BadRequest):
        RenderRequest(**request).validated()
