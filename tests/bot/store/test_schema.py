"""Schema migrations, and refusing files the store can't trust (never wiping them)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import aiosqlite
import pytest

from bot.store import APPLICATION_ID, DB_NAME, MIGRATIONS, SCHEMA_VERSION, JobStore, StoreError
from bot.store.schema import transaction
from tests.bot.store.helpers import finish, new_job


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
# The one transaction helper
# ------------------------------------------------------------------------------------------------
async def test_transaction_commits_or_rolls_back_and_never_stays_open(tmp_path: Path) -> None:
    conn = await aiosqlite.connect(tmp_path / "t.db", isolation_level=None)
    try:
        await conn.execute("CREATE TABLE t (n INTEGER)")
        async with transaction(conn):
            await conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(RuntimeError, match="boom"):
            async with transaction(conn):
                await conn.execute("INSERT INTO t VALUES (2)")
                raise RuntimeError("boom")
        assert not conn.in_transaction

        async def cancelled_midway() -> None:
            async with transaction(conn):
                await conn.execute("INSERT INTO t VALUES (3)")
                await asyncio.sleep(10)

        task = asyncio.create_task(cancelled_midway())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not conn.in_transaction
        assert [tuple(r) for r in await conn.execute_fetchall("SELECT n FROM t")] == [(1,)]
    finally:
        await conn.close()
