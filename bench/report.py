"""Results: the machine a run measured, the JSON written per run, and the markdown table
(``docs/benchmarks.md``) built from the newest results of each mode in ``bench/results/``."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import statistics
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
DOCS_PATH = ROOT / "docs" / "benchmarks.md"
SCHEMA = 1


# ------------------------------------------------------------------------------------------------
# Numbers
# ------------------------------------------------------------------------------------------------
def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(p / 100.0 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def rounded(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def metric(
    label: str,
    value: float | None,
    unit: str,
    *,
    target: tuple[str, float] | None = None,
    fmt: str = "{:.3g}",
    note: str | None = None,
) -> dict[str, Any]:
    """One row of the table. ``target`` is ``("<=", 0.30)`` or ``(">=", 2.0)``."""
    row: dict[str, Any] = {"label": label, "value": rounded(value, 6), "unit": unit, "fmt": fmt}
    if target is not None:
        row["target"] = {"op": target[0], "value": target[1]}
    if note:
        row["note"] = note
    return row


def target_met(row: dict[str, Any]) -> bool | None:
    target, value = row.get("target"), row.get("value")
    if not target or value is None:
        return None
    return value <= target["value"] if target["op"] == "<=" else value >= target["value"]


# ------------------------------------------------------------------------------------------------
# The machine
# ------------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    import diffusers
    import torch
    import transformers

    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
    }
    info["git"] = git_state()
    try:
        info["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 1024**3, 1),
            "capability": f"{props.major}.{props.minor}",
            "count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return info


def git_state() -> dict[str, Any] | None:
    """The commit measured, and whether the working tree had uncommitted changes."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "uncommitted_changes": bool(status.stdout.strip())}


def machine_label(machine: dict[str, Any]) -> str:
    if machine.get("gpu"):
        gpu = machine["gpu"]
        return f"{gpu['name']} ({gpu['memory_gib']:g} GiB), {machine.get('cores')} CPU cores"
    return f"{machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('ram_gib')} GiB"


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------
def result_name(
    mode: str, *, quick: bool = False, smoke: bool = False, tiny: bool = False, date: str | None = None
) -> str:
    date = date or dt.date.today().isoformat()
    tag = mode
    if tiny:
        tag += "-tiny"
    if smoke:
        tag += "-smoke"
    if quick:
        tag += "-quick"
    return f"{tag}-{date}.json"


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rounded(results, 6), indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
    return path


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("ignoring unreadable results file %s", path)
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


def newest(results_dir: Path, mode: str, *, kind: str = "full") -> dict[str, Any] | None:
    """The newest results of ``mode`` ("cpu"/"gpu"); ``kind``: "full", "quick" or "smoke"."""
    found = []
    for path in Path(results_dir).glob(f"{mode}-*.json"):
        data = _load(path)
        if not data or data.get("mode") != mode or data.get("models") == "tiny" and mode == "gpu":
            continue
        data_kind = "smoke" if data.get("smoke") else "quick" if data.get("quick") else "full"
        if data_kind == kind:
            data["_file"] = path.name
            found.append(data)
    found.sort(key=lambda d: d.get("finished") or d.get("started") or "")
    return found[-1] if found else None


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------
OPS = {"<=": "≤", ">=": "≥"}


def _fmt(value: float | None, row: dict[str, Any]) -> str:
    if value is None:
        return "—"
    unit = row.get("unit", "")
    text = row.get("fmt", "{:.3g}").format(value)
    return f"{text}{unit}" if unit in ("×", "%") else f"{text} {unit}".strip()


def _row(row: dict[str, Any], machine: str) -> str:
    target = row.get("target")
    target_text = f"{OPS[target['op']]} {_fmt(target['value'], row)}" if target else "—"
    if row.get("target_note"):
        target_text += f" ({row['target_note']})"
    met = target_met(row)
    mark = "—" if met is None else ("✅" if met else "❌")
    label = row["label"] + (f" — {row['note']}" if row.get("note") else "")
    return f"| {label} | {target_text} | {_fmt(row.get('value'), row)} | {mark} | {machine} |"


