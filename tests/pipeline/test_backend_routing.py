"""Remote renders through the real GPU executor and studio: routing by RENDER_BACKEND and MODELS,
progress as the job's render stage, the per-backend fair gate, cancellation, RENDER_FALLBACK,
start-up errors, and the critic + correction round on top of a remote backend."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from pydantic import ValidationError

from devkit.backends import FakeA1111, FakeComfyUI
from pipeline.backends.base import BackendUnavailable
from pipeline.control import ControlSpec
from pipeline.errors import BadRequest, JobCancelled
from pipeline.executor import GPUExecutor, ProgressEvent
from pipeline.logs import REDACTED, redact
from pipeline.studio import Idea, Studio
from pipeline.synthesis import RenderRequest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def make_executor(make_settings):
    made: list[GPUExecutor] = []

    async def factory(**overrides) -> GPUExecutor:
        overrides.setdefault("REMOTE_RETRIES", 1)
        executor = GPUExecutor(make_settings(**overrides), stage_timeout_s=60)
        for backend in executor.router._backends.values():
            backend.backoff_s = 0.01
        await executor.start()
        made.append(executor)
        return executor

    yield factory
    for executor in made:
        await executor.shutdown(timeout_s=10)


def request(seed: int = 1, prompt: str = "a red apple", **kw) -> RenderRequest:
    return RenderRequest(prompt=prompt, seed=seed, steps=kw.pop("steps", 5), **kw)


async def test_default_backend_renders_remotely_with_progress(make_executor):
    async with FakeA1111(step_s=0.1) as fake:
        executor = await make_executor(RENDER_BACKEND="a1111", A1111_URL=fake.url, WIDTH=96, HEIGHT=64)
        job = executor.admit("u")
        events: list[ProgressEvent] = []
        job.listener = events.append
        image = await executor.render(job, request(seed=5, steps=8))
        job.finish()
    assert (image.backend, image.fallback_from, image.seed) == ("a1111", None, 5)
    assert (image.width, image.height, image.steps) == (96, 64, 8)
    assert image.family is not None and image.family.architecture == "sd"
    assert fake.payloads[0]["width"] == 96 and fake.payloads[0]["seed"] == 5
    renders = [(e.step, e.total) for e in events if e.stage == "render"]
    assert renders[0] == (0, 8) and renders[-1] == (8, 8) and any(0 < s < 8 for s, _ in renders)
    assert not executor.engine.models.resident  # nothing was loaded on the GPU thread
    assert executor.family(None) is not None and executor.family(None).architecture == "sd"


async def test_models_entry_picks_the_backend_and_its_options(make_executor):
    async with FakeComfyUI() as fake:
        executor = await make_executor(
            MODELS="xl=comfyui:my_xl.safetensors;steps=7;width=64;height=64", COMFYUI_URL=fake.url
        )
        assert not executor.router.is_remote(None)  # the default model stays on this machine
        job = executor.admit("u")
        image = await executor.render(job, RenderRequest(prompt="a lighthouse", seed=3, model="xl", aspect="16:9"))
        job.finish()
    graph = fake.graphs[0]
    assert graph["4"]["inputs"]["ckpt_name"] == "my_xl.safetensors"
    assert graph["3"]["inputs"]["steps"] == 7 and image.steps == 7
    assert (image.width, image.height) == (88, 64)  # 16:9 at the entry's 64×64 budget
    assert image.model == "xl" and image.family is not None and image.family.architecture == "sdxl"


async def test_remote_jobs_take_turns_per_user_and_cancel_while_waiting(make_executor):
    async with FakeA1111(step_s=0.05) as fake:
        executor = await make_executor(RENDER_BACKEND="a1111", A1111_URL=fake.url, MAX_JOBS_PER_USER=3)
        blocker = executor.admit("carol")
        first = asyncio.create_task(executor.render(blocker, request(prompt="carol", steps=10)))
        await asyncio.sleep(0.1)
        a1, a2, b1, d1 = executor.admit("alice"), executor.admit("alice"), executor.admit("bob"), executor.admit("dave")
        tasks = []
        for j, p in ((a1, "a1"), (a2, "a2"), (b1, "b1"), (d1, "d1")):  # alice asks twice before bob
            tasks.append(asyncio.create_task(executor.render(j, request(prompt=p))))
            await asyncio.sleep(0.01)
        assert executor.position_of(a1) is not None  # waiting for the backend's slot, in the queue
        d1.cancel()
        results = await asyncio.gather(first, *tasks, return_exceptions=True)
        for j in (a1, a2, b1, d1, blocker):
            j.finish()
    assert isinstance(results[4], JobCancelled)
    assert [p["prompt"] for p in fake.payloads] == ["carol", "a1", "b1", "a2"]  # round robin, not FIFO


async def test_cancel_mid_render_interrupts_the_backend(make_executor):
    async with FakeA1111(step_s=0.1) as fake:
        executor = await make_executor(RENDER_BACKEND="a1111", A1111_URL=fake.url)
        job = executor.admit("u")

        def listener(event: ProgressEvent) -> None:
            if event.stage == "render" and event.step >= 1:
                job.cancel()

        job.listener = listener
        with pytest.raises(JobCancelled):
            await executor.render(job, request(steps=40))
        job.finish()
        await asyncio.sleep(0.2)
    assert fake.interrupted == 1 and fake.renders_finished == 0


async def test_a_failing_backend_falls_back_and_says_so(make_executor):
    async with FakeA1111() as down, FakeComfyUI() as spare:
        down.fail("/", 503, times=100)
        executor = await make_executor(
            RENDER_BACKEND="a1111", A1111_URL=down.url, RENDER_FALLBACK="comfyui", COMFYUI_URL=spare.url
        )
        job = executor.admit("u")
        image = await executor.render(job, request(seed=9))
        job.finish()
    assert (image.backend, image.fallback_from) == ("comfyui", "a1111")
    assert len(down.paths("POST")) == 2 and spare.renders_finished == 1


async def test_fallback_to_the_local_gpu(make_executor):
    async with FakeA1111() as down:
        down.fail("/", 500, times=100)
        executor = await make_executor(RENDER_BACKEND="a1111", A1111_URL=down.url, RENDER_FALLBACK="diffusers", STEPS=2)
        job = executor.admit("u")
        image = await executor.render(job, request(seed=9, steps=2))
        job.finish()
    assert (image.backend, image.fallback_from) == ("diffusers", "a1111")
    assert image.image.size == (64, 64)  # the tiny local model at WIDTH/HEIGHT


async def test_without_fallback_the_error_names_the_backend(make_executor):
    async with FakeA1111() as down:
        down.fail("/", 429, times=100, headers={"Retry-After": "0"})
        executor = await make_executor(RENDER_BACKEND="a1111", A1111_URL=down.url)
        job = executor.admit("u")
        with pytest.raises(BackendUnavailable, match="A1111/Forge renderer is unavailable \\(rate limited\\)"):
            await executor.render(job, request())
        job.finish()


def png_bytes() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(out, format="PNG")
    return out.getvalue()


async def test_options_a_backend_cannot_take_are_refused_in_words(make_executor):
    async with FakeComfyUI() as fake:
        executor = await make_executor(RENDER_BACKEND="comfyui", COMFYUI_URL=fake.url)
        job = executor.admit("u")
        with pytest.raises(BadRequest, match="LoRAs can't be used with models on ComfyUI"):
            await executor.render(job, request(loras=(("style", 0.5),)))
        with pytest.raises(BadRequest, match=r"ComfyUI can't apply the depth control \(it can: canny, palette, pose\)"):
            await executor.render(job, request(control=ControlSpec("depth", source=png_bytes())))
        job.finish()
    assert fake.seen == []


def test_configuration_errors_at_start_up(make_settings, tmp_path):
    with pytest.raises(ValidationError, match="STABILITY_API_KEY"):
        make_settings(RENDER_BACKEND="stability")
    with pytest.raises(ValidationError, match="REPLICATE_API_TOKEN"):
        make_settings(MODELS="r=replicate:acme/xl")
    with pytest.raises(ValidationError, match="RENDER_FALLBACK must name another"):
        make_settings(RENDER_BACKEND="a1111", RENDER_FALLBACK="a1111")
    broken = tmp_path / "flow.json"
    broken.write_text(json.dumps({"1": {"class_type": "X", "inputs": {"text": "{{prmpt}}"}}}))
    with pytest.raises(ValidationError, match=f"COMFYUI_WORKFLOW: {broken}.*unknown placeholders: prmpt"):
        make_settings(RENDER_BACKEND="comfyui", COMFYUI_WORKFLOW=str(broken))
    with pytest.raises(ValidationError, match="COMFYUI_IMG2IMG_WORKFLOW: can't read"):
        make_settings(COMFYUI_IMG2IMG_WORKFLOW=str(tmp_path / "missing.json"))
    # EXECUTOR=ray with remote backends: the remote renders stay in the bot process (no refusal).
    assert make_settings(EXECUTOR="ray", RENDER_BACKEND="a1111").RENDER_BACKEND == "a1111"
    assert make_settings(EXECUTOR="ray", MODELS="xl=comfyui:sd_xl_base_1.0.safetensors").EXECUTOR == "ray"


def test_remote_keys_are_redacted_from_logs(caplog):
    token = "r8_" + "a1B2c3D4" * 5
    key = "sk-" + "Zz9Yy8Xx" * 6
    line = f"calling with Authorization: Bearer {token} and {key}"
    assert token not in redact(line) and key not in redact(line) and redact(line).count(REDACTED) == 2
    logging.getLogger("x").info("%s", redact(line))


async def test_critic_and_correction_run_on_top_of_a_remote_backend(make_settings):
    async with FakeA1111() as fake:
        settings = make_settings(
            RENDER_BACKEND="a1111", A1111_URL=fake.url, QA_THRESHOLD=100, QA_MAX_ROUNDS=1, STEPS=4, REMOTE_RETRIES=0
        )
        executor = GPUExecutor(settings, stage_timeout_s=60)
        await executor.start()
        studio = Studio(settings, executor)
        try:
            job = executor.admit("u")
            output = await studio.run(job, Idea(text="a red apple on a wooden table"))
            job.finish()
        finally:
            await studio.aclose()
            await executor.shutdown(timeout_s=10)
    result = output.result
    assert len(result.rounds) == 2  # the CLIP critic scored below 100: one correction round
    assert all(r.backend == "a1111" and r.score is not None for r in result.rounds)
    assert [p["steps"] for p in fake.payloads] == [r.steps for r in result.rounds]
    assert result.rounds[1].steps > result.rounds[0].steps  # the family's correction bump
    assert result.critic == "local"


async def test_a_jobs_candidates_go_to_a1111_as_one_batch(make_executor):
    async with FakeA1111(step_s=0.01) as fake:
        executor = await make_executor(RENDER_BACKEND="a1111", A1111_URL=fake.url, WIDTH=64, HEIGHT=64)
        job = executor.admit("u")
        job.candidates = 4  # as the studio sets it
        batch = await asyncio.gather(*(executor.render(job, request(seed=s)) for s in (12, 10, 13, 11)))
        job.finish()
        alone_job = executor.admit("u")
        alone = await executor.render(alone_job, request(seed=12))
        alone_job.finish()
    assert [p["batch_size"] for p in fake.payloads] == [4, 1]
    assert fake.payloads[0]["seed"] == 10 and fake.renders_finished == 2
    assert [r.seed for r in batch] == [12, 10, 13, 11] and {r.batch_size for r in batch} == {4}
    # each candidate is the picture its own seed gives alone (U/V/Regenerate render it again)
    assert batch[0].image.tobytes() == alone.image.tobytes() != batch[1].image.tobytes()


async def test_candidates_of_different_jobs_or_options_are_not_merged(make_executor):
    async with FakeA1111(step_s=0.01) as fake:
        executor = await make_executor(RENDER_BACKEND="a1111", A1111_URL=fake.url, WIDTH=64, HEIGHT=64)
        one, two = executor.admit("u"), executor.admit("v")
        one.candidates = two.candidates = 2
        await asyncio.gather(
            executor.render(one, request(seed=1)),
            executor.render(two, request(seed=2)),
            executor.render(one, request(seed=2, prompt="a green pear")),
        )
        one.finish()
        two.finish()
    assert sorted(p["batch_size"] for p in fake.payloads) == [1, 1, 1]
