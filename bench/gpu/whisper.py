"""``whisper`` section: a 20 s clip through ``Transcriber`` (beam 5 as the product does; the decoder
says 64 text tokens), its parts (log-mel features, encoder, the language/no-speech probe) and variants:
greedy, eager attention, fp32, decoding to the token budget."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..models import WHISPER_TEXT_TOKENS, restore_whisper_length
from ..report import median, metric
from .harness import GpuBench, fmt_s, on_cuda, put_table, speech_like, time_calls

log = logging.getLogger(__name__)


async def section_whisper(bench: GpuBench) -> None:
    from pipeline.errors import NoSpeech

    plan = bench.plan
    tr = bench.engine.transcriber
    audio = speech_like(plan.whisper_seconds)
    job = bench.executor.admit("bench-whisper")
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
        for i in range(plan.warmup + bench.repeats):
            started = time.perf_counter()
            try:
                await bench.executor.transcribe(job, audio)
            except NoSpeech:
                log.warning("the random Whisper produced no speech")
            if i >= plan.warmup:
                product.append(time.perf_counter() - started)
        decoded = tokens[-1] if tokens else None
        parts = await bench.gpu(_whisper_parts, bench, audio)
        variants: dict[str, Any] = {}
        rows = [["product (beam 5, fp16/SDPA on CUDA)", fmt_s(median(product)), decoded]]
        if plan.whisper_variants or bench.args.models == "tiny":
            for name, apply in _whisper_variants(bench):
                undo = None
                try:
                    undo = await bench.gpu(apply)
                    tokens.clear()
                    times = await bench.gpu(time_calls, once_on_gpu, bench.repeats, plan.warmup)
                    variants[name] = {
                        "s": times,
                        "median_s": median(times),
                        "tokens": tokens[-1] if tokens else None,
                    }
                    rows.append([name, fmt_s(median(times)), variants[name]["tokens"]])
                except Exception as exc:
                    log.warning("whisper variant %s failed: %s", name, exc)
                    variants[name] = {"error": f"{type(exc).__name__}: {exc}"}
                    rows.append([name, "error", str(exc)[:80]])
                finally:
                    if undo is not None:
                        await bench.gpu(undo)
    finally:
        del tr.model.generate  # the instance attribute: back to the class's method
        job.finish("done")
    bench.details["whisper"] = {
        "clip_s": plan.whisper_seconds,
        "product_s": product,
        "decoded_tokens": decoded,
        "text_tokens_shaped": WHISPER_TEXT_TOKENS,
        "parts": parts,
        "variants": variants,
        "num_beams": tr.num_beams,
    }
    bench.metrics["whisper"] = metric(
        f"Whisper large-v3-turbo, {plan.whisper_seconds:g} s clip "
        f"({WHISPER_TEXT_TOKENS} text tokens, beam {tr.num_beams})",
        median(product),
        "s",
        target=("<=", 0.25),
        fmt="{:.3f}",
    )
    if "greedy (num_beams=1)" in variants and "median_s" in variants["greedy (num_beams=1)"]:
        bench.metrics["whisper_greedy"] = metric(
            "Whisper, same clip, greedy decoding", variants["greedy (num_beams=1)"]["median_s"], "s", fmt="{:.3f}"
        )
    rows += [
        ["part: log-mel features (CPU, in the product)", fmt_s(parts["features_s"]), ""],
        ["part: encoder, one 30 s window", fmt_s(parts["encoder_s"]), ""],
        ["part: language/no-speech probe (encoder + 1 decoder step)", fmt_s(parts["probe_s"]), ""],
    ]
    put_table(
        bench.results,
        {
            "title": f"Whisper large-v3-turbo on a {plan.whisper_seconds:g} s clip (s)",
            "columns": ["variant", "seconds (median)", "tokens decoded (with <|endoftext|>)"],
            "rows": rows,
        },
    )


def _whisper_parts(bench: GpuBench, audio: np.ndarray) -> dict[str, float]:
    import torch

    tr = bench.engine.transcriber
    features_s = median(time_calls(lambda: tr._features(audio), bench.repeats, bench.plan.warmup))
    features, _ = tr._features(audio)
    window = features[..., : tr._window_frames()]
    with torch.inference_mode():
        encoder_s = median(time_calls(lambda: tr.model.model.encoder(window), bench.repeats, bench.plan.warmup))
        probe_s = median(time_calls(lambda: tr._probe(features), bench.repeats, bench.plan.warmup))
    return {"features_s": features_s, "encoder_s": encoder_s, "probe_s": probe_s}


def _whisper_variants(bench: GpuBench):
    import torch

    tr = bench.engine.transcriber
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
    if on_cuda():

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

    if bench.args.models == "real":
        variants.append(("worst case: no <|endoftext|>, decodes the whole token budget", budget))
    return variants
