"""``python -m bench.upscale`` and ``python -m bench.candidates`` (their shared preamble lives in
``bench.common``) run end to end on the tiny models, on the CPU, and write the result JSON their
readers expect (keys and shapes, not speed: speed goals are measured by running them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory, tiny_sd_dir, tiny_clip_dir) -> Path:
    """The bench's model cache holding the session's tiny SD and CLIP (no second build)."""
    cache = tmp_path_factory.mktemp("bench-cache")
    (cache / "tiny-sd").symlink_to(tiny_sd_dir, target_is_directory=True)
    (cache / "tiny-clip").symlink_to(tiny_clip_dir, target_is_directory=True)
    return cache


def only_result(out: Path, prefix: str) -> dict:
    files = sorted(out.glob(f"{prefix}-cpu-tiny-*-t.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_upscale_benchmark_writes_whole_and_tiled(tmp_path, tiny_cache):
    from bench import upscale

    common = ["--device", "cpu", "--steps", "4", "--repeats", "1", "--tag", "t"]
    upscale.main([*common, "--cache", str(tiny_cache), "--out", str(tmp_path)])
    report = only_result(tmp_path, "upscale")
    assert set(report) == {
        "benchmark", "size", "device", "gpu", "cpu_threads", "native", "steps", "strength", "results", "date",
    }  # fmt: skip
    assert set(report["results"]) == {"whole", "tiled"}
    whole, tiled = report["results"]["whole"], report["results"]["tiled"]
    for row in (whole, tiled):
        assert set(row) == {"seconds_median", "seconds", "tiles", "size", "max_latent_side", "peak_gpu_mib"}
        assert row["size"] == [2 * side for side in report["native"]] and row["peak_gpu_mib"] is None
    assert tiled["tiles"] > 1 and tiled["max_latent_side"] < whole["max_latent_side"]


def test_candidates_benchmark_writes_its_comparison(tmp_path, tiny_cache):
    from bench import candidates

    common = ["--device", "cpu", "--steps", "2", "--repeats", "1", "--tag", "t"]
    assert candidates.main([*common, "--cache", str(tiny_cache), "--out", str(tmp_path)]) == 0
    report = only_result(tmp_path, "candidates")
    assert set(report) == {
        "size", "device", "steps", "side", "repeats", "results", "speedup_vs_sequential",
        "speedup_vs_concurrent", "critic_ranking", "batch_sizes", "when",
    }  # fmt: skip
    assert set(report["results"]) == {"one_job_4", "four_jobs_1_sequential", "four_jobs_1_concurrent"}
    assert all(set(r) == {"median_s", "images_per_s", "runs_s"} for r in report["results"].values())
    assert report["side"] == 64 and report["steps"] == 2 and report["critic_ranking"]["jobs"] > 0
