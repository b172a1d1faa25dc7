"""``python -m pipeline``: turn a voice note or a text into image.png, palette.png and result.json
(or music into music.wav and result.json).

    python -m pipeline note.ogg --out out/
    python -m pipeline --text "a lighthouse in a storm" --style watercolour --out out/
    python -m pipeline --music "a calm seaside ambience" --seconds 10 --out out/
    python -m pipeline note.ogg --soundtrack --out out/     # the picture, and music for it
    python -m pipeline --text "a lighthouse" --control canny --control-image edges.png --control-strength 0.8

An idea that asks for music ("compose a calm seaside ambience"), spoken or typed, is composed
instead of drawn.

Exit codes: 0 done, 2 bad input (the message says what to change), 3 a model could not be
loaded (the message names the setting), 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import limits
from .families import ASPECTS
from .logs import configure_logging

if TYPE_CHECKING:
    from .executor import ProgressEvent
    from .studio import MusicOutput

EXIT_OK, EXIT_UNEXPECTED, EXIT_BAD_INPUT, EXIT_MODEL = 0, 1, 2, 3

#: Command-line options that are :class:`~pipeline.studio.Idea` fields of the same name.
IDEA_OPTIONS = (
    "style",
    "negative_prompt",
    "seed",
    "steps",
    "guidance",
    "width",
    "height",
    "strength",
    "task",
    "aspect",
    "model",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Voice note or text → directed prompt → Stable Diffusion → critic → image + palette.",
    )
    p.add_argument("audio", nargs="?", type=Path, help="a voice note or audio file (OGG/Opus, WAV, FLAC, MP3, M4A)")
    p.add_argument("--text", help="the idea as text, instead of an audio file")
    p.add_argument("--music", metavar="TEXT", help="compose music from this description (writes music.wav)")
    p.add_argument(
        "--seconds",
        type=float,
        help=f"music length ({limits.MIN_MUSIC_SECONDS}-{limits.MAX_MUSIC_SECONDS} s; default: MUSIC_SECONDS)",
    )
    p.add_argument("--soundtrack", action="store_true", help="also compose music for the picture (writes music.wav)")
    p.add_argument("--out", type=Path, default=Path("out"), help="output directory (default: out/)")
    p.add_argument("--style", help="a style name (e.g. photographic, watercolour, anime, pixel art)")
    p.add_argument("--negative", dest="negative_prompt", metavar="TEXT", help="things to keep out of the picture")
    p.add_argument("--seed", type=int, help=f"repeat a picture exactly (0-{limits.MAX_SEED}; default: random)")
    p.add_argument("--steps", type=int, help=f"denoising steps ({limits.MIN_STEPS}-{limits.MAX_STEPS}; default: STEPS)")
    p.add_argument(
        "--guidance",
        type=float,
        help=f"how closely to follow the prompt ({limits.MIN_GUIDANCE:g}-{limits.MAX_GUIDANCE:g}; default: GUIDANCE)",
    )
    sides = f"a multiple of {limits.SIDE_MULTIPLE}, {limits.MIN_SIDE}-{limits.MAX_SIDE}"
    p.add_argument("--width", type=int, help=f"picture width ({sides}; default: WIDTH)")
    p.add_argument("--height", type=int, help=f"picture height ({sides}; default: HEIGHT)")
    p.add_argument("--aspect", choices=ASPECTS, help="the frame at the model's native pixel budget (default: native)")
    p.add_argument("--model", help="a MODELS name (default: DIFFUSION_MODEL)")
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="NAME[:WEIGHT]",
        help=f"a LoRA from LORA_DIR, repeatable (weight default {limits.DEFAULT_LORA_WEIGHT:g})",
    )
    p.add_argument("--image", type=Path, help="an init image: image-to-image")
    p.add_argument(
        "--strength",
        type=float,
        default=limits.DEFAULT_STRENGTH,
        help=f"image-to-image strength ({limits.MIN_STRENGTH:g}-{limits.MAX_STRENGTH:g}; "
        f"default {limits.DEFAULT_STRENGTH:g})",
    )
    p.add_argument(
        "--control",
        metavar="MODE",
        help="a ControlNet control: canny, depth or pose (from --control-image, else --image) or palette "
        "(the director's palette; writes control.png)",
    )
    p.add_argument("--control-image", type=Path, help="the control's source image (canny/depth/pose)")
    p.add_argument(
        "--control-strength",
        type=float,
        help="how strongly the control guides the picture (0-2; default 1)",
    )
    p.add_argument(
        "--task",
        choices=["auto", "transcribe", "translate"],
        default="auto",
        help="auto: translate non-English speech to English (the prompt must be English)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if sum(x is not None for x in (args.audio, args.text, args.music)) != 1:
        print('error: give one of an audio file, --text "your idea" or --music "a description"', file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.music is not None and args.soundtrack:
        print("error: --soundtrack goes with a picture (an audio file or --text), not --music", file=sys.stderr)
        return EXIT_BAD_INPUT
    configure_logging(
        logging.DEBUG if args.verbose else logging.WARNING,
        quiet_libraries=not args.verbose,
        fmt="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


async def _run(args: argparse.Namespace) -> int:
    from .errors import ModelUnavailable, VoxCanvasError
    from .executor.factory import create_executor
    from .images import read_init_image_file
    from .settings import get_settings
    from .studio import Idea, MusicOutput, Output, Studio

    try:
        settings = get_settings()
    except Exception as exc:
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from .control import IMAGE_MODES, check_control

    try:
        control, control_strength = check_control(args.control, args.control_strength)
    except VoxCanvasError as exc:  # an unknown mode or a strength out of bounds
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if control is None and (args.control_image is not None or args.control_strength is not None):
        print("error: --control-image and --control-strength go with --control MODE", file=sys.stderr)
        return EXIT_BAD_INPUT
    if control in IMAGE_MODES and args.control_image is None and args.image is None:
        print(f"error: the {control} control needs an image: give --control-image PATH", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        audio = args.audio.read_bytes() if args.audio is not None else None
        init_image = read_init_image_file(args.image) if args.image is not None else None
    except OSError as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except VoxCanvasError as exc:  # an init image that is too large or not PNG/JPEG/WebP
        print(f"error: {args.image}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:  # bounded exactly like an init image
        control_image = read_init_image_file(args.control_image) if args.control_image is not None else None
    except OSError as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except VoxCanvasError as exc:
        print(f"error: {args.control_image}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from .lora import parse_lora

    try:
        loras = tuple(parse_lora(text, limits.DEFAULT_LORA_WEIGHT) for text in args.lora)
    except VoxCanvasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    idea = Idea(
        loras=loras,
        text=args.text,
        audio=audio,
        audio_filename=args.audio.name if args.audio is not None else None,
        init_image=init_image,
        control=control,
        control_image=control_image,
        control_strength=control_strength if control is not None else None,
        **{option: getattr(args, option) for option in IDEA_OPTIONS},
    )
    executor = create_executor(settings)
    try:
        await executor.start()
    except VoxCanvasError as exc:  # EXECUTOR=ray: the cluster (RAY_ADDRESS) cannot be reached
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    progress = _Progress(enabled=not args.quiet)
    job = executor.admit("cli")
    job.listener = progress.update
    studio = Studio(settings, executor)
    soundtrack: MusicOutput | None = None
    try:
        output: Output | MusicOutput
        if args.music is not None:
            output = await studio.compose(job, args.music, seconds=args.seconds, seed=args.seed, ogg=False)
        else:
            output = await studio.listen(job, idea, music_seconds=args.seconds)
            if args.soundtrack and isinstance(output, Output):
                progress.close()
                soundtrack = await studio.soundtrack(job, output.result, seconds=args.seconds, ogg=False)
    except ModelUnavailable as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        job.finish("failed")
        return EXIT_MODEL
    except VoxCanvasError as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        job.finish("failed")
        return EXIT_BAD_INPUT
    finally:
        progress.close()
        await studio.aclose()
        await executor.shutdown(timeout_s=5)
    job.finish("done")

    args.out.mkdir(parents=True, exist_ok=True)
    if isinstance(output, MusicOutput):
        (args.out / "music.wav").write_bytes(output.wav)
        (args.out / "result.json").write_text(output.result.model_dump_json(indent=2), encoding="utf-8")
        _print_music(output)
        print(f"wrote:     {args.out / 'music.wav'}, {args.out / 'result.json'}")
        return EXIT_OK
    result = output.result
    (args.out / "image.png").write_bytes(output.image_png)
    (args.out / "palette.png").write_bytes(output.palette_png)
    wrote = ["image.png", "palette.png", "result.json"] + (["music.wav"] if soundtrack is not None else [])
    if output.control_png is not None:  # the control image the picture was rendered with
        (args.out / "control.png").write_bytes(output.control_png)
        wrote.append("control.png")
    record = result.model_dump(mode="json")
    if soundtrack is not None:
        (args.out / "music.wav").write_bytes(soundtrack.wav)
        record["soundtrack"] = soundtrack.result.model_dump(mode="json")
    (args.out / "result.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")

    if result.transcript is not None:
        lang = f" [{result.language}{', translated' if result.translated else ''}]"
        print(f"heard:     {result.transcript}{lang}")
    best = result.best
    corrected = " (corrected automatically)" if result.corrected else ""
    print(f"score:     {best.score}/100{corrected}  threshold {result.threshold}")
    print(f"rounds:    {len(result.rounds)}  " + "  ".join(f"#{r.index}: {r.score}" for r in result.rounds))
    print(
        f"director:  {result.director}"
        + (f"  (fallback: {result.director_fallback})" if result.director_fallback else "")
    )
    print(f"critic:    {result.critic}" + (f"  (fallback: {result.critic_fallback})" if result.critic_fallback else ""))
    print(f"prompt:    {best.prompt}")
    print(f"seed:      {best.seed}  steps {best.steps}  guidance {best.guidance:g}  size {best.width}x{best.height}")
    print(f"model:     {best.model or 'default'} ({best.family})" + (f"  LoRA {best.loras}" if best.loras else ""))
    print(f"palette:   {' '.join(result.palette)}")
    if best.control is not None:
        print(f"control:   {best.control} at strength {best.control_strength or 0:g}")
    if soundtrack is not None:
        _print_music(soundtrack)
    print(f"wrote:     {', '.join(str(args.out / name) for name in wrote)}")
    return EXIT_OK


def _print_music(output: MusicOutput) -> None:
    music = output.result
    if music.transcript is not None:
        print(f"heard:     {music.transcript}")
    print(f"music:     {music.music_prompt}  ({music.director})")
    print(
        f"audio:     {music.duration_s:g} s at {music.sample_rate} Hz, seed {music.seed}, "
        f"composed in {music.compose_s:.1f} s ({music.realtime_factor:.2f}x real time)"
    )


class _Progress:
    """Stage names, then a diffusion step bar, on stderr."""

    LABELS = {
        "queued": "Waiting",
        "decode": "Reading audio",
        "transcribe": "Transcribing",
        "direct": "Directing",
        "render": "Rendering",
        "review": "Reviewing",
        "correct": "Correcting",
        "music": "Composing",
    }

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr is not None
        self.bar: Any = None  # a tqdm bar while rendering
        self.stage: str | None = None

    def update(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if event.stage in ("render", "music") and event.total:
            if self.bar is None or self.stage != event.stage:
                self.close()
                label = self.LABELS[event.stage]
                self.bar = tqdm(total=event.total, desc=label, unit="step", file=sys.stderr, leave=False)
                self.stage = event.stage
            self.bar.n = event.step
            self.bar.refresh()
            return
        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            loading = f"Loading {event.detail}" if event.stage == "load" and event.detail else None
            print(f"{loading or self.LABELS.get(event.stage, event.stage)}…", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.stage = None


if __name__ == "__main__":
    sys.exit(main())
