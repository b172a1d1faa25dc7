"""Nothing lost: the bot as a real subprocess (`python -m bot`) against the fake Discord —
SIGKILL mid-queue and restart, buttons after a restart, SIGTERM drains, a corrupt database."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from devkit.helpers import custom_ids, footer_job

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]


class BotProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> BotProcess:
        self.log = open(self.log_path, "ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=self.log,
            stdin=asyncio.subprocess.DEVNULL,
        )
        return self

    async def wait(self, timeout: float = 60) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        self.log.close()
        return code

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
            await self.wait()


@pytest.fixture
def bot_env(fake_discord, tiny_sd_dir, tiny_clip_dir, trained_whisper_dir, tmp_path):
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DISCORD_TOKEN": "test-token",
        "DISCORD_API_BASE": fake_discord.api_base,
        "DISCORD_GATEWAY_URL": fake_discord.gateway_url,
        "DISCORD_GUILD_IDS": str(fake_discord.guild.id),
        "DIFFUSION_MODEL": str(tiny_sd_dir),
        "CLIP_MODEL": str(tiny_clip_dir),
        "WHISPER_MODEL": str(trained_whisper_dir),
        "DEVICE": "cpu",
        "WIDTH": "64",
        "HEIGHT": "64",
        "STEPS": "12",
        "QA_MAX_ROUNDS": "0",
        "MAX_JOBS_PER_USER": "10",
        "DYNAMIC_BATCHING": "false",
        "GEMINI_API_KEY": "",
        "RETENTION_DAYS": "0",
        "DATA_DIR": str(tmp_path / "data"),
        "LOG_LEVEL": "INFO",
        "API_PORT": "",  # the Discord bot alone (the web API is tested in tests/web)
    }


@pytest.fixture
async def processes():
    started: list[BotProcess] = []
    yield started
    for p in started:
        await p.kill()


async def start_process(bot_env, fake, tmp_path, processes, name: str) -> BotProcess:
    known = {id(s) for s in _sessions(fake)}
    process = await BotProcess(bot_env, tmp_path / f"{name}.log").start()
    processes.append(process)

    def connected():
        if process.proc.returncode is not None:
            raise AssertionError(f"{name} exited early:\n{process.output()[-3000:]}")
        return any(id(s) not in known and s.connection is not None and s.ready_at for s in _sessions(fake)) or None

    await fake.wait_until(connected, 90, f"{name} connected", poll=0.05)
    return process


def _sessions(fake) -> list:
    sessions = fake.sessions
    return list(sessions.values()) if isinstance(sessions, dict) else list(sessions)


def results_by_job(fake) -> dict[str, list[dict]]:
    by_job: dict[str, list[dict]] = collections.defaultdict(list)
    for message in fake.find_messages(from_bot=True):
        job = footer_job(message)
        if job:
            by_job[job].append(message)
    return by_job


async def test_sigkill_then_restart_delivers_every_job_exactly_once(bot_env, fake_discord, tmp_path, processes):
    fake = fake_discord
    first = await start_process(bot_env, fake, tmp_path, processes, "first")
    prompts = ["a red apple", "a blue boat", "a green hill", "a yellow kite"]
    interactions = [await fake.slash_command("imagine", {"prompt": p, "seed": i}) for i, p in enumerate(prompts)]
    for interaction in interactions:
        await fake.wait_for_response(interaction)
        assert interaction.response_type == 5 and interaction.ack_latency < 3.0

    await fake.wait_until(lambda: results_by_job(fake) or None, 90, "the first result", poll=0.02)
    first.proc.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    delivered_before = set(results_by_job(fake))
    assert 1 <= len(delivered_before) < 4, "the kill came too late to leave jobs behind"

    # The last job's interaction token runs out while the bot is down; the others are still fresh.
    expired = interactions[-1]
    fake.expire_token(expired)

    await start_process(bot_env, fake, tmp_path, processes, "second")
    await fake.wait_until(lambda: len(results_by_job(fake)) >= 4 or None, 120, "all four results", poll=0.05)
    await asyncio.sleep(1.0)  # anything duplicated would arrive now
    by_job = results_by_job(fake)
    assert len(by_job) == 4
    assert all(len(messages) == 1 for messages in by_job.values()), {j: len(m) for j, m in by_job.items()}
    for interaction in interactions[:-1]:
        # Fresh tokens: the result lands in the user's own "thinking…" response, even across the crash.
        message = fake.original_response(interaction)
        assert footer_job(message) and sorted(a["filename"] for a in message["attachments"]) == [
            "image.png",
            "palette.png",
        ]
    posted = [m[0] for m in by_job.values() if int(m[0]["id"]) != expired.original_message_id]
    in_channel = [m for m in posted if m.get("interaction_metadata") is None and m.get("webhook_id") is None]
    assert len(in_channel) == 1  # the expired one: posted to the channel for the requester
    assert in_channel[0]["content"].startswith(f"<@{fake.user.id}>")

    # A button on a message posted by the killed process works in the new one.
    old_message = by_job[next(iter(delivered_before))][0]
    old_job = footer_job(old_message)
    click = await fake.click_button(old_message["id"], f"voxcanvas:vary:{old_job}")
    await fake.wait_for_response(click)
    assert click.response_type == 5 and click.ack_latency < 3.0
    await fake.wait_until(
        lambda: (m := fake.original_response(click)) and footer_job(m) or None, 90, "the variation", poll=0.05
    )
    details = await fake.click_button(old_message["id"], f"voxcanvas:details:{old_job}")
    await fake.wait_for_response(details)
    assert details.ephemeral and "Round 1" in details.response_body["data"]["content"]
    assert custom_ids(old_message)[0] == f"voxcanvas:regen:{old_job}"


def stored_job(bot_env, job_id: str) -> dict | None:
    """The job's row as the bot left it (read beside the running bot, as an operator would)."""
    with contextlib.closing(sqlite3.connect(Path(bot_env["DATA_DIR"]) / "voxcanvas.db")) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row) if row is not None else None


