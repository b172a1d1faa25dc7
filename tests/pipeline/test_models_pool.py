"""Several models on one device (issue #12): ``MODELS`` parsing, the least-recently-used pool
(a model count and a memory budget), the model-affinity rule of the policy, and the executor
switching models for a burst (a "load" progress event per switch, same-model work grouped)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from pipeline.errors import BadRequest
from pipeline.executor import GPUExecutor
from pipeline.executor.policy import prefer_loaded
from pipeline.registry import DEFAULT_NAME, ModelPool, model_names, parse_models, weights_bytes
from pipeline.synthesis import RenderRequest

from .test_executor import GpuGate


def test_models_setting_is_parsed_with_per_model_defaults():
    entries = parse_models(" sdxl=stabilityai/sdxl-base, turbo=/models/turbo;steps=2;guidance=0;few_step=true ,")
    assert list(entries) == ["sdxl", "turbo"]
    assert entries["turbo"].source == "/models/turbo"
    turbo = entries["turbo"].defaults
    assert (turbo.steps, turbo.guidance, turbo.few_step) == (2, 0.0, True)
    for bad, words in [
        ("novalue", "name=hub-id"),
        ("a=x, a=y", "twice"),
        ("a=x;steps=500", "bad option"),
        ("a=x;colour=red", "unknown option"),
        ("a=x;width=100", "bad option"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_models(bad)


def test_settings_refuse_a_bad_models_value(make_settings):
    with pytest.raises(ValueError, match="MODELS"):
        make_settings(MODELS="oops")
    settings = make_settings(MODELS="b=/x")
    assert model_names(settings) == [DEFAULT_NAME, "b"]
    assert model_names(make_settings(MODELS="b=/x, c=/y", DIFFUSION_MODEL="c")) == ["c", "b"]


@pytest.fixture
def three_models(make_settings, tiny_sd_dir, tiny_sdxl_dir, tiny_sd3_dir):
    def make(**overrides):
        return make_settings(MODELS=f"xl={tiny_sdxl_dir}, three={tiny_sd3_dir};steps=2", **overrides)

    return make


def test_least_recently_used_model_is_unloaded(three_models):
    pool = ModelPool(three_models(MAX_RESIDENT_MODELS=2))
    assert pool.default_name == DEFAULT_NAME and pool.names == [DEFAULT_NAME, "xl", "three"]
    pool.use(None)
    pool.use("xl")
    assert pool.resident == [DEFAULT_NAME, "xl"]
    pool.use(None)  # the default is now the most recent
    pool.use("three")  # evicts xl, the least recently used
    assert pool.resident == [DEFAULT_NAME, "three"] and not pool.get("xl").loaded
    assert (pool.loads, pool.evictions) == (3, 1)
    assert pool.get("three").family.default_steps == 2  # its MODELS option
    with pytest.raises(BadRequest, match="no model called 'nope'"):
        pool.use("nope")


def test_memory_budget_keeps_what_fits(three_models):
    probe = ModelPool(three_models(MAX_RESIDENT_MODELS=3))
    sizes = {name: weights_bytes(probe.use(name)) for name in (None, "xl")}
    budget_gb = (sizes[None] + sizes["xl"] - 4096) / 1024**3  # a little short of both
    pool = ModelPool(three_models(MAX_RESIDENT_MODELS=3, GPU_MEMORY_BUDGET_GB=budget_gb))
    pool.use(None)
    pool.use("xl")
    assert pool.resident == ["xl"] and pool.resident_bytes() <= pool.budget_bytes


@dataclass
class Item:
    model: str
    bypassed: int = 0


def test_prefer_loaded_groups_by_model_but_never_starves():
    loaded = {"a"}
    order = [Item("b"), Item("b"), Item("a"), Item("b")]
    picked = prefer_loaded(
        order, needs_load=lambda it: it.model not in loaded, bypassed=lambda it: it.bypassed, window=8, max_bypass=2
    )
    assert [it.model for it in picked] == ["a", "b", "b", "b"] and picked[1] is order[0]
    order[0].bypassed = 2  # passed over enough: it goes first now
    picked = prefer_loaded(
        order, needs_load=lambda it: it.model not in loaded, bypassed=lambda it: it.bypassed, window=8, max_bypass=2
    )
    assert picked[0] is order[0]
    far = [Item("b")] + [Item("c")] * 3 + [Item("a")]
    assert (
        prefer_loaded(far, needs_load=lambda it: it.model != "a", bypassed=lambda it: 0, window=2, max_bypass=2)[0]
        is far[0]
    )  # outside the window: no jump


async def test_executor_switches_models_and_groups_a_burst(three_models, tiny_sd_dir):
    settings = three_models(MAX_RESIDENT_MODELS=1, MAX_BATCH=4, BATCH_WINDOW_MS=0)
    executor = GPUExecutor(settings, stage_timeout_s=120)
    await executor.start()
    try:
        events = []
        gate = GpuGate()
        held = asyncio.ensure_future(executor.call(None, "tool", gate))
        await asyncio.to_thread(gate.entered.wait, 10)
        models = ["xl", None, "xl", None]
        jobs = [executor.admit(f"user{i}") for i in range(len(models))]
        for job in jobs:
            job.listener = events.append
        tasks = [
            asyncio.ensure_future(executor.render(job, RenderRequest(prompt="a cat", seed=i, steps=2, model=m)))
            for i, (job, m) in enumerate(zip(jobs, models, strict=True))
        ]
        await asyncio.sleep(0.05)
        gate.release.set()
        await held
        images = await asyncio.gather(*tasks)
    finally:
        await executor.shutdown(timeout_s=10)
    assert [img.model for img in images] == ["xl", None, "xl", None]
    assert [img.family.architecture for img in images] == ["sdxl", "sd", "sdxl", "sd"]
    loads = [e for e in events if e.stage == "load"]
    assert {e.detail for e in loads} == {"xl", DEFAULT_NAME}
    # The two xl renders ran as one batch, then the two default ones: two loads, not four.
    assert executor.engine.models.loads == 2 and [img.batch_size for img in images] == [2, 2, 2, 2]
