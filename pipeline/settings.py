"""All settings, read from the environment and ``.env`` (see ``.env.example`` for every one)."""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import limits
from .control import DEFAULT_CONTROLNET_MODELS, DEFAULT_DEPTH_MODEL, parse_controlnet_models


class Settings(BaseSettings):
    """One object for the bot, the CLI and the engine. Names match the environment variables."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False)

    # --- Discord ---
    DISCORD_TOKEN: SecretStr | None = None
    DISCORD_GUILD_IDS: Annotated[list[int], NoDecode] = Field(default_factory=list)
    DISCORD_API_BASE: str = "https://discord.com/api/v10"
    DISCORD_GATEWAY_URL: str = "wss://gateway.discord.gg/"
    # At start: how long to keep trying to reach Discord (back-off between tries) before giving up.
    DISCORD_CONNECT_TIMEOUT_S: float = Field(60.0, gt=0, le=3600)

    # --- Gemini (empty key: local director + CLIP critic, no cloud at all) ---
    GEMINI_API_KEY: SecretStr | None = None
    GEMINI_MODEL: str = "gemini-2.5-flash"
    GOOGLE_GEMINI_BASE_URL: str | None = None
    GEMINI_TIMEOUT_S: float = Field(30.0, gt=0)
    GEMINI_RETRIES: int = Field(3, ge=0, le=10)

    # --- models ---
    WHISPER_MODEL: str = "openai/whisper-large-v3-turbo"
    DIFFUSION_MODEL: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    CLIP_MODEL: str = "openai/clip-vit-large-patch14"
    # /describe without Gemini: a BLIP image-captioning checkpoint (loaded on first use).
    CAPTION_MODEL: str = "Salesforce/blip-image-captioning-base"
    DEVICE: Literal["auto", "cuda", "cpu"] = "auto"
    SAFETY_CHECKER: bool = True
    MUSIC_MODEL: str = "facebook/musicgen-small"
    # Soundtrack length in seconds (MusicGen's 30 s at most); /compose and the CLI may ask for less.
    MUSIC_SECONDS: float = Field(limits.MAX_MUSIC_SECONDS, ge=limits.MIN_MUSIC_SECONDS, le=limits.MAX_MUSIC_SECONDS)

    # Named models: "name=hub-id-or-dir;steps=4;guidance=0;few_step=true, other=..." (pipeline.registry).
    MODELS: str = ""
    # How many diffusion pipelines stay loaded at once (least recently used is unloaded first), and
    # optionally a GPU memory budget in GiB for them (0 = no budget, only the count).
    MAX_RESIDENT_MODELS: int = Field(1, ge=1, le=16)
    GPU_MEMORY_BUDGET_GB: float = Field(0.0, ge=0)
    # A directory of LoRA .safetensors files, usable by file name (/imagine lora:).
    LORA_DIR: Path | None = None
    # ControlNets by mode and family (pipeline.control): "[family:]mode=hub-id-or-dir, ..." with
    # modes canny, depth, pose, palette and families sd (the default) and sdxl; empty: no /imagine control:.
    CONTROLNET_MODELS: str = DEFAULT_CONTROLNET_MODELS
    # The depth estimator for control:depth (a transformers depth-estimation model: DPT, Depth-Anything).
    DEPTH_MODEL: str = DEFAULT_DEPTH_MODEL

    # --- styles (pipeline.styles) ---
    # A TOML file of [[style]] tables that add styles or override built-in ones (pipeline/data/styles.toml).
    STYLES_FILE: Path | None = None
    # A folder of short .txt/.md notes per style or subject, searched with BM25 and given to the
    # director as context (pipeline.knowledge); empty: off.
    STYLE_KNOWLEDGE: Path | None = None

    # --- render backends (pipeline/backends; README "Render backends") ---
    # Where the default model renders: this machine's GPU (diffusers) or a remote backend; a MODELS
    # entry "name=comfyui:ckpt.safetensors" (a1111:, stability:, replicate:) renders on that one.
    RENDER_BACKEND: Literal["diffusers", "a1111", "comfyui", "stability", "replicate"] = "diffusers"
    # A backend that fails after its retries hands the picture to this one (empty: none).
    RENDER_FALLBACK: Literal["", "diffusers", "a1111", "comfyui", "stability", "replicate"] = ""
    REMOTE_CONCURRENCY: int = Field(1, ge=1, le=64)  # renders in flight per remote backend
    REMOTE_TIMEOUT_S: float = Field(180.0, gt=0, le=3600)  # one HTTP request (a whole A1111 render)
    REMOTE_RETRIES: int = Field(3, ge=0, le=10)  # tries after the first on 429/5xx/timeouts
    A1111_URL: str = "http://127.0.0.1:7860"  # AUTOMATIC1111 or Forge, started with --api
    A1111_MODEL: str = ""  # checkpoint title; empty: the one the server has loaded
    COMFYUI_URL: str = "http://127.0.0.1:8188"
    COMFYUI_CHECKPOINT: str = "sd_xl_base_1.0.safetensors"  # {{checkpoint}} of the workflow
    COMFYUI_WORKFLOW: Path | None = None  # an API-format workflow JSON with {{prompt}} ... placeholders
    COMFYUI_IMG2IMG_WORKFLOW: Path | None = None
    # ControlNet on a remote backend: mode=the server's model name (sd-webui-controlnet's model list
    # for A1111/Forge; a file in ComfyUI's models/controlnet). A mode not listed is refused there.
    A1111_CONTROLNET_MODELS: str = (
        "canny=control_v11p_sd15_canny, depth=control_v11f1p_sd15_depth, pose=control_v11p_sd15_openpose, "
        "palette=control_v11f1e_sd15_tile"
    )
    COMFYUI_CONTROLNET_MODELS: str = (
        "canny=control_v11p_sd15_canny.pth, pose=control_v11p_sd15_openpose.pth, palette=control_v11f1e_sd15_tile.pth"
    )
    STABILITY_API_KEY: SecretStr | None = None
    STABILITY_MODEL: str = "sd3.5-large"  # sd3.5-large, sd3.5-large-turbo, sd3.5-medium, core, ultra
    STABILITY_URL: str = "https://api.stability.ai"
    REPLICATE_API_TOKEN: SecretStr | None = None
    REPLICATE_MODEL: str = "stability-ai/sdxl"  # owner/name, or owner/name:version
    REPLICATE_URL: str = "https://api.replicate.com"

    # --- rendering defaults (bounds: pipeline/limits.py, checked below) ---
    # Empty: the model family's own (pipeline.families): SD 25 steps at 7.5, SDXL 30 at 6, Turbo 4 at 0 ...
    STEPS: int | None = None
    GUIDANCE: float | None = None
    # Empty: the model's native size (sample_size x vae_scale_factor): SD 1.5 512, SDXL 1024.
    WIDTH: int | None = None
    HEIGHT: int | None = None

    # --- self-correction ---
    QA_THRESHOLD: int = Field(85, ge=0, le=100)
    QA_MAX_ROUNDS: int = Field(1, ge=0, le=5)
    # Pictures rendered per job in one batch, all scored by the critic (1-4); empty: 4 on CUDA, 1 on CPU.
    CANDIDATES: int | None = Field(None, ge=1, le=limits.MAX_CANDIDATES)

    # --- upscaling (the U buttons) ---
    # The hires fix refines the x2 picture in tiles of this many pixels a side (0: the model's native
    # size), so memory stays bounded; a picture no larger than a tile is refined whole.
    UPSCALE_TILE: int = Field(0, ge=0, le=limits.MAX_SIDE)
    # Optional: a dedicated upscaler (diffusers' Stable Diffusion x4 upscaler, hub id or local
    # directory) used instead of Lanczos before the refinement; empty: Lanczos (no extra weights).
    UPSCALER_MODEL: str | None = None

    # --- queue ---
    MAX_AUDIO_SECONDS: float = Field(120, gt=0)
    MAX_AUDIO_BYTES: int = Field(limits.MAX_AUDIO_BYTES, gt=0)
    MAX_JOBS_PER_USER: int = Field(2, ge=1)
    DAILY_QUOTA: int = Field(0, ge=0)  # jobs per user per UTC day, all servers and the API together; 0: no limit
    MAX_QUEUE: int = Field(100, ge=1)
    DYNAMIC_BATCHING: bool = True
    MAX_BATCH: int = Field(4, ge=1, le=16)
    BATCH_WINDOW_MS: float = Field(10.0, ge=0, le=1000)

    # --- executor: the model stages on this machine (local) or on a Ray cluster (README "Scaling out") ---
    EXECUTOR: Literal["local", "ray"] = "local"
    # A running cluster: "auto" (this machine's), "host:6379" or "ray://host:10001" (Ray Client).
    RAY_ADDRESS: str = ""
    RAY_NAMESPACE: str = "voxcanvas"
    # Serve autoscaling bounds of the render deployment (the others: 1 to RAY_MAX_REPLICAS).
    RAY_MIN_REPLICAS: int = Field(1, ge=1, le=256)
    RAY_MAX_REPLICAS: int = Field(1, ge=1, le=256)
    # GPUs per render replica and per Whisper / CLIP / MusicGen replica (fractions share a card);
    # empty: 1 and 0.25 when the cluster has GPUs, else 0 (CPU-only clusters, tests).
    RAY_RENDER_GPUS: float | None = Field(None, ge=0, le=8)
    RAY_AUX_GPUS: float | None = Field(None, ge=0, le=8)
    # A cluster lost after start: jobs wait (and the bot tries to reconnect every few seconds) up
    # to this many seconds, then the waiting jobs fail with a message naming RAY_ADDRESS.
    RAY_RECONNECT_TIMEOUT_S: float = Field(300.0, ge=0, le=86400)

    # --- Discord gateway shards, all in this one process (AutoShardedBot); 0 or empty (default):
    # Discord's recommendation from GET /gateway/bot; N: exactly N shards ---
    SHARD_COUNT: int | None = Field(0, ge=0, le=1024)

    # --- storage ---
    DATA_DIR: Path = Path("./data")
    RETENTION_DAYS: int = Field(30, ge=0)
    # How often the running bot applies RETENTION_DAYS (it also does at start-up).
    PURGE_INTERVAL_HOURS: float = Field(6.0, gt=0, le=24 * 365)

    # --- web API and playground (same process, queue and store as the bot) ---
    API_HOST: str = "127.0.0.1"
    API_PORT: int | None = Field(8080, ge=0, le=65535)  # empty: no web server (0: any free port)
    # Clients send `Authorization: Bearer <key>`; with no keys the API binds to loopback only.
    API_KEYS: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    PUBLIC_URL: str | None = None  # absolute URLs in responses; default http://API_HOST:API_PORT
    API_WAIT_S: float = Field(600.0, gt=0, le=3600)  # how long POST /api/generate waits for its job

    LOG_LEVEL: str = "INFO"
    # Loggers that carry credentials (pipeline.logs.SECRET_BEARING_LOGGERS: discord.webhook,
    # discord.http, discord.gateway, aiosqlite) stay at WARNING unless named here (comma-separated).
    LOG_DEBUG_LOGGERS: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("DISCORD_GUILD_IDS", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(part) for part in value.replace(";", ",").split(",") if part.strip()]
        if isinstance(value, int):
            return [value]
        return value

    @field_validator("API_KEYS", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("API_PORT", "PUBLIC_URL", mode="before")
    @classmethod
    def _empty_disables(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _open_api_on_loopback_only(self) -> Settings:
        if self.API_PORT is not None and not self.API_KEYS and not is_loopback(self.API_HOST):
            raise ValueError(
                f"API_HOST={self.API_HOST} would open the web API to the network without a key. "
                "Set API_KEYS (comma-separated; clients send 'Authorization: Bearer <key>'), "
                "or keep API_HOST=127.0.0.1."
            )
        return self

    @field_validator("LOG_DEBUG_LOGGERS", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    # A rendering default the renderer would refuse fails at start, naming the setting, instead
    # of failing every job: the bounds are the renderer's own (pipeline/limits.py).
    @field_validator("STEPS")
    @classmethod
    def _steps_renderable(cls, value: int | None) -> int | None:
        if value is None:
            return value
        if not limits.MIN_STEPS <= value <= limits.MAX_STEPS:
            raise ValueError(f"STEPS must be between {limits.MIN_STEPS} and {limits.MAX_STEPS} (got {value}).")
        return value

    @field_validator("GUIDANCE")
    @classmethod
    def _guidance_renderable(cls, value: float | None) -> float | None:
        if value is None:
            return value
        if not limits.MIN_GUIDANCE <= value <= limits.MAX_GUIDANCE:
            raise ValueError(
                f"GUIDANCE must be between {limits.MIN_GUIDANCE:g} and {limits.MAX_GUIDANCE:g} (got {value:g})."
            )
        return value

    @field_validator("WIDTH", "HEIGHT")
    @classmethod
    def _side_renderable(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return value
        if value % limits.SIDE_MULTIPLE or not limits.MIN_SIDE <= value <= limits.MAX_SIDE:
            raise ValueError(
                f"{info.field_name} must be a multiple of {limits.SIDE_MULTIPLE} between {limits.MIN_SIDE} and "
                f"{limits.MAX_SIDE} pixels (got {value})."
            )
        return value

    @field_validator("UPSCALE_TILE")
    @classmethod
    def _tile_side(cls, value: int) -> int:
        if value and (value % limits.SIDE_MULTIPLE or value < limits.MIN_SIDE):
            raise ValueError(
                f"UPSCALE_TILE must be 0 (the model's native size) or a multiple of {limits.SIDE_MULTIPLE} "
                f"between {limits.MIN_SIDE} and {limits.MAX_SIDE} pixels (got {value})."
            )
        return value

    @field_validator(
        "STEPS",
        "GUIDANCE",
        "WIDTH",
        "HEIGHT",
        "LORA_DIR",
        "CANDIDATES",
        "UPSCALER_MODEL",
        "STYLES_FILE",
        "STYLE_KNOWLEDGE",
        "RAY_RENDER_GPUS",
        "RAY_AUX_GPUS",
        "SHARD_COUNT",
        mode="before",
    )
    @classmethod
    def _blank_is_default(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("MODELS")
    @classmethod
    def _models_parse(cls, value: str) -> str:
        from .registry import parse_models

        parse_models(value)  # ValueError naming the bad entry
        return value

    @field_validator("COMFYUI_WORKFLOW", "COMFYUI_IMG2IMG_WORKFLOW", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _backends_configured(self) -> Settings:
        from .backends.base import remote_source
        from .registry import parse_models

        used: set[str] = {self.RENDER_BACKEND, self.RENDER_FALLBACK}
        used |= {found[0] for e in parse_models(self.MODELS).values() if (found := remote_source(e.source))}
        if "stability" in used and self.STABILITY_API_KEY is None:
            raise ValueError("Rendering on Stability AI needs STABILITY_API_KEY.")
        if "replicate" in used and self.REPLICATE_API_TOKEN is None:
            raise ValueError("Rendering on Replicate needs REPLICATE_API_TOKEN.")
        for name, path in (
            ("COMFYUI_WORKFLOW", self.COMFYUI_WORKFLOW),
            ("COMFYUI_IMG2IMG_WORKFLOW", self.COMFYUI_IMG2IMG_WORKFLOW),
        ):
            if path is not None:
                from .backends.comfyui import load_workflow

                try:
                    load_workflow(path, "")
                except OSError as exc:
                    raise ValueError(f"{name}: can't read {path} ({exc.strerror or exc})") from None
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        if self.RENDER_FALLBACK and self.RENDER_FALLBACK == self.RENDER_BACKEND:
            raise ValueError("RENDER_FALLBACK must name another backend than RENDER_BACKEND (or be empty).")
        return self

    @field_validator("A1111_CONTROLNET_MODELS", "COMFYUI_CONTROLNET_MODELS")
    @classmethod
    def _remote_controlnets_parse(cls, value: str, info: ValidationInfo) -> str:
        from .control import parse_remote_controlnet_models

        parse_remote_controlnet_models(value, str(info.field_name))  # ValueError naming the entry
        return value

    @field_validator("CONTROLNET_MODELS")
    @classmethod
    def _controlnets_parse(cls, value: str) -> str:
        parse_controlnet_models(value)  # ValueError naming the bad entry
        return value

    @field_validator("STYLES_FILE")
    @classmethod
    def _styles_file_loads(cls, value: Path | None) -> Path | None:
        if value is not None:
            from .styles import BUILTIN_STYLES, load_styles_file

            load_styles_file(value, base=BUILTIN_STYLES)  # StyleFileError naming the file and line
        return value

    @field_validator("STYLE_KNOWLEDGE")
    @classmethod
    def _knowledge_is_a_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"STYLE_KNOWLEDGE {value} is not a folder")
        return value

    @field_validator("DISCORD_TOKEN", "GEMINI_API_KEY", "STABILITY_API_KEY", "REPLICATE_API_TOKEN", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _ray_bounds(self) -> Settings:
        if self.RAY_MIN_REPLICAS > self.RAY_MAX_REPLICAS:
            raise ValueError(
                f"RAY_MIN_REPLICAS ({self.RAY_MIN_REPLICAS}) is above RAY_MAX_REPLICAS ({self.RAY_MAX_REPLICAS})."
            )
        return self

    @property
    def gemini_enabled(self) -> bool:
        return self.GEMINI_API_KEY is not None

    @property
    def api_enabled(self) -> bool:
        return self.API_PORT is not None

    def public_url(self, port: int | None = None) -> str:
        """The base of absolute URLs the API hands out (``port``: the one actually bound)."""
        if self.PUBLIC_URL:
            return self.PUBLIC_URL.rstrip("/")
        host = self.API_HOST if ":" not in self.API_HOST else f"[{self.API_HOST}]"
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{port if port is not None else self.API_PORT}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings(...)`` instead)."""
    return Settings()
