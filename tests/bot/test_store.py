"""The job store: round trips, state machine, files, crash recovery (close, SIGKILL, a fresh
process), history, delete, retention, migrations, refusing bad files, concurrency without
blocking the loop, backup, and the interaction token's life. Real SQLite files, no mocks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bot.store import (
    APPLICATION_ID,
    DB_NAME,
    INTERACTION_TOKEN_TTL_S,
    MIGRATIONS,
    SCHEMA_VERSION,
    JobNotFound,
    JobRecord,
    JobStateError,
    JobStore,
    StoreError,
)
from pipeline.errors import VoxCanvasError

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
PALETTE = b"\x89PNG\r\n\x1a\n" + os.urandom(512)
RESULT = json.dumps({"job_id": "x", "best_round": 0, "rounds": [{"score": 91}]})


class Clock:
    """An injectable wall clock the tests can move forward."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def store(data_dir: Path):
    store = await JobStore.open(data_dir)
    yield store
    await store.close()


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


# ------------------------------------------------------------------------------------------------
# Round trips and the state machine
# ------------------------------------------------------------------------------------------------
async def test_create_get_round_trip_all_fields(store: JobStore, data_dir: Path) -> None:
    parent = await new_job(store, user_id=7)
    idea = {
        "text": None,
        "style": "watercolor",
        "negative": "blurry",
        "seed": 42,
        "steps": 30,
        "guidance": 8.5,
        "width": 512,
        "height": 768,
        "strength": 0.6,
        "task": "translate",
        "audio_filename": "voice-message.ogg",
    }
    audio, init = b"OggS" + os.urandom(300), b"\x89PNG" + os.urandom(100)
    before = time.time()
    job = await store.create_job(
        user_id=7,
        guild_id=99,
        channel_id=11,
        kind="vary",
        idea=idea,
        parent_job_id=parent.id,
        source_message_id=555,
        interaction_id=666,
        interaction_token="secret-token",
        progress_message_id=777,
        audio=audio,
        audio_ext=".OGG",
        init_image=init,
    )
    got = await store.get(job.id)
    assert got == job
    assert (got.user_id, got.guild_id, got.channel_id, got.kind) == (7, 99, 11, "vary")
    assert got.parent_job_id == parent.id
    assert got.idea == dict(idea, has_audio=True, has_init_image=True)
    assert (got.source_message_id, got.interaction_id, got.progress_message_id) == (555, 666, 777)
    assert got.interaction_token == "secret-token"
    assert before <= got.interaction_created_at <= time.time()
    assert got.state == "queued" and got.attempts == 0 and got.active and not got.finished
    assert got.error is got.result_json is got.score is got.title is None
    assert got.delivered_message_id is got.delivered_channel_id is got.finished_at is None
    assert len(got.delivery_nonce) == 20 and got.delivery_nonce != parent.delivery_nonce
    assert before <= got.created_at == got.updated_at <= time.time()
    assert (got.audio_file, got.init_image_file) == ("audio.ogg", "init.png")
    assert await store.read_audio(job.id) == audio
    assert await store.read_init_image(job.id) == init
    assert tree_files(data_dir / "jobs" / job.id) == ["audio.ogg", "init.png"]
    # a job without inputs has no files and no directory yet
    assert await store.read_audio(parent.id) is None
    assert await store.read_init_image(parent.id) is None
    assert not (data_dir / "jobs" / parent.id).exists()
    assert parent.idea == {"text": "a red apple", "has_audio": False, "has_init_image": False}
    assert await store.get("no-such-job") is None
    assert await store.get("../../etc") is None  # ids become paths: never traverse
    with pytest.raises(ValueError):
        await new_job(store, kind="sketch")
    with pytest.raises(ValueError, match="already taken"):
        await new_job(store, job_id=job.id)


