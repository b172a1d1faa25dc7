"""Start-up without Discord: ``python -m bot`` with nothing listening where Discord should be says
so in one line, retries for DISCORD_CONNECT_TIMEOUT_S, and exits non-zero — no traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from bot.connectivity import DiscordUnreachable, host_of, wait_for_discord

ROOT = Path(__file__).resolve().parents[2]
EXIT_UNREACHABLE = 4
CONNECT_TIMEOUT_S = 1.5
#: Interpreter start and imports (discord.py, pydantic) on a shared 2-core machine.
START_OVERHEAD_S = 45


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_bot(tmp_path: Path, **env_overrides: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DISCORD_", "GEMINI_"))}
    env.update(PYTHONPATH=str(ROOT), DATA_DIR=str(tmp_path / "data"), API_PORT="", **env_overrides)
    started = time.monotonic()
    done = subprocess.run(  # cwd: a directory without a .env of its own
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=CONNECT_TIMEOUT_S + START_OVERHEAD_S + 30,
    )
    return done, time.monotonic() - started


def test_no_discord_one_line_retry_then_nonzero_exit(tmp_path: Path):
    port = closed_port()
    done, elapsed = run_bot(
        tmp_path,
        DISCORD_TOKEN="startup-test-token",
        DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10",
        DISCORD_CONNECT_TIMEOUT_S=str(CONNECT_TIMEOUT_S),
    )
    assert done.returncode == EXIT_UNREACHABLE, done.stderr
    assert elapsed < CONNECT_TIMEOUT_S + START_OVERHEAD_S
    assert "Traceback" not in done.stderr and "aiohttp" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    final = lines[-1]
    assert final.startswith(f"VoxCanvas: Discord could not be reached at 127.0.0.1:{port} (Connection refused)"), final
    retries = [line for line in lines[:-1] if "retrying in" in line]
    assert retries and len(retries) == len(lines) - 1, done.stderr  # nothing else: one line per try
    assert all(len(line) < 200 and f"127.0.0.1:{port}" in line for line in lines)


async def test_retries_with_back_off_within_the_bound():
    pauses: list[float] = []
    clock = asyncio.get_running_loop().time

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(seconds)

    started = clock()
    with pytest.raises(DiscordUnreachable) as caught:
        await wait_for_discord(
            f"http://127.0.0.1:{closed_port()}/api", 1.0, first_retry_s=0.05, max_retry_s=0.2, sleep=sleep
        )
    elapsed = clock() - started
    assert 1.0 <= elapsed < 5, elapsed
    assert caught.value.reason == "Connection refused" and caught.value.waited_s >= 1.0
    assert pauses[:3] == [0.05, 0.1, 0.2] and max(pauses) == 0.2, pauses  # doubling, capped
    assert sum(pauses) <= 1.0


async def test_any_http_answer_counts_as_reached():
    app = web.Application()  # answers 404 for everything: Discord is there, the route isn't
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        await asyncio.wait_for(wait_for_discord(f"http://127.0.0.1:{port}/api/v10", 5), 5)
    finally:
        await runner.cleanup()


def test_host_names_the_port_only_when_it_is_not_the_default():
    assert host_of("https://discord.com/api/v10") == "discord.com"
    assert host_of("http://127.0.0.1:8123/api") == "127.0.0.1:8123"


def test_settings_for_start_up_and_log_opt_in():
    from pipeline.settings import Settings

    settings = Settings(_env_file=None, LOG_DEBUG_LOGGERS="discord.webhook, aiosqlite", DISCORD_CONNECT_TIMEOUT_S=2)
    assert settings.LOG_DEBUG_LOGGERS == ["discord.webhook", "aiosqlite"]
    assert settings.DISCORD_CONNECT_TIMEOUT_S == 2
    defaults = Settings(_env_file=None)
    assert defaults.LOG_DEBUG_LOGGERS == [] and defaults.DISCORD_CONNECT_TIMEOUT_S == 60
