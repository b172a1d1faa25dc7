"""The GPU executor: admission caps, ordering and fairness, dynamic batching, progress,
cancellation, failures (stage errors, OOM, thread death), shutdown and event-loop lag."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import numpy as np
import pytest
import torch

from pipeline.errors import (
    ExecutorFailure,
    JobCancelled,
    OutOfMemory,
    QueueFull,
    ShuttingDown,
    TooManyJobs,
)
from pipeline.executor import Engine, GPUExecutor
from pipeline.synthesis import RenderRequest, Synthesizer

STEPS = 4


@pytest.fixture
async def make_executor(make_settings):
    created: list[GPUExecutor] = []

    async def factory(engine_cls=Engine, **overrides) -> GPUExecutor:
        settings = make_settings(**overrides)
        executor = GPUExecutor(settings, engine=engine_cls(settings), stage_timeout_s=60)
        await executor.start()
        created.append(executor)
        return executor

    yield factory
    for executor in created:
        await executor.shutdown(timeout_s=10)


def request(seed: int, prompt: str = "a red apple on a wooden table", **kw) -> RenderRequest:
    return RenderRequest(prompt=prompt, seed=seed, steps=kw.pop("steps", STEPS), width=64, height=64, **kw)


class GpuGate:
    """Holds the GPU thread inside a work item until released, so a queue can be built up."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> str:
        self.entered.set()
        assert self.release.wait(30), "gate never released"
        return "gate"

    async def hold(self, executor: GPUExecutor) -> asyncio.Task:
        task = asyncio.create_task(executor.call(None, "tool", self))
        assert await asyncio.to_thread(self.entered.wait, 30)
        return task


async def test_fifty_jobs_from_ten_users_caps_and_round_robin(make_executor):
    ex = await make_executor(MAX_JOBS_PER_USER=5, MAX_QUEUE=50, DYNAMIC_BATCHING=False)
    gate = GpuGate()
    held = await gate.hold(ex)

    jobs = []
    for _ in range(5):  # each user asks for 5 jobs, interleaved as they arrive
        for user in range(10):
            jobs.append(ex.admit(f"user{user}"))
    with pytest.raises(TooManyJobs) as too_many:
        ex.admit("user3")
    assert "limit is 5" in str(too_many.value)
    with pytest.raises(QueueFull):
        ex.admit("newcomer")

    # User 0 floods first: its 5 jobs are submitted before anybody else's.
    order: list[str] = []

    def stage(job_id: str) -> str:
        order.append(job_id)
        time.sleep(0.001)
        return job_id

    by_user = sorted(jobs, key=lambda j: (j.user_id != "user0", j.seq))
    tasks = []
    for job in by_user:
        tasks.append(asyncio.create_task(ex.call(job, "render", stage, job.id)))
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    positions = {job.id: job.position() for job in jobs}
    assert sorted(positions.values()) == list(range(1, 51))
    gate.release.set()
    await held
    done = await asyncio.gather(*tasks)
    assert sorted(done) == sorted(j.id for j in jobs)

    users_in_order = [ex.get_job(job_id).user_id for job_id in order]
    # Round-robin: every window of 10 consecutive jobs serves each user exactly once, although
    # user0 submitted all of its jobs first.
    for start in range(0, 50, 10):
        assert sorted(users_in_order[start : start + 10]) == sorted(f"user{u}" for u in range(10))
    for job in jobs:
        job.finish()
    assert ex.metrics().jobs_done == 50
    assert ex.admit("user3")  # slots are free again


async def test_fifty_renders_batched_all_complete(make_executor):
    ex = await make_executor(MAX_JOBS_PER_USER=5, MAX_QUEUE=50, MAX_BATCH=4, BATCH_WINDOW_MS=5)
    await ex.warm_up(whisper=False, clip=False)

    async def job_for(user: int, n: int):
        job = ex.admit(f"user{user}")
        try:
            image = await ex.render(job, request(seed=user * 100 + n))
            return image.seed, image.image.size
        finally:
            job.finish()

    results = await asyncio.gather(*(job_for(u, n) for n in range(5) for u in range(10)))
    assert len(results) == 50
    assert {seed for seed, _ in results} == {u * 100 + n for u in range(10) for n in range(5)}
    assert all(size == (64, 64) for _, size in results)
    sizes = ex.metrics().batch_sizes
    assert max(sizes) > 1, sizes
    assert sum(size * count for size, count in sizes.items()) == 50


