"""Online backup (from the store and from ``python -m bot.store``) and the CLI's check."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.store import DB_NAME, JobStore
from bot.store.__main__ import main as store_cli
from tests.bot.store.helpers import REPO, finish, new_job


async def test_backup_opens_with_the_store(store: JobStore, tmp_path: Path) -> None:
    done = await new_job(store, user_id=3)
    await finish(store, done.id)
    queued = await new_job(store, user_id=4)
    dest = tmp_path / "backups" / DB_NAME
    assert await store.backup(dest) == dest
    assert dest.stat().st_mode & 0o077 == 0  # the copy holds every job: owner-only, like DATA_DIR
    await new_job(store, user_id=5)  # after the snapshot: not in it
    copy = await JobStore.open(dest.parent)
    try:
        assert (await copy.get(done.id)).score == 91
        assert [j.id for j in await copy.unfinished()] == [queued.id]
        assert await copy.history(5) == []
    finally:
        await copy.close()


async def test_cli_backup_and_check_while_running(store: JobStore, tmp_path: Path) -> None:
    await finish(store, (await new_job(store)).id)
    dest = tmp_path / "cli-backup.db"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for args in (["backup", str(dest)], ["check"]):
        proc = subprocess.run(
            [sys.executable, "-m", "bot.store", "--data-dir", str(store.data_dir), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 job(s), integrity: ok" in proc.stdout
    with sqlite3.connect(dest) as raw:
        assert raw.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


def test_cli_check_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert store_cli(["--data-dir", str(tmp_path), "check"]) == 2
    assert f"error: {tmp_path / DB_NAME} does not exist." in capsys.readouterr().out
    assert store_cli(["--data-dir", str(tmp_path), "backup", str(tmp_path / "copy.db")]) == 2
    assert "nothing to back up" in capsys.readouterr().out
    (tmp_path / DB_NAME).write_bytes(b"not a database" * 100)
    assert store_cli(["--data-dir", str(tmp_path), "check"]) == 2
    assert "is not a valid database" in capsys.readouterr().out