GPU_TARGETS = [  # shown when no GPU run exists yet
    ("SD 1.5, 512², Euler 25 steps, batch 1: seconds per image (H100)", "≤ 0.3 s"),
    ("Burst of 32 render jobs: throughput batched ÷ one at a time", "≥ 2×"),
    ("Whisper large-v3-turbo, 20 s clip", "≤ 0.25 s"),
]


def render_markdown(results_dir: Path = RESULTS_DIR) -> str:
    cpu = newest(results_dir, "cpu") or newest(results_dir, "cpu", kind="quick")
    gpu = newest(results_dir, "gpu")
    smoke = newest(results_dir, "gpu", kind="smoke")
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` / `python -m bench --mode cpu|gpu` from the newest results in",
        "`bench/results/` (one JSON per run, with every sample and the machine). Targets are reported",
        "here, never asserted in tests. Regenerate this page with `python -m bench --table`; its",
        "hand-written sections (single benchmarks, what a GPU lease did) live in `bench/notes/`.",
        "",
        "| metric | target | measured | met | machine |",
        "|---|---|---|---|---|",
    ]
    for data in (cpu, gpu):
        if not data:
            continue
        label = machine_label(data["machine"])
        for row in data.get("metrics", {}).values():
            lines.append(_row(row, label))
    if gpu is None:
        note = "not measured yet: no GPU was lent to the session that last ran the benchmarks"
        for label, target in GPU_TARGETS:
            lines.append(f"| {label} | {target} | {note} | — | — |")
    lines.append("")
    notes = _notes(cpu, gpu, smoke)
    gpu_at = notes.index("## GPU mode")
    lines += notes[:gpu_at] + _hand_written("cpu") + notes[gpu_at:]
    lines += GPU_SESSION
    lines += [""] + _hand_written("gpu")
    return "\n".join(lines).rstrip("\n") + "\n"


#: Hand-written sections of the page (runs of single benchmarks, what a lease did), kept as files so
#: that `python -m bench --table` rewrites the generated parts without losing them: ``cpu.md`` ends
#: the CPU mode section, ``gpu.md`` the page.
NOTES_DIR = ROOT / "bench" / "notes"


def _hand_written(part: str) -> list[str]:
    path = NOTES_DIR / f"{part}.md"
    if not path.exists():
        return []
    return path.read_text().rstrip("\n").split("\n") + [""]


GPU_SESSION = [  # issue #19: what to run when a GPU is lent, and what it costs
    "",
    "## The GPU session (when a GPU is lent)",
    "",
    "A lent GPU comes with about 15 minutes of device time in all, a fresh machine each start and at most",
    "10 minutes per command, so the measurement is one prepared command: `bash bench/gpu_session.sh`.",
    "",
    "- **Install** (≤ ~2 min, only what is missing): the CUDA build of torch (`pip install torch==2.13.0`",
    "  resolves to it on a CUDA machine) and VoxCanvas's dependencies; `SKIP_INSTALL=1` uses the environment",
    "  as it is.",
    "- **Budget: 480 s** of measuring (`BUDGET=…` to change), model building included: the real-size",
    "  random-weight models are built once into `.cache/bench-models`. `python -m bench --mode gpu",
    "  --budget 480` runs the sections most important first — `sd` (SD 1.5 512², 25 steps, batch 1 and",
    "  images/s by batch), `options` (fp16, SDPA, channels_last, fused QKV … before/after), `compile`",
    "  (`torch.compile` of UNet and VAE with warm-up), `burst` (32 jobs batched vs one at a time), `whisper`",
    "  (large-v3-turbo, 20 s clip, encoder once), `clip`, `loop`, `families`, `family-options`,",
    "  `whisper-compile` — and skips",
    "  (and records) a section whose estimate (`bench.gpu.ESTIMATE_S`) no longer fits. `families` (issue",
    "  #12) builds real-size SDXL, SDXL-Turbo, SD3-medium and FLUX.1-schnell (~50 GB, once) and measures each",
    "  at its native size and default steps: seconds per image, and images/s in a burst with and without",
    "  batching; on a 15-minute lease run it alone (`--only families`, ~7 min with the build).",
    "  `family-options` toggles the speed options per family at batch 1 (UNet/VAE channels_last, fused",
    "  QKV, fp32 vs fp16/bf16 at 4 steps, regional `torch.compile`), budgeting itself option by option",
    "  (`--only family-options`, ~5 min with the build).",
    "- **Results are saved after every section** (`bench/results/gpu-<date>.json`), so a lease that ends",
    "  early still leaves numbers; the script ends with `python -m bench --table`, which rewrites this page.",
    "- **Checked on the CPU** by `tests/bench/test_gpu_session.py` (`--smoke --models tiny`, ~35 s), so the",
    "  script is known to run before a GPU ever sees it (`families` and `family-options` on the tiny family models;",
    "  the real-size architectures' parameter counts are checked on the meta device).",
    '- Then switch on by default only the options the table shows faster, keeping the table\'s "before"',
    "  column.",
]


