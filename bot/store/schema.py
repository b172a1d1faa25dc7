"""The database: its schema as versioned migrations, the one transaction helper, and opening it.

``PRAGMA user_version`` holds the schema version; :data:`MIGRATIONS` lists the steps in order and
each one runs in its own transaction together with the version bump. A database written by a
newer VoxCanvas, a file that is not a database, a corrupt one, a locked one or an unwritable
DATA_DIR raise :class:`StoreError` with what to do; nothing is ever recreated or wiped.

A migration is history: its SQL stays as it was released (the ``CHECK`` lists of migration 1 spell
out :data:`~bot.store.records.KINDS` and :data:`~bot.store.records.STATES` as they were then; the
tests check that they still agree). A new kind or state is a new migration.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiosqlite

from .errors import StoreError, open_error

log = logging.getLogger(__name__)

APPLICATION_ID: Final = 0x566F7843  # "VoxC" in the SQLite header: this file is ours
BUSY_TIMEOUT_MS: Final = 5_000


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "jobs table",
        (
            f"PRAGMA application_id = {APPLICATION_ID}",
            """
            CREATE TABLE jobs (
                id                     TEXT PRIMARY KEY,
                user_id                INTEGER NOT NULL,
                guild_id               INTEGER,
                channel_id             INTEGER NOT NULL,
                kind                   TEXT NOT NULL
                                       CHECK (kind IN ('text', 'voice', 'regenerate', 'vary')),
                parent_job_id          TEXT REFERENCES jobs(id) ON DELETE SET NULL,
                idea                   TEXT NOT NULL,
                source_message_id      INTEGER,
                interaction_id         INTEGER,
                interaction_token      TEXT,
                interaction_created_at REAL,
                progress_message_id    INTEGER,
                state                  TEXT NOT NULL DEFAULT 'queued'
                                       CHECK (state IN ('queued', 'running', 'done', 'failed',
                                                        'cancelled')),
                error                  TEXT,
                result_json            TEXT,
                score                  INTEGER,
                title                  TEXT,
                audio_file             TEXT,
                init_image_file        TEXT,
                image_file             TEXT,
                palette_file           TEXT,
                delivered_message_id   INTEGER,
                delivered_channel_id   INTEGER,
                attempts               INTEGER NOT NULL DEFAULT 0,
                created_at             REAL NOT NULL,
                updated_at             REAL NOT NULL,
                finished_at            REAL
            )
            """,
            "CREATE INDEX jobs_by_state ON jobs (state, created_at)",
            "CREATE INDEX jobs_by_user ON jobs (user_id, created_at)",
            "CREATE INDEX jobs_by_parent ON jobs (parent_job_id)",
        ),
    ),
    Migration(
        2,
        "exactly-once delivery: delivery nonce and send marker; live-token index",
        (
            "ALTER TABLE jobs ADD COLUMN delivery_nonce TEXT",
            "ALTER TABLE jobs ADD COLUMN delivery_started_at REAL",
            "UPDATE jobs SET delivery_nonce = lower(hex(randomblob(10))) WHERE delivery_nonce IS NULL",
            "CREATE INDEX jobs_with_token ON jobs (interaction_created_at) WHERE interaction_token IS NOT NULL",
        ),
    ),
)
# SQLite can't change a CHECK constraint in place: migration 3 rebuilds the table (new kinds for
# music, a music_file column), with foreign-key checks deferred to the commit so that rows may be
# copied in any order; the new table references itself, and the rename keeps that reference.
_JOBS_V3_COLUMNS = (
    "id, user_id, guild_id, channel_id, kind, parent_job_id, idea, source_message_id, interaction_id, "
    "interaction_token, interaction_created_at, progress_message_id, state, error, result_json, score, title, "
    "audio_file, init_image_file, image_file, palette_file, delivered_message_id, delivered_channel_id, attempts, "
    "created_at, updated_at, finished_at, delivery_nonce, delivery_started_at"
)
MIGRATIONS += (
    Migration(
        3,
        "music: job kinds 'compose' and 'soundtrack', music_file",
        (
            "PRAGMA defer_foreign_keys = ON",
            """
            CREATE TABLE jobs_v3 (
                id                     TEXT PRIMARY KEY,
                user_id                INTEGER NOT NULL,
                guild_id               INTEGER,
                channel_id             INTEGER NOT NULL,
                kind                   TEXT NOT NULL
                                       CHECK (kind IN ('text', 'voice', 'regenerate', 'vary', 'compose',
                                                       'soundtrack')),
                parent_job_id          TEXT REFERENCES jobs_v3(id) ON DELETE SET NULL,
                idea                   TEXT NOT NULL,
                source_message_id      INTEGER,
                interaction_id         INTEGER,
                interaction_token      TEXT,
                interaction_created_at REAL,
                progress_message_id    INTEGER,
                state                  TEXT NOT NULL DEFAULT 'queued'
                                       CHECK (state IN ('queued', 'running', 'done', 'failed',
                                                        'cancelled')),
                error                  TEXT,
                result_json            TEXT,
                score                  INTEGER,
                title                  TEXT,
                audio_file             TEXT,
                init_image_file        TEXT,
                image_file             TEXT,
                palette_file           TEXT,
                delivered_message_id   INTEGER,
                delivered_channel_id   INTEGER,
                attempts               INTEGER NOT NULL DEFAULT 0,
                created_at             REAL NOT NULL,
                updated_at             REAL NOT NULL,
                finished_at            REAL,
                delivery_nonce         TEXT,
                delivery_started_at    REAL,
                music_file             TEXT
            )
            """,
            f"INSERT INTO jobs_v3 ({_JOBS_V3_COLUMNS}) SELECT {_JOBS_V3_COLUMNS} FROM jobs",
            "DROP TABLE jobs",
            "ALTER TABLE jobs_v3 RENAME TO jobs",
            "CREATE INDEX jobs_by_state ON jobs (state, created_at)",
            "CREATE INDEX jobs_by_user ON jobs (user_id, created_at)",
            "CREATE INDEX jobs_by_parent ON jobs (parent_job_id)",
            "CREATE INDEX jobs_with_token ON jobs (interaction_created_at) WHERE interaction_token IS NOT NULL",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        4,
        "servers and members: per-server settings, personal preferences, daily usage (quotas)",
        (
            """
            CREATE TABLE guild_settings (
                guild_id      INTEGER PRIMARY KEY,
                settings_json TEXT NOT NULL,
                updated_by    INTEGER,
                updated_at    REAL NOT NULL
            )
            """,
            """
            CREATE TABLE user_preferences (
                user_id    INTEGER PRIMARY KEY,
                prefs_json TEXT NOT NULL,
                updated_at REAL NOT NULL
            )
            """,
            # Jobs admitted per UTC day, user and server (0: DMs and the API). Counted at admission,
            # so deleting a job gives nothing back; old days are swept.
            """
            CREATE TABLE usage (
                day      TEXT NOT NULL,
                user_id  INTEGER NOT NULL,
                guild_id INTEGER NOT NULL DEFAULT 0,
                jobs     INTEGER NOT NULL DEFAULT 0,
                last_at  REAL NOT NULL,
                PRIMARY KEY (day, user_id, guild_id)
            ) WITHOUT ROWID
            """,
        ),
    ),
)
MIGRATIONS += (
    Migration(
        5,
        "server styles: a server's own style templates (/settings style)",
        (
            """
            CREATE TABLE guild_styles (
                guild_id   INTEGER NOT NULL,
                name       TEXT NOT NULL,
                style_json TEXT NOT NULL,
                created_by INTEGER,
                created_at REAL NOT NULL,
                PRIMARY KEY (guild_id, name)
            ) WITHOUT ROWID
            """,
        ),
    ),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1].version
assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


@contextlib.asynccontextmanager
async def transaction(conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; on any exception, cancellation included, ``ROLLBACK``.

    The connection is shared: it is never left in the middle of a transaction.
    """
    await conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        await conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        raise


