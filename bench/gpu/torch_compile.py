"""``compile`` and ``whisper-compile`` sections (``--compile``): ``torch.compile`` of the UNet and the
VAE decoder (``--compile-mode``, default reduce-overhead = CUDA graphs) with batches padded to 1/2/4
(so no shape recompiles after the warm-up, done on the GPU thread that owns the graphs), then batch 1,
images/s by batch size and the burst again; Whisper with a static KV cache + compiled forward."""

from __future__ import annotations

import logging
import time

from ..report import median, metric
from .burst import burst_table, run_bursts
from .harness import GpuBench, fmt_s, put_table, speech_like, sync_gpu, time_calls

log = logging.getLogger(__name__)


async def section_compile(bench: GpuBench) -> None:
    plan = bench.plan
    mode = bench.args.compile_mode
    baseline = bench.baseline_b1 or median(await bench.b1())
    warm = await bench.gpu(_compile_unet_vae, bench, mode)
    b1 = await bench.b1()
    by_batch = {}
    for n in plan.compile_buckets:
        times = b1 if n == 1 else await bench.gpu(time_calls, bench.render_fn(n), bench.repeats, bench.plan.warmup)
        by_batch[n] = {"median_s": median(times), "images_per_s": n / median(times)}
    burst = await run_bursts(bench, "compiled", (plan.burst_batches[0],))
    bench.details["compile"] = {
        "mode": mode,
        "warmup_s_by_bucket": warm,
        "b1_s": b1,
        "by_batch": by_batch,
        "burst": burst,
    }
    bench.metrics["burst_ratio_compiled"] = metric(
        f"Burst of {plan.burst_jobs} render jobs with torch.compile: batched (MAX_BATCH {plan.burst_batches[0]}, "
        "padded) ÷ one at a time",
        burst["render"][plan.burst_batches[0]]["images_per_s"] / burst["render"][1]["images_per_s"],
        "×",
        target=(">=", 2.0),
        fmt="{:.2f}",
        note="option, not the product default",
    )
    bench.metrics["sd_b1_compiled"] = metric(
        f"SD 1.5 {plan.size}², {plan.steps} steps, batch 1 with torch.compile ({mode})",
        median(b1),
        "s",
        target=("<=", 0.30),
        fmt="{:.3f}",
        note="option, not the product default",
    )
    rows = [
        ["warm-up (compile) per padded batch size", ", ".join(f"{k}: {v:.0f} s" for k, v in warm.items()), "", ""],
        ["batch 1, s per image", fmt_s(baseline), fmt_s(median(b1)), f"{baseline / median(b1):.2f}×"],
    ]
    eager = bench.details.get("sd", {}).get("by_batch", {})
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
    put_table(
        bench.results,
        {
            "title": f"torch.compile ({mode}; UNet + VAE decoder, batches padded to {list(plan.compile_buckets)})",
            "columns": ["", "eager (product)", "compiled", "speed-up"],
            "rows": rows,
        },
    )
    burst_table(bench, "Burst with torch.compile", burst)


def _compile_unet_vae(bench: GpuBench, mode: str) -> dict[int, float]:
    """Compile the UNet and the VAE decoder (shapes fixed: dynamic=False), pad every batch to the
    next of ``compile_buckets`` (what the product would need so shapes never recompile), and
    warm each bucket up once. Runs on the GPU thread, which then owns the compiled graphs."""
    import torch

    pipe, synth = bench.pipe, bench.synth
    pipe.unet = torch.compile(pipe.unet, mode=mode, fullgraph=True, dynamic=False)
    pipe.vae.decode = torch.compile(pipe.vae.decode, mode=mode, fullgraph=True, dynamic=False)
    buckets = sorted(bench.plan.compile_buckets)
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
        bench.render_fn(n)()
        sync_gpu()
        warm[n] = time.perf_counter() - started
        log.info("compiled batch %d in %.0f s", n, warm[n])
    return warm


async def section_whisper_compile(bench: GpuBench) -> None:
    """Whisper with a static KV cache and ``torch.compile(model.forward, mode="reduce-overhead")``
    (transformers' recipe), through the product's ``Transcriber`` (beam 5)."""
    import torch

    from pipeline.errors import NoSpeech

    tr = bench.engine.transcriber
    audio = speech_like(bench.plan.whisper_seconds)

    def setup():
        tr.model.generation_config.cache_implementation = "static"
        tr.model.forward = torch.compile(tr.model.forward, mode="reduce-overhead", fullgraph=True)

    def once():
        try:
            tr.transcribe(audio)
        except NoSpeech:
            pass

    await bench.gpu(setup)
    started = time.perf_counter()
    await bench.gpu(once)
    first = time.perf_counter() - started
    times = await bench.gpu(time_calls, once, bench.repeats, 1)
    eager = median(bench.details.get("whisper", {}).get("product_s", []))
    bench.details["whisper_compile"] = {"first_call_s": first, "s": times, "median_s": median(times)}
    bench.metrics["whisper_compiled"] = metric(
        f"Whisper large-v3-turbo, {bench.plan.whisper_seconds:g} s clip, static cache + torch.compile",
        median(times),
        "s",
        target=("<=", 0.25),
        fmt="{:.3f}",
        note="option, not the product default",
    )
    put_table(
        bench.results,
        {
            "title": "Whisper with a static KV cache + compiled forward (reduce-overhead)",
            "columns": ["", "eager (product)", "compiled"],
            "rows": [
                ["first call (compiles)", "", fmt_s(first)],
                ["20 s clip, median", fmt_s(eager), fmt_s(median(times))],
            ],
        },
    )