def _machine_line(data: dict[str, Any]) -> str:
    m = data["machine"]
    gpu = m.get("gpu")
    parts = [
        f"{m.get('cpu')} ({m.get('cores')} cores, {m.get('ram_gib')} GiB RAM)",
        f"GPU: {gpu['name']} {gpu['memory_gib']:g} GiB, CUDA {gpu['cuda']}" if gpu else "no GPU",
        f"Python {m.get('python')}, torch {m.get('torch')}, diffusers {m.get('diffusers')}, "
        f"transformers {m.get('transformers')}",
    ]
    if m.get("git"):
        parts.append(
            f"commit {m['git']['commit'][:10]}{' + uncommitted changes' if m['git']['uncommitted_changes'] else ''}"
        )
    if m.get("torch_threads_gpu_thread") is not None:
        parts.append(f"{m['torch_threads_gpu_thread']} torch thread(s) on the executor's thread")
    if m.get("load_avg_at_start") is not None:
        parts.append(f"load average at start {m['load_avg_at_start']}, at end {m.get('load_avg_at_end')}")
    return "; ".join(parts)


def _notes(cpu, gpu, smoke) -> list[str]:
    out: list[str] = []
    for title, data in (("CPU mode", cpu), ("GPU mode", gpu)):
        out += [f"## {title}", ""]
        if data is None:
            if title == "GPU mode":
                out.append(
                    "Not run yet: no GPU was lent to the session that wrote this page. Run "
                    "`make bench BENCH_MODE=gpu` (or `python -m bench --mode gpu`) on a CUDA machine."
                )
                if smoke:
                    out.append(
                        f"The GPU code was smoke-tested on the CPU with the real-size architectures "
                        f"({smoke.get('settings', {}).get('width')}² px, {smoke.get('settings', {}).get('steps')} "
                        f"steps) on {smoke.get('started', '?')[:10]}: "
                        f"{'completed' if not smoke.get('errors') else 'errors: ' + '; '.join(smoke['errors'])}"
                        f" in {smoke.get('wall_s', 0):.0f} s (`bench/results/{smoke['_file']}`)."
                    )
            else:
                out.append("Not run yet.")
            out.append("")
            continue
        out.append(
            f"Run {data.get('started', '?')[:19].replace('T', ' ')} UTC"
            f"{' (--quick)' if data.get('quick') else ''}, {data.get('wall_s', 0):.0f} s, "
            f"`bench/results/{data['_file']}`."
        )
        out.append("")
        out.append(f"Machine: {_machine_line(data)}.")
        out.append("")
        for note in data.get("notes", []):
            out.append(f"- {note}")
        if data.get("notes"):
            out.append("")
        for table in data.get("tables", []):
            out.append(f"**{table['title']}**")
            out.append("")
            out.append("| " + " | ".join(table["columns"]) + " |")
            out.append("|" + "---|" * len(table["columns"]))
            for r in table["rows"]:
                out.append("| " + " | ".join(str(c) for c in r) + " |")
            out.append("")
        if data.get("errors"):
            out.append("Errors: " + "; ".join(data["errors"]))
            out.append("")
    return out


def write_markdown(results_dir: Path = RESULTS_DIR, path: Path = DOCS_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(results_dir))
    return path
