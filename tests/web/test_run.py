"""``make run`` on a fresh machine with nothing configured: ``python -m bot`` without a Discord
token serves the web playground alone, prints its URL and how to add Discord, makes a picture,
and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.web.conftest import read_events

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]


async def test_no_token_serves_the_playground_alone(tmp_path, tiny_sd_dir, tiny_clip_dir, trained_whisper_dir):
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DISCORD_", "GEMINI_", "API_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        DATA_DIR=str(tmp_path / "data"),
        API_PORT="0",  # the default is 8080; any free port here
        DIFFUSION_MODEL=str(tiny_sd_dir),
        CLIP_MODEL=str(tiny_clip_dir),
        WHISPER_MODEL=str(trained_whisper_dir),
        DEVICE="cpu",
        WIDTH="64",
        HEIGHT="64",
        STEPS="2",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        banner = []
        while not any("walks through it" in line for line in banner):
            line = await asyncio.wait_for(proc.stdout.readline(), 90)
            assert line, (await proc.stderr.read()).decode()
            banner.append(line.decode())
        text = "".join(banner)
        url = re.search(r"playground is at (http://127\.0\.0\.1:\d+/)", text).group(1)
        assert "Discord is off" in text and ".env" in text and "developers" in text
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            page = await client.get("/")
            assert page.status_code == 200 and "<title>VoxCanvas playground</title>" in page.text
            assert (await client.get("/docs")).status_code == 200
            assert "/api/generate" in (await client.get("/openapi.json")).json()["paths"]
            job = (await client.post("/api/jobs", json={"text": "a red apple", "seed": 5})).json()
            events = await read_events(client, job["events_url"])
            assert events[-1][0] == "done", events[-1]
            assert (await client.get(job["status_url"])).json()["state"] == "done"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        stderr = (await proc.stderr.read()).decode()
        assert "Traceback" not in stderr, stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
