"""Helpers the benchmarks share: the product's own setting defaults, the executor's batch-size
histogram between two moments, and the preamble of the single-purpose benchmarks
(``bench.upscale``, ``bench.candidates``): the hub kept offline, their common arguments, the tiny or
real-sized model directories, and where a result file goes."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"


def hub_offline() -> None:
    """Never reach for the Hugging Face hub (benchmarks build or cache their own models); call
    before transformers or diffusers are imported."""
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }.items():
        os.environ.setdefault(name, value)


def bench_parser(prog: str, doc: str, *, steps_help: str) -> argparse.ArgumentParser:
    """The arguments every single-purpose benchmark takes: ``--size tiny|real``, ``--device``,
    ``--steps``, ``--repeats``, ``--cache`` (model directories), ``--out`` (results), ``--tag``."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--size", choices=("tiny", "real"), default="tiny")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--steps", type=int, default=None, help=steps_help)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-models")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--tag", default="")
    return p


def model_dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """The SD and CLIP model directories: SD 1.5 / CLIP ViT-L/14 sizes with random weights
    (``--size real``) or the test suite's tiny builders, cached under ``--cache``."""
    if args.size == "real":
        from .models import ensure_real_models

        dirs = ensure_real_models(args.cache, names=("sd15", "clip-vit-large-patch14"))
        return dirs["sd15"], dirs["clip-vit-large-patch14"]
    from devkit import builders

    sd, clip = args.cache / "tiny-sd", args.cache / "tiny-clip"
    if not (sd / "model_index.json").exists():
        builders.build_tiny_stable_diffusion(sd)
    if not (clip / "config.json").exists():
        builders.build_tiny_clip(clip)
    return sd, clip


def result_path(args: argparse.Namespace, name: str, device: str) -> Path:
    """``<--out>/<name>-<device>-<size>-<UTC date>[-<tag>].json`` (the directory is created)."""
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    tag = f"-{args.tag}" if args.tag else ""
    return Path(args.out / f"{name}-{device}-{args.size}-{stamp}{tag}.json")


def product_defaults(*names: str) -> dict[str, Any]:
    """The product's defaults of ``names`` (``Settings`` field defaults), passed explicitly to every
    benchmark ``Settings`` so a developer's environment or .env cannot change what is measured."""
    from pipeline.settings import Settings

    return {name: Settings.model_fields[name].default for name in names}


def batch_size_delta(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    """Pipeline calls per batch size between two snapshots of ``executor.metrics().batch_sizes``
    (sizes that did not occur in between are left out)."""
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)}