async def scalar(conn: aiosqlite.Connection, sql: str) -> Any:
    """The first column of the first row of ``sql`` (``None`` without rows)."""
    rows = list(await conn.execute_fetchall(sql))
    return rows[0][0] if rows else None


async def connect(db_path: Path, *, busy_timeout_ms: int, durable: bool) -> aiosqlite.Connection:
    """Open ``db_path`` (created if missing), check that it is VoxCanvas's and migrate it.

    ``durable=False`` sets ``synchronous=NORMAL`` (tests and benchmarks only). Raises
    :class:`StoreError` saying what is wrong with the file and what to do.
    """
    conn: aiosqlite.Connection | None = None
    try:
        conn = await aiosqlite.connect(db_path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        conn.row_factory = sqlite3.Row
        await _check(conn, db_path, busy_timeout_ms)
        mode = await scalar(conn, "PRAGMA journal_mode = WAL")
        if str(mode).lower() != "wal":
            log.warning("%s: WAL mode unavailable (journal_mode=%s)", db_path, mode)
        await conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        await _migrate(conn, db_path)
        return conn
    except BaseException as exc:
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
        if isinstance(exc, sqlite3.Error | OSError):
            raise open_error(db_path, exc, busy_timeout_ms) from exc
        raise


async def _check(conn: aiosqlite.Connection, db_path: Path, busy_timeout_ms: int) -> None:
    """Refuse a file that is corrupt, from a newer VoxCanvas, or another program's database."""
    await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    await conn.execute("PRAGMA foreign_keys = ON")
    # The first read: a file that is not SQLite fails here ("file is not a database").
    version = await scalar(conn, "PRAGMA user_version")
    problems = [str(row[0]) for row in await conn.execute_fetchall("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        lines = [
            line.strip()
            for problem in problems
            for line in problem.splitlines()
            if line.strip() and not line.startswith("*** in database")
        ]
        shown = "; ".join(lines[:3]) + ("; …" if len(lines) > 3 else "")
        raise StoreError(
            f"{db_path} is corrupt (quick_check: {shown}). Move it aside to start fresh, or restore it from a backup."
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{db_path} was written by a newer VoxCanvas (schema version {version}; this one "
            f"knows up to {SCHEMA_VERSION}). Run the newer VoxCanvas, or restore a backup made "
            "by this version."
        )
    if version == 0:
        tables = await scalar(conn, "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        if tables:
            raise StoreError(
                f"{db_path} is an SQLite database but not a VoxCanvas one (it has {tables} "
                "object(s) and no VoxCanvas schema). Move it aside, or point DATA_DIR elsewhere."
            )
    elif await scalar(conn, "PRAGMA application_id") != APPLICATION_ID:
        raise StoreError(
            f"{db_path} is an SQLite database but not a VoxCanvas one (wrong application id). "
            "Move it aside, or point DATA_DIR elsewhere."
        )


async def _migrate(conn: aiosqlite.Connection, db_path: Path) -> None:
    """Run the migrations this file lacks, each in its own transaction with its version bump."""
    version = await scalar(conn, "PRAGMA user_version")
    for migration in MIGRATIONS:
        if migration.version <= version:
            continue
        async with transaction(conn):
            # Re-read under the write lock: another opener may have migrated meanwhile.
            if await scalar(conn, "PRAGMA user_version") < migration.version:
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {migration.version}")
        log.info("%s: migrated to schema v%d (%s)", db_path, migration.version, migration.description)
    # Write probe (rewrites the header's version): proves the file is writable and not held by
    # another writer right now.
    async with transaction(conn):
        await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
