"""Music jobs in the store: migration 3 (new kinds, music_file) keeps every row and parent link,
a composed piece is saved and read back, and one saved just before a crash is recovered."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bot.store import DB_NAME, MIGRATIONS, SCHEMA_VERSION, JobNotFound, JobStateError, JobStore
from bot.store.files import MUSIC_FILE, MUSIC_WAV_FILE, RESULT_MARKER
from tests.bot.store.helpers import finish, new_job

OGG = b"OggS" + b"\x00" * 60
MUSIC_RESULT = json.dumps({"music_prompt": "calm piano", "duration_s": 2.0})


def build_v2_database(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("BEGIN")
    for migration in MIGRATIONS[:2]:
        for statement in migration.statements:
            raw.execute(statement)
    raw.execute("PRAGMA user_version = 2")
    raw.execute("COMMIT")
    raw.execute("PRAGMA foreign_keys = ON")
    row = (
        "INSERT INTO jobs (id, user_id, channel_id, kind, parent_job_id, idea, state, result_json, "
        "created_at, updated_at, delivery_nonce) VALUES (?, 3, 4, ?, ?, '{}', 'done', '{}', 1.0, 1.0, ?)"
    )
    raw.execute(row, ("parent1", "text", None, "n1"))
    raw.execute(row, ("child1", "vary", "parent1", "n2"))
    raw.close()


async def test_migration_3_keeps_rows_and_parent_links_and_allows_music_kinds(tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= 3
    build_v2_database(tmp_path / DB_NAME)
    store = await JobStore.open(tmp_path)
    try:
        child = await store.get("child1")
        assert child is not None and child.parent_job_id == "parent1" and child.delivery_nonce == "n2"
        assert child.music_file is None and not child.is_music
        composed = await new_job(store, kind="compose", idea={"text": "calm piano", "seconds": 5})
        soundtrack = await new_job(store, kind="soundtrack", idea={}, parent_job_id="parent1")
        assert composed.is_music and soundtrack.parent_job_id == "parent1"
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / DB_NAME) as raw:
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
        sql = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
        assert 'REFERENCES "jobs"(id)' in sql or "REFERENCES jobs(id)" in sql  # the rename kept it
        indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"jobs_by_state", "jobs_by_user", "jobs_by_parent", "jobs_with_token"} <= indexes
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            raw.execute(
                "INSERT INTO jobs (id, user_id, channel_id, kind, idea, created_at, updated_at) "
                "VALUES ('x', 1, 1, 'podcast', '{}', 1, 1)"
            )


async def test_music_is_saved_read_back_and_deleting_the_parent_keeps_it(tmp_path: Path) -> None:
    store = await JobStore.open(tmp_path)
    try:
        picture = await new_job(store)
        await finish(store, picture.id)
        job = await new_job(store, kind="soundtrack", idea={}, parent_job_id=picture.id)
        await store.mark_running(job.id)
        done = await store.complete_music(job.id, result_json=MUSIC_RESULT, title="🎵 calm piano", music_ogg=OGG)
        assert done.state == "done" and done.music_file == MUSIC_FILE and done.image_file is None
        assert await store.read_music(job.id) == OGG
        assert [r.id for r in await store.undelivered()] == [picture.id, job.id]
        assert await store.delete(picture.id, user_id=picture.user_id)
        after = await store.get(job.id)
        assert after is not None and after.parent_job_id is None and await store.read_music(job.id) == OGG
    finally:
        await store.close()


async def test_music_saved_before_a_crash_is_recovered(tmp_path: Path) -> None:
    store = await JobStore.open(tmp_path)
    job = await new_job(store, kind="compose", idea={"text": "calm piano"})
    await store.mark_running(job.id)
    directory = store.job_dir(job.id)
    await store.close()
    # The process died after writing the files, before the row said "done".
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MUSIC_FILE).write_bytes(OGG)
    marker = {"result_json": MUSIC_RESULT, "score": None, "title": "calm piano", "music": True}
    (directory / RESULT_MARKER).write_text(json.dumps(marker))
    store = await JobStore.open(tmp_path)
    try:
        record = await store.get(job.id)
        assert record is not None and record.state == "done" and record.music_file == MUSIC_FILE
        assert await store.read_music(job.id) == OGG and await store.unfinished() == []
    finally:
        await store.close()


async def test_the_wav_is_kept_beside_the_ogg_and_dropped_with_a_cancelled_piece(tmp_path: Path) -> None:
    wav = b"RIFF" + b"\x00" * 40
    store = await JobStore.open(tmp_path)
    try:
        job = await new_job(store, kind="compose", idea={"text": "calm piano"})
        await store.mark_running(job.id)
        await store.complete_music(job.id, result_json=MUSIC_RESULT, title=None, music_ogg=OGG, music_wav=wav)
        assert await store.read_music_wav(job.id) == wav and await store.read_music(job.id) == OGG
        assert (store.job_dir(job.id) / MUSIC_WAV_FILE).read_bytes() == wav

        without = await new_job(store, kind="compose", idea={"text": "rain"})  # a piece saved with no WAV
        await store.mark_running(without.id)
        await store.complete_music(without.id, result_json=MUSIC_RESULT, title=None, music_ogg=OGG)
        with pytest.raises(JobNotFound):
            await store.read_music_wav(without.id)

        cancelled = await new_job(store, kind="compose", idea={"text": "wind"})
        await store.mark_running(cancelled.id)
        await store.fail(cancelled.id, "cancelled", state="cancelled")
        with pytest.raises(JobStateError):
            await store.complete_music(cancelled.id, result_json=MUSIC_RESULT, title=None, music_ogg=OGG, music_wav=wav)
        assert not (store.job_dir(cancelled.id) / MUSIC_WAV_FILE).exists()
        with pytest.raises(JobStateError):
            await store.read_music_wav(cancelled.id)
    finally:
        await store.close()