async def test_state_transitions_and_attempts(store: JobStore) -> None:
    job = await new_job(store)
    assert (await store.mark_running(job.id)).attempts == 1
    again = await store.mark_running(job.id)  # re-run after a restart counts again
    assert again.state == "running" and again.attempts == 2
    await store.set_progress_message(job.id, 1234)
    done = await store.complete(job.id, result_json=RESULT, score=88, title="Apple", image_png=PNG, palette_png=PALETTE)
    assert done.state == "done" and done.finished and done.progress_message_id == 1234
    assert (done.score, done.title, done.result_json, done.error) == (88, "Apple", RESULT, None)
    assert done.finished_at is not None and done.updated_at >= done.created_at
    for call in (
        store.mark_running(job.id),
        store.fail(job.id, "boom"),
        store.complete(job.id, result_json=RESULT, score=1, title=None, image_png=PNG, palette_png=PALETTE),
    ):
        with pytest.raises(JobStateError) as info:
            await call
        assert isinstance(info.value, VoxCanvasError) and "already finished" in str(info.value)
    assert (await store.read_image(job.id)) == PNG  # untouched by the refused complete

    queued = await new_job(store)
    cancelled = await store.fail(queued.id, "The job was cancelled.", state="cancelled")
    assert cancelled.state == "cancelled" and cancelled.error == "The job was cancelled."
    with pytest.raises(JobStateError):
        await store.mark_running(queued.id)
    running = await new_job(store)
    await store.mark_running(running.id)
    failed = await store.fail(running.id, "The GPU ran out of memory.")
    assert (failed.state, failed.attempts) == ("failed", 1)
    assert failed.error == "The GPU ran out of memory."
    with pytest.raises(JobStateError, match="isn't ready"):
        await store.read_image(running.id)
    with pytest.raises(ValueError):
        await store.fail(running.id, "x", state="done")  # type: ignore[arg-type]
    for call in (
        store.mark_running("missing"),
        store.set_progress_message("missing", 1),
        store.read_image("missing"),
        store.fail("missing", "x"),
    ):
        with pytest.raises(JobNotFound):
            await call


async def test_complete_writes_files_atomically(store: JobStore, data_dir: Path) -> None:
    job = await new_job(store)
    await finish(store, job.id)
    directory = data_dir / "jobs" / job.id
    assert tree_files(directory) == ["image.png", "palette.png", "result.json"]  # no temp files
    assert (directory / "image.png").read_bytes() == PNG
    assert await store.read_image(job.id) == PNG
    assert await store.read_palette(job.id) == PALETTE
    (directory / "image.png").unlink()
    with pytest.raises(JobNotFound, match="missing"):
        await store.read_image(job.id)


async def test_regenerate_needs_its_parent_and_outlives_it(store: JobStore) -> None:
    with pytest.raises(JobNotFound, match="original picture is gone"):
        await new_job(store, kind="regenerate", parent_job_id="gone", audio=b"x")
    assert tree_files(store.jobs_dir) == []  # its audio was cleaned up
    parent = await new_job(store)
    await finish(store, parent.id)
    child = await new_job(store, kind="regenerate", parent_job_id=parent.id)
    assert await store.delete(parent.id, user_id=1)
    assert (await store.get(child.id)).parent_job_id is None  # ON DELETE SET NULL


# ------------------------------------------------------------------------------------------------
# Delivery and the interaction token
# ------------------------------------------------------------------------------------------------
async def test_delivery_recorded_once_and_token_cleared(data_dir: Path) -> None:
    clock = Clock()
    store = await JobStore.open(data_dir, clock=clock)
    try:
        job = await new_job(store, interaction_id=5, interaction_token="tok-123")
        assert "tok-123" not in repr(job)  # a credential never reaches a log line
        with pytest.raises(JobStateError):
            await store.record_delivery(job.id, message_id=1, channel_id=10)
        await finish(store, job.id)
        assert [j.id for j in await store.undelivered()] == [job.id]
        sending = await store.begin_delivery(job.id)
        assert sending.delivery_started_at is not None
        assert await store.record_delivery(job.id, message_id=500, channel_id=10) is True
        assert await store.record_delivery(job.id, message_id=501, channel_id=10) is False
        got = await store.get(job.id)
        assert (got.delivered_message_id, got.delivered_channel_id) == (500, 10)
        assert got.interaction_token is None and got.delivered
        assert await store.undelivered() == []
    finally:
        await store.close()
    with sqlite3.connect(data_dir / DB_NAME) as raw:
        assert raw.execute("SELECT interaction_token FROM jobs").fetchone() == (None,)


