"""GPU mode: real-size architectures with random weights on a CUDA GPU.

Models (``bench/models.py``): Stable Diffusion 1.5 (UNet 860M, VAE, CLIP ViT-L/14 text encoder, the
ViT-L/14 safety checker, Euler), Whisper large-v3-turbo, CLIP ViT-L/14 — built once into a cache
directory and loaded through the product's own code by a :class:`~pipeline.executor.GPUExecutor`
(``DEVICE=auto``: fp16 + SDPA on CUDA, the UNet in channels_last), so every measurement below is the
product as it runs, on its one GPU thread.

Sections (``--only`` picks some; results of a day merge into one file), one module each: ``sd``,
``options``, ``whisper``, ``clip``, ``loop``, ``burst``, ``families`` (SDXL, SDXL-Turbo, SD3, FLUX at
their native size and default steps; ``family-options``: the speed options per family), and
``torch_compile`` for ``compile`` and ``whisper-compile`` (only with ``--compile``); their
docstrings say what each measures. ``harness``
holds the plan, the timing helpers and :class:`~bench.gpu.harness.GpuBench` they all run on. A new
measurement is a ``section_<name>(bench)`` function in its module, registered in ``SECTIONS`` below
and named in ``bench.__main__.GPU_SECTIONS``.

``--budget SECONDS`` (what ``bench/gpu_session.sh`` passes on a lent GPU) runs the sections in
:data:`IMPORTANCE` order, ``compile`` included, and skips — recording why — a section whose
estimate in :data:`ESTIMATE_S` no longer fits in what is left, so a short device lease still leaves
the most important numbers; results are saved after every section.

``--smoke`` runs the same code on the CPU with the real-size architectures at 64² px and 2 steps
(batch sizes 1 and 2, one repeat, bursts of 4) to prove it runs; ``--models tiny`` runs it on the
test suite's tiny models (seconds; development).
"""

from __future__ import annotations

import logging
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from pathlib import Path

from .. import report
from ..models import WHISPER_TEXT_TOKENS, ensure_real_models, ensure_tiny_models
from .burst import section_burst
from .clip import section_clip
from .families import section_families, section_family_options
from .harness import FULL, SMOKE, GpuBench, GpuPlan
from .loop import section_loop
from .options import section_options
from .sd import section_sd
from .torch_compile import section_compile, section_whisper_compile
from .whisper import section_whisper

log = logging.getLogger(__name__)

# In the order a run measures them (``compile`` and ``whisper-compile`` only with ``--compile``).
SECTIONS: dict[str, Callable[[GpuBench], Awaitable[None]]] = {
    "sd": section_sd,
    "options": section_options,
    "whisper": section_whisper,
    "clip": section_clip,
    "loop": section_loop,
    "burst": section_burst,
    "compile": section_compile,
    "whisper-compile": section_whisper_compile,
    "families": section_families,
    "family-options": section_family_options,
}

# ``--budget``: most important first (issue #19), and the seconds each is expected to take on an
# H100-class GPU at the full plan (the compile warm-ups dominate theirs).
IMPORTANCE = (
    "sd",
    "options",
    "compile",
    "burst",
    "whisper",
    "clip",
    "loop",
    "families",
    "family-options",
    "whisper-compile",
)
ESTIMATE_S = {
    "sd": 45,
    "options": 60,
    "compile": 150,
    "burst": 60,
    "whisper": 30,
    "clip": 10,
    "loop": 30,
    "whisper-compile": 90,
    "families": 420,  # four real-size models (FLUX 12 B) built once into the cache, then loaded and timed
    "family-options": 60,  # at least one family; it budgets its options itself (skips what no longer fits)
}


def plan_sections(args) -> list[str]:
    """The sections a run measures, in order."""
    if args.only:
        return list(args.only)
    if args.budget is not None:
        return list(IMPORTANCE)
    return [s for s in SECTIONS if "compile" not in s or args.compile]


def fits_budget(name: str, elapsed_s: float, args) -> bool:
    """Whether section ``name`` is expected to finish within ``--budget`` (always, without one;
    smoke runs are scaled down 10×)."""
    if args.budget is None:
        return True
    estimate = ESTIMATE_S.get(name, 60) / (10 if args.smoke or args.models == "tiny" else 1)
    return elapsed_s + estimate <= args.budget


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
    sections = plan_sections(args)
    if args.only and path.exists():  # merge into the same day's results
        prior = report._load(path)
        if prior:
            for key in ("metrics", "details"):
                results[key] = {**prior.get(key, {}), **results.get(key, {})}
            results["tables"] = prior.get("tables", [])
            results["notes"] = prior.get("notes", [])
    started = time.perf_counter()
    base_models = any(name not in ("families", "family-options") for name in sections)  # they build their own
    models: dict[str, Path] = {}
    if args.models == "tiny":
        models = ensure_tiny_models(Path(args.cache)) if base_models else {}
        plan = replace(plan, size=64)
    elif base_models:
        models = ensure_real_models(Path(args.cache))
    build_s = time.perf_counter() - started
    results["settings"] = {
        "plan": asdict(plan),
        "sections": sections,
        "budget_s": args.budget,
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
        bench.started = started
        if base_models:
            await bench.start()
        save()
        try:
            for name in sections:
                if not fits_budget(name, time.perf_counter() - started, args):
                    log.warning("section %s skipped: it would not fit in the %.0f s budget", name, args.budget)
                    results["details"].setdefault("skipped", {})[name] = (
                        f"budget: {time.perf_counter() - started:.0f} s used of {args.budget:.0f} s, "
                        f"~{ESTIMATE_S.get(name, 60)} s needed"
                    )
                    save()
                    continue
                log.info("section %s", name)
                section_started = time.perf_counter()
                try:
                    await SECTIONS[name](bench)
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
