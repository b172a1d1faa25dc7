"""The bot with EXECUTOR=ray, end to end through the fake Discord: the real discord.py client, the
model stages on Serve replicas of a real local Ray cluster (tests/conftest.py ``ray_cluster``)."""

from __future__ import annotations

import asyncio
import contextlib
import io

import pytest
from PIL import Image

from devkit.helpers import footer_job
from devkit.voice import make_voice_note
from pipeline.studio import Result
from tests.bot import test_reliability
from tests.bot.conftest import BotHarness
from tests.bot.test_bot import RESULT_TIMEOUT, delivered_record, field, imagine, run_bot_process, wait_result

pytestmark = pytest.mark.timeout(300)

bot_env = test_reliability.bot_env  # the fixtures of the process tests, for the SIGKILL test here
processes = test_reliability.processes


@pytest.fixture
async def start_ray_bot(fake_discord, bot_settings, ray_overrides, make_ray_executor):
    from bot.client import VoxCanvasBot, configure_endpoints

    harnesses: list[BotHarness] = []

    async def start(**overrides) -> BotHarness:
        settings = bot_settings(**ray_overrides, **overrides)
        configure_endpoints(settings)
        executor = await make_ray_executor(settings, start=False)  # the bot starts it in setup_hook
        bot = VoxCanvasBot(settings, executor=executor, guild_ready_timeout=0.05, warm_up=False)
        task = asyncio.create_task(bot.start(settings.DISCORD_TOKEN.get_secret_value()))
        harness = BotHarness(fake_discord, bot, settings, task)
        harnesses.append(harness)
        await harness.wait_ready(timeout=240)
        return harness

    yield start
    for harness in harnesses:
        if not harness.bot.is_closed():
            await harness.bot.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(harness.task, 30)


async def test_imagine_and_voice_note_with_executor_ray(start_ray_bot, fake_discord):
    harness = await start_ray_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    from pipeline.executor.ray_serve import RayExecutor

    assert isinstance(harness.bot.executor, RayExecutor)

    interaction = await imagine(fake, {"prompt": "a red apple on a wooden table", "seed": 1234})
    assert interaction.response_type == 5 and interaction.ack_latency < 3.0
    message = await wait_result(fake, interaction, timeout=RESULT_TIMEOUT * 2)
    assert sorted(a["filename"] for a in message["attachments"]) == ["image.png", "palette.png"]
    upload = [c for c in fake.calls if c.files and any(f.filename == "image.png" for f in c.files)][-1]
    image = Image.open(io.BytesIO(next(f.data for f in upload.files if f.filename == "image.png")))
    assert image.size == (64, 64)
    assert "/100" in field(message, "Alignment") and "CLIP" in field(message, "Judged by")
    job_id = footer_job(message)
    record = await delivered_record(harness, job_id)
    assert record.state == "done" and int(record.delivered_message_id) == int(message["id"])
    result = Result.model_validate_json(record.result_json)
    assert result.rounds[0].seed == 1234 and result.rounds[0].steps == 4

    # A voice note: Whisper on its replica, then the same path.
    note = make_voice_note("Please draw a red apple on a wooden table")
    sent = await fake.send_voice_message(fake.channel.id, fake.user, note, duration_secs=3.0)

    def voice_result():
        for msg in fake.find_messages(channel_id=fake.channel.id, from_bot=True):
            ref = (msg.get("message_reference") or {}).get("message_id")
            if ref and int(ref) == int(sent["id"]) and footer_job(msg):
                return msg
        return None

    heard_message = await fake.wait_until(voice_result, RESULT_TIMEOUT * 2, "voice-note result", poll=0.05)
    assert "apple" in field(heard_message, "🎙️ Heard").lower()


async def test_bot_restarted_while_ray_keeps_running_loses_nothing_delivers_once(start_ray_bot, fake_discord):
    from tests.bot.test_reliability import results_by_job

    fake = fake_discord
    # 100 steps of >= 50 ms each: the bot is closed while renders are out on the cluster. (Asked per
    # request: rendering defaults such as STEPS are those of the settings the replicas were deployed with.)
    options = dict(QA_MAX_ROUNDS=0, MAX_JOBS_PER_USER=4, DYNAMIC_BATCHING=False)
    first = await start_ray_bot(**options)
    prompts = [f"a {colour} kite" for colour in ("red", "blue", "green", "yellow")]
    interactions = [
        await fake.slash_command("imagine", {"prompt": p, "seed": i, "steps": 100}) for i, p in enumerate(prompts)
    ]
    for interaction in interactions:
        await fake.wait_for_response(interaction)
    await fake.wait_until(lambda: first.bot.executor._out or None, 60, "a render out on the cluster", poll=0.02)
    await first.bot.close()  # drains (bounded); the replicas keep running; the store keeps the rest

    await start_ray_bot(**options)  # the same DATA_DIR; finds the deployments running
    await fake.wait_until(lambda: len(results_by_job(fake)) >= 4 or None, 240, "all four results", poll=0.05)
    await asyncio.sleep(1.0)  # anything duplicated would arrive now
    by_job = results_by_job(fake)
    assert len(by_job) == 4 and all(len(m) == 1 for m in by_job.values()), {j: len(m) for j, m in by_job.items()}


