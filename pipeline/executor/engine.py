"""The models: constructed anywhere, loaded and used only on the model thread."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..critic import ClipCritic
    from ..music import Composer
    from ..registry import ModelPool
    from ..settings import Settings
    from ..synthesis import Synthesizer
    from ..transcribe import Transcriber
    from ..upscaler import Upscaler


class Engine:
    """Whisper, the diffusion pipeline, CLIP, MusicGen and the x4 upscaler, each created on first use (importing torch
    libraries only then)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._transcriber: Transcriber | None = None
        self._models: ModelPool | None = None
        self._clip_critic: ClipCritic | None = None
        self._composer: Composer | None = None
        self._upscaler: Upscaler | None = None

    @property
    def transcriber(self) -> Transcriber:
        if self._transcriber is None:
            from ..transcribe import Transcriber

            self._transcriber = Transcriber(self.settings.WHISPER_MODEL, self.settings.DEVICE)
        return self._transcriber

    @property
    def models(self) -> ModelPool:
        """The diffusion models (DIFFUSION_MODEL and MODELS), least recently used unloaded first."""
        if self._models is None:
            from ..registry import ModelPool

            self._models = ModelPool(self.settings)
        return self._models

    @property
    def synthesizer(self) -> Synthesizer:
        """The default diffusion model (DIFFUSION_MODEL)."""
        return self.models.get(None)

    @property
    def clip_critic(self) -> ClipCritic:
        if self._clip_critic is None:
            from ..critic import ClipCritic

            self._clip_critic = ClipCritic(self.settings.CLIP_MODEL, self.settings.DEVICE)
        return self._clip_critic

    @property
    def composer(self) -> Composer:
        if self._composer is None:
            from ..music import Composer

            self._composer = Composer(self.settings.MUSIC_MODEL, self.settings.DEVICE)
        return self._composer

    @property
    def upscaler(self) -> Upscaler:
        """UPSCALER_MODEL (the U buttons' x4 upscaler when it is set)."""
        if self._upscaler is None:
            from ..upscaler import Upscaler

            if not self.settings.UPSCALER_MODEL:
                raise RuntimeError("UPSCALER_MODEL is not set")  # the studio asks only when it is
            self._upscaler = Upscaler(self.settings.UPSCALER_MODEL, self.settings.DEVICE)
        return self._upscaler

    def warm_up(self, *, whisper: bool = True, clip: bool = True, diffusion: bool = True) -> None:
        """Load the models a job will need (runs on the model thread); ``diffusion=False``: the
        default model renders on a remote backend (pipeline.backends)."""
        if diffusion:
            self.models.use(None)
        if clip:
            self.clip_critic.load()
        if whisper:
            self.transcriber.load()
