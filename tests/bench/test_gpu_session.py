"""The GPU session script (issue #19) runs end to end before a GPU ever sees it: ``bench/gpu_session.sh
--smoke --models tiny`` on the CPU measures every section within its budget, writes the results JSON
and turns it into the markdown table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_session.sh"


def run_session(tmp_path: Path, *args: str, budget: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out, docs = tmp_path / "results", tmp_path / "benchmarks.md"
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        BUDGET=budget,
        OUT=str(out),
        DOCS=str(docs),
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
    )
    done = subprocess.run(
        ["bash", str(SCRIPT), "--smoke", "--models", "tiny", "--cache", str(tmp_path / "models"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    files = sorted(out.glob("gpu-*.json"))
    assert files, done.stderr[-3000:]
    return done, json.loads(files[-1].read_text())


@pytest.mark.timeout(300)
def test_gpu_session_smoke_runs_end_to_end_and_writes_the_table(tmp_path: Path):
    """Every section but the two torch.compile ones (minutes of inductor compiling on a CPU)."""
    sections = ["sd", "options", "burst", "whisper", "clip", "loop"]
    done, results = run_session(tmp_path, "--repeats", "1", "--only", ",".join(sections), budget="480")
    assert done.returncode == 0, done.stderr[-3000:]
    assert results["settings"]["sections"] == sections and results["settings"]["budget_s"] == 480
    assert not results["errors"], results["errors"]
    assert not results["details"].get("skipped")
    assert set(results["details"]["section_s"]) == set(sections)
    assert results["metrics"]["sd_b1"]["value"] > 0
    # The table step ran (a tiny-model run is kept out of the published table by design).
    assert (tmp_path / "benchmarks.md").read_text().startswith("# Benchmarks")


def test_budget_runs_the_most_important_sections_first_and_skips_what_does_not_fit():
    from bench.__main__ import parse_args
    from bench.gpu import ESTIMATE_S, IMPORTANCE, SECTIONS, fits_budget, plan_sections

    budgeted = parse_args(["--mode", "gpu", "--budget", "480"])
    assert plan_sections(budgeted)[:4] == ["sd", "options", "compile", "burst"]  # compile without --compile
    assert set(IMPORTANCE) == set(SECTIONS) == set(ESTIMATE_S)
    assert fits_budget("sd", 0.0, budgeted) and not fits_budget("compile", 400.0, budgeted)
    assert plan_sections(parse_args(["--mode", "gpu"])) == [s for s in SECTIONS if "compile" not in s]
    unbounded = parse_args(["--mode", "gpu"])
    assert fits_budget("compile", 10_000.0, unbounded)


@pytest.mark.timeout(300)
def test_gpu_session_skips_what_does_not_fit_the_budget_and_still_writes_results(tmp_path: Path):
    done, results = run_session(tmp_path, "--only", "sd,burst,whisper", budget="0.5")
    assert done.returncode == 0, done.stderr[-3000:]
    skipped = results["details"]["skipped"]
    assert set(skipped) == {"sd", "burst", "whisper"}
    assert all("budget" in reason for reason in skipped.values())
    assert (tmp_path / "benchmarks.md").exists()


@pytest.mark.timeout(300)
def test_families_section_smoke(tmp_path: Path):
    """Issue #12: the ``families`` section runs SDXL, SDXL-Turbo, SD3 and FLUX (tiny here) through the
    model pool at their native sizes and records seconds per image and burst images/s."""
    done, results = run_session(tmp_path, "--repeats", "1", "--only", "families", budget="480")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not results["errors"], results["errors"]
    families = results["details"]["families"]
    assert set(families) == {"sdxl", "sdxl-turbo", "sd3", "flux-schnell"}
    assert families["sdxl-turbo"]["family"] == "sdxl-few-step" and families["flux-schnell"]["size"] == [128, 128]
    assert all(results["metrics"][f"family_{name}_b1"]["value"] > 0 for name in families)


@pytest.mark.timeout(300)
def test_family_options_section_smoke(tmp_path: Path):
    """Issue #12 item 8: every family with and without each speed option — the UNet's memory format
    (UNet families only), the VAE's, fused QKV, fp32, and torch.compile of the repeated blocks (only
    traced here: the smoke run compiles with the eager backend)."""
    done, results = run_session(tmp_path, "--repeats", "1", "--only", "family-options", budget="480")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not results["errors"], results["errors"]
    options = results["details"]["family_options"]
    assert [name for name in options if name != "section_s"] == ["sdxl", "flux-schnell", "sd3", "sdxl-turbo"]
    common = {"vae-channels-last", "fused-qkv", "fp32", "compile"}
    for name in ("sdxl", "sdxl-turbo"):
        assert common | {"unet-channels-last"} <= set(options[name])
    for name in ("flux-schnell", "sd3"):  # transformers: no convolutions to reorder
        assert common <= set(options[name]) and "unet-channels-last" not in options[name]
    for name in ("sdxl", "flux-schnell", "sd3", "sdxl-turbo"):
        measured = [options[name][key] for key in common]
        assert all("error" not in m and m["speedup"] > 0 and len(m["variant_s"]) == 1 for m in measured), measured
        # Regional where the denoiser declares repeated blocks (each block compiled); SD3's whole transformer.
        blocks = options[name]["compile"]["compiled_blocks"]
        assert blocks == 1 if name == "sd3" else blocks > 1, (name, blocks)
        assert options[name]["fp32"]["steps"] == 2  # smoke: 2 steps, so min(2, 4)
    table = next(t for t in results["tables"] if t["title"].startswith("Speed options per model family"))
    assert len(table["rows"]) == 4 * 4 + 2