async def test_sigkill_right_after_posting_then_a_busy_channel_is_not_posted_twice(
    bot_env, fake_discord, tmp_path, processes
):
    """Issue #11 item 9. The bot posts a result to the channel (its interaction token ran out) and
    is SIGKILLed before it hears Discord's answer, so the post is never recorded; then more than
    the 50 messages a history search covers arrive. The restarted bot's repeated send carries the
    job's delivery nonce, so Discord answers with the first post: one post, recorded.

    A footer scan of the last 50 messages (the check before the nonce) misses the post here and
    posts it again; and a restarted bot holding a still-fresh stored token does not even scan."""
    fake = fake_discord
    first = await start_process(bot_env, fake, tmp_path, processes, "first")
    # Progress lines can't be posted to the channel (only the result, with its files, gets through),
    # so the result is a new channel message rather than an edit of a progress message.
    missing_access = {"message": "Missing Permissions", "code": 50013}
    fake.fail_next(
        "POST", "/channels/*/messages", status=403, times=100, body=missing_access, when=lambda c: not c.files
    )
    # The result is created, but the answer is held: the bot dies without learning the message id.
    fake.stall_next("POST", "/channels/*/messages", seconds=10, when=lambda c: bool(c.files))
    interaction = await fake.slash_command("imagine", {"prompt": "a lighthouse in a storm", "seed": 3})
    await fake.wait_for_response(interaction)
    fake.expire_token(interaction)  # as if the job outlived the 15 minutes

    posted = await fake.wait_until(lambda: next(iter(results_by_job(fake).values()), None), 90, "the post", poll=0.05)
    first_post = posted[0]
    job_id = footer_job(first_post)
    assert first_post["nonce"] and int(first_post["id"]) != interaction.original_message_id
    for i in range(60):  # a busy channel: the post is now beyond a 50-message history search
        await fake.send_message(fake.channel.id, fake.other_user, f"chatter {i}")
    first.proc.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    row = stored_job(bot_env, job_id)
    assert row["state"] == "done" and row["delivery_started_at"] is not None and row["delivered_message_id"] is None

    await start_process(bot_env, fake, tmp_path, processes, "second")
    await fake.wait_until(
        lambda: (stored_job(bot_env, job_id) or {}).get("delivered_message_id"), 60, "the delivery recorded", poll=0.1
    )
    await asyncio.sleep(1.0)  # a second post would arrive now
    assert [m["id"] for m in results_by_job(fake)[job_id]] == [first_post["id"]]
    assert stored_job(bot_env, job_id)["delivered_message_id"] == int(first_post["id"])
    resent = [  # every upload carrying the job's nonce, answered or (the killed one's) not
        c
        for c in fake.calls
        if c.route == "POST /channels/{channel_id}/messages" and c.files and c.json["nonce"] == first_post["nonce"]
    ]
    assert len(resent) == 2 and resent[1].json["enforce_nonce"] is True  # sent again, answered with the first


async def test_sigterm_drains_the_running_job_and_exits_cleanly(bot_env, fake_discord, tmp_path, processes):
    fake = fake_discord
    env = {**bot_env, "STEPS": "40"}
    bot = await start_process(env, fake, tmp_path, processes, "drain")
    interaction = await fake.slash_command("imagine", {"prompt": "a slow sunset"})
    await fake.wait_for_response(interaction)
    await fake.wait_until(
        lambda: "Rendering" in ((fake.original_response(interaction) or {}).get("content") or "") or None,
        60,
        "rendering to begin",
        poll=0.02,
    )
    bot.proc.send_signal(signal.SIGTERM)
    code = await bot.wait(60)
    assert code == 0, bot.output()[-3000:]
    message = fake.original_response(interaction)
    assert footer_job(message), "the running job was not finished before exit"
    out = bot.output()
    assert "SIGTERM received" in out and "Traceback" not in out
    assert "test-token" not in out


async def test_corrupt_database_stops_start_with_a_clear_message(bot_env, tmp_path):
    data = Path(bot_env["DATA_DIR"])
    data.mkdir(parents=True)
    db = data / "voxcanvas.db"
    garbage = b"this is not a database, it is a shopping list\n" * 100
    db.write_bytes(garbage)
    process = await BotProcess(bot_env, tmp_path / "corrupt.log").start()
    code = await process.wait(60)
    out = process.output()
    assert code == 2, out
    assert str(db) in out and "Traceback" not in out
    assert db.read_bytes() == garbage  # never wiped
