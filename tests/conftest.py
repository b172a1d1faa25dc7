"""Session-wide fixtures: tiny models are built once per test session and saved to disk, then
loaded through the product's own loading code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests import builders  # noqa: E402


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_sd_dir(models_dir: Path) -> Path:
    return builders.build_tiny_stable_diffusion(models_dir / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_clip_dir(models_dir: Path) -> Path:
    return builders.build_tiny_clip(models_dir / "tiny-clip")


@pytest.fixture
def make_settings(tmp_path: Path, tiny_sd_dir: Path, tiny_clip_dir: Path):
    """Settings pointing at the tiny models, no Gemini key, data in a temporary directory."""
    from pipeline.settings import Settings

    def factory(**overrides):
        values = dict(
            DIFFUSION_MODEL=str(tiny_sd_dir),
            CLIP_MODEL=str(tiny_clip_dir),
            DEVICE="cpu",
            WIDTH=64,
            HEIGHT=64,
            GEMINI_API_KEY="",
            DATA_DIR=tmp_path / "data",
            _env_file=None,
        )
        values.update(overrides)
        return Settings(**values)

    return factory


# ------------------------------------------------------------------------------------------------
# Fake Gemini (tests/fakes/gemini.py): `fake_gemini` (a running fake server) and
# `gemini_settings(**overrides)` (Settings pointing at it).
# ------------------------------------------------------------------------------------------------
from tests.fakes.gemini import fake_gemini, gemini_settings  # noqa: E402,F401