async def test_started_jobs_go_first(make_executor):
    ex = await make_executor(MAX_JOBS_PER_USER=5, DYNAMIC_BATCHING=False)
    order: list[str] = []
    started = ex.admit("alice")
    await ex.call(started, "transcribe", order.append, "alice:transcribe")  # alice's job has begun

    gate = GpuGate()
    held = await gate.hold(ex)
    fresh = [ex.admit(f"user{i}") for i in range(3)]
    tasks = [asyncio.create_task(ex.call(job, "render", order.append, f"{job.user_id}:render")) for job in fresh]
    await asyncio.sleep(0.01)
    # alice's next stage arrives last but runs first: started jobs finish first.
    tasks.append(asyncio.create_task(ex.call(started, "render", order.append, "alice:render")))
    await asyncio.sleep(0.01)
    assert started.position() is None and fresh[0].position() == 1
    gate.release.set()
    await held
    await asyncio.gather(*tasks)
    assert order == ["alice:transcribe", "alice:render", "user0:render", "user1:render", "user2:render"]


async def test_positions_and_eta_update_as_the_queue_moves(make_executor):
    ex = await make_executor(MAX_JOBS_PER_USER=5, DYNAMIC_BATCHING=False)
    gate = GpuGate()
    held = await gate.hold(ex)
    a1, a2, b1 = ex.admit("a"), ex.admit("a"), ex.admit("b")
    events = {job.id: [] for job in (a1, a2, b1)}
    for job in (a1, a2, b1):
        job.listener = events[job.id].append
    assert (a1.position(), b1.position(), a2.position()) == (1, 2, 3)  # round-robin
    assert 0 < a1.eta_s() < b1.eta_s() < a2.eta_s()

    release = threading.Event()
    tasks = [asyncio.create_task(ex.call(j, "render", release.wait, 30)) for j in (a1, a2, b1)]
    await asyncio.sleep(0.01)  # all three are queued behind the gate
    gate.release.set()
    await held
    for _ in range(200):
        if a1.started:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert a1.position() is None and (b1.position(), a2.position()) == (1, 2)
    b1_positions = [e.position for e in events[b1.id] if e.stage == "queued"]
    assert b1_positions[0] == 2 and b1_positions[-1] == 1
    assert b1_positions == sorted(b1_positions, reverse=True)  # only ever moves forward
    release.set()
    await asyncio.gather(*tasks)
    assert any(e.stage == "render" for e in events[a1.id])


async def test_batching_equals_one_at_a_time(make_executor, tiny_sd_dir):
    ex = await make_executor(MAX_BATCH=4, BATCH_WINDOW_MS=50)
    await ex.warm_up(whisper=False, clip=False)
    gate = GpuGate()
    held = await gate.hold(ex)
    prompts = ["a red apple", "a blue boat at sea", "a castle on a hill", "a green cat"]
    jobs = [ex.admit(f"u{i}") for i in range(4)]
    progress = {job.id: [] for job in jobs}
    for job in jobs:
        job.listener = progress[job.id].append
    tasks = [
        asyncio.create_task(ex.render(job, request(seed=10 + i, prompt=p)))
        for i, (job, p) in enumerate(zip(jobs, prompts, strict=True))
    ]
    await asyncio.sleep(0.02)
    gate.release.set()
    await held
    batched = await asyncio.gather(*tasks)
    assert [img.batch_size for img in batched] == [4, 4, 4, 4]
    assert ex.metrics().batch_sizes == {4: 1}
    for job in jobs:  # every job saw its own steps 1..4
        steps = [e.step for e in progress[job.id] if e.stage == "render" and e.step]
        assert steps == [1, 2, 3, 4]

    single = Synthesizer(str(tiny_sd_dir), "cpu")
    for i, (p, img) in enumerate(zip(prompts, batched, strict=True)):
        alone = single.render([request(seed=10 + i, prompt=p).validated()])[0]
        diff = np.abs(np.asarray(alone.image, dtype=int) - np.asarray(img.image, dtype=int))
        assert diff.max() <= 1, f"batched image {i} differs from the single render"


async def test_cancel_queued_and_running(make_executor):
    ex = await make_executor(MAX_JOBS_PER_USER=5)
    await ex.warm_up(whisper=False, clip=False)
    gate = GpuGate()
    held = await gate.hold(ex)
    queued = ex.admit("q")
    ran = []
    task = asyncio.create_task(ex.call(queued, "render", ran.append, "should not run"))
    await asyncio.sleep(0.01)
    queued.cancel()
    with pytest.raises(JobCancelled):
        await task
    gate.release.set()
    await held
    assert ran == []

    running = ex.admit("r")
    steps: list[int] = []

    def on_progress(event):
        if event.stage == "render" and event.step:
            steps.append(event.step)
            if event.step == 3:
                running.cancel()

    running.listener = on_progress
    with pytest.raises(JobCancelled):
        await ex.render(running, request(seed=1, steps=100))
    await asyncio.sleep(0.05)
    assert 3 <= len(steps) < 100, "the render was not interrupted at a step boundary"
    # The thread is free for the next job.
    after = ex.admit("after")
    image = await ex.render(after, request(seed=2))
    assert image.image.size == (64, 64)


