"""EXECUTOR=ray on a real local Ray cluster (tests/conftest.py ``ray_cluster``): the tiny models
deployed as Serve replicas (two render replicas), called through the real handles."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import JobCancelled, TooManyJobs
from pipeline.executor.jobs import ProgressEvent
from pipeline.synthesis import RenderRequest

pytestmark = pytest.mark.timeout(300)


def request(seed: int, steps: int = 4, **kw) -> RenderRequest:
    return RenderRequest(prompt="a red apple on a wooden table", seed=seed, steps=steps, **kw)


async def wait_for(predicate, timeout: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def test_burst_is_batched_across_two_replicas_and_fair(make_settings, ray_overrides, make_ray_executor):
    from pipeline.executor import deployments

    executor = await make_ray_executor(make_settings(**ray_overrides, MAX_JOBS_PER_USER=8))
    jobs = [executor.admit(user) for user in ("ann", "bob") for _ in range(6)]
    extra = [executor.admit("ann"), executor.admit("ann")]
    with pytest.raises(TooManyJobs):  # caps are decided in the bot process, as locally
        executor.admit("ann")
    for job in extra:
        job.finish()
    images = await asyncio.gather(*(executor.render(job, request(seed=i)) for i, job in enumerate(jobs)))
    for i, rendered in enumerate(images):
        assert isinstance(rendered.image, Image.Image) and rendered.image.size == (64, 64)
        assert rendered.seed == i and rendered.steps == 4
    # Serve gathered compatible requests into shared pipeline calls, and both replicas served.
    assert max(r.batch_size for r in images) > 1
    where = await asyncio.gather(*(executor._board.where.remote(job.id) for job in jobs))
    assert len(set(where)) == 2, where
    # Same seed, same picture (up to float rounding of batched math), whichever replica rendered it.
    again = await executor.render(jobs[0], request(seed=0))
    diff = np.abs(np.asarray(again.image, dtype=np.int16) - np.asarray(images[0].image, dtype=np.int16))
    assert diff.max() <= 2
    # Incompatible requests (another size) are never batched together with these.
    job = jobs[1]
    mixed = await asyncio.gather(
        executor.render(job, request(seed=1)), executor.render(jobs[2], request(seed=2, width=128, height=64))
    )
    assert mixed[0].image.size == (64, 64) and mixed[1].image.size == (128, 64)
    assert mixed[1].batch_size == 1
    for j in jobs:
        j.finish()
    assert executor.metrics().queue_depth == 0
    assert deployments.app_name("voxcanvas-tests", "render") == "voxcanvas-tests-render"


async def test_progress_and_cancel_reach_the_remote_render(make_settings, ray_overrides, make_ray_executor):
    executor = await make_ray_executor(make_settings(**ray_overrides))
    job = executor.admit("carol")
    events: list[ProgressEvent] = []
    job.listener = events.append
    task = asyncio.create_task(executor.render(job, request(seed=5, steps=60)))  # ~3 s of steps
    await wait_for(lambda: [e for e in events if e.stage == "render" and e.step >= 2], 120, "remote steps")
    assert all(e.total == 60 for e in events if e.stage == "render" and e.total)
    job.cancel()
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(task, 30)
    # The replica stopped at its next step: it never reached the last one.
    steps = await executor._board.snapshot.remote([job.id])
    assert steps[job.id][0] < 60
    job.finish("cancelled")


async def test_replica_killed_mid_render_is_retried_on_another(
    make_settings, ray_overrides, make_ray_executor, ray_cluster
):
    ray = ray_cluster
    executor = await make_ray_executor(make_settings(**ray_overrides))
    job = executor.admit("dave")
    events: list[ProgressEvent] = []
    job.listener = events.append
    task = asyncio.create_task(executor.render(job, request(seed=9, steps=40)))
    await wait_for(lambda: [e for e in events if e.stage == "render" and e.step >= 2], 120, "remote steps")
    victim = await executor._board.where.remote(job.id)
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=False)
    rendered = await asyncio.wait_for(task, 120)
    assert rendered.image.size == (64, 64) and rendered.seed == 9
    assert executor.retries == 1
    assert await executor._board.where.remote(job.id) != victim  # finished elsewhere (or on a fresh replica)
    job.finish()


async def test_review_and_transcribe_run_on_their_replicas(make_settings, ray_overrides, make_ray_executor):
    import numpy as np

    from devkit.voice import make_voice_note
    from pipeline.audio import decode_audio
    from pipeline.scene import Scene
    from tests.pipeline.scenes import scene_data

    executor = await make_ray_executor(make_settings(**ray_overrides))
    job = executor.admit("erin")
    rendered = await executor.render(job, request(seed=3))
    scene = Scene.model_validate(scene_data())
    reports = await executor.review_many(job, [rendered.image, rendered.image], scene, "a red apple")
    assert (
        len(reports) == 2
        and reports[0].alignment_score == reports[1].alignment_score
        and 0 <= reports[0].alignment_score <= 100
    )
    audio = decode_audio(make_voice_note("Please draw a red apple on a wooden table"), max_seconds=120)
    assert audio.dtype == np.float32
    transcript = await executor.transcribe(job, audio)
    assert "apple" in transcript.text.lower()
    job.finish()


def test_unreachable_cluster_at_start_is_one_line_naming_ray_address():
    code = (
        "import asyncio\n"
        "from pipeline.settings import Settings\n"
        "from pipeline.executor.ray_serve import RayExecutor, RayUnreachable\n"
        "s = Settings(EXECUTOR='ray', RAY_ADDRESS='127.0.0.1:1', _env_file=None)\n"
        "try:\n"
        "    asyncio.run(RayExecutor(s).start())\n"
        "except RayUnreachable as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out
    assert "RAY_ADDRESS=127.0.0.1:1" in lines[0] and "cannot be reached" in lines[0]


async def test_music_on_the_composer_replica_progress_determinism_and_cancel(
    make_settings, ray_overrides, tiny_musicgen_dir
):
    """The Composer deployment: the tiny MusicGen loaded by its replica, step progress read from the
    board, the same seed → the same samples, and Cancel stops it at its next step."""
    from pipeline import limits
    from pipeline.executor import deployments
    from pipeline.executor.ray_serve import RayExecutor
    from pipeline.music import MUSIC_SAMPLE_RATE, MusicRequest

    from ..conftest import RAY_STEP_DELAY_S

    settings = make_settings(**ray_overrides, MUSIC_MODEL=str(tiny_musicgen_dir))
    # Deployed anew with the tests' step delay: a `python -m bot` test may have left a music app
    # without one, whose 50 tiny steps can end between two progress reads.
    await asyncio.to_thread(
        deployments.deploy, settings, stages=("music",), step_delay_s=RAY_STEP_DELAY_S, redeploy=True
    )
    executor = RayExecutor(settings, stage_timeout_s=180, step_delay_s=RAY_STEP_DELAY_S, stages=("music",))
    await executor.start()
    try:
        events: list[ProgressEvent] = []
        job = executor.admit("u1")
        job.listener = events.append
        music = await executor.compose(job, MusicRequest("a calm seaside ambience", seconds=1.0, seed=7))
        assert music.sample_rate == MUSIC_SAMPLE_RATE and music.samples.dtype == np.float32
        assert music.samples.ndim == 1 and len(music.samples) == MUSIC_SAMPLE_RATE
        assert np.isfinite(music.samples).all() and music.seed == 7
        steps = [(e.step, e.total) for e in events if e.stage == "music" and e.total]
        assert steps and all(t == music.tokens for _, t in steps)  # progress crossed from the replica
        assert [s for s, _ in steps] == sorted(s for s, _ in steps)
        again = await executor.compose(job, MusicRequest("a calm seaside ambience", seconds=1.0, seed=7))
        other = await executor.compose(job, MusicRequest("a calm seaside ambience", seconds=1.0, seed=8))
        assert np.array_equal(music.samples, again.samples) and not np.array_equal(music.samples, other.samples)
        job.finish()

        long_job = executor.admit("u2")
        seen: list[ProgressEvent] = []
        long_job.listener = seen.append
        long = asyncio.create_task(
            executor.compose(long_job, MusicRequest("slow piano", seconds=limits.MAX_MUSIC_SECONDS, seed=1))
        )
        await wait_for(lambda: any(e.stage == "music" and e.step for e in seen), 60, "music progress")
        began = asyncio.get_running_loop().time()
        long_job.cancel()
        with pytest.raises(JobCancelled):
            await long
        assert asyncio.get_running_loop().time() - began < 10  # stopped at a step, not after ~75 s
        long_job.finish()
    finally:
        await executor.shutdown(timeout_s=10)


async def test_upscaler_model_on_its_replica_matches_the_local_one(make_settings, ray_overrides, tiny_upscaler_dir):
    """UPSCALER_MODEL (the U buttons' x4 upscaler) on its own Serve deployment: the picture the
    replica makes is the one the model makes here (same tiles, same seeds), its progress per tile
    crosses to the bot, and Cancel stops it between tiles."""
    import io

    from pipeline.executor import deployments
    from pipeline.executor.ray_serve import RayExecutor
    from pipeline.upscaler import Upscaler, UpscaleRequest

    settings = make_settings(**ray_overrides, UPSCALER_MODEL=str(tiny_upscaler_dir))
    assert "upscale" in deployments.stages_for(settings)
    assert "upscale" not in deployments.stages_for(make_settings(**ray_overrides))  # only when it is set
    delay = 0.3  # per tile, so progress is read mid-way and Cancel lands between tiles
    await asyncio.to_thread(deployments.deploy, settings, stages=("upscale",), step_delay_s=delay, redeploy=True)
    executor = RayExecutor(settings, stage_timeout_s=180, step_delay_s=delay, stages=("upscale",))
    await executor.start()
    # 232×64: three 128×64 tiles in a row (the least picture that leaves Cancel a tile to stop)
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 232, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    wanted = UpscaleRequest(buffer.getvalue(), (464, 128), prompt="a red apple", negative_prompt="", seed=5, steps=2)
    try:
        job = executor.admit("u1")
        events: list[ProgressEvent] = []
        job.listener = events.append
        png, scale, tiles = await executor.upscale(job, wanted)
        job.finish()
        here = await asyncio.to_thread(Upscaler(str(tiny_upscaler_dir), "cpu").run, wanted)
        assert (scale, tiles) == (here[1], here[2]) and tiles == 3
        remote_pixels = np.asarray(Image.open(io.BytesIO(png)))
        assert remote_pixels.shape == (128, 464, 3)
        assert np.abs(remote_pixels.astype(int) - np.asarray(Image.open(io.BytesIO(here[0]))).astype(int)).max() <= 1
        steps = [(e.step, e.total) for e in events if e.stage == "render" and e.total]
        assert steps and all(total == tiles for _, total in steps), steps  # tile progress crossed over

        stopped = executor.admit("u2")
        seen: list[ProgressEvent] = []
        stopped.listener = seen.append
        running = asyncio.create_task(executor.upscale(stopped, wanted))
        await wait_for(lambda: any(e.stage == "render" and e.step for e in seen), 60, "upscale progress")
        stopped.cancel()
        with pytest.raises(JobCancelled):
            await running
        stopped.finish()
    finally:
        await executor.shutdown(timeout_s=10)


LOST_SCRIPT = """
import asyncio, json, sys, time
from pipeline.settings import Settings
from pipeline.synthesis import RenderRequest
from pipeline.executor.ray_serve import RayExecutor, RayClusterLost

async def main():
    settings = Settings(**json.loads(sys.argv[1]), _env_file=None)
    executor = RayExecutor(settings, stage_timeout_s=120, step_delay_s=0.05, stages=("render",))
    executor.PROBE_S = 0.5
    await executor.start()
    job = executor.admit("ann")
    events = []
    job.listener = events.append
    render = asyncio.create_task(executor.render(job, RenderRequest(prompt="a kite", seed=1, steps=100)))
    while not any(e.stage == "render" and e.step for e in events):
        if render.done():
            raise SystemExit(f"the render ended before the cluster was killed: {render.exception()!r}")
        await asyncio.sleep(0.05)
    print("RENDERING", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the test killed the cluster
    killed = time.monotonic()
    while not any(e.stage == "waiting" for e in events):
        await asyncio.sleep(0.05)
    out = {"waiting_after_s": time.monotonic() - killed, "health": executor.health()}
    try:
        await render
        out["error"] = None
    except RayClusterLost as exc:
        out["error"] = str(exc)
    out["failed_after_s"] = time.monotonic() - killed
    began = time.monotonic()
    try:  # past the bound, a new call fails at once (until the cluster returns)
        await executor.render(executor.admit("bob"), RenderRequest(prompt="a boat", seed=2, steps=4))
    except RayClusterLost as exc:
        out["then"] = [str(exc), time.monotonic() - began]
    out["health_after"] = executor.health()
    print("RESULT " + json.dumps(out), flush=True)
    await executor.shutdown(timeout_s=5)

asyncio.run(main())
"""


async def test_cluster_lost_for_longer_than_the_bound_fails_waiting_jobs(tiny_settings_values):
    """A real cluster (its own ``ray start`` head) killed mid-render, RAY_RECONNECT_TIMEOUT_S=4: the
    job shows "waiting", /healthz's check is unhealthy, and after the bound the render fails
    with a message for the user (/healthz names RAY_ADDRESS); a call made after that fails at
    once. (A process of its own: the test session's driver is connected to the session's cluster.)"""
    import json
    import os

    from devkit.ray_head import RayHead
    from pipeline.executor.ray_serve import RayClusterLost

    head = RayHead(num_cpus=2)
    try:
        await asyncio.to_thread(head.start)
        settings = dict(
            tiny_settings_values,
            EXECUTOR="ray",
            RAY_ADDRESS=head.address,
            RAY_NAMESPACE="voxcanvas-bound",
            RAY_RECONNECT_TIMEOUT_S=4,
            DYNAMIC_BATCHING=False,
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            LOST_SCRIPT,
            json.dumps(settings),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **RayHead.CLIENT_ENV},
        )
        lines: list[str] = []

        async def line_starting(prefix: str, timeout: float) -> str:
            async def read() -> str:
                while True:
                    raw = await proc.stdout.readline()
                    if not raw:
                        raise AssertionError("the script ended:\n" + "".join(lines[-40:]))
                    lines.append(raw.decode(errors="replace"))
                    if lines[-1].startswith(prefix):
                        return lines[-1]

            return await asyncio.wait_for(read(), timeout)

        try:
            await line_starting("RENDERING", 120)
            await asyncio.to_thread(head.kill)
            proc.stdin.write(b"killed\n")
            await proc.stdin.drain()
            out = json.loads((await line_starting("RESULT ", 60)).removeprefix("RESULT "))
            assert await asyncio.wait_for(proc.wait(), 30) == 0, "".join(lines[-40:])
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        await asyncio.to_thread(head.close)
    assert out["waiting_after_s"] < 10, out
    healthy, detail = out["health"]
    assert not healthy and f"RAY_ADDRESS={head.address}" in detail and "unreachable" in detail, detail
    assert out["error"] == RayClusterLost.default_message, out  # translated; the address stays in the log
    assert head.address not in out["error"]
    assert 4 <= out["failed_after_s"] < 20, out  # the bound (4 s from when the loss was found), not a stage timeout
    assert out["then"][1] < 1.0 and out["then"][0] == RayClusterLost.default_message, out
    assert out["health_after"][0] is False
