"""``sd`` section: seconds per image at batch 1 (512², Euler 25 steps, guidance 7.5, safety checker
on), images/s at batch 1, 2, 4, 8, a component breakdown (text encoder, one UNet step with
classifier-free guidance, VAE decode, safety checker) and a CUDA sync audit (are there host syncs per
denoising step?)."""

from __future__ import annotations

import collections
import logging
import warnings
from pathlib import Path
from typing import Any

from ..models import IDEAS
from ..report import median, metric
from .harness import GpuBench, fmt_ms, fmt_s, on_cuda, put_table, time_calls

log = logging.getLogger(__name__)


async def section_sd(bench: GpuBench) -> None:
    plan = bench.plan
    b1 = await bench.b1()
    bench.baseline_b1 = median(b1)
    by_batch = {}
    for n in plan.batch_sizes:
        times = b1 if n == 1 else await bench.gpu(time_calls, bench.render_fn(n), bench.repeats, plan.warmup)
        by_batch[n] = {"call_s": times, "median_s": median(times), "images_per_s": n / median(times)}
        log.info("SD batch %d: %.3f s per call, %.2f images/s", n, median(times), n / median(times))
    components = await bench.gpu(_components, bench)
    syncs = await bench.gpu(_sync_audit, bench) if on_cuda() else None
    bench.details["sd"] = {"b1_s": b1, "by_batch": by_batch, "components": components, "sync_audit": syncs}
    label = f"SD 1.5 {plan.size}², Euler {plan.steps} steps, batch 1: seconds per image"
    bench.metrics["sd_b1"] = metric(
        label, median(b1), "s", target=("<=", 0.30), fmt="{:.3f}", note="target set for an H100"
    )
    for n, row in by_batch.items():
        bench.metrics[f"sd_ips_b{n}"] = metric(
            f"SD 1.5 images/s at batch {n}", row["images_per_s"], "img/s", fmt="{:.2f}"
        )
    put_table(
        bench.results,
        {
            "title": (
                f"SD 1.5 ({plan.size}², {plan.steps} steps, guidance {plan.guidance:g}, safety checker on): batch size"
            ),
            "columns": ["batch", "s per call (median)", "s per image", "images/s", "calls"],
            "rows": [
                [n, fmt_s(r["median_s"]), fmt_s(r["median_s"] / n), f"{r['images_per_s']:.2f}", len(r["call_s"])]
                for n, r in by_batch.items()
            ],
        },
    )
    c = components
    rows = [
        ["text encoder (prompt + negative, 1 window each)", fmt_ms(c["text_encode_s"])],
        [
            f"UNet, one step (batch 2: classifier-free guidance) × {plan.steps}",
            f"{fmt_ms(c['unet_step_s'])} × {plan.steps} = {fmt_ms(c['unet_step_s'] * plan.steps)}",
        ],
        ["VAE decode", fmt_ms(c["vae_decode_s"])],
        ["safety checker", fmt_ms(c.get("safety_checker_s"))],
        ["sum of the parts", fmt_ms(c["sum_s"])],
        ["measured render (batch 1)", fmt_ms(bench.baseline_b1)],
        ["rest: scheduler, callbacks, PIL conversion, Python", fmt_ms(bench.baseline_b1 - c["sum_s"])],
    ]
    if syncs:
        rows.append(
            [
                "host syncs per render / per extra denoising step (sync audit)",
                f"{syncs['syncs_full']} / {syncs['per_step']:.2f}",
            ]
        )
    put_table(
        bench.results,
        {"title": "SD 1.5 at batch 1: where the time goes (ms)", "columns": ["part", "ms"], "rows": rows},
    )


def _components(bench: GpuBench) -> dict[str, Any]:
    import torch

    synth, pipe, plan = bench.synth, bench.pipe, bench.plan
    dev, dtype = synth.device, synth.dtype
    out: dict[str, Any] = {}
    with torch.inference_mode():
        out["text_encode_s"] = median(
            time_calls(
                lambda: (synth._encode([synth._tokenize(IDEAS[0])], 1), synth._encode([synth._tokenize("")], 1)),
                bench.repeats * 2,
                bench.plan.warmup,
            )
        )
        side = plan.size // 8
        latents = torch.randn(2, 4, side, side, device=dev, dtype=dtype)
        embeds = torch.randn(2, 77, pipe.text_encoder.config.hidden_size, device=dev, dtype=dtype)
        timestep = torch.tensor(500, device=dev)
        out["unet_step_s"] = median(
            time_calls(
                lambda: pipe.unet(latents, timestep, encoder_hidden_states=embeds).sample,
                bench.repeats * 2,
                bench.plan.warmup,
            )
        )
        latent1 = latents[:1] / pipe.vae.config.scaling_factor
        out["vae_decode_s"] = median(
            time_calls(lambda: pipe.vae.decode(latent1).sample, bench.repeats, bench.plan.warmup)
        )
        if pipe.safety_checker is not None:
            image = pipe.vae.decode(latent1).sample.clamp(-1, 1)
            out["safety_checker_s"] = median(
                time_calls(lambda: pipe.run_safety_checker(image, dev, dtype), bench.repeats, bench.plan.warmup)
            )
    out["sum_s"] = (
        out["text_encode_s"] + plan.steps * out["unet_step_s"] + out["vae_decode_s"] + out.get("safety_checker_s", 0.0)
    )
    return out


def _sync_audit(bench: GpuBench) -> dict[str, Any]:
    """Count host↔device synchronisations of one render (torch's sync debug mode), at the
    plan's steps and at half of them: syncs that grow with the steps are per-step syncs."""
    import torch

    def count(steps: int) -> tuple[int, collections.Counter]:
        requests = bench.requests(1, steps=steps)
        where: collections.Counter = collections.Counter()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                bench.synth.render(requests)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        for w in caught:
            if "synchroniz" in str(w.message).lower():
                where[f"{Path(w.filename).name}:{w.lineno}"] += 1
        return sum(where.values()), where

    full, where_full = count(bench.plan.steps)
    half_steps = max(1, bench.plan.steps // 2)
    half, _ = count(half_steps)
    extra = bench.plan.steps - half_steps
    return {
        "steps": bench.plan.steps,
        "syncs_full": full,
        "syncs_half": half,
        "per_step": (full - half) / extra if extra else 0.0,
        "where": dict(where_full.most_common(12)),
    }