@pytest.mark.parametrize("address", ["127.0.0.1:1", ""])
async def test_bot_with_an_unreachable_ray_address_exits_in_one_line(tmp_path, address):
    code, out = await run_bot_process(
        {
            "DISCORD_TOKEN": "some-token-123456",
            "EXECUTOR": "ray",
            "RAY_ADDRESS": address,
            "API_PORT": "",
            "DATA_DIR": str(tmp_path),
        }
    )
    assert code == 4, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "RAY_ADDRESS" in lines[0] and "Traceback" not in out, out


async def test_imagine_on_a_remote_backend_with_executor_ray(start_ray_bot, fake_discord):
    """A remote render backend needs no GPU: with EXECUTOR=ray the render goes from the bot process
    to the fake A1111 (behind the router's fair gate) while CLIP still reviews on its replica."""
    from devkit.backends import FakeA1111

    async with FakeA1111(step_s=0.05) as a1111:
        harness = await start_ray_bot(RENDER_BACKEND="a1111", A1111_URL=a1111.url, QA_MAX_ROUNDS=0)
        executor = harness.bot.executor
        interaction = await imagine(fake_discord, {"prompt": "a lighthouse at dusk"})
        assert interaction.ack_latency < 3.0
        message = await wait_result(fake_discord, interaction, timeout=RESULT_TIMEOUT * 2)
        result = Result.model_validate_json((await harness.bot.store.get(footer_job(message))).result_json)
        assert [r.backend for r in result.rounds] == ["a1111"] and [p["steps"] for p in a1111.payloads] == [4]
        assert "rendered on A1111/Forge" in (field(message, "Settings") or "")
        assert "CLIP" in field(message, "Judged by")  # the review went to the Critic replica
        assert {"render", "review"} <= set(executor.recorder.stage_means())
        assert executor.family(None) is not None  # the remote model's profile, known in the bot


async def test_sigkill_of_the_bot_while_ray_runs_delivers_every_job_once(
    bot_env, fake_discord, tmp_path, processes, ray_overrides, ray_cluster, tiny_musicgen_dir
):
    """``python -m bot`` with EXECUTOR=ray on the session's cluster is SIGKILLed while renders are out
    on the replicas; a new process against the same still-running cluster and DATA_DIR delivers
    every job exactly once (the killed driver's calls finish on the cluster and are discarded)."""
    import signal

    from tests.bot.test_reliability import results_by_job, start_process

    fake = fake_discord
    env = {
        **bot_env,
        "EXECUTOR": "ray",
        "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,  # the session cluster, as host:port
        "RAY_NAMESPACE": ray_overrides["RAY_NAMESPACE"],
        "RAY_MIN_REPLICAS": str(ray_overrides["RAY_MIN_REPLICAS"]),
        "RAY_MAX_REPLICAS": str(ray_overrides["RAY_MAX_REPLICAS"]),
        "MUSIC_MODEL": str(tiny_musicgen_dir),
        "MAX_JOBS_PER_USER": "4",
    }
    first = await start_process(env, fake, tmp_path, processes, "first")
    prompts = [f"a {colour} kite" for colour in ("red", "blue", "green", "yellow")]
    interactions = [
        await fake.slash_command("imagine", {"prompt": p, "seed": i, "steps": 60}) for i, p in enumerate(prompts)
    ]
    for interaction in interactions:
        await fake.wait_for_response(interaction)
        assert interaction.response_type == 5 and interaction.ack_latency < 3.0
    await fake.wait_until(lambda: results_by_job(fake) or None, 180, "the first result", poll=0.02)
    first.proc.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    assert 1 <= len(results_by_job(fake)) < 4, "the kill came too late to leave jobs behind"

    await start_process(env, fake, tmp_path, processes, "second")
    await fake.wait_until(lambda: len(results_by_job(fake)) >= 4 or None, 180, "all four results", poll=0.05)
    await asyncio.sleep(1.0)  # anything duplicated would arrive now
    by_job = results_by_job(fake)
    assert len(by_job) == 4 and all(len(m) == 1 for m in by_job.values()), {j: len(m) for j, m in by_job.items()}


