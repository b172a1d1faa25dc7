"""GPU mode: real-size architectures with random weights on a CUDA GPU.

Models (``bench/models.py``): Stable Diffusion 1.5 (UNet 860M, VAE, CLIP ViT-L/14 text encoder, the
ViT-L/14 safety checker, Euler), Whisper large-v3-turbo, CLIP ViT-L/14 — built once into a cache
directory and loaded through the product's own code by a :class:`~pipeline.executor.GPUExecutor`
(``DEVICE=auto``: fp16 + SDPA on CUDA, the UNet in channels_last), so every measurement below is the
product as it runs, on its one GPU thread.

Sections (``--only`` picks some; results of a day merge into one file):

``sd``       seconds per image at batch 1 (512², Euler 25 steps, guidance 7.5, safety checker on),
             images/s at batch 1, 2, 4, 8, a component breakdown (text encoder, one UNet step with
             classifier-free guidance, VAE decode, safety checker) and a CUDA sync audit (are there
             host syncs per denoising step?).
``options``  each speed option before/after at batch 1: fp16 vs fp32, SDPA vs classic attention,
             channels_last (UNet, VAE), fused QKV projections, cuDNN benchmark, the safety checker,
             VAE decode in fp32 (the "upcast" SD 1.5 does not need).
``whisper``  a 20 s clip through ``Transcriber`` (beam 5 as the product does; the decoder says 64
             text tokens), its parts (log-mel features, encoder, the language/no-speech probe) and
             variants: greedy, eager attention, fp32, decoding to the token budget.
``clip``     ``ClipCritic.review`` of a 512² picture against the prompt and the scene's elements.
``loop``     ``Studio.run`` without Gemini: a 20 s voice note (WAV) and a text idea, with
             ``QA_MAX_ROUNDS`` 0 and the product default 1; per-stage timings.
``burst``    32 render jobs from 32 users through the executor one at a time (``MAX_BATCH`` 1, what
             ``DYNAMIC_BATCHING=false`` sets) vs batched (``MAX_BATCH`` 4, the default, and 8);
             and 32 whole text jobs (render + review) one at a time vs batched.
``compile``  (``--compile``) ``torch.compile`` of the UNet and the VAE decoder (``--compile-mode``,
             default reduce-overhead = CUDA graphs) with batches padded to 1/2/4 (so no shape
             recompiles after the warm-up, done on the GPU thread that owns the graphs), then batch 1,
             images/s by batch size and the burst again.
``whisper-compile`` (``--compile``) Whisper with a static KV cache + compiled forward.

``--smoke`` runs the same code on the CPU with the real-size architectures at 64² px and 2 steps
(batch sizes 1 and 2, one repeat, bursts of 4) to prove it runs; ``--models tiny`` runs it on the
test suite's tiny models (seconds; development).
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import report
from .models import IDEAS, WHISPER_TEXT_TOKENS, ensure_real_models, ensure_tiny_models, restore_whisper_length
from .report import median, metric, percentile

log = logging.getLogger(__name__)

SECTIONS = ("sd", "options", "whisper", "clip", "loop", "burst", "compile", "whisper-compile")


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
def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls after ``warmup`` untimed ones, synchronised with the GPU."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        _sync()
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


def _put_table(results: dict, table: dict) -> None:
    tables = results.setdefault("tables", [])
    for i, existing in enumerate(tables):
        if existing["title"] == table["title"]:
            tables[i] = table
            return
    tables.append(table)


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1000:.1f}"


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


# ------------------------------------------------------------------------------------------------
class GpuBench:
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
        self.executor = None
        self.engine = None
        self.settings = None
        self.baseline_b1: float | None = None
        self.details = results.setdefault("details", {})
        self.metrics = results.setdefault("metrics", {})

    # --- set-up ---------------------------------------------------------------------------------
    def make_settings(self, **overrides):
        from pipeline.settings import Settings

        defaults = {
            name: Settings.model_fields[name].default
            for name in (
                "DYNAMIC_BATCHING",
                "MAX_BATCH",
                "BATCH_WINDOW_MS",
                "SAFETY_CHECKER",
                "QA_THRESHOLD",
            )
        }
        values: dict[str, Any] = dict(
            defaults,
            DIFFUSION_MODEL=str(self.models["sd15"]),
            WHISPER_MODEL=str(self.models["whisper-large-v3-turbo"]),
            CLIP_MODEL=str(self.models["clip-vit-large-patch14"]),
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

    # --- sections -------------------------------------------------------------------------------
    async def section_sd(self) -> None:
        plan = self.plan
        b1 = await self.b1()
        self.baseline_b1 = median(b1)
        by_batch = {}
        for n in plan.batch_sizes:
            times = b1 if n == 1 else await self.gpu(time_calls, self.render_fn(n), self.repeats, plan.warmup)
            by_batch[n] = {"call_s": times, "median_s": median(times), "images_per_s": n / median(times)}
            log.info("SD batch %d: %.3f s per call, %.2f images/s", n, median(times), n / median(times))
        components = await self.gpu(self._components)
        syncs = await self.gpu(self._sync_audit) if _cuda() else None
        self.details["sd"] = {"b1_s": b1, "by_batch": by_batch, "components": components, "sync_audit": syncs}
        label = f"SD 1.5 {plan.size}², Euler {plan.steps} steps, batch 1: seconds per image"
        self.metrics["sd_b1"] = metric(
            label, median(b1), "s", target=("<=", 0.30), fmt="{:.3f}", note="target set for an H100"
        )
        for n, row in by_batch.items():
            self.metrics[f"sd_ips_b{n}"] = metric(
                f"SD 1.5 images/s at batch {n}", row["images_per_s"], "img/s", fmt="{:.2f}"
            )
        _put_table(
            self.results,
            {
                "title": f"SD 1.5 ({plan.size}², {plan.steps} steps, guidance {plan.guidance:g}, safety checker on): batch size",
                "columns": ["batch", "s per call (median)", "s per image", "images/s", "calls"],
                "rows": [
                    [n, _s(r["median_s"]), _s(r["median_s"] / n), f"{r['images_per_s']:.2f}", len(r["call_s"])]
                    for n, r in by_batch.items()
                ],
            },
        )
        c = components
        rows = [
            ["text encoder (prompt + negative, 1 window each)", _ms(c["text_encode_s"])],
            [
                f"UNet, one step (batch 2: classifier-free guidance) × {plan.steps}",
                f"{_ms(c['unet_step_s'])} × {plan.steps} = {_ms(c['unet_step_s'] * plan.steps)}",
            ],
            ["VAE decode", _ms(c["vae_decode_s"])],
            ["safety checker", _ms(c.get("safety_checker_s"))],
            ["sum of the parts", _ms(c["sum_s"])],
            ["measured render (batch 1)", _ms(self.baseline_b1)],
            ["rest: scheduler, callbacks, PIL conversion, Python", _ms(self.baseline_b1 - c["sum_s"])],
        ]
        if syncs:
            rows.append(
                [
                    "host syncs per render / per extra denoising step (sync audit)",
                    f"{syncs['syncs_full']} / {syncs['per_step']:.2f}",
                ]
            )
        _put_table(
            self.results,
            {"title": "SD 1.5 at batch 1: where the time goes (ms)", "columns": ["part", "ms"], "rows": rows},
        )

    def _components(self) -> dict[str, Any]:
        import torch

        synth, pipe, plan = self.synth, self.pipe, self.plan
        dev, dtype = synth.device, synth.dtype
        out: dict[str, Any] = {}
        with torch.inference_mode():
            out["text_encode_s"] = median(
                time_calls(
                    lambda: (synth._encode([IDEAS[0]], 1), synth._encode([""], 1)), self.repeats * 2, self.plan.warmup
                )
            )
            side = plan.size // 8
            latents = torch.randn(2, 4, side, side, device=dev, dtype=dtype)
            embeds = torch.randn(2, 77, pipe.text_encoder.config.hidden_size, device=dev, dtype=dtype)
            timestep = torch.tensor(500, device=dev)
            out["unet_step_s"] = median(
                time_calls(
                    lambda: pipe.unet(latents, timestep, encoder_hidden_states=embeds).sample,
                    self.repeats * 2,
                    self.plan.warmup,
                )
            )
            latent1 = latents[:1] / pipe.vae.config.scaling_factor
            out["vae_decode_s"] = median(
                time_calls(lambda: pipe.vae.decode(latent1).sample, self.repeats, self.plan.warmup)
            )
            if pipe.safety_checker is not None:
                image = pipe.vae.decode(latent1).sample.clamp(-1, 1)
                out["safety_checker_s"] = median(
                    time_calls(lambda: pipe.run_safety_checker(image, dev, dtype), self.repeats, self.plan.warmup)
                )
        out["sum_s"] = (
            out["text_encode_s"]
            + plan.steps * out["unet_step_s"]
            + out["vae_decode_s"]
            + out.get("safety_checker_s", 0.0)
        )
        return out

    def _sync_audit(self) -> dict[str, Any]:
        """Count host↔device synchronisations of one render (torch's sync debug mode), at the
        plan's steps and at half of them: syncs that grow with the steps are per-step syncs."""
        import torch

        def count(steps: int) -> tuple[int, collections.Counter]:
            requests = self.requests(1, steps=steps)
            where: collections.Counter = collections.Counter()
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    self.synth.render(requests)
            finally:
                torch.cuda.set_sync_debug_mode(0)
            for w in caught:
                if "synchroniz" in str(w.message).lower():
                    where[f"{Path(w.filename).name}:{w.lineno}"] += 1
            return sum(where.values()), where

        full, where_full = count(self.plan.steps)
        half_steps = max(1, self.plan.steps // 2)
        half, _ = count(half_steps)
        extra = self.plan.steps - half_steps
        return {
            "steps": self.plan.steps,
            "syncs_full": full,
            "syncs_half": half,
            "per_step": (full - half) / extra if extra else 0.0,
            "where": dict(where_full.most_common(12)),
        }

    # --- options --------------------------------------------------------------------------------
    def _options(self) -> list[tuple[str, str, bool, Callable[[], Callable[[], None]]]]:
        """(name, what changes, is it the product's state today?, apply → undo)."""
        import torch

        synth, pipe = self.synth, self.pipe
        cuda = _cuda()
        options = []

        def dtype_swap(target):
            def apply():
                before = synth.dtype
                pipe.to(dtype=target)
                synth.dtype = target

                def undo():
                    pipe.to(dtype=before)
                    synth.dtype = before

                return undo

            return apply

        if cuda:
            options.append(
                (
                    "fp32 instead of fp16",
                    "all SD weights fp32 (torch defaults: TF32 for convolutions only)",
                    True,
                    dtype_swap(torch.float32),
                )
            )
        elif self.args.models == "tiny":
            options.append(
                (
                    "fp16 instead of fp32",
                    "all weights fp16 (CPU, tiny models: code path only)",
                    False,
                    dtype_swap(torch.float16),
                )
            )

        def classic_attention():
            from diffusers.models.attention_processor import AttnProcessor

            saved = {"unet": pipe.unet.attn_processors, "vae": pipe.vae.attn_processors}
            pipe.unet.set_attn_processor(AttnProcessor())
            pipe.vae.set_attn_processor(AttnProcessor())

            def undo():
                pipe.unet.set_attn_processor(saved["unet"])
                pipe.vae.set_attn_processor(saved["vae"])

            return undo

        options.append(
            (
                "classic attention instead of SDPA",
                "AttnProcessor (matmul + softmax) in UNet and VAE",
                True,
                classic_attention,
            )
        )

        def unet_memory_format(fmt):
            def apply():
                before = _memory_format(pipe.unet)
                pipe.unet.to(memory_format=fmt)

                def undo():
                    pipe.unet.to(memory_format=before)

                return undo

            return apply

        if cuda:
            options.append(
                (
                    "UNet contiguous instead of channels_last",
                    "UNet weights in NCHW",
                    True,
                    unet_memory_format(torch.contiguous_format),
                )
            )
        else:
            options.append(
                ("UNet channels_last", "UNet weights in NHWC", False, unet_memory_format(torch.channels_last))
            )

        def vae_channels_last():
            pipe.vae.to(memory_format=torch.channels_last)
            return lambda: pipe.vae.to(memory_format=torch.contiguous_format)

        options.append(("VAE channels_last", "VAE weights in NHWC", False, vae_channels_last))

        def fused_qkv():
            saved = {"unet": pipe.unet.attn_processors, "vae": pipe.vae.attn_processors}
            pipe.fuse_qkv_projections()

            def undo():
                pipe.unfuse_qkv_projections()
                pipe.unet.set_attn_processor(saved["unet"])
                pipe.vae.set_attn_processor(saved["vae"])

            return undo

        options.append(
            ("fused QKV projections", "pipe.fuse_qkv_projections(): one matmul for q, k, v", False, fused_qkv)
        )

        if cuda:

            def cudnn_benchmark():
                before = torch.backends.cudnn.benchmark
                torch.backends.cudnn.benchmark = True

                def undo():
                    torch.backends.cudnn.benchmark = before

                return undo

            options.append(
                (
                    "cuDNN benchmark",
                    "torch.backends.cudnn.benchmark = True (autotuned convolutions)",
                    False,
                    cudnn_benchmark,
                )
            )

        if pipe.safety_checker is not None:

            def no_safety_checker():
                checker = pipe.safety_checker
                pipe.safety_checker = None
                return lambda: setattr(pipe, "safety_checker", checker)

            options.append(("without the safety checker", "SAFETY_CHECKER=false", False, no_safety_checker))
        return options

    async def section_options(self) -> None:
        baseline = self.baseline_b1 or median(await self.b1())
        self.baseline_b1 = baseline
        rows, details = [], {}
        for name, what, product_now, apply in self._options():
            undo = None
            try:
                if self.plan.warmup:  # re-measure the product as is right before each variant
                    baseline = median(await self.b1())
                undo = await self.gpu(apply)
                times = await self.b1()
                value = median(times)
                details[name] = {"b1_s": times, "median_s": value, "baseline_s": baseline, "product_today": product_now}
                # Speed-up of the option itself: for the product's own options the variant is "without".
                speedup = value / baseline if product_now else baseline / value
                rows.append([name, what, "yes" if product_now else "no", _s(baseline), _s(value), f"{speedup:.2f}×"])
                log.info("option %s: %.3f s vs baseline %.3f s", name, value, baseline)
            except Exception as exc:  # one option failing must not lose the others
                log.warning("option %s failed: %s", name, exc)
                details[name] = {"error": f"{type(exc).__name__}: {exc}"}
                rows.append([name, what, "yes" if product_now else "no", _s(baseline), "error", str(exc)[:80]])
            finally:
                if undo is not None:
                    await self.gpu(undo)
        vae = await self.gpu(self._vae_precision) if _cuda() else None
        if vae:
            details["vae_decode_precision"] = vae
            rows.append(
                [
                    "VAE decode in fp32 (upcast)",
                    "VAE alone, fp32 vs fp16",
                    "no",
                    f"{_ms(vae['fp16_s'])} ms",
                    f"{_ms(vae['fp32_s'])} ms",
                    f"{vae['fp16_s'] / vae['fp32_s']:.2f}×",
                ]
            )
        self.details["options"] = details
        _put_table(
            self.results,
            {
                "title": "Speed options at batch 1 (s per image; speed-up = how much faster WITH the option)",
                "columns": [
                    "option",
                    "what",
                    "in the product today",
                    "product as is",
                    "variant",
                    "speed-up of the option",
                ],
                "rows": rows,
            },
        )

    def _vae_precision(self) -> dict[str, float]:
        import torch

        vae = self.pipe.vae
        side = self.plan.size // 8
        with torch.inference_mode():
            z16 = torch.randn(1, 4, side, side, device=vae.device, dtype=vae.dtype)
            fp16 = median(time_calls(lambda: vae.decode(z16).sample, self.repeats, self.plan.warmup))
            vae.to(torch.float32)
            try:
                z32 = z16.float()
                fp32 = median(time_calls(lambda: vae.decode(z32).sample, self.repeats, self.plan.warmup))
            finally:
                vae.to(torch.float16)
        return {
            "fp16_s": fp16,
            "fp32_s": fp32,
            "force_upcast_in_config": bool(getattr(vae.config, "force_upcast", False)),
        }

    # --- whisper --------------------------------------------------------------------------------
    async def section_whisper(self) -> None:
        from pipeline.errors import NoSpeech

        plan = self.plan
        tr = self.engine.transcriber
        audio = speech_like(plan.whisper_seconds)
        job = self.executor.admit("bench-whisper")
        tokens: list[int] = []
        original = tr.model.generate

        def counting_generate(*args, **kwargs):
            out = original(*args, **kwargs)
            seq = out["sequences"] if isinstance(out, dict) else out
            tokens.append(int(seq.shape[-1]))
            return out

        tr.model.generate = counting_generate

        def once_on_gpu():
            try:
                tr.transcribe(audio)
            except NoSpeech:
                pass

        try:
            product: list[float] = []
            for i in range(plan.warmup + self.repeats):
                started = time.perf_counter()
                try:
                    await self.executor.transcribe(job, audio)
                except NoSpeech:
                    log.warning("the random Whisper produced no speech")
                if i >= plan.warmup:
                    product.append(time.perf_counter() - started)
            decoded = tokens[-1] if tokens else None
            parts = await self.gpu(self._whisper_parts, audio)
            variants: dict[str, Any] = {}
            rows = [["product (beam 5, fp16/SDPA on CUDA)", _s(median(product)), decoded]]
            if plan.whisper_variants or self.args.models == "tiny":
                for name, apply in self._whisper_variants():
                    undo = None
                    try:
                        undo = await self.gpu(apply)
                        tokens.clear()
                        times = await self.gpu(time_calls, once_on_gpu, self.repeats, plan.warmup)
                        variants[name] = {
                            "s": times,
                            "median_s": median(times),
                            "tokens": tokens[-1] if tokens else None,
                        }
                        rows.append([name, _s(median(times)), variants[name]["tokens"]])
                    except Exception as exc:
                        log.warning("whisper variant %s failed: %s", name, exc)
                        variants[name] = {"error": f"{type(exc).__name__}: {exc}"}
                        rows.append([name, "error", str(exc)[:80]])
                    finally:
                        if undo is not None:
                            await self.gpu(undo)
        finally:
            del tr.model.generate  # the instance attribute: back to the class's method
            job.finish("done")
        self.details["whisper"] = {
            "clip_s": plan.whisper_seconds,
            "product_s": product,
            "decoded_tokens": decoded,
            "text_tokens_shaped": WHISPER_TEXT_TOKENS,
            "parts": parts,
            "variants": variants,
            "num_beams": tr.num_beams,
        }
        self.metrics["whisper"] = metric(
            f"Whisper large-v3-turbo, {plan.whisper_seconds:g} s clip ({WHISPER_TEXT_TOKENS} text tokens, beam {tr.num_beams})",
            median(product),
            "s",
            target=("<=", 0.25),
            fmt="{:.3f}",
        )
        if "greedy (num_beams=1)" in variants and "median_s" in variants["greedy (num_beams=1)"]:
            self.metrics["whisper_greedy"] = metric(
                "Whisper, same clip, greedy decoding", variants["greedy (num_beams=1)"]["median_s"], "s", fmt="{:.3f}"
            )
        rows += [
            ["part: log-mel features (CPU, in the product)", _s(parts["features_s"]), ""],
            ["part: encoder, one 30 s window", _s(parts["encoder_s"]), ""],
            ["part: language/no-speech probe (encoder + 1 decoder step)", _s(parts["probe_s"]), ""],
        ]
        _put_table(
            self.results,
            {
                "title": f"Whisper large-v3-turbo on a {plan.whisper_seconds:g} s clip (s)",
                "columns": ["variant", "seconds (median)", "tokens decoded (with <|endoftext|>)"],
                "rows": rows,
            },
        )

    def _whisper_parts(self, audio: np.ndarray) -> dict[str, float]:
        import torch

        tr = self.engine.transcriber
        features_s = median(time_calls(lambda: tr._features(audio), self.repeats, self.plan.warmup))
        features, _ = tr._features(audio)
        window = features[..., : tr._window_frames()]
        with torch.inference_mode():
            encoder_s = median(time_calls(lambda: tr.model.model.encoder(window), self.repeats, self.plan.warmup))
            probe_s = median(time_calls(lambda: tr._probe(features), self.repeats, self.plan.warmup))
        return {"features_s": features_s, "encoder_s": encoder_s, "probe_s": probe_s}

    def _whisper_variants(self):
        import torch

        tr = self.engine.transcriber
        variants = []

        def greedy():
            before = tr.num_beams
            tr.num_beams = 1
            return lambda: setattr(tr, "num_beams", before)

        variants.append(("greedy (num_beams=1)", greedy))

        def eager():
            before = tr.model.config._attn_implementation
            tr.model.set_attn_implementation("eager")
            return lambda: tr.model.set_attn_implementation(before)

        variants.append(("eager attention instead of SDPA", eager))
        if _cuda():

            def fp32():
                before = tr.dtype
                tr.model.to(torch.float32)
                tr.dtype = torch.float32

                def undo():
                    tr.model.to(before)
                    tr.dtype = before

                return undo

            variants.append(("fp32 instead of fp16", fp32))

        def budget():
            restore_whisper_length(tr.model, None)
            return lambda: restore_whisper_length(tr.model, WHISPER_TEXT_TOKENS)

        if self.args.models == "real":
            variants.append(("worst case: no <|endoftext|>, decodes the whole token budget", budget))
        return variants

    # --- clip -----------------------------------------------------------------------------------
    async def section_clip(self) -> None:
        from pipeline.director import LocalDirector

        scene = await LocalDirector().direct(IDEAS[0], style=None, language="en")
        image = (await self.gpu(self.render_fn(1)))[0].image
        job = self.executor.admit("bench-clip")
        times = []
        try:
            for i in range(self.plan.warmup + self.repeats):
                started = time.perf_counter()
                await self.executor.review(job, image, scene, scene.diffusion_prompt)
                if i >= self.plan.warmup:
                    times.append(time.perf_counter() - started)
        finally:
            job.finish("done")
        self.details["clip"] = {"review_s": times, "texts": 1 + len(scene.elements), "image_px": image.size}
        self.metrics["clip_review"] = metric(
            f"CLIP ViT-L/14 review ({1 + len(scene.elements)} texts vs a {image.size[0]}² picture)",
            median(times),
            "s",
            fmt="{:.3f}",
        )

    # --- the whole loop ---------------------------------------------------------------------------
    async def section_loop(self) -> None:
        from pipeline.studio import Idea, Studio

        plan = self.plan
        note = wav_bytes(speech_like(plan.whisper_seconds))
        cases = [("voice note, QA_MAX_ROUNDS=0", 0, True), ("text idea, QA_MAX_ROUNDS=0", 0, False)]
        if plan.loop_repeats > 1 or self.args.models == "tiny":
            cases += [("voice note, QA_MAX_ROUNDS=1 (product default)", 1, True)]
        rows, details = [], {}
        for name, rounds, voice in cases:
            studio = Studio(self.make_settings(QA_MAX_ROUNDS=rounds), self.executor)
            totals, stages, n_rounds = [], collections.defaultdict(list), []
            for i in range(plan.warmup + plan.loop_repeats):
                idea = Idea(audio=note, audio_filename="note.wav", seed=7) if voice else Idea(text=IDEAS[1], seed=7)
                job = self.executor.admit(f"bench-loop-{i}")
                started = time.perf_counter()
                try:
                    output = await studio.run(job, idea)
                finally:
                    job.finish("done")
                if i < plan.warmup:
                    continue
                totals.append(time.perf_counter() - started)
                n_rounds.append(len(output.result.rounds))
                for stage, secs in output.result.timings.items():
                    stages[stage].append(secs)
            details[name] = {"total_s": totals, "stages_s": dict(stages), "rounds": n_rounds}
            rows.append(
                [name, _s(median(totals)), max(n_rounds)]
                + [
                    _s(median(stages[s])) if stages.get(s) else "—"
                    for s in ("decode", "transcribe", "direct", "render", "review")
                ]
            )
            log.info("loop %s: %.3f s", name, median(totals))
        self.details["loop"] = details
        voice0 = details["voice note, QA_MAX_ROUNDS=0"]
        self.metrics["loop_voice"] = metric(
            f"Full loop without Gemini: {plan.whisper_seconds:g} s voice note → checked picture (one round)",
            median(voice0["total_s"]),
            "s",
            fmt="{:.3f}",
        )
        _put_table(
            self.results,
            {
                "title": "Full loop without Gemini (Studio.run through the executor; seconds, medians)",
                "columns": ["case", "total", "rounds", "decode", "transcribe", "direct", "render", "review"],
                "rows": rows,
            },
        )

    # --- bursts ---------------------------------------------------------------------------------
    async def _render_burst(self, n: int, tag: str) -> dict[str, Any]:
        from pipeline.synthesis import RenderRequest

        ex = self.executor
        jobs = [ex.admit(f"{tag}-{i}") for i in range(n)]

        async def one(i, job):
            submitted = time.perf_counter()
            try:
                await ex.render(
                    job,
                    RenderRequest(
                        prompt=IDEAS[i % len(IDEAS)],
                        seed=1000 + i,
                        steps=self.plan.steps,
                        guidance=self.plan.guidance,
                        width=self.plan.size,
                        height=self.plan.size,
                    ),
                )
            finally:
                job.finish("done")
            return time.perf_counter() - submitted

        before = dict(ex.metrics().batch_sizes)
        started = time.perf_counter()
        latencies = await asyncio.gather(*(one(i, j) for i, j in enumerate(jobs)))
        wall = time.perf_counter() - started
        after = dict(ex.metrics().batch_sizes)
        return {
            "wall_s": wall,
            "images_per_s": n / wall,
            "batch_sizes": {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)},
            "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95),
        }

    async def _loop_burst(self, n: int, tag: str) -> dict[str, Any]:
        from pipeline.studio import Idea, Studio

        studio = Studio(self.settings, self.executor)
        jobs = [self.executor.admit(f"{tag}-{i}") for i in range(n)]

        async def one(i, job):
            submitted = time.perf_counter()
            try:
                await studio.run(job, Idea(text=IDEAS[i % len(IDEAS)], seed=2000 + i))
            finally:
                job.finish("done")
            return time.perf_counter() - submitted

        started = time.perf_counter()
        latencies = await asyncio.gather(*(one(i, j) for i, j in enumerate(jobs)))
        wall = time.perf_counter() - started
        return {
            "wall_s": wall,
            "jobs_per_s": n / wall,
            "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95),
        }

    async def burst(self, label: str, batches: tuple[int, ...], *, loop_burst: bool = True) -> dict[str, Any]:
        """Render bursts with the executor's batch limit at 1 (what DYNAMIC_BATCHING=false sets) and at
        each of ``batches``; the limit is changed on the one executor so the models and the GPU
        thread (and any compiled graphs, which belong to that thread) stay the same."""
        ex, plan = self.executor, self.plan
        default = ex.max_batch
        runs: dict[int, Any] = {}
        loops: dict[int, Any] = {}
        try:
            for max_batch in (1, *batches):
                ex.max_batch = max_batch
                if plan.warmup:
                    await self._render_burst(max_batch, "warm")  # this batch shape once, untimed
                runs[max_batch] = await self._render_burst(plan.burst_jobs, f"burst{max_batch}")
                log.info(
                    "%s burst, MAX_BATCH %d: %.2f images/s %s",
                    label,
                    max_batch,
                    runs[max_batch]["images_per_s"],
                    runs[max_batch]["batch_sizes"],
                )
            if loop_burst:
                for max_batch in (1, batches[0]):
                    ex.max_batch = max_batch
                    loops[max_batch] = await self._loop_burst(plan.burst_jobs, f"loop{max_batch}")
                    log.info(
                        "%s loop burst, MAX_BATCH %d: %.2f jobs/s", label, max_batch, loops[max_batch]["jobs_per_s"]
                    )
        finally:
            ex.max_batch = default
        return {"render": runs, "loop": loops}

    async def section_burst(self) -> None:
        plan = self.plan
        result = await self.burst("eager", plan.burst_batches)
        self.details["burst"] = result
        runs, loops = result["render"], result["loop"]
        default = plan.burst_batches[0]
        self.metrics["burst_ratio"] = metric(
            f"Burst of {plan.burst_jobs} render jobs: throughput batched (MAX_BATCH {default}) ÷ one at a time",
            runs[default]["images_per_s"] / runs[1]["images_per_s"],
            "×",
            target=(">=", 2.0),
            fmt="{:.2f}",
        )
        for mb in plan.burst_batches[1:]:
            self.metrics[f"burst_ratio_{mb}"] = metric(
                f"Burst of {plan.burst_jobs} render jobs: batched (MAX_BATCH {mb}) ÷ one at a time",
                runs[mb]["images_per_s"] / runs[1]["images_per_s"],
                "×",
                fmt="{:.2f}",
            )
        if loops:
            self.metrics["loop_burst_ratio"] = metric(
                f"Burst of {plan.burst_jobs} whole text jobs (render + CLIP review): batched ÷ one at a time",
                loops[default]["jobs_per_s"] / loops[1]["jobs_per_s"],
                "×",
                fmt="{:.2f}",
            )
        self._burst_table("Burst", result)

    def _burst_table(self, title: str, result: dict[str, Any]) -> None:
        runs, loops = result["render"], result["loop"]
        rows = [
            [
                f"renders, MAX_BATCH {mb}",
                f"{r['images_per_s']:.2f} images/s",
                f"{r['wall_s']:.2f}",
                f"{r['images_per_s'] / runs[1]['images_per_s']:.2f}×",
                str(r["batch_sizes"]),
                f"{r['latency_p50_s']:.2f} / {r['latency_p95_s']:.2f}",
            ]
            for mb, r in runs.items()
        ]
        rows += [
            [
                f"whole text jobs, MAX_BATCH {mb}",
                f"{r['jobs_per_s']:.2f} jobs/s",
                f"{r['wall_s']:.2f}",
                f"{r['jobs_per_s'] / loops[1]['jobs_per_s']:.2f}×",
                "",
                f"{r['latency_p50_s']:.2f} / {r['latency_p95_s']:.2f}",
            ]
            for mb, r in loops.items()
        ]
        _put_table(
            self.results,
            {
                "title": f"{title} of {self.plan.burst_jobs} jobs from {self.plan.burst_jobs} users through GPUExecutor",
                "columns": [
                    "run",
                    "throughput",
                    "wall s",
                    "vs one at a time",
                    "batch sizes (size: calls)",
                    "job latency p50 / p95 s",
                ],
                "rows": rows,
            },
        )

    # --- torch.compile --------------------------------------------------------------------------
    async def section_compile(self) -> None:
        plan = self.plan
        mode = self.args.compile_mode
        baseline = self.baseline_b1 or median(await self.b1())
        warm = await self.gpu(self._compile_unet_vae, mode)
        b1 = await self.b1()
        by_batch = {}
        for n in plan.compile_buckets:
            times = b1 if n == 1 else await self.gpu(time_calls, self.render_fn(n), self.repeats, self.plan.warmup)
            by_batch[n] = {"median_s": median(times), "images_per_s": n / median(times)}
        burst = await self.burst("compiled", (plan.burst_batches[0],))
        self.details["compile"] = {
            "mode": mode,
            "warmup_s_by_bucket": warm,
            "b1_s": b1,
            "by_batch": by_batch,
            "burst": burst,
        }
        self.metrics["burst_ratio_compiled"] = metric(
            f"Burst of {plan.burst_jobs} render jobs with torch.compile: batched (MAX_BATCH {plan.burst_batches[0]}, "
            "padded) ÷ one at a time",
            burst["render"][plan.burst_batches[0]]["images_per_s"] / burst["render"][1]["images_per_s"],
            "×",
            target=(">=", 2.0),
            fmt="{:.2f}",
            note="option, not the product default",
        )
        self.metrics["sd_b1_compiled"] = metric(
            f"SD 1.5 {plan.size}², {plan.steps} steps, batch 1 with torch.compile ({mode})",
            median(b1),
            "s",
            target=("<=", 0.30),
            fmt="{:.3f}",
            note="option, not the product default",
        )
        rows = [
            ["warm-up (compile) per padded batch size", ", ".join(f"{k}: {v:.0f} s" for k, v in warm.items()), "", ""],
            ["batch 1, s per image", _s(baseline), _s(median(b1)), f"{baseline / median(b1):.2f}×"],
        ]
        eager = self.details.get("sd", {}).get("by_batch", {})
        for n, r in by_batch.items():
            before = eager.get(n, {}).get("images_per_s")
            rows.append(
                [
                    f"images/s at batch {n}",
                    f"{before:.2f}" if before else "—",
                    f"{r['images_per_s']:.2f}",
                    f"{r['images_per_s'] / before:.2f}×" if before else "",
                ]
            )
        _put_table(
            self.results,
            {
                "title": f"torch.compile ({mode}; UNet + VAE decoder, batches padded to {list(plan.compile_buckets)})",
                "columns": ["", "eager (product)", "compiled", "speed-up"],
                "rows": rows,
            },
        )
        self._burst_table("Burst with torch.compile", burst)

    def _compile_unet_vae(self, mode: str) -> dict[int, float]:
        """Compile the UNet and the VAE decoder (shapes fixed: dynamic=False), pad every batch to the
        next of ``compile_buckets`` (what the product would need so shapes never recompile), and
        warm each bucket up once. Runs on the GPU thread, which then owns the compiled graphs."""
        import torch

        pipe, synth = self.pipe, self.synth
        pipe.unet = torch.compile(pipe.unet, mode=mode, fullgraph=True, dynamic=False)
        pipe.vae.decode = torch.compile(pipe.vae.decode, mode=mode, fullgraph=True, dynamic=False)
        buckets = sorted(self.plan.compile_buckets)
        render = synth.render

        def padded_render(requests, **kwargs):
            n = len(requests)
            size = next((b for b in buckets if b >= n), n)
            out = render(list(requests) + [requests[-1]] * (size - n), **kwargs)
            return out[:n]

        synth.render = padded_render
        warm = {}
        for n in buckets:
            started = time.perf_counter()
            self.render_fn(n)()
            _sync()
            warm[n] = time.perf_counter() - started
            log.info("compiled batch %d in %.0f s", n, warm[n])
        return warm

    async def section_whisper_compile(self) -> None:
        """Whisper with a static KV cache and ``torch.compile(model.forward, mode="reduce-overhead")``
        (transformers' recipe), through the product's ``Transcriber`` (beam 5)."""
        import torch

        from pipeline.errors import NoSpeech

        tr = self.engine.transcriber
        audio = speech_like(self.plan.whisper_seconds)

        def setup():
            tr.model.generation_config.cache_implementation = "static"
            tr.model.forward = torch.compile(tr.model.forward, mode="reduce-overhead", fullgraph=True)

        def once():
            try:
                tr.transcribe(audio)
            except NoSpeech:
                pass

        await self.gpu(setup)
        started = time.perf_counter()
        await self.gpu(once)
        first = time.perf_counter() - started
        times = await self.gpu(time_calls, once, self.repeats, 1)
        eager = median(self.details.get("whisper", {}).get("product_s", []))
        self.details["whisper_compile"] = {"first_call_s": first, "s": times, "median_s": median(times)}
        self.metrics["whisper_compiled"] = metric(
            f"Whisper large-v3-turbo, {self.plan.whisper_seconds:g} s clip, static cache + torch.compile",
            median(times),
            "s",
            target=("<=", 0.25),
            fmt="{:.3f}",
            note="option, not the product default",
        )
        _put_table(
            self.results,
            {
                "title": "Whisper with a static KV cache + compiled forward (reduce-overhead)",
                "columns": ["", "eager (product)", "compiled"],
                "rows": [["first call (compiles)", "", _s(first)], ["20 s clip, median", _s(eager), _s(median(times))]],
            },
        )


def _memory_format(module) -> Any:
    import torch

    for p in module.parameters():
        if p.dim() == 4:
            return (
                torch.channels_last
                if p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                else torch.contiguous_format
            )
    return torch.contiguous_format


# ------------------------------------------------------------------------------------------------
async def run(args, results: dict, *, path: Path, save: Callable[[], None]) -> None:
    import torch

    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit(
            "No CUDA GPU is visible: `--mode gpu` measures real-size models on a GPU. "
            "Use `--mode gpu --smoke` to check the code on the CPU."
        )
    if args.smoke and torch.cuda.is_available():
        log.warning("--smoke on a machine with a GPU: the models run on the GPU at the smoke size")
    plan = SMOKE if args.smoke else FULL
    sections = list(args.only or [s for s in SECTIONS if "compile" not in s or args.compile])
    if args.only and path.exists():  # merge into the same day's results
        prior = report._load(path)
        if prior:
            for key in ("metrics", "details"):
                results[key] = {**prior.get(key, {}), **results.get(key, {})}
            results["tables"] = prior.get("tables", [])
            results["notes"] = prior.get("notes", [])
    started = time.perf_counter()
    if args.models == "tiny":
        models = ensure_tiny_models(Path(args.cache))
        plan = replace(plan, size=64)
    else:
        models = ensure_real_models(Path(args.cache))
    build_s = time.perf_counter() - started
    results["settings"] = {
        "plan": asdict(plan),
        "sections": sections,
        "repeats": args.repeats or plan.repeats,
        "models": args.models,
        "cache": str(args.cache),
        "compile_mode": args.compile_mode,
        "width": plan.size,
        "height": plan.size,
        "steps": plan.steps,
    }
    results.setdefault("details", {})["build_or_cache_s"] = build_s
    results["notes"] = _notes(plan, args)
    save()
    with tempfile.TemporaryDirectory(prefix="voxcanvas-bench-gpu-") as tmp:
        bench = GpuBench(args, results, save, plan, models, Path(tmp))
        await bench.start()
        save()
        try:
            for name in sections:
                log.info("section %s", name)
                section_started = time.perf_counter()
                try:
                    await getattr(bench, f"section_{name.replace('-', '_')}")()
                except Exception as exc:
                    log.error("section %s failed: %s", name, exc)
                    results["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
                    results["details"].setdefault("tracebacks", {})[name] = traceback.format_exc()[-4000:]
                results["details"].setdefault("section_s", {})[name] = time.perf_counter() - section_started
                save()
        finally:
            await bench.stop()


def _notes(plan: GpuPlan, args) -> list[str]:
    notes = [
        "Real-size architectures with random weights (bench/models.py), built once and loaded through "
        "the product's own code (Synthesizer, Transcriber, ClipCritic) by a GPUExecutor with DEVICE=auto "
        "(fp16 + SDPA on CUDA, UNet channels_last); every torch call runs on the executor's GPU thread. "
        "Speed does not depend on weight values; the two things that do — prompt length in tokens and "
        "how many tokens Whisper decodes — are pinned to realistic values (see bench/models.py).",
        f"SD: {plan.size}² px, Euler {plan.steps} steps, guidance {plan.guidance:g} (classifier-free "
        "guidance doubles the UNet batch), the ViT-L/14 safety checker on (product default), prompts of "
        "one 77-token window. Medians of repeats after a warm-up.",
        f"Whisper: a {plan.whisper_seconds:g} s speech-like clip; the product runs the language/no-speech "
        f"probe (an encoder pass) and then generate() with beam 5; the random decoder says "
        f"{WHISPER_TEXT_TOKENS} text tokens (~50 words), then <|endoftext|>.",
        "Bursts: the executor's batch limit is switched on the one executor (1 = what "
        "DYNAMIC_BATCHING=false sets) so the models, GPU thread and any compiled graphs stay the same.",
    ]
    if args.smoke:
        notes.insert(
            0,
            "SMOKE RUN on the CPU: real-size architectures at a tiny resolution and 2 steps, "
            "to prove the code runs. These numbers are not GPU measurements.",
        )
    if args.models == "tiny":
        notes.insert(0, "TINY MODELS: development run of the gpu code on the test suite's models.")
    return notes
