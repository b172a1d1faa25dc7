"""``families`` section (issue #12): for each model family beyond SD 1.5 — SDXL, SDXL-Turbo,
SD3-medium, FLUX.1-schnell (real-size architectures, random weights: ``bench/family_models.py``) —
load it through the product's model pool (``MODELS``, one resident at a time), then measure at its
NATIVE size and its family's DEFAULT steps and guidance (nothing set: what a user gets by switching
``DIFFUSION_MODEL``): seconds per image at batch 1, and images/s for a burst of jobs with the
product's dynamic batching (``MAX_BATCH`` 4) and without it (1). Each model is built (once, into the
cache), measured and saved before the next is built, so a lease that ends early keeps what it measured;
the burst is at most 8 jobs and batch 1 at most 3 repeats, to fit the four in one short lease. The speed options of the
``options`` section (fp16/bf16, SDPA, channels_last) are the product's defaults here.

``family-options`` toggles them per family (batch 1, native size, default steps): the UNet in NCHW
instead of channels_last, the VAE in channels_last, fused QKV projections, fp32 instead of fp16/bf16
(both at 4 steps: fp32 is several times slower) and ``torch.compile`` of the denoiser's repeated
blocks (diffusers' regional compilation: a minute of compiling instead of several per family), the
families in order of interest (SDXL, FLUX-schnell, SD3, SDXL-Turbo) so a short lease cuts the last."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from ..family_models import ensure_family_model, family_model_dirs
from ..models import IDEAS
from ..report import median, metric
from .harness import GpuBench, fmt_s, put_table

log = logging.getLogger(__name__)


async def section_families(bench: GpuBench) -> None:
    from pipeline.executor import GPUExecutor
    from pipeline.synthesis import RenderRequest

    tiny = bench.args.smoke or bench.args.models == "tiny"
    cache = Path(bench.args.cache)
    dirs = family_model_dirs(cache, tiny=tiny)
    plan = bench.plan
    burst_jobs = min(plan.burst_jobs, 8)
    repeats = min(bench.repeats, 3)
    settings = bench.make_settings(
        DIFFUSION_MODEL=str(dirs["sdxl"]),
        MODELS=", ".join(f"{name}={path}" for name, path in dirs.items()),
        WIDTH=None,
        HEIGHT=None,
        STEPS=None,
        GUIDANCE=None,
        MAX_RESIDENT_MODELS=1,
    )
    executor = GPUExecutor(settings, stage_timeout_s=3600)
    await executor.start()
    rows: list[list[Any]] = []
    details: dict[str, Any] = {}
    try:
        for name in dirs:
            try:
                steps = plan.steps if bench.args.smoke else None  # smoke: 2 steps; else the family's own
                started = time.perf_counter()
                await asyncio.to_thread(ensure_family_model, cache, name, tiny=tiny)
                build_s = time.perf_counter() - started
                started = time.perf_counter()
                synth = await executor.call(None, "tool", executor.engine.models.use, name)
                load_s = time.perf_counter() - started
                family = synth.family

                def request(i: int, _name: str = name, _steps: int | None = steps) -> RenderRequest:
                    return RenderRequest(prompt=IDEAS[i % len(IDEAS)], seed=100 + i, model=_name, steps=_steps)

                b1: list[float] = []
                for i in range(plan.warmup + repeats):
                    job = executor.admit("bench", force=True)
                    t0 = time.perf_counter()
                    image = await executor.render(job, request(i))
                    job.finish()
                    if i >= plan.warmup:
                        b1.append(time.perf_counter() - t0)
                bursts: dict[int, float] = {}
                for max_batch in (4,) if bench.args.smoke else (1, 4):  # smoke: proves the code, not the ratio
                    executor.max_batch = max_batch
                    jobs = [executor.admit(f"user{i}", force=True) for i in range(burst_jobs)]
                    t0 = time.perf_counter()
                    await asyncio.gather(*(executor.render(job, request(i)) for i, job in enumerate(jobs)))
                    bursts[max_batch] = burst_jobs / (time.perf_counter() - t0)
                    for job in jobs:
                        job.finish()
                details[name] = {
                    "family": family.key,
                    "size": [image.width, image.height],
                    "steps": image.steps,
                    "guidance": image.guidance,
                    "build_or_cache_s": build_s,
                    "load_s": load_s,
                    "b1_s": b1,
                    "burst_images_per_s": bursts,
                }
                bench.metrics[f"family_{name}_b1"] = metric(
                    f"{name} ({family.label}) {image.width}x{image.height}, {image.steps} steps: seconds per image",
                    median(b1),
                    "s",
                    fmt="{:.3f}",
                )
                bench.metrics[f"family_{name}_burst"] = metric(
                    f"{name}: images/s in a burst of {burst_jobs} (MAX_BATCH 4)", bursts[4], "img/s", fmt="{:.2f}"
                )
                rows.append(
                    [
                        name,
                        family.label,
                        f"{image.width}×{image.height}",
                        f"{image.steps} / {image.guidance:g}",
                        f"{load_s:.1f}",
                        fmt_s(median(b1)),
                        f"{bursts[1]:.2f}" if 1 in bursts else "—",
                        f"{bursts[4]:.2f}",
                    ]
                )
                log.info("family %s: %.3f s per image, burst %s images/s", name, median(b1), bursts)
                _record(bench, details, rows, burst_jobs)
                bench.save()
            except Exception as exc:  # one family failing (e.g. out of memory) leaves the others measured
                log.exception("family %s failed", name)
                bench.results.setdefault("errors", []).append(f"families/{name}: {type(exc).__name__}: {exc}")
                bench.save()
    finally:
        executor.max_batch = settings.MAX_BATCH
        await executor.shutdown(timeout_s=60)


def _record(bench: GpuBench, details: dict[str, Any], rows: list[list[Any]], burst_jobs: int) -> None:
    bench.details["families"] = details
    put_table(
        bench.results,
        {
            "title": "Model families at their native size and default steps (random weights, real size)",
            "columns": [
                "model",
                "family",
                "native size",
                "steps / guidance",
                "load s",
                "s per image (batch 1)",
                f"burst of {burst_jobs}: images/s, MAX_BATCH 1",
                "MAX_BATCH 4",
            ],
            "rows": rows,
        },
    )


# ------------------------------------------------------------------------------------------------
# ``family-options``: the speed options, per family
FAMILY_OPTIONS_ORDER = ("sdxl", "flux-schnell", "sd3", "sdxl-turbo")  # most telling first (a budget may cut)
PRECISION_STEPS = 4  # fp32 is 5-10× slower: both precisions are timed at this many steps
OPTION_ESTIMATE_S = {"compile": 60.0, "fp32": 30.0}  # on an H200, real size; the others ~ 4 renders


def _denoiser(pipe: Any) -> Any:
    return getattr(pipe, "unet", None) or pipe.transformer


def _family_options(synth: Any, *, cuda: bool, smoke: bool) -> list[tuple[str, str, bool, Any]]:
    """(key, what changes, is it the product's state today?, apply → undo) for one loaded family.
    ``compile`` comes last and is not undone (the model is unloaded after it)."""
    import torch

    pipe = synth.load().text2img
    denoiser, vae = _denoiser(pipe), pipe.vae
    unet = getattr(pipe, "unet", None) is not None
    options: list[tuple[str, str, bool, Any]] = []

    def memory_format(module: Any, fmt: Any) -> Any:
        def apply() -> Any:
            module.to(memory_format=fmt)
            back = torch.contiguous_format if fmt == torch.channels_last else torch.channels_last
            return lambda: module.to(memory_format=back)

        return apply

    if unet and cuda:  # the product puts the UNet in channels_last on CUDA
        options.append(("unet-contiguous", "UNet in NCHW instead of channels_last", True,
                        memory_format(denoiser, torch.contiguous_format)))  # fmt: skip
    elif unet:
        options.append(("unet-channels-last", "UNet in channels_last (NHWC)", False,
                        memory_format(denoiser, torch.channels_last)))  # fmt: skip
    options.append(("vae-channels-last", "VAE in channels_last (NHWC)", False, memory_format(vae, torch.channels_last)))

    def fused_qkv() -> Any:
        saved = {"denoiser": denoiser.attn_processors, "vae": vae.attn_processors}
        denoiser.fuse_qkv_projections()
        vae.fuse_qkv_projections()

        def undo() -> None:
            denoiser.unfuse_qkv_projections()
            vae.unfuse_qkv_projections()
            denoiser.set_attn_processor(saved["denoiser"])
            vae.set_attn_processor(saved["vae"])

        return undo

    options.append(("fused-qkv", "fuse_qkv_projections() on the denoiser and the VAE: one matmul for q, k, v",
                    False, fused_qkv))  # fmt: skip

    def precision() -> Any:
        before = pipe.dtype
        pipe.to(dtype=torch.float32)
        return lambda: pipe.to(dtype=before)

    half = "bf16" if pipe.dtype == torch.bfloat16 else "fp16"
    if cuda or smoke:
        options.append(("fp32", f"fp32 weights instead of {half} (TF32 off for matmuls: torch's default)",
                        True, precision))  # fmt: skip

    regional = bool(getattr(denoiser, "_repeated_blocks", None))

    def compile_denoiser() -> Any:
        # Regional compilation (diffusers' compile_repeated_blocks): each repeated transformer block
        # is compiled once and reused, so compiling takes seconds to a minute instead of minutes
        # while keeping most of a whole-model compile's gain. The smoke run only traces (no inductor).
        backend = "eager" if smoke else "inductor"
        if regional:
            denoiser.compile_repeated_blocks(fullgraph=True, backend=backend)
        else:
            denoiser.compile(backend=backend)
        return None

    what = ("torch.compile of the denoiser's repeated blocks (regional, default mode)" if regional else
            "torch.compile of the whole denoiser (it declares no repeated blocks; default mode)")  # fmt: skip
    options.append(("compile", what, False, compile_denoiser))
    return options


async def section_family_options(bench: GpuBench) -> None:
    """Each family at its native size and default steps, batch 1: the product as is, then with each
    speed option toggled (channels_last, fused QKV, fp32 vs fp16/bf16, torch.compile), one family at
    a time, saved after each; options that no longer fit ``--budget`` are skipped and recorded."""
    import torch

    from pipeline.executor import GPUExecutor
    from pipeline.synthesis import RenderRequest

    from .harness import on_cuda

    tiny = bench.args.smoke or bench.args.models == "tiny"
    cache = Path(bench.args.cache)
    dirs = family_model_dirs(cache, tiny=tiny)
    plan = bench.plan
    repeats = min(bench.repeats, 2)
    budget = bench.args.budget
    started_section = time.perf_counter()
    settings = bench.make_settings(
        DIFFUSION_MODEL=str(dirs["sdxl"]),
        MODELS=", ".join(f"{name}={path}" for name, path in dirs.items()),
        WIDTH=None, HEIGHT=None, STEPS=None, GUIDANCE=None, MAX_RESIDENT_MODELS=1,
    )  # fmt: skip
    executor = GPUExecutor(settings, stage_timeout_s=3600)
    await executor.start()
    details: dict[str, Any] = bench.details.setdefault("family_options", {})
    rows: list[list[Any]] = []
    cuda = on_cuda()

    def left_s() -> float:
        return float("inf") if budget is None else budget - (time.perf_counter() - bench.started)

    async def timed(name: str, steps: int | None, n: int, warmup: int) -> list[float]:
        times = []
        for i in range(warmup + n):
            job = executor.admit("bench", force=True)
            request = RenderRequest(prompt=IDEAS[i % len(IDEAS)], seed=200 + i, model=name, steps=steps)
            t0 = time.perf_counter()
            await executor.render(job, request)
            job.finish()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        return times

    try:
        for name in FAMILY_OPTIONS_ORDER:
            if left_s() < 60:
                details[name] = {"skipped": f"budget: {left_s():.0f} s left"}
                continue
            record: dict[str, Any] = {}
            details[name] = record
            try:
                t0 = time.perf_counter()
                await asyncio.to_thread(ensure_family_model, cache, name, tiny=tiny)
                record["build_or_cache_s"] = time.perf_counter() - t0
                synth = await executor.call(None, "tool", executor.engine.models.use, name)
                family = synth.family
                steps = plan.steps if bench.args.smoke else None  # None: the family's own default
                default_steps = steps or family.default_steps
                low_steps = min(default_steps, PRECISION_STEPS)
                baseline = median(await timed(name, steps, repeats, plan.warmup))
                record.update(family=family.key, steps=default_steps, baseline_s=baseline)
                per_render = baseline
                for key, what, product_now, apply in _family_options(synth, cuda=cuda, smoke=bench.args.smoke):
                    estimate = OPTION_ESTIMATE_S.get(key, 0.0) + (plan.warmup + repeats) * per_render * 2
                    if left_s() < estimate:
                        record[key] = {"skipped": f"budget: {left_s():.0f} s left, ~{estimate:.0f} s needed"}
                        rows.append([name, key, what, "yes" if product_now else "no", fmt_s(baseline), "skipped", ""])
                        continue
                    undo = None
                    try:
                        option_steps = steps
                        reference = baseline
                        if key == "fp32":  # both precisions at the same few steps
                            option_steps = low_steps
                            reference = median(await timed(name, low_steps, repeats, plan.warmup))
                        t1 = time.perf_counter()
                        undo = await executor.call(None, "tool", apply)
                        first = await timed(name, option_steps, 1, 0)  # includes compiling, for compile
                        times = await timed(name, option_steps, repeats, max(plan.warmup - 1, 0))
                        value = median(times)
                        speedup = value / reference if product_now else reference / value
                        record[key] = {"what": what, "product_today": product_now, "steps": option_steps or
                                       default_steps, "reference_s": reference, "variant_s": times,
                                       "first_render_s": first[0], "apply_s": time.perf_counter() - t1 - sum(first)
                                       - sum(times), "speedup": speedup}  # fmt: skip
                        label = f"{what} ({low_steps} steps, both)" if key == "fp32" else what
                        if key == "compile":
                            label += f"; first render {first[0]:.0f} s"
                            record[key]["compiled_blocks"] = await executor.call(None, "tool", _compiled_blocks, synth)
                        rows.append([name, key, label, "yes" if product_now else "no", fmt_s(reference),
                                     fmt_s(value), f"{speedup:.2f}×"])  # fmt: skip
                        log.info("family %s option %s: %.3f s vs %.3f s", name, key, value, reference)
                    except Exception as exc:  # one option failing must not lose the others
                        log.exception("family %s option %s failed", name, key)
                        record[key] = {"error": f"{type(exc).__name__}: {exc}"}
                        rows.append([name, key, what, "yes" if product_now else "no", fmt_s(baseline), "error",
                                     str(exc)[:80]])  # fmt: skip
                    finally:
                        if undo is not None:
                            await executor.call(None, "tool", undo)
                    _record_options(bench, rows)
                    bench.save()
            except Exception as exc:  # a family failing (e.g. out of memory) leaves the others measured
                log.exception("family options %s failed", name)
                record["error"] = f"{type(exc).__name__}: {exc}"
                bench.results.setdefault("errors", []).append(f"family-options/{name}: {type(exc).__name__}: {exc}")
            finally:  # compiled or not, the next family starts from a fresh load
                await executor.call(None, "tool", _unload_all, executor)
                torch._dynamo.reset()
            _record_options(bench, rows)
            bench.save()
    finally:
        await executor.shutdown(timeout_s=60)
        details["section_s"] = time.perf_counter() - started_section


def _compiled_blocks(synth: Any) -> int:
    """How many modules of the denoiser torch.compile wraps (``nn.Module.compile`` sets this)."""
    denoiser = _denoiser(synth.load().text2img)
    return sum(1 for m in denoiser.modules() if getattr(m, "_compiled_call_impl", None) is not None)


def _unload_all(executor: Any) -> None:
    pool = executor.engine.models
    for name in pool.resident:
        pool.get(name).unload()


def _record_options(bench: GpuBench, rows: list[list[Any]]) -> None:
    put_table(
        bench.results,
        {
            "title": "Speed options per model family (native size, default steps, batch 1; speed-up = how much "
            "faster WITH the option)",
            "columns": [
                "model",
                "option",
                "what",
                "in the product today",
                "product as is, s",
                "variant, s",
                "speed-up of the option",
            ],  # fmt: skip
            "rows": rows,
        },
    )