async def test_interaction_token_expires_after_15_minutes(data_dir: Path) -> None:
    clock = Clock()
    store = await JobStore.open(data_dir, clock=clock)
    try:
        job = await new_job(store, interaction_token="tok-abc")
        clock.now += INTERACTION_TOKEN_TTL_S - 1
        assert (await store.get(job.id)).interaction_token == "tok-abc"
        clock.now += 2
        assert (await store.get(job.id)).interaction_token is None  # hidden at once
        assert await store.clear_expired_tokens() == 1  # and wiped from the file
    finally:
        await store.close()
    with sqlite3.connect(data_dir / DB_NAME) as raw:
        assert raw.execute("SELECT interaction_token FROM jobs").fetchone() == (None,)


# ------------------------------------------------------------------------------------------------
# Crashes and restarts
# ------------------------------------------------------------------------------------------------
async def test_unfinished_and_undelivered_after_restart(data_dir: Path) -> None:
    store = await JobStore.open(data_dir)
    queued = await new_job(store, user_id=1)
    running = await new_job(store, user_id=2)
    await store.mark_running(running.id)
    done = await new_job(store, user_id=3)
    await finish(store, done.id)
    failed = await new_job(store, user_id=4)
    await store.fail(failed.id, "That took far longer than it should.")
    delivered = await new_job(store, user_id=5)
    await finish(store, delivered.id)
    await store.record_delivery(delivered.id, message_id=9, channel_id=10)
    cancelled = await new_job(store, user_id=6)
    await store.fail(cancelled.id, "cancelled", state="cancelled")
    await store.close()  # "crash": nothing finished; reopen the same DATA_DIR

    store = await JobStore.open(data_dir)
    try:
        assert [j.id for j in await store.unfinished()] == [queued.id, running.id]  # oldest first
        assert [j.id for j in await store.undelivered()] == [done.id, failed.id]
        assert (await store.get(running.id)).attempts == 1
        assert await store.read_image(done.id) == PNG
        assert await store.count_active() == 2 and await store.count_active(2) == 1
        assert await store.count_active(3) == 0
    finally:
        await store.close()