async def test_failing_stage_fails_only_its_job(make_executor):
    ex = await make_executor(MAX_JOBS_PER_USER=5)

    def broken():
        raise ValueError("stage exploded")

    bad, good = ex.admit("a"), ex.admit("b")
    with pytest.raises(ValueError, match="stage exploded"):
        await ex.call(bad, "review", broken)
    assert await ex.call(good, "review", lambda: 42) == 42
    assert ex.thread.is_alive()


class OomOnBigBatches(Synthesizer):
    """Fault injection at the torch boundary: CUDA OOM for batches above 1 and for one prompt."""

    def render(self, requests, **kw):
        if len(requests) > 1 or any("too big" in r.prompt for r in requests):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().render(requests, **kw)


class OomEngine(Engine):
    @property
    def models(self):
        if self._models is None:
            from pipeline.registry import ModelPool

            self._models = ModelPool(self.settings, factory=lambda entry: OomOnBigBatches(entry.source, "cpu"))
        return self._models


async def test_out_of_memory_splits_the_batch_and_fails_only_what_does_not_fit(make_executor):
    ex = await make_executor(engine_cls=OomEngine, MAX_JOBS_PER_USER=5, MAX_BATCH=4, BATCH_WINDOW_MS=50)
    await ex.warm_up(whisper=False, clip=False)
    gate = GpuGate()
    held = await gate.hold(ex)
    jobs = [ex.admit(f"u{i}") for i in range(4)]
    prompts = ["apple", "too big", "boat", "castle"]
    tasks = [
        asyncio.create_task(ex.render(j, request(seed=i, prompt=p)))
        for i, (j, p) in enumerate(zip(jobs, prompts, strict=True))
    ]
    await asyncio.sleep(0.02)
    gate.release.set()
    await held
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], OutOfMemory)
    assert "smaller size" in str(results[1])
    for i in (0, 2, 3):
        assert results[i].image.size == (64, 64) and results[i].batch_size == 1
    assert ex.metrics().batch_sizes == {4: 1, 2: 2, 1: 4}
    assert ex.thread.is_alive()


class ThreadKiller(BaseException):
    """Not an Exception: escapes the per-item handler and takes the thread down."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_thread_death_fails_held_work_and_restarts(make_executor):
    ex = await make_executor(MAX_JOBS_PER_USER=5)
    first_thread = ex.thread
    victim = ex.admit("v")

    def die():
        raise ThreadKiller()

    with pytest.raises(ExecutorFailure):
        await ex.call(victim, "render", die)
    for _ in range(100):
        if ex.thread is not first_thread and ex.thread.is_alive():
            break
        await asyncio.sleep(0.01)
    assert ex.thread is not first_thread and ex.thread.is_alive()
    first_thread.join(5)
    assert not first_thread.is_alive()
    survivor = ex.admit("s")
    assert await ex.call(survivor, "review", lambda: "alive") == "alive"
    assert ex.metrics().thread_restarts == 1


async def test_shutdown_drains_running_and_returns_queued(make_executor):
    ex = await make_executor(MAX_JOBS_PER_USER=5, DYNAMIC_BATCHING=False)
    gate = GpuGate()
    held = await gate.hold(ex)
    running_job, queued_job = ex.admit("a"), ex.admit("b")
    queued = asyncio.create_task(ex.call(queued_job, "render", lambda: "never"))
    await asyncio.sleep(0.01)
    shutting = asyncio.create_task(ex.shutdown(timeout_s=10))
    await asyncio.sleep(0.01)
    with pytest.raises(ShuttingDown):
        ex.admit("c")
    gate.release.set()
    assert await held == "gate"  # the running work finished
    remaining = await shutting
    assert set(remaining) == {running_job.id, queued_job.id}
    with pytest.raises(ShuttingDown):
        await queued
    assert not ex.thread.is_alive()


async def test_event_loop_stays_responsive_while_the_gpu_thread_renders(make_executor):
    ex = await make_executor(MAX_JOBS_PER_USER=5)
    await ex.warm_up(whisper=False, clip=False)
    lags: list[float] = []
    stop = asyncio.Event()

    async def heartbeat():
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    beat = asyncio.create_task(heartbeat())
    jobs = [ex.admit(f"u{i}") for i in range(4)]
    await asyncio.gather(*(ex.render(j, request(seed=i, steps=30)) for i, j in enumerate(jobs)))
    stop.set()
    await beat
    assert len(lags) > 20
    p99 = statistics.quantiles(lags, n=100)[98]
    # A blocked loop would show lags of whole renders (hundreds of ms); the bound is loose for
    # a loaded 2-core CI machine — the benchmark reports the real p50/p99.
    assert p99 < 0.25, f"event loop lag p99 {p99 * 1000:.0f} ms"
