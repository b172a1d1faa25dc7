"""What every GPU section runs on: the plan, timing and audio helpers, and :class:`GpuBench` — one
``GPUExecutor`` on the models, loaded through the product's own code, whose GPU thread runs every
torch call a section times. A section is an ``async def section_<name>(bench: GpuBench)`` that
writes ``bench.metrics``, ``bench.details`` and tables (``put_table``) into the results."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..common import product_defaults
from ..models import IDEAS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuPlan:
    size: int = 512
    steps: int = 25
    guidance: float = 7.5
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    repeats: int = 5
    warmup: int = 1
    burst_jobs: int = 32
    burst_batches: tuple[int, ...] = (4, 8)
    loop_repeats: int = 3
    whisper_seconds: float = 20.0
    whisper_variants: bool = True
    compile_buckets: tuple[int, ...] = (1, 2, 4)  # the product's default MAX_BATCH is 4


FULL = GpuPlan()
SMOKE = GpuPlan(
    size=64,
    steps=2,
    batch_sizes=(1, 2),
    repeats=1,
    warmup=0,
    burst_jobs=4,
    burst_batches=(2,),
    loop_repeats=1,
    whisper_variants=False,
    compile_buckets=(1, 2),
)


# ------------------------------------------------------------------------------------------------
# Helpers (the timing ones run on the executor's GPU thread)
# ------------------------------------------------------------------------------------------------
def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def sync_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls after ``warmup`` untimed ones, synchronised with the GPU."""
    for _ in range(warmup):
        fn()
    sync_gpu()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync_gpu()
        times.append(time.perf_counter() - started)
    return times


def speech_like(seconds: float, sample_rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated signal at about -20 dBFS (content doesn't matter to random
    weights; it only has to pass the product's silence check)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 9))
    envelope = 0.2 + 0.8 * np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
    signal = voiced * envelope + 0.02 * rng.standard_normal(t.size)
    signal *= 0.1 / np.sqrt(np.mean(signal**2))
    return signal.astype(np.float32)


def wav_bytes(samples: np.ndarray, sample_rate: int = 16_000) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def put_table(results: dict, table: dict) -> None:
    """Add ``table`` to the results, replacing one of the same title (a merged ``--only`` run)."""
    tables = results.setdefault("tables", [])
    for i, existing in enumerate(tables):
        if existing["title"] == table["title"]:
            tables[i] = table
            return
    tables.append(table)


def fmt_ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1000:.1f}"


def fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


# ------------------------------------------------------------------------------------------------
class GpuBench:
    """The state the sections share: the executor and its engine, the plan and the results."""

    def __init__(
        self, args, results: dict, save: Callable[[], None], plan: GpuPlan, models: dict[str, Path], tmp: Path
    ) -> None:
        self.args = args
        self.results = results
        self.save = save
        self.plan = plan
        self.models = models
        self.tmp = tmp
        self.repeats = args.repeats or plan.repeats
        self.started = time.perf_counter()  # run() sets the run's start (what --budget counts from)
        self.executor = None
        self.engine = None
        self.settings = None
        self.baseline_b1: float | None = None
        self.details = results.setdefault("details", {})
        self.metrics = results.setdefault("metrics", {})

    # --- set-up ---------------------------------------------------------------------------------
    def make_settings(self, **overrides):
        from pipeline.settings import Settings

        defaults = product_defaults(
            "DYNAMIC_BATCHING", "MAX_BATCH", "BATCH_WINDOW_MS", "SAFETY_CHECKER", "QA_THRESHOLD"
        )
        values: dict[str, Any] = dict(
            defaults,
            DEVICE="auto",
            WIDTH=self.plan.size,
            HEIGHT=self.plan.size,
            STEPS=self.plan.steps,
            GUIDANCE=self.plan.guidance,
            QA_MAX_ROUNDS=0,
            GEMINI_API_KEY="",
            MAX_JOBS_PER_USER=1000,
            MAX_QUEUE=1000,
            DATA_DIR=self.tmp / "data",
            RETENTION_DAYS=0,
            LOG_LEVEL="WARNING",
        )
        for setting, model in (
            ("DIFFUSION_MODEL", "sd15"),
            ("WHISPER_MODEL", "whisper-large-v3-turbo"),
            ("CLIP_MODEL", "clip-vit-large-patch14"),
        ):
            if model in self.models:  # a families-only run builds none of the base models
                values[setting] = str(self.models[model])
        values.update(overrides)
        return Settings(_env_file=None, **values)

    async def start(self) -> None:
        from pipeline.executor import Engine, GPUExecutor

        self.settings = self.make_settings()
        self.engine = Engine(self.settings)
        self.executor = GPUExecutor(self.settings, engine=self.engine, stage_timeout_s=3600)
        await self.executor.start()
        loads = {}
        for name, loader in (
            ("diffusion", lambda: self.engine.synthesizer.load()),
            ("whisper", lambda: self.engine.transcriber.load()),
            ("clip", lambda: self.engine.clip_critic.load()),
        ):
            started = time.perf_counter()
            await self.gpu(loader)
            loads[name] = time.perf_counter() - started
        import torch

        self.results["machine"]["torch_threads_gpu_thread"] = await self.gpu(torch.get_num_threads)
        synth = self.engine.synthesizer
        self.details["load_s"] = loads
        self.details["device"] = {"device": str(synth.device), "dtype": str(synth.dtype).removeprefix("torch.")}
        log.info(
            "models loaded through the product on %s/%s: %s",
            synth.device,
            synth.dtype,
            ", ".join(f"{k} {v:.1f} s" for k, v in loads.items()),
        )

    async def stop(self) -> None:
        if self.executor is not None:
            await self.executor.shutdown(timeout_s=60)

    async def gpu(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the executor's GPU thread (where the product runs every torch call)."""
        return await self.executor.call(None, "bench", fn, *args)

    @property
    def synth(self):
        return self.engine.synthesizer

    @property
    def pipe(self):
        return self.engine.synthesizer._text2img

    def requests(self, n: int, *, steps: int | None = None, seed: int = 10):
        from pipeline.synthesis import RenderRequest

        return [
            RenderRequest(
                prompt=IDEAS[i % len(IDEAS)],
                seed=seed + i,
                steps=steps or self.plan.steps,
                guidance=self.plan.guidance,
                width=self.plan.size,
                height=self.plan.size,
            ).validated()
            for i in range(n)
        ]

    def render_fn(self, n: int, **kw) -> Callable[[], Any]:
        requests = self.requests(n, **kw)
        return lambda: self.synth.render(requests)

    async def b1(self, repeats: int | None = None) -> list[float]:
        return await self.gpu(time_calls, self.render_fn(1), repeats or self.repeats, self.plan.warmup)
