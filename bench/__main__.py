"""``python -m bench --mode cpu|gpu`` (``make bench``; ``make bench BENCH_MODE=gpu``).

Writes ``bench/results/<mode>-<date>.json`` (``--quick`` / ``--smoke`` runs get a ``-quick`` /
``-smoke`` tag) and regenerates ``docs/benchmarks.md`` from the newest results of each mode.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path

# Offline, quiet: never reach the Hugging Face hub (every model is built locally).
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)

from . import report  # noqa: E402

log = logging.getLogger("bench")

GPU_SECTIONS = (
    "sd",
    "options",
    "whisper",
    "clip",
    "loop",
    "burst",
    "compile",
    "whisper-compile",
    "families",
    "family-options",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="VoxCanvas benchmarks: cpu (tiny models, any machine) or gpu (real-size "
        "architectures with random weights on a CUDA GPU).",
    )
    parser.add_argument("--mode", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--out", type=Path, default=report.RESULTS_DIR, help="results directory (default bench/results)"
    )
    parser.add_argument("--quick", action="store_true", help="a shorter run (cpu: fewer steps and repeats)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="gpu mode on the CPU: real-size architectures at a tiny resolution and 2 steps, just to "
        "prove the code runs",
    )
    parser.add_argument(
        "--models",
        choices=("real", "tiny"),
        default="real",
        help="gpu mode: 'tiny' runs the gpu code on the test suite's tiny models (development)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="gpu mode: also measure torch.compile (UNet, VAE decoder; Whisper static cache)",
    )
    parser.add_argument(
        "--compile-mode",
        default="reduce-overhead",
        help="torch.compile mode of the UNet/VAE for --compile (default reduce-overhead: "
        "CUDA graphs; 'default' compiles fastest; 'max-autotune' tunes longest)",
    )
    parser.add_argument(
        "--only",
        help=f"gpu mode: comma-separated sections of {','.join(GPU_SECTIONS)}; results merge into the same day's file",
    )
    parser.add_argument(
        "--budget",
        type=float,
        help="gpu mode: seconds for the whole run (e.g. 480 on a lent GPU); sections run in order of "
        "importance (sd, options, compile, burst, whisper, clip, loop, whisper-compile; compile included "
        "without --compile) and one whose estimated time no longer fits is skipped and recorded",
    )
    parser.add_argument("--repeats", type=int, help="gpu mode: timed repeats per measurement (default 5; smoke 1)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=report.ROOT / ".cache" / "bench-models",
        help="where real-size random-weight models are built (about 4.5 GB)",
    )
    parser.add_argument("--docs", type=Path, default=report.DOCS_PATH, help="markdown table to regenerate")
    parser.add_argument("--no-docs", action="store_true", help="do not regenerate the markdown table")
    parser.add_argument("--table", action="store_true", help="only regenerate the markdown table from --out")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.only:
        args.only = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = set(args.only) - set(GPU_SECTIONS)
        if unknown:
            parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(GPU_SECTIONS)}")
    if args.mode == "cpu" and (args.smoke or args.only or args.compile or args.budget):
        parser.error("--smoke, --only, --compile and --budget belong to --mode gpu")
    return args


def _quiet_libraries(verbose: bool) -> None:
    from pipeline.logs import configure_logging

    # The benchmark's own progress lines; the product's and the libraries' only with --verbose.
    others = ("discord", "aiohttp", "pipeline", "bot", "cogs", "tests", "httpx", "urllib3", "PIL", "numba")
    configure_logging(
        logging.DEBUG if verbose else logging.INFO,
        levels=dict.fromkeys(others, logging.DEBUG if verbose else logging.WARNING),
        fmt="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        import diffusers.utils.logging as dlog

        dlog.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass
    try:
        import transformers.utils.logging as tlog

        tlog.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet_libraries(args.verbose)
    if args.table:
        path = report.write_markdown(args.out, args.docs)
        print(f"wrote {path}")
        return 0

    started_wall = time.perf_counter()
    results: dict = {
        "schema": report.SCHEMA,
        "mode": args.mode,
        "quick": bool(args.quick),
        "smoke": bool(args.smoke),
        "models": args.models if args.mode == "gpu" else "tiny",
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "machine": report.machine_info(),
        "metrics": {},
        "details": {},
        "tables": [],
        "notes": [],
        "errors": [],
    }
    name = report.result_name(
        args.mode, quick=args.quick, smoke=args.smoke, tiny=args.mode == "gpu" and args.models == "tiny"
    )
    path = args.out / name

    def save() -> None:
        results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        results["wall_s"] = time.perf_counter() - started_wall
        try:
            results["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            pass
        report.write_json(results, path)

    code = 0
    try:
        if args.mode == "cpu":
            from . import cpu

            asyncio.run(cpu.run(args, results))
        else:
            from . import gpu

            asyncio.run(gpu.run(args, results, path=path, save=save))
    except KeyboardInterrupt:
        results["errors"].append("interrupted")
        code = 130
    except SystemExit as exc:  # a clear refusal (e.g. no GPU): nothing to save
        print(exc, file=sys.stderr)
        return 2
    except Exception as exc:
        log.exception("benchmark failed")
        results["errors"].append(f"{type(exc).__name__}: {exc}")
        code = 1
    save()
    log.info("wrote %s", path)
    if not args.no_docs:
        log.info("wrote %s", report.write_markdown(args.out, args.docs))
    _print_summary(results)
    return code


def _print_summary(results: dict) -> None:
    label = report.machine_label(results["machine"])
    print(f"\n{results['mode']} benchmark on {label} ({results.get('wall_s', 0):.0f} s)")
    for row in results.get("metrics", {}).values():
        met = report.target_met(row)
        target = row.get("target")
        target_text = f"  target {report.OPS[target['op']]} {report._fmt(target['value'], row)}" if target else ""
        mark = "" if met is None else ("  ok" if met else "  MISSED")
        print(f"  {row['label']}: {report._fmt(row.get('value'), row)}{target_text}{mark}")
    for error in results.get("errors", []):
        print(f"  error: {error}")


if __name__ == "__main__":
    sys.exit(main())
