"""The executor interface the studio, the bot and the CLI use. :class:`~.local.GPUExecutor` (one
thread on this machine) implements it; a cluster executor would implement the same methods and
make its decisions with the same :mod:`~.policy`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from PIL import Image

    from ..critic import QAReport
    from ..families import FamilyProfile
    from ..music import Music, MusicRequest
    from ..scene import Scene
    from ..synthesis import RenderedImage, RenderRequest
    from ..transcribe import Task, Transcript
    from ..upscaler import UpscaleRequest
    from .jobs import Job, WorkKind
    from .metrics import MetricsSnapshot


class Executor(Protocol):
    # --- life cycle ---
    async def start(self) -> None:
        """Begin serving (call on the event loop that will await the work)."""

    async def warm_up(self, *, whisper: bool = True, clip: bool = True) -> None:
        """Load the models a job will need."""

    def stop_admitting(self) -> None:
        """New jobs are refused with :class:`ShuttingDown`; queued and running work goes on."""

    async def shutdown(self, timeout_s: float = 30.0) -> list[str]:
        """Stop, let running work finish (bounded); the ids of admitted jobs not finished."""

    # --- jobs ---
    def admit(self, user_id: str | int, job_id: str | None = None, *, force: bool = False) -> Job:
        """A slot for a user's job, or :class:`TooManyJobs` / :class:`QueueFull` /
        :class:`ShuttingDown`. ``force`` skips the caps (jobs accepted before a restart)."""

    def get_job(self, job_id: str) -> Job | None: ...

    def jobs_of(self, user_id: str | int) -> list[Job]:
        """The user's unfinished jobs."""

    def cancel(self, job: Job) -> None:
        """Drop the job's queued work now; a running render stops at its next step."""

    def finish(self, job: Job, outcome: str = "done") -> None:
        """Give the job's slot back; ``outcome`` is "done", "failed" or "cancelled"."""

    def position_of(self, job: Job) -> int | None:
        """1-based place among waiting jobs in service order; None once started."""

    def eta_of(self, job: Job) -> float | None: ...

    # --- model stages ---
    async def transcribe(self, job: Job, audio: NDArray[np.float32], task: Task = "auto") -> Transcript: ...

    async def render(self, job: Job, request: RenderRequest) -> RenderedImage: ...

    async def review(self, job: Job, image: Image.Image, scene: Scene, prompt: str) -> QAReport: ...

    async def review_many(self, job: Job, images: Sequence[Image.Image], scene: Scene, prompt: str) -> list[QAReport]:
        """The CLIP critic on several candidates of one prompt, as one work item (one batched pass)."""
        ...

    async def compose(self, job: Job, request: MusicRequest) -> Music:
        """Compose music (one work item of kind "music", never batched); progress in decoder
        steps; cancelling the job stops it at the next step with :class:`JobCancelled`."""

    async def upscale(self, job: Job, request: UpscaleRequest) -> tuple[bytes, int, int]:
        """UPSCALER_MODEL on ``request``: PNG bytes, the model's scale, tiles; progress per tile."""
        ...

    async def call(self, job: Job | None, kind: WorkKind, fn: Callable[..., Any], *args: Any) -> Any:
        """Run any callable where the models live, as a work item of ``job``."""

    def count_tokens(self, text: str) -> int | None:
        """CLIP tokens in ``text`` once the diffusion tokenizer is loaded, else None."""

    def lora_choices(self, model: str | None) -> list[str]:
        """LORA_DIR's LoRAs that fit ``model`` (all of them while it is not loaded)."""

    def family(self, model: str | None) -> FamilyProfile | None:
        """The family profile of a diffusion model (a MODELS name; None: the default) when it is
        loaded, else None (nothing is loaded for the asking)."""

    def metrics(self) -> MetricsSnapshot: ...
