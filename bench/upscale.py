"""The U buttons' hires fix, whole against tiled: seconds, tiles, the largest latent the UNet saw,
and (CUDA) the peak GPU memory of each.

    python -m bench.upscale                    # the test suite's tiny SD: 64 → 128 in 64 px tiles
    python -m bench.upscale --size real        # SD 1.5 sizes, random weights: 512 → 1024 in 512 px tiles

The product's own :class:`~pipeline.synthesis.Synthesizer` renders an image-to-image request
exactly as :meth:`pipeline.studio.Studio.upscale` builds it (×2, strength 0.3, the seed), once
with ``tile=None`` (whole) and once with ``tile=0`` (tiles of the model's native size).
Results: ``bench/results/upscale-<device>-<size>-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import math
import statistics
import time
from typing import Any

from .common import ROOT, bench_parser, hub_offline, model_dirs, result_path

hub_offline()
log = logging.getLogger("bench.upscale")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(
        "python -m bench.upscale", __doc__ or "", steps_help="the picture's steps (default: 25 GPU, 10 CPU)"
    )
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image

    from pipeline import limits
    from pipeline.synthesis import RenderRequest, Synthesizer

    sd_dir, _ = model_dirs(args)
    synth = Synthesizer(str(sd_dir), args.device, safety_checker=False)
    synth.load()
    cuda = synth.device is not None and synth.device.type == "cuda"
    steps = args.steps or (25 if cuda else 10)
    native_w, native_h = synth.family.native_size
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (native_h, native_w, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    latents: list[int] = []
    hook = synth.load().text2img.unet.register_forward_pre_hook(
        lambda module, a: latents.append(int(max(a[0].shape[-2:])))
    )

    def request(tile: int | None) -> RenderRequest:
        return RenderRequest(
            prompt="a red apple on a wooden table",
            seed=7,
            steps=max(steps, math.ceil(1 / limits.UPSCALE_STRENGTH)),
            width=native_w * limits.UPSCALE_FACTOR,
            height=native_h * limits.UPSCALE_FACTOR,
            init_image=buffer.getvalue(),
            strength=limits.UPSCALE_STRENGTH,
            tile=tile,
        ).validated()

    results: dict[str, Any] = {}
    try:
        for name, tile in (("whole", None), ("tiled", 0)):
            synth.render([request(tile)])  # first-call costs
            seconds: list[float] = []
            peak = None
            latents.clear()
            for _ in range(args.repeats):
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                out = synth.render([request(tile)])[0]
                if cuda:
                    torch.cuda.synchronize()
                    peak = torch.cuda.max_memory_allocated() / 2**20
                seconds.append(time.perf_counter() - t0)
            results[name] = {
                "seconds_median": round(statistics.median(seconds), 4),
                "seconds": [round(s, 4) for s in seconds],
                "tiles": out.tiles,
                "size": list(out.image.size),
                "max_latent_side": max(latents),
                "peak_gpu_mib": None if peak is None else round(peak, 1),
            }
            log.info("%s: %s", name, results[name])
    finally:
        hook.remove()
    return {
        "benchmark": "upscale",
        "size": args.size,
        "device": str(synth.device),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpu_threads": torch.get_num_threads(),
        "native": [native_w, native_h],
        "steps": steps,
        "strength": limits.UPSCALE_STRENGTH,
        "results": results,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    report = measure(args)
    path = result_path(args, "upscale", "cuda" if report["gpu"] else "cpu")
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["results"], indent=2))
    print(f"written: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