WAITING = "Waiting for a GPU worker"


async def test_ray_cluster_lost_then_back_jobs_wait_and_each_is_delivered_once(
    bot_env, fake_discord, tmp_path, processes, tiny_musicgen_dir
):
    """``python -m bot`` with EXECUTOR=ray on a cluster of its own (``ray start``); the whole cluster
    is killed while jobs are queued and a render is out: the bot stays up, the jobs' messages say
    "Waiting for a GPU worker…", /healthz is unhealthy; the cluster is started again on the same
    ports: the bot reconnects, redeploys, and every job is delivered exactly once."""
    import aiohttp

    from devkit.ray_head import RayHead, free_port
    from tests.bot.test_reliability import results_by_job, start_process

    fake = fake_discord
    head = RayHead(num_cpus=6)
    api_port = free_port()

    def edits_saying(text: str) -> list:
        return fake.find_calls(lambda c: isinstance(c.json, dict) and text in (c.json.get("content") or ""))

    async def healthz() -> tuple[int, dict]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{api_port}/healthz") as response:
                return response.status, await response.json()

    async def health_becomes(status: int, timeout: float) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while (seen := await healthz())[0] != status:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"/healthz is not {status}: {seen}")
            await asyncio.sleep(0.2)
        return seen[1]

    try:
        await asyncio.to_thread(head.start)
        env = {
            **bot_env,
            "EXECUTOR": "ray",
            "RAY_ADDRESS": head.address,
            "RAY_NAMESPACE": "voxcanvas-lost",
            "RAY_MIN_REPLICAS": "1",
            "RAY_MAX_REPLICAS": "1",
            "RAY_RECONNECT_TIMEOUT_S": "120",
            "MUSIC_MODEL": str(tiny_musicgen_dir),
            "MAX_JOBS_PER_USER": "4",
            "API_PORT": str(api_port),
            **RayHead.CLIENT_ENV,
        }
        bot = await start_process(env, fake, tmp_path, processes, "bot")
        await health_becomes(200, 30)  # (the gateway's first heartbeat)
        # The warm-up first (the executor cancels a warm-up call the cluster loss catches): this
        # test follows the jobs' calls.
        await fake.wait_until(lambda: "models warm in" in bot.output() or None, 120, "the warm-up", poll=0.2)
        interactions = [
            await fake.slash_command("imagine", {"prompt": f"a {colour} kite", "seed": i, "steps": 100})
            for i, colour in enumerate(("red", "blue", "green"))
        ]
        for interaction in interactions:
            await fake.wait_for_response(interaction)
            assert interaction.response_type == 5 and interaction.ack_latency < 3.0
        await fake.wait_until(lambda: edits_saying("Rendering") or None, 120, "a render on the cluster", poll=0.02)
        await asyncio.to_thread(head.kill)  # every process of the cluster, at once
        assert len(results_by_job(fake)) < 3, "the cluster went away too late to leave jobs waiting"

        await fake.wait_until(lambda: edits_saying(WAITING) or None, 30, "the waiting message", poll=0.05)
        status, health = await healthz()
        assert status == 503 and not health["checks"]["executor"]["ok"], health
        assert f"RAY_ADDRESS={head.address}" in health["checks"]["executor"]["detail"], health
        assert all(check["ok"] for name, check in health["checks"].items() if name != "executor"), health
        await asyncio.sleep(2.0)
        assert bot.proc.returncode is None, bot.output()[-3000:]  # the bot stays up meanwhile
        assert len(results_by_job(fake)) < 3

        await asyncio.to_thread(head.start)  # the same ports: RAY_ADDRESS finds it again
        await fake.wait_until(lambda: len(results_by_job(fake)) >= 3 or None, 180, "all three results", poll=0.05)
        await asyncio.sleep(1.0)  # anything duplicated would arrive now
        by_job = results_by_job(fake)
        assert len(by_job) == 3 and all(len(m) == 1 for m in by_job.values()), {j: len(m) for j, m in by_job.items()}
        await health_becomes(200, 10)
        assert "Reconnected to the Ray cluster" in bot.output()
    finally:
        await asyncio.to_thread(head.close)