async def test_sigkill_mid_work_loses_nothing(data_dir: Path) -> None:
    """A writer process is SIGKILLed: committed jobs survive; a job whose picture files were saved
    but whose row was not yet updated is finished from its files at the next open."""
    proc = run_python(
        f"""
        import asyncio, os, signal
        from bot.store import JobStore
        async def main():
            store = await JobStore.open({str(data_dir)!r})
            q = await store.create_job(user_id=1, channel_id=2, kind="voice", idea={{}},
                                       audio=b"OggS-voice", job_id="queued1")
            r = await store.create_job(user_id=1, channel_id=2, kind="text", idea={{}},
                                       job_id="running1")
            await store.mark_running(r.id)
            d = await store.create_job(user_id=1, channel_id=2, kind="text", idea={{}},
                                       job_id="done1")
            await store.mark_running(d.id)
            await store.complete(d.id, result_json='{{"a": 1}}', score=90, title="t",
                                 image_png=b"img", palette_png=b"pal")
            h = await store.create_job(user_id=1, channel_id=2, kind="text", idea={{}},
                                       job_id="halfway1")
            await store.mark_running(h.id)
            # complete() step 1 only (files), then the process dies before the row is written
            marker = b'{{"result_json": "{{}}", "score": 77, "title": "h"}}'
            await asyncio.to_thread(store._write_result_files, store.job_dir(h.id), b"img2",
                                    b"pal2", marker)
            os.kill(os.getpid(), signal.SIGKILL)
        asyncio.run(main())
        """,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    store = await JobStore.open(data_dir)
    try:
        assert [j.id for j in await store.unfinished()] == ["queued1", "running1"]
        assert await store.read_audio("queued1") == b"OggS-voice"
        recovered = await store.get("halfway1")
        assert (recovered.state, recovered.score, recovered.title) == ("done", 77, "h")
        assert await store.read_image("halfway1") == b"img2"
        assert [j.id for j in await store.undelivered()] == ["done1", "halfway1"]
        assert await store.read_image("done1") == b"img"
    finally:
        await store.close()


async def test_fresh_process_sees_everything(data_dir: Path) -> None:
    store = await JobStore.open(data_dir)
    jobs = [await new_job(store, user_id=i, interaction_token=f"t{i}") for i in range(5)]
    await finish(store, jobs[0].id, score=93)
    await store.fail(jobs[1].id, "nope")
    await store.close()
    assert not (data_dir / f"{DB_NAME}-wal").exists()  # checkpointed into the main file on close

    proc = run_python(
        f"""
        import asyncio, hashlib, json
        from bot.store import JobStore
        async def main():
            store = await JobStore.open({str(data_dir)!r})
            jobs = [j for u in range(5) for j in await store.history(u)]
            image = await store.read_image({jobs[0].id!r})
            print(json.dumps({{"states": [j.state for j in jobs], "score": jobs[0].score,
                              "tokens": [j.interaction_token for j in jobs],
                              "image": hashlib.sha256(image).hexdigest()}}))
            await store.close()
        asyncio.run(main())
        """
    )
    seen = json.loads(proc.stdout)
    assert seen["states"] == ["done", "failed", "queued", "queued", "queued"]
    assert seen["score"] == 93 and seen["image"] == hashlib.sha256(PNG).hexdigest()
    assert seen["tokens"] == ["t0", "t1", "t2", "t3", "t4"]  # kept until delivered (or 15 min)


async def test_second_process_on_same_data_dir_is_refused(store: JobStore, data_dir: Path) -> None:
    proc = run_python(
        f"""
        import asyncio
        from bot.store import JobStore, StoreError
        try:
            asyncio.run(JobStore.open({str(data_dir)!r}))
        except StoreError as exc:
            print(exc)
        """
    )
    assert "Another VoxCanvas process is already using DATA_DIR" in proc.stdout
    assert str(data_dir) in proc.stdout
    await new_job(store)  # the first one is unaffected


# ------------------------------------------------------------------------------------------------
# History, delete, retention
# ------------------------------------------------------------------------------------------------
async def test_history_newest_first_with_limit(data_dir: Path) -> None:
    clock = Clock(1_700_000_000.0)
    store = await JobStore.open(data_dir, clock=clock)
    try:
        ids = []
        for i in range(12):
            clock.now += 1
            ids.append((await new_job(store, user_id=1, idea={"text": f"idea {i}"})).id)
        await new_job(store, user_id=2)
        assert [j.id for j in await store.history(1)] == ids[::-1][:10]  # default limit 10
        assert [j.id for j in await store.history(1, limit=3)] == ids[::-1][:3]
        assert len(await store.history(1, limit=50)) == 12
        assert await store.history(1, limit=0) == []
        assert await store.history(3) == []
        same_second = [(await new_job(store, user_id=4)).id for _ in range(3)]
        assert [j.id for j in await store.history(4)] == same_second[::-1]  # ties: insert order
    finally:
        await store.close()


async def test_delete_only_by_owner_removes_row_and_files(store: JobStore, data_dir: Path) -> None:
    job = await new_job(store, user_id=1, audio=b"OggS")
    with pytest.raises(JobStateError, match="cancel it first"):
        await store.delete(job.id, user_id=1)
    await finish(store, job.id)
    directory = data_dir / "jobs" / job.id
    assert directory.is_dir()
    assert await store.delete(job.id, user_id=2) is False  # not theirs
    assert await store.get(job.id) is not None and directory.is_dir()
    assert await store.delete(job.id, user_id=1) is True
    assert await store.get(job.id) is None and not directory.exists()
    assert await store.delete(job.id, user_id=1) is False  # gone
    assert await store.delete("../data", user_id=1) is False


async def test_complete_of_a_job_deleted_meanwhile_leaves_no_files(store: JobStore, data_dir: Path) -> None:
    job = await new_job(store)
    await store.fail(job.id, "x", state="cancelled")
    assert await store.delete(job.id, user_id=1)
    with pytest.raises(JobNotFound):
        await store.complete(job.id, result_json=RESULT, score=1, title=None, image_png=PNG, palette_png=PALETTE)
    assert not (data_dir / "jobs" / job.id).exists()


async def test_purge_by_age(data_dir: Path) -> None:
    clock = Clock(1_700_000_000.0)
    store = await JobStore.open(data_dir, clock=clock)
    try:
        old_done = await new_job(store, audio=b"OggS")
        await finish(store, old_done.id)
        old_failed = await new_job(store)
        await store.fail(old_failed.id, "x")
        old_queued = await new_job(store)  # never purged while unfinished
        orphan = data_dir / "jobs" / "orphan-from-a-crash"
        orphan.mkdir()
        (orphan / "audio.ogg").write_bytes(b"x")
        os.utime(orphan, (clock.now, clock.now))
        clock.now += 10 * 86_400
        recent = await new_job(store)
        await finish(store, recent.id)
        assert await store.purge(0) == 0  # 0 = keep forever
        assert await store.purge(30) == 0
        clock.now += 1  # now 10 days + 1 s after the old ones
        assert await store.purge(10) == 2
        assert await store.get(old_done.id) is None and await store.get(old_failed.id) is None
        assert not (data_dir / "jobs" / old_done.id).exists() and not orphan.exists()
        assert await store.get(old_queued.id) is not None
        assert await store.read_image(recent.id) == PNG
    finally:
        await store.close()


# ------------------------------------------------------------------------------------------------
# Schema migrations
# ------------------------------------------------------------------------------------------------
def build_v1_database(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("BEGIN")
    for statement in MIGRATIONS[0].statements:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("COMMIT")
    raw.execute(
        "INSERT INTO jobs (id, user_id, channel_id, kind, idea, state, created_at, updated_at) "
        "VALUES ('old1', 3, 4, 'text', '{\"text\": \"a fox\"}', 'queued', 1.0, 1.0)"
    )
    raw.close()


async def test_old_schema_is_upgraded_in_place_keeping_rows(data_dir: Path) -> None:
    assert SCHEMA_VERSION >= 2
    build_v1_database(data_dir / DB_NAME)
    store = await JobStore.open(data_dir)
    try:
        old = await store.get("old1")
        assert old.idea == {"text": "a fox"} and old.state == "queued"
        assert len(old.delivery_nonce) == 20  # backfilled by migration 2
        assert [j.id for j in await store.unfinished()] == ["old1"]
        await finish(store, "old1")
    finally:
        await store.close()
    with sqlite3.connect(data_dir / DB_NAME) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert raw.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_newer_schema_version_is_refused(data_dir: Path) -> None:
    store = await JobStore.open(data_dir)
    await new_job(store)
    await store.close()
    with sqlite3.connect(data_dir / DB_NAME) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer VoxCanvas") as info:
        await JobStore.open(data_dir)
    assert str(data_dir / DB_NAME) in str(info.value)
    with sqlite3.connect(data_dir / DB_NAME) as raw:  # untouched
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)
        assert raw.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


# ------------------------------------------------------------------------------------------------
# Refusing files it can't trust, never wiping them
# ------------------------------------------------------------------------------------------------
async def _truncated_db(path: Path) -> None:
    store = await JobStore.open(path.parent)
    for i in range(60):
        await new_job(store, user_id=i, idea={"text": "x" * 3000})
    await store.close()
    data = path.read_bytes()
    assert len(data) > 64 * 1024
    path.write_bytes(data[: len(data) // 3])


async def _garbled_page(path: Path) -> None:
    store = await JobStore.open(path.parent)
    for i in range(60):
        await new_job(store, user_id=i, idea={"text": "x" * 3000})
    await store.close()
    data = bytearray(path.read_bytes())
    page = 4096  # a table page in the middle of the file: the header still reads fine
    data[2 * page + 16 : 3 * page - 16] = b"\xab" * (page - 32)
    path.write_bytes(bytes(data))


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(16 * 1024))


def _text_file(path: Path) -> None:
    path.write_text("these are my notes, not a database\n" * 50)


def _foreign_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE recipes (name TEXT)")


@pytest.mark.parametrize(
    "spoil, expected",
    [
        (_random_bytes, "is not a valid database"),
        (_text_file, r"is not a valid database \(file is not a database\)"),
        (_truncated_db, r"is not a valid database \(database disk image is malformed\)"),
        (_garbled_page, r"is corrupt \(quick_check: "),
        (_foreign_sqlite, "not a VoxCanvas one"),
    ],
    ids=["random-bytes", "text-file", "truncated", "garbled-page", "foreign-sqlite"],
)
async def test_bad_database_file_is_refused_and_kept(data_dir: Path, spoil, expected) -> None:
    data_dir.mkdir()
    path = data_dir / DB_NAME
    result = spoil(path)
    if asyncio.iscoroutine(result):
        await result
    before = path.read_bytes()
    with pytest.raises(StoreError, match=expected) as info:
        await JobStore.open(data_dir)
    message = str(info.value)
    print(message)
    assert str(path) in message and len(message) < 600
    assert "Move it aside" in message
    assert path.read_bytes() == before  # never recreated, never wiped
    # the lock was released: after moving the file aside, the store starts fresh
    path.rename(data_dir / "voxcanvas.db.broken")
    for sidecar in ("-wal", "-shm"):
        (data_dir / f"{DB_NAME}{sidecar}").unlink(missing_ok=True)
    store = await JobStore.open(data_dir)
    await store.close()


async def test_database_path_that_is_a_directory_is_refused(data_dir: Path) -> None:
    (data_dir / DB_NAME).mkdir(parents=True)
    with pytest.raises(StoreError) as info:
        await JobStore.open(data_dir)
    assert str(data_dir / DB_NAME) in str(info.value)


async def test_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("oops")
    with pytest.raises(StoreError, match="DATA_DIR .* can't be used") as info:
        await JobStore.open(not_a_dir)
    assert str(not_a_dir) in str(info.value)
    with pytest.raises(StoreError, match="can't be used"):
        await JobStore.open(not_a_dir / "below")
    assert not_a_dir.read_text() == "oops"


async def test_read_only_data_dir_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "ro"
    data_dir.mkdir()
    data_dir.chmod(0o500)
    try:
        try:
            (data_dir / "probe").write_bytes(b"")
        except PermissionError:
            pass
        else:
            pytest.skip(
                "permission bits are not enforced for this user (root, or CAP_DAC_OVERRIDE): a "
                "0o500 DATA_DIR is writable here, so it proves nothing (the regular-file DATA_DIR "
                "test covers the error path)"
            )
        with pytest.raises(StoreError, match="can't be used") as info:
            await JobStore.open(data_dir)
        assert str(data_dir) in str(info.value)
        with pytest.raises(StoreError, match="can't be used"):
            await JobStore.open(data_dir / "sub")  # can't even be created
    finally:
        data_dir.chmod(0o700)
    # a writable directory holding a read-only database file
    store = await JobStore.open(data_dir)
    await store.close()
    (data_dir / DB_NAME).chmod(0o400)
    with pytest.raises(StoreError, match="can't be opened for writing") as info:
        await JobStore.open(data_dir)
    assert str(data_dir / DB_NAME) in str(info.value)


async def test_database_locked_by_another_process_is_refused(data_dir: Path) -> None:
    store = await JobStore.open(data_dir)
    await store.close()
    holder = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process (a sqlite3 shell) holds the write lock
    try:
        started = time.perf_counter()
        with pytest.raises(StoreError, match="is locked by another process") as info:
            await JobStore.open(data_dir, busy_timeout_ms=200)
        assert time.perf_counter() - started >= 0.15  # it waited the busy timeout first
        assert str(data_dir / DB_NAME) in str(info.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store = await JobStore.open(data_dir)  # and opens fine once the other one is gone
    await store.close()


# ------------------------------------------------------------------------------------------------
# Concurrency, cancellation, backup
# ------------------------------------------------------------------------------------------------
async def test_200_concurrent_jobs_land_without_blocking_the_loop(store: JobStore) -> None:
    lags: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - t0 - 0.005)

    async def one(i: int) -> str:
        job = await store.create_job(user_id=i % 7, channel_id=1, kind="voice", idea={"n": i}, audio=b"OggS%d" % i)
        await store.mark_running(job.id)
        await store.complete(
            job.id,
            result_json=json.dumps({"n": i}),
            score=i % 100,
            title=f"#{i}",
            image_png=b"img%d" % i,
            palette_png=b"pal",
        )
        return job.id

    beat = asyncio.create_task(heartbeat())
    started = time.perf_counter()
    ids = await asyncio.gather(*(one(i) for i in range(200)))
    elapsed = time.perf_counter() - started
    stop.set()
    await beat
    assert len(set(ids)) == 200
    records = [await store.get(i) for i in ids]
    assert all(r.state == "done" and r.attempts == 1 for r in records)
    assert [await store.read_image(ids[i]) for i in (0, 99, 199)] == [b"img0", b"img99", b"img199"]
    assert await store.count_active() == 0
    print(f"200 jobs in {elapsed:.2f}s, {len(lags)} ticks, max lag {max(lags) * 1e3:.1f} ms")
    # loose bounds for a busy CI box; SQL or file I/O on the loop would stall it for the batch
    assert len(lags) >= elapsed / 0.05, "the heartbeat should tick all the way through"
    assert max(lags) < 0.25


async def test_cancelled_caller_leaves_no_open_transaction(store: JobStore) -> None:
    jobs = [await new_job(store) for _ in range(20)]
    tasks = [asyncio.create_task(store.mark_running(j.id)) for j in jobs]
    await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.05)
    # every write ran to completion regardless of its caller; the store still works
    assert [(await store.get(j.id)).attempts for j in jobs] == [1] * len(jobs)
    await finish(store, (await new_job(store)).id)


async def test_backup_opens_with_the_store(store: JobStore, tmp_path: Path) -> None:
    done = await new_job(store, user_id=3)
    await finish(store, done.id)
    queued = await new_job(store, user_id=4)
    dest = tmp_path / "backups" / DB_NAME
    assert await store.backup(dest) == dest
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


async def test_close_finishes_writes_already_admitted(data_dir: Path) -> None:
    store = await JobStore.open(data_dir)
    tasks = [asyncio.create_task(new_job(store, job_id=f"j{i}")) for i in range(20)]
    await asyncio.sleep(0)  # every create has been admitted
    await store.close()
    assert all(t.done() and not t.exception() for t in tasks)
    store = await JobStore.open(data_dir)
    try:
        assert len(await store.unfinished()) == 20
    finally:
        await store.close()


async def test_closed_store_says_so(data_dir: Path) -> None:
    store = await JobStore.open(data_dir)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await new_job(store)
