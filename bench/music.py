"""Issue #15's benchmark: how fast MusicGen composes, and what a piece of music does to the
picture queue.

    python -m bench.music                       # musicgen-small size, random weights, this machine
    python -m bench.music --size tiny           # the test suite's tiny MusicGen (seconds)
    python -m bench.music --seconds 30 --repeats 3   # on a GPU: the full 30 s

(a) **Real-time factor**: seconds of audio per second of compute, for ``--seconds`` of audio (and
    the shorter lengths in ``--also``), composed through the product's own path — a
    :class:`~pipeline.executor.GPUExecutor` (its one model thread, ``DEVICE=auto``: fp16 on CUDA)
    loading the model with ``from_pretrained`` from a directory built by
    :func:`devkit.builders.build_musicgen` (the published musicgen-small configuration with random
    weights; a random model samples as long as a trained one, since the length is fixed).
    MusicGen's cost grows with the length (every step attends to all earlier ones), so when 30 s is
    too slow to measure here, the 30 s figure is *extrapolated* at the rate of the longest measured
    length — a lower bound on the time, since later steps cost more — and the JSON says
    ``"extrapolated": true`` and why.
(b) **The picture queue while music runs**: the tiny Stable Diffusion of the test suite on the same
    executor; one user's picture alone (baseline), then the same picture submitted by another user
    right after a piece started composing. The executor runs waiting pictures between two decoder
    steps of the piece, so the picture's latency grows by about one decoder step, not by the
    piece's remaining time; the JSON records both latencies.

Results: ``bench/results/music-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

for _name, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
    os.environ.setdefault(_name, _value)

log = logging.getLogger("bench.music")
ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
PROMPT = "calm ambient piano with soft pads, ocean waves, warm tone, 72 bpm"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.music", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("small", "tiny"), default="small")
    p.add_argument(
        "--seconds", type=float, default=None, help="audio length to measure (default: 30 on a GPU, 5 on CPU)"
    )
    p.add_argument("--also", default=None, help="comma-separated extra lengths (default: 2,5 on CPU, 5,10 on GPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per length (default: 3 GPU, 1 CPU)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-models")
    p.add_argument("--no-queue", action="store_true", help="skip (b), the picture-queue measurement")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--tag", default="", help="added to the results file name")
    return p.parse_args(argv)


def ensure_musicgen(cache: Path, size: str) -> Path:
    from devkit import builders

    directory = cache / f"musicgen-{size}-random"
    if not (directory / "config.json").exists():
        started = time.perf_counter()
        builders.build_musicgen(directory, size=size)
        log.info("built %s in %.0f s", directory, time.perf_counter() - started)
    return directory


def fit_extrapolate(points: dict[float, float], target: float) -> float:
    """time(target) at the rate of the longest measured length. A lower bound: later steps attend
    to more positions, so the true rate at ``target`` is somewhat slower (a polynomial fit is not
    used: on a shared CPU the noise between lengths makes it meaningless)."""
    longest = max(points)
    return points[longest] * target / longest


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from pipeline.executor import GPUExecutor
    from pipeline.music import MusicRequest
    from pipeline.settings import Settings

    cuda = args.device != "cpu" and torch.cuda.is_available()
    seconds = args.seconds or (30.0 if cuda else 5.0)
    also = [float(s) for s in (args.also or ("5,10" if cuda else "2")).split(",") if s.strip()]
    lengths = sorted({*also, seconds})
    repeats = args.repeats or (3 if cuda else 1)
    model_dir = ensure_musicgen(args.cache, args.size)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-music-"))
    sd_dir = None
    if not args.no_queue:
        from devkit import builders

        sd_dir = args.cache / "tiny-sd"
        if not (sd_dir / "model_index.json").exists():
            builders.build_tiny_stable_diffusion(sd_dir)
    settings = Settings(
        MUSIC_MODEL=str(model_dir),
        DIFFUSION_MODEL=str(sd_dir or model_dir),
        DEVICE=args.device,
        DATA_DIR=data_dir,
        WIDTH=64,
        HEIGHT=64,
        MAX_JOBS_PER_USER=4,
        _env_file=None,
    )
    executor = GPUExecutor(settings, stage_timeout_s=3600)
    await executor.start()
    out: dict[str, Any] = {
        "size": args.size,
        "device": torch.cuda.get_device_name(0)
        if cuda
        else f"cpu ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})",
        "torch": torch.__version__,
        "prompt": PROMPT,
    }
    try:
        job = executor.admit("bench")
        t0 = time.perf_counter()
        await executor.call(job, "warmup", executor.engine.composer.load)
        out["load_s"] = round(time.perf_counter() - t0, 2)
        params = sum(p.numel() for p in executor.engine.composer.model.parameters())
        out["parameters_m"] = round(params / 1e6, 1)
        await executor.compose(job, MusicRequest(PROMPT, seconds=1, seed=0))  # warm-up
        rows = []
        for length in lengths:
            times = []
            for r in range(repeats):
                music = await executor.compose(job, MusicRequest(PROMPT, seconds=length, seed=r))
                times.append(music.elapsed_s)
                log.info("%.0f s of audio in %.1f s (%.2fx real time)", length, music.elapsed_s, music.realtime_factor)
            median = statistics.median(times)
            rows.append(
                {
                    "seconds": length,
                    "compute_s": round(median, 3),
                    "realtime_factor": round(length / median, 3),
                    "steps": executor.engine.composer.steps_for(length),
                    "repeats": repeats,
                }
            )
        job.finish()
        out["lengths"] = rows
        measured = {r["seconds"]: r["compute_s"] for r in rows}
        if 30.0 in measured:
            out["thirty_seconds"] = {"compute_s": measured[30.0], "realtime_factor": round(30 / measured[30.0], 3)}
            out["thirty_seconds"]["extrapolated"] = False
        else:
            estimate = fit_extrapolate(measured, 30.0)
            out["thirty_seconds"] = {
                "compute_s": round(estimate, 1),
                "realtime_factor": round(30 / estimate, 3),
                "extrapolated": True,
                "why": f"30 s not measured here: the rate of {max(measured):g} s scaled to 30 s "
                "(a lower bound on the time: later steps attend to more positions)",
            }
        if not args.no_queue:
            out["queue"] = await measure_queue(executor, seconds)
    finally:
        await executor.shutdown(timeout_s=30)
    return out


async def measure_queue(executor: Any, seconds: float) -> dict[str, Any]:
    from pipeline.music import MusicRequest
    from pipeline.synthesis import RenderRequest

    picture = RenderRequest(prompt="a red apple on a wooden table", steps=10, width=64, height=64, seed=1)
    job = executor.admit("painter")
    await executor.render(job, picture)  # warm-up: loads the diffusion model
    t0 = time.perf_counter()
    await executor.render(job, picture)
    alone = time.perf_counter() - t0
    job.finish()

    composer_job = executor.admit("composer")
    started = asyncio.Event()

    def listener(event: Any) -> None:
        if event.stage == "music" and event.total and event.step >= 1:
            started.set()

    composer_job.listener = listener
    music_task = asyncio.create_task(executor.compose(composer_job, MusicRequest(PROMPT, seconds=seconds, seed=9)))
    await asyncio.wait_for(started.wait(), 600)
    painter = executor.admit("painter")
    t0 = time.perf_counter()
    await executor.render(painter, picture)
    behind_music = time.perf_counter() - t0
    painter.finish()
    music = await music_task
    composer_job.finish()
    return {
        "picture_alone_s": round(alone, 3),
        "picture_behind_music_s": round(behind_music, 3),
        "music_seconds": seconds,
        "music_compute_s": round(music.elapsed_s, 3),
        "note": "pictures run between two decoder steps of the piece",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("pipeline", "transformers", "diffusers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = asyncio.run(measure(args))
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if "cpu" not in result["device"] else "cpu"
    suffix = f"-{args.tag}" if args.tag else ""
    path = args.out / f"music-{tag}-{args.size}-{dt.date.today().isoformat()}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
