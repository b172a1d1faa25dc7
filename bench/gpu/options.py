"""``options`` section: each speed option before/after at batch 1 — fp16 vs fp32, SDPA vs classic
attention, channels_last (UNet, VAE), fused QKV projections, cuDNN benchmark, the safety checker, VAE
decode in fp32 (the "upcast" SD 1.5 does not need)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..report import median
from .harness import GpuBench, fmt_ms, fmt_s, on_cuda, put_table, time_calls

log = logging.getLogger(__name__)


def _options(bench: GpuBench) -> list[tuple[str, str, bool, Callable[[], Callable[[], None]]]]:
    """(name, what changes, is it the product's state today?, apply → undo)."""
    import torch

    synth, pipe = bench.synth, bench.pipe
    cuda = on_cuda()
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
    elif bench.args.models == "tiny":
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
        options.append(("UNet channels_last", "UNet weights in NHWC", False, unet_memory_format(torch.channels_last)))

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

    options.append(("fused QKV projections", "pipe.fuse_qkv_projections(): one matmul for q, k, v", False, fused_qkv))

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


async def section_options(bench: GpuBench) -> None:
    baseline = bench.baseline_b1 or median(await bench.b1())
    bench.baseline_b1 = baseline
    rows, details = [], {}
    for name, what, product_now, apply in _options(bench):
        undo = None
        try:
            if bench.plan.warmup:  # re-measure the product as is right before each variant
                baseline = median(await bench.b1())
            undo = await bench.gpu(apply)
            times = await bench.b1()
            value = median(times)
            details[name] = {"b1_s": times, "median_s": value, "baseline_s": baseline, "product_today": product_now}
            # Speed-up of the option itself: for the product's own options the variant is "without".
            speedup = value / baseline if product_now else baseline / value
            rows.append([name, what, "yes" if product_now else "no", fmt_s(baseline), fmt_s(value), f"{speedup:.2f}×"])
            log.info("option %s: %.3f s vs baseline %.3f s", name, value, baseline)
        except Exception as exc:  # one option failing must not lose the others
            log.warning("option %s failed: %s", name, exc)
            details[name] = {"error": f"{type(exc).__name__}: {exc}"}
            rows.append([name, what, "yes" if product_now else "no", fmt_s(baseline), "error", str(exc)[:80]])
        finally:
            if undo is not None:
                await bench.gpu(undo)
    vae = await bench.gpu(_vae_precision, bench) if on_cuda() else None
    if vae:
        details["vae_decode_precision"] = vae
        rows.append(
            [
                "VAE decode in fp32 (upcast)",
                "VAE alone, fp32 vs fp16",
                "no",
                f"{fmt_ms(vae['fp16_s'])} ms",
                f"{fmt_ms(vae['fp32_s'])} ms",
                f"{vae['fp16_s'] / vae['fp32_s']:.2f}×",
            ]
        )
    bench.details["options"] = details
    put_table(
        bench.results,
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


def _vae_precision(bench: GpuBench) -> dict[str, float]:
    import torch

    vae = bench.pipe.vae
    side = bench.plan.size // 8
    with torch.inference_mode():
        z16 = torch.randn(1, 4, side, side, device=vae.device, dtype=vae.dtype)
        fp16 = median(time_calls(lambda: vae.decode(z16).sample, bench.repeats, bench.plan.warmup))
        vae.to(torch.float32)
        try:
            z32 = z16.float()
            fp32 = median(time_calls(lambda: vae.decode(z32).sample, bench.repeats, bench.plan.warmup))
        finally:
            vae.to(torch.float16)
    return {
        "fp16_s": fp16,
        "fp32_s": fp32,
        "force_upcast_in_config": bool(getattr(vae.config, "force_upcast", False)),
    }


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
