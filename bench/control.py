"""Issue #18's ControlNet benchmark: a ControlNet render (canny, palette) against a plain render of
the same prompt, seed, size and steps, through the product's own :class:`~pipeline.synthesis.Synthesizer`.

    python -m bench.control                   # the test suite's tiny SD + a tiny ControlNet (any machine)
    python -m bench.control --size real       # SD 1.5's architecture + a ControlNet of its UNet, random weights (a GPU)

Timed: one ``Synthesizer.render`` call (median of ``--repeats`` after one untimed warm-up per
mode), which for a control includes making its control image (canny edges or palette bands) and
the ControlNet's forward pass at every step. Results: ``bench/results/control-<device>-<size>-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

for _name, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
    os.environ.setdefault(_name, _value)

log = logging.getLogger("bench.control")
ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
PALETTE = ("#D62828", "#1E63D6", "#FFD60A", "#2E8B57")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.control", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("tiny", "real"), default="tiny")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: 25 GPU, 10 CPU)")
    p.add_argument("--side", type=int, default=None, help="picture side (default: 512 real, 64 tiny)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--tag", default="")
    return p.parse_args(argv)


def source_png(side: int) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (side, side), (15, 15, 15))
    draw = ImageDraw.Draw(image)
    draw.ellipse((side // 5, side // 5, side * 4 // 5, side * 4 // 5), fill=(240, 240, 240))
    draw.rectangle((0, side * 3 // 4, side, side), fill=(120, 80, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build_models(root: Path, size: str) -> tuple[Path, Path]:
    from devkit import builders

    if size == "real":
        from bench.models import build_sd15

        sd = build_sd15(root / "sd15", safety_checker=False)
    else:
        sd = builders.build_tiny_stable_diffusion(root / "tiny-sd", safety_checker=False)
    net = builders.build_tiny_controlnet(sd, root / "controlnet")  # from_unet: the UNet's own size
    return sd, net


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from pipeline.control import ControlNets, ControlSpec
    from pipeline.synthesis import RenderRequest, Synthesizer

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps or (25 if device == "cuda" else 10)
    side = args.side or (512 if args.size == "real" else 64)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sd, net = build_models(Path(tmp), args.size)
        build_s = time.perf_counter() - t0
        synth = Synthesizer(str(sd), device, safety_checker=False)
        synth.controls = ControlNets(f"canny={net}, palette={net}")
        synth.load()
        source = source_png(side)
        modes: dict[str, ControlSpec | None] = {
            "plain": None,
            "canny": ControlSpec("canny", 1.0, source=source),
            "palette": ControlSpec("palette", 1.0, palette=PALETTE),
        }
        timings: dict[str, list[float]] = {name: [] for name in modes}
        for spec in modes.values():
            request = RenderRequest(
                prompt="a glowing moon over a wooden pier", seed=5, steps=steps, width=side, height=side, control=spec
            ).validated()
            synth.render([request])  # warm-up: first call at this shape (and the ControlNet's load)
        for _ in range(args.repeats):  # interleaved, so drift hits every mode alike
            for name, spec in modes.items():
                request = RenderRequest(
                    prompt="a glowing moon over a wooden pier",
                    seed=5,
                    steps=steps,
                    width=side,
                    height=side,
                    control=spec,
                ).validated()
                if device == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                synth.render([request])
                if device == "cuda":
                    torch.cuda.synchronize()
                timings[name].append(time.perf_counter() - t)
        controlnet_params = sum(p.numel() for p in synth.controls.controlnet("sd", "canny", None, None).parameters())
    medians = {name: statistics.median(values) for name, values in timings.items()}
    result = {
        "bench": "control",
        "date": dt.date.today().isoformat(),
        "machine": {
            "device": device,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "size": args.size,
        "side": side,
        "steps": steps,
        "repeats": args.repeats,
        "build_s": round(build_s, 2),
        "controlnet_params_m": round(controlnet_params / 1e6, 2),
        "render_s": {k: [round(v, 4) for v in vs] for k, vs in timings.items()},
        "median_s": {k: round(v, 4) for k, v in medians.items()},
        "ratio_vs_plain": {k: round(v / medians["plain"], 3) for k, v in medians.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.tag}" if args.tag else ""
    path = args.out / f"control-{device}-{args.size}-{result['date']}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log.info("median render: %s; ratio to plain: %s → %s", result["median_s"], result["ratio_vs_plain"], path)
    return result


if __name__ == "__main__":
    main()
