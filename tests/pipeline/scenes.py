"""A valid Scene as plain data, for the tests of the Scene, the styles, the directors and the critic."""

from __future__ import annotations

from typing import Any


def scene_data(**overrides: Any) -> dict[str, Any]:
    """A red apple on a wooden table as an oil painting; ``overrides`` replace fields."""
    data = {
        "title": "A red apple",
        "language": "en",
        "scene_description": "A red apple on a wooden table.",
        "elements": ["red apple", "wooden table"],
        "diffusion_prompt": "a red apple on a wooden table, still life, oil painting, soft light",
        "negative_prompt": "blurry, text",
        "palette": ["#C0392B", "#8E5B3A", "#F3E9DC"],
        "tags": ["apple", "still life", "fruit", "table", "oil painting"],
        "style": "oil painting",
    }
    data.update(overrides)
    return data
