"""Helpers shared by the job store's tests: an injectable clock, job shortcuts, a fresh Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bot.store import JobRecord, JobStore

REPO = Path(__file__).resolve().parents[3]
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
PALETTE = b"\x89PNG\r\n\x1a\n" + os.urandom(512)
RESULT = json.dumps({"job_id": "x", "best_round": 0, "rounds": [{"score": 91}]})


class Clock:
    """An injectable wall clock the tests can move forward."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


async def new_job(store: JobStore, user_id: int = 1, **kwargs) -> JobRecord:
    kwargs.setdefault("channel_id", 10)
    kwargs.setdefault("kind", "text")
    kwargs.setdefault("idea", {"text": "a red apple"})
    return await store.create_job(user_id=user_id, **kwargs)


async def finish(store: JobStore, job_id: str, score: int = 91) -> JobRecord:
    await store.mark_running(job_id)
    return await store.complete(
        job_id, result_json=RESULT, score=score, title="Apple", image_png=PNG, palette_png=PALETTE
    )


def run_python(code: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def tree_files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
