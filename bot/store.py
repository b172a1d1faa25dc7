"""The job store: every job, its files and its delivery, on disk, surviving restarts and crashes.

Layout under ``DATA_DIR``::

    voxcanvas.db          SQLite (WAL), one row per job in ``jobs``
    voxcanvas.db-wal/-shm SQLite's write-ahead log (present while open, or after a crash)
    voxcanvas.lock        advisory lock: one VoxCanvas process per DATA_DIR
    jobs/<job_id>/        audio.<ext>, init.png, image.png, palette.png, result.json

Guarantees
- Nothing the event loop awaits blocks it: SQL runs on aiosqlite's connection thread, file I/O in
  ``asyncio.to_thread``.
- Writes are serialized: one connection, one :class:`asyncio.Lock`, each write one
  ``BEGIN IMMEDIATE … COMMIT`` transaction, shielded from the caller's cancellation so a cancelled
  task never leaves a transaction open. ``synchronous=FULL``: a committed job survives SIGKILL and
  power loss.
- Files are written first (temp file + fsync + ``os.replace``), the row second. A crash between
  the two leaves either an orphan directory (no row; swept by :meth:`JobStore.purge`) or, for
  :meth:`JobStore.complete`, a still-running row whose directory holds ``result.json``: at the next
  :meth:`JobStore.open` such a job is finished from its files instead of being rendered again.
- Start-up: :meth:`JobStore.unfinished` (queued/running → re-queue) and
  :meth:`JobStore.undelivered` (done/failed, never delivered → deliver). :meth:`record_delivery`
  succeeds once per job, so a result is delivered exactly once; ``delivery_nonce`` and
  ``delivery_started_at`` let the bot detect that a crash may have happened *during* a send.
- The interaction token is a credential: never in ``repr``/logs, hidden once older than 15 min,
  and cleared in the database on delivery or expiry.

Schema migrations: ``PRAGMA user_version`` holds the schema version; :data:`MIGRATIONS` lists the
steps in order and each one runs in its own transaction together with the version bump. A database
written by a newer VoxCanvas, a file that is not a database, a corrupt one, a locked one or an
unwritable DATA_DIR raise :class:`StoreError` with what to do; nothing is ever recreated or wiped.

Back-up: ``python -m bot.store backup DEST`` (safe while the bot runs; SQLite's online backup API),
then copy ``DATA_DIR/jobs/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import aiosqlite

from pipeline.errors import VoxCanvasError

try:  # POSIX only; elsewhere the single-process rule is not enforced
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

T = TypeVar("T")

DB_NAME = "voxcanvas.db"
LOCK_NAME = "voxcanvas.lock"
JOBS_DIR = "jobs"
APPLICATION_ID = 0x566F7843  # "VoxC" in the SQLite header: this file is ours
BUSY_TIMEOUT_MS = 5_000
INTERACTION_TOKEN_TTL_S = 15 * 60
_TOKEN_SWEEP_EVERY_S = 60.0

IMAGE_FILE = "image.png"
PALETTE_FILE = "palette.png"
INIT_IMAGE_FILE = "init.png"
RESULT_MARKER = "result.json"

JobKind = Literal["text", "voice", "regenerate", "vary"]
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
KINDS: frozenset[str] = frozenset(get_args(JobKind))
ACTIVE_STATES = ("queued", "running")
FINISHED_STATES = ("done", "failed", "cancelled")
DELIVERABLE_STATES = ("done", "failed")

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_AUDIO_EXT = re.compile(r"[a-z0-9]{1,8}")


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------
class StoreError(VoxCanvasError):
    """The job store can't be opened or can't do what was asked.

    Raised by :meth:`JobStore.open` with a message for the operator (names the file, says what to
    do); at run time the message is fit to show a user and the detail goes to the log.
    """

    default_message = "I couldn't save or load that job right now — please try again in a minute."


class JobNotFound(StoreError):
    default_message = "I can't find that picture any more — it may have been deleted or expired."


class JobStateError(StoreError):
    """The job is not in a state that allows the operation (e.g. cancelling a finished job)."""

    default_message = "That job has already finished."


# ------------------------------------------------------------------------------------------------
# Schema
# ------------------------------------------------------------------------------------------------
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
SCHEMA_VERSION = MIGRATIONS[-1].version
assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


# ------------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as stored. Times are UTC epoch seconds (floats). Read-only snapshot."""

    id: str
    user_id: int
    guild_id: int | None
    channel_id: int
    kind: str
    parent_job_id: str | None
    idea: dict[str, Any] = field(hash=False)
    source_message_id: int | None = None
    interaction_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)  # credential: never log
    interaction_created_at: float | None = None
    progress_message_id: int | None = None
    state: str = "queued"
    error: str | None = None
    result_json: str | None = field(default=None, repr=False)
    score: int | None = None
    title: str | None = None
    audio_file: str | None = None
    init_image_file: str | None = None
    image_file: str | None = None
    palette_file: str | None = None
    delivered_message_id: int | None = None
    delivered_channel_id: int | None = None
    delivery_nonce: str = ""
    delivery_started_at: float | None = None
    attempts: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def delivered(self) -> bool:
        return self.delivered_message_id is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_file is not None

    @property
    def has_init_image(self) -> bool:
        return self.init_image_file is not None


_RECORD_FIELDS = tuple(JobRecord.__dataclass_fields__)


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, *, durable: bool) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _write_files(directory: Path, files: Iterable[tuple[str, bytes]], *, durable: bool, new_dir: bool = False) -> None:
    """Write ``files`` atomically into ``directory`` (created; must not exist if ``new_dir``)."""
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=not new_dir)
    for name, data in files:
        _atomic_write(directory / name, data, durable=durable)
    if durable:
        _fsync_dir(directory)
        if created:
            _fsync_dir(directory.parent)


def _read_file(path: Path) -> bytes:
    return path.read_bytes()


def _unlink_all(directory: Path, names: Iterable[str]) -> None:
    for name in names:
        with contextlib.suppress(OSError):
            (directory / name).unlink()


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# Opening: errors with something to do about them
# ------------------------------------------------------------------------------------------------
def _open_error(db_path: Path, exc: BaseException, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> StoreError:
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if "locked" in low or "busy" in low:
        return StoreError(
            f"{db_path} is locked by another process (still locked after the "
            f"{busy_timeout_ms / 1000:g} s busy timeout). Stop the other VoxCanvas or sqlite3 "
            "session using it, then start again."
        )
    if "readonly" in low or "read-only" in low or "unable to open" in low or isinstance(exc, PermissionError):
        return StoreError(
            f"{db_path} can't be opened for writing ({text}). Make DATA_DIR a directory the "
            "VoxCanvas user can write to."
        )
    return StoreError(
        f"{db_path} is not a valid database ({text}). Move it aside to start fresh, or restore it from a backup."
    )


def backup_database(source: Path, dest: Path) -> Path:
    """Copy the live database ``source`` to ``dest`` with SQLite's online backup API.

    Safe while VoxCanvas is running (a consistent snapshot of committed jobs). ``dest`` is written
    atomically and checked. Images live in ``jobs/`` next to the database: copy that directory
    after the backup (its files are never modified once written).
    """
    source, dest = Path(source), Path(dest)
    if not source.is_file():
        raise StoreError(f"{source} does not exist: nothing to back up.")
    if dest.exists() and dest.resolve() == source.resolve():
        raise StoreError(f"Refusing to back {source} up onto itself.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    uri = "file:" + urllib.parse.quote(str(source.resolve())) + "?mode=ro"
    try:
        src = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
                check = [row[0] for row in dst.execute("PRAGMA quick_check")]
                if check != ["ok"]:
                    raise StoreError(f"The backup of {source} failed its check: {check[:3]}")
            finally:
                dst.close()
        finally:
            src.close()
        os.replace(tmp, dest)
    except sqlite3.Error as exc:
        raise _open_error(source, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return dest


# ------------------------------------------------------------------------------------------------
# The store
# ------------------------------------------------------------------------------------------------
class JobStore:
    """Async job store over one SQLite file in ``DATA_DIR``. Build it with :meth:`open`."""

    def __init__(
        self,
        data_dir: Path,
        conn: aiosqlite.Connection,
        lock_fd: int | None,
        *,
        durable: bool,
        clock: Callable[[], float],
    ) -> None:
        self.data_dir = data_dir
        self.db_path = data_dir / DB_NAME
        self.jobs_dir = data_dir / JOBS_DIR
        self._conn: aiosqlite.Connection | None = conn
        self._lock_fd = lock_fd
        self._durable = durable
        self._now = clock
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._last_token_sweep = float("-inf")

    # --- life cycle ----------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        data_dir: Path | str,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        durable: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> JobStore:
        """Open (creating if needed) the store in ``data_dir``, migrating it to this version.

        Raises :class:`StoreError` when the directory can't be used, another process holds it,
        the database is corrupt, not a database, not VoxCanvas's, or from a newer VoxCanvas.
        ``durable=False`` skips fsyncs (tests and benchmarks only).
        """
        data_dir = Path(data_dir)
        db_path = data_dir / DB_NAME
        lock_fd = await asyncio.to_thread(cls._prepare_dir, data_dir)
        conn: aiosqlite.Connection | None = None
        try:
            try:
                conn = await aiosqlite.connect(db_path, isolation_level=None, timeout=busy_timeout_ms / 1000)
                conn.row_factory = sqlite3.Row
                await cls._check_and_migrate(conn, db_path, busy_timeout_ms, durable)
            except (sqlite3.Error, OSError) as exc:
                raise _open_error(db_path, exc, busy_timeout_ms) from exc
            store = cls(data_dir, conn, lock_fd, durable=durable, clock=clock)
            await store._recover_completed()
            await store.clear_expired_tokens()
        except BaseException:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            cls._release_lock(lock_fd)
            raise
        active = await store.count_active()
        log.info("job store open: %s (schema v%d, %d unfinished job(s))", db_path, SCHEMA_VERSION, active)
        return store

    @staticmethod
    def _prepare_dir(data_dir: Path) -> int | None:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            (data_dir / JOBS_DIR).mkdir(exist_ok=True)
            probe = data_dir / f".write-probe-{secrets.token_hex(4)}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(
                f"DATA_DIR {data_dir} can't be used ({exc.strerror or exc}). Point DATA_DIR at a "
                "directory the VoxCanvas user can create and write to."
            ) from exc
        if fcntl is None:  # pragma: no cover
            return None
        lock_path = data_dir / LOCK_NAME
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreError(
                f"Another VoxCanvas process is already using DATA_DIR {data_dir} (it holds "
                f"{lock_path}). Stop it first, or give this one its own DATA_DIR."
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    @staticmethod
    def _release_lock(fd: int | None) -> None:
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    async def _check_and_migrate(
        conn: aiosqlite.Connection, db_path: Path, busy_timeout_ms: int, durable: bool
    ) -> None:
        async def scalar(sql: str) -> Any:
            rows = await conn.execute_fetchall(sql)
            return rows[0][0] if rows else None

        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await conn.execute("PRAGMA foreign_keys = ON")
        # The first read: a file that is not SQLite fails here ("file is not a database").
        version = await scalar("PRAGMA user_version")
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
                f"{db_path} is corrupt (quick_check: {shown}). Move it aside to start fresh, or "
                "restore it from a backup."
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{db_path} was written by a newer VoxCanvas (schema version {version}; this one "
                f"knows up to {SCHEMA_VERSION}). Run the newer VoxCanvas, or restore a backup made "
                "by this version."
            )
        if version == 0:
            tables = await scalar("SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
            if tables:
                raise StoreError(
                    f"{db_path} is an SQLite database but not a VoxCanvas one (it has {tables} "
                    "object(s) and no VoxCanvas schema). Move it aside, or point DATA_DIR "
                    "elsewhere."
                )
        elif await scalar("PRAGMA application_id") != APPLICATION_ID:
            raise StoreError(
                f"{db_path} is an SQLite database but not a VoxCanvas one (wrong application id). "
                "Move it aside, or point DATA_DIR elsewhere."
            )

        mode = await scalar("PRAGMA journal_mode = WAL")
        if str(mode).lower() != "wal":
            log.warning("%s: WAL mode unavailable (journal_mode=%s)", db_path, mode)
        await conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")

        for migration in MIGRATIONS:
            if migration.version <= version:
                continue
            await conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: another opener may have migrated meanwhile.
                current = await scalar("PRAGMA user_version")
                if current < migration.version:
                    for statement in migration.statements:
                        await conn.execute(statement)
                    await conn.execute(f"PRAGMA user_version = {migration.version}")
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
            log.info("%s: migrated to schema v%d (%s)", db_path, migration.version, migration.description)
        # Write probe (rewrites the header's version): proves the file is writable and not held
        # by another writer right now.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Finish in-flight writes, checkpoint and close. Idempotent."""
        if self._closed:
            return
        self._closed = True  # refuse new work; what is in flight still runs
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        try:
            async with self._lock:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await conn.close()
        finally:
            self._release_lock(self._lock_fd)
            self._lock_fd = None

    async def __aenter__(self) -> JobStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- plumbing ------------------------------------------------------------------------------
    def _connection(self) -> aiosqlite.Connection:
        if self._closed or self._conn is None:
            raise StoreError("The job store is closed.")
        return self._conn

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        self._connection()
        async with self._lock:  # never see another task's uncommitted transaction
            conn = self._connection()
            try:
                return list(await conn.execute_fetchall(sql, tuple(params)))
            except sqlite3.Error as exc:
                raise self._runtime_error(exc) from exc

    async def _write(self, body: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``body`` in one ``BEGIN IMMEDIATE … COMMIT``, serialized and cancellation-safe."""
        self._connection()
        task = asyncio.ensure_future(self._transaction(body))
        self._pending.add(task)
        task.add_done_callback(self._task_done)
        return await asyncio.shield(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller cancelled meanwhile must not warn

    async def _transaction(self, body: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        async with self._lock:
            conn = self._conn  # admitted by _write before close() began: still open
            if conn is None:
                raise StoreError("The job store is closed.")
            try:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    result = await body(conn)
                    await self._sweep_tokens(conn)
                    await conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # never leave the shared connection mid-transaction
                        await conn.execute("ROLLBACK")
                    raise
                return result
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise self._runtime_error(exc) from exc

    def _runtime_error(self, exc: sqlite3.Error) -> StoreError:
        log.error("job store %s: %s: %s", self.db_path, type(exc).__name__, exc)
        return StoreError()

    async def _sweep_tokens(self, conn: aiosqlite.Connection, *, force: bool = False) -> int:
        now = self._now()
        if not force and now - self._last_token_sweep < _TOKEN_SWEEP_EVERY_S:
            return 0
        self._last_token_sweep = now
        cursor = await conn.execute(
            "UPDATE jobs SET interaction_token = NULL "
            "WHERE interaction_token IS NOT NULL AND interaction_created_at < ?",
            (now - INTERACTION_TOKEN_TTL_S,),
        )
        return max(cursor.rowcount, 0)

    def _record(self, row: sqlite3.Row) -> JobRecord:
        values = {name: row[name] for name in _RECORD_FIELDS if name != "idea"}
        values["idea"] = json.loads(row["idea"])
        created = values["interaction_created_at"]
        if values["interaction_token"] is not None and (
            created is None or self._now() - created >= INTERACTION_TOKEN_TTL_S
        ):
            values["interaction_token"] = None
        values["delivery_nonce"] = values["delivery_nonce"] or ""
        return JobRecord(idea=values.pop("idea"), **values)

    @staticmethod
    async def _fetch(conn: aiosqlite.Connection, job_id: str) -> sqlite3.Row | None:
        rows = await conn.execute_fetchall("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def job_dir(self, job_id: str) -> Path:
        """``DATA_DIR/jobs/<job_id>`` (the id is checked: it comes from user-visible custom ids)."""
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise JobNotFound()
        return self.jobs_dir / job_id

    async def _update_active(
        self, job_id: str, assignments: str, params: tuple[Any, ...], *, states=ACTIVE_STATES
    ) -> JobRecord:
        """``UPDATE jobs SET <assignments> WHERE id AND state IN states``; the new record."""
        marks = ",".join("?" * len(states))

        async def body(conn: aiosqlite.Connection) -> JobRecord:
            cursor = await conn.execute(
                f"UPDATE jobs SET {assignments}, updated_at = ? WHERE id = ? AND state IN ({marks})",
                (*params, self._now(), job_id, *states),
            )
            row = await self._fetch(conn, job_id)
            if row is None:
                raise JobNotFound()
            if cursor.rowcount == 0:
                raise JobStateError(_state_message(row["state"]))
            return self._record(row)

        return await self._write(body)

    # --- creating ------------------------------------------------------------------------------
    async def create_job(
        self,
        *,
        user_id: int,
        channel_id: int,
        kind: JobKind,
        idea: dict[str, Any],
        guild_id: int | None = None,
        parent_job_id: str | None = None,
        source_message_id: int | None = None,
        interaction_id: int | None = None,
        interaction_token: str | None = None,
        interaction_created_at: float | None = None,
        progress_message_id: int | None = None,
        audio: bytes | None = None,
        audio_ext: str = "ogg",
        init_image: bytes | None = None,
        job_id: str | None = None,
    ) -> JobRecord:
        """Admit a job in state ``queued``. Its audio / init image are saved first, then the row.

        ``idea`` holds the request options (JSON-serializable); ``has_audio`` and
        ``has_init_image`` are set in the stored copy. Raises :class:`JobNotFound` when
        ``parent_job_id`` no longer exists.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
        job_id = job_id or uuid.uuid4().hex
        directory = self.job_dir(job_id)
        ext = audio_ext.lower().lstrip(".")
        if audio is not None and not _AUDIO_EXT.fullmatch(ext):
            raise ValueError(f"audio_ext must be a short alphanumeric extension, not {audio_ext!r}")
        stored_idea = dict(idea, has_audio=audio is not None, has_init_image=init_image is not None)
        idea_json = json.dumps(stored_idea, ensure_ascii=False, sort_keys=True)
        audio_file = f"audio.{ext}" if audio is not None else None
        init_file = INIT_IMAGE_FILE if init_image is not None else None
        files = [(n, d) for n, d in ((audio_file, audio), (init_file, init_image)) if d is not None]
        now = self._now()
        if interaction_token is not None and interaction_created_at is None:
            interaction_created_at = now

        if files:
            try:
                await asyncio.to_thread(_write_files, directory, files, durable=self._durable, new_dir=True)
            except FileExistsError:
                raise ValueError(f"job id {job_id!r} is already taken") from None
            except OSError as exc:
                log.error("job %s: can't save its input files: %s", job_id, exc)
                raise StoreError() from exc

        async def body(conn: aiosqlite.Connection) -> JobRecord:
            await conn.execute(
                """
                INSERT INTO jobs (id, user_id, guild_id, channel_id, kind, parent_job_id, idea,
                    source_message_id, interaction_id, interaction_token, interaction_created_at,
                    progress_message_id, state, audio_file, init_image_file, delivery_nonce,
                    attempts, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, 0, ?, ?)
                """,
                (
                    job_id,
                    user_id,
                    guild_id,
                    channel_id,
                    kind,
                    parent_job_id,
                    idea_json,
                    source_message_id,
                    interaction_id,
                    interaction_token,
                    interaction_created_at,
                    progress_message_id,
                    audio_file,
                    init_file,
                    secrets.token_hex(10),
                    now,
                    now,
                ),
            )
            row = await self._fetch(conn, job_id)
            assert row is not None
            return self._record(row)

        try:
            record = await self._write(body)
        except Exception as exc:  # not on cancellation: the shielded insert may still commit
            if files:
                await asyncio.to_thread(_remove_tree, directory)
            if isinstance(exc, sqlite3.IntegrityError):
                if parent_job_id is not None and "FOREIGN KEY" in str(exc).upper():
                    raise JobNotFound(
                        "The original picture is gone (deleted or expired), so I can't redo it."
                    ) from None
                raise ValueError(f"job id {job_id!r} is already taken") from None
            raise
        log.info("job %s: queued (%s, user %s)", job_id, kind, user_id)
        return record

    # --- reading -------------------------------------------------------------------------------
    async def get(self, job_id: str) -> JobRecord | None:
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            return None
        rows = await self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._record(rows[0]) if rows else None

    async def _require(self, job_id: str) -> JobRecord:
        record = await self.get(job_id)
        if record is None:
            raise JobNotFound()
        return record

    async def _read_job_file(self, job_id: str, name: str | None, missing: str) -> bytes:
        if name is None:
            raise JobStateError(missing)
        try:
            return await asyncio.to_thread(_read_file, self.job_dir(job_id) / name)
        except FileNotFoundError:
            log.error("job %s: %s is missing from %s", job_id, name, self.job_dir(job_id))
            raise JobNotFound("The files for that picture are missing — please make it again.")

    async def read_image(self, job_id: str) -> bytes:
        record = await self._require(job_id)
        return await self._read_job_file(job_id, record.image_file, "That picture isn't ready yet.")

    async def read_palette(self, job_id: str) -> bytes:
        record = await self._require(job_id)
        return await self._read_job_file(job_id, record.palette_file, "That picture isn't ready yet.")

    async def read_audio(self, job_id: str) -> bytes | None:
        record = await self._require(job_id)
        if record.audio_file is None:
            return None
        return await self._read_job_file(job_id, record.audio_file, "")

    async def read_init_image(self, job_id: str) -> bytes | None:
        record = await self._require(job_id)
        if record.init_image_file is None:
            return None
        return await self._read_job_file(job_id, record.init_image_file, "")

    async def unfinished(self) -> list[JobRecord]:
        """Queued and running jobs, oldest first: re-queue these at start-up."""
        rows = await self._read("SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at, rowid")
        return [self._record(r) for r in rows]

    async def undelivered(self) -> list[JobRecord]:
        """Done or failed jobs never delivered, oldest first: deliver these at start-up.

        A record with ``delivery_started_at`` set may already have been sent by the process that
        crashed: check for ``delivery_nonce`` / the job id in the channel before sending again.
        """
        rows = await self._read(
            "SELECT * FROM jobs WHERE state IN ('done', 'failed') "
            "AND delivered_message_id IS NULL ORDER BY finished_at, rowid"
        )
        return [self._record(r) for r in rows]

    async def history(self, user_id: int, limit: int = 10) -> list[JobRecord]:
        """The user's jobs, newest first."""
        if limit < 1:
            return []
        rows = await self._read(
            "SELECT * FROM jobs WHERE user_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (user_id, limit),
        )
        return [self._record(r) for r in rows]

    async def count_active(self, user_id: int | None = None) -> int:
        """Queued + running jobs, of one user or of everyone."""
        if user_id is None:
            rows = await self._read("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
        else:
            rows = await self._read(
                "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running') AND user_id = ?",
                (user_id,),
            )
        return int(rows[0][0])

    # --- state transitions ---------------------------------------------------------------------
    async def mark_running(self, job_id: str) -> JobRecord:
        """queued/running → running; ``attempts`` + 1 (a re-run after a crash counts again)."""
        return await self._update_active(job_id, "state = 'running', attempts = attempts + 1", ())

    async def set_progress_message(self, job_id: str, message_id: int | None) -> None:
        async def body(conn: aiosqlite.Connection) -> None:
            cursor = await conn.execute(
                "UPDATE jobs SET progress_message_id = ?, updated_at = ? WHERE id = ?",
                (message_id, self._now(), job_id),
            )
            if cursor.rowcount == 0:
                raise JobNotFound()

        await self._write(body)

    async def complete(
        self,
        job_id: str,
        *,
        result_json: str,
        score: int | None,
        title: str | None,
        image_png: bytes,
        palette_png: bytes,
    ) -> JobRecord:
        """→ done. Files first (image, palette, then ``result.json`` as marker), row second."""
        json.loads(result_json)  # must be JSON: it is read back by /history and buttons
        record = await self._require(job_id)
        if not record.active:
            raise JobStateError(_state_message(record.state))
        directory = self.job_dir(job_id)
        marker = json.dumps({"result_json": result_json, "score": score, "title": title})
        try:
            await asyncio.to_thread(self._write_result_files, directory, image_png, palette_png, marker.encode())
        except OSError as exc:
            log.error("job %s: can't save its picture: %s", job_id, exc)
            raise StoreError() from exc
        try:
            return await self._finish_row(job_id, result_json, score, title)
        except JobNotFound:  # deleted while rendering: don't leave its files behind
            await asyncio.to_thread(_remove_tree, directory)
            raise
        except JobStateError:  # cancelled/failed while rendering: drop the unused picture
            current = await self.get(job_id)
            if current is not None and current.image_file is None:
                await asyncio.to_thread(_unlink_all, directory, (IMAGE_FILE, PALETTE_FILE, RESULT_MARKER))
            raise

    def _write_result_files(self, directory: Path, image_png: bytes, palette_png: bytes, marker: bytes) -> None:
        _write_files(directory, [(IMAGE_FILE, image_png), (PALETTE_FILE, palette_png)], durable=self._durable)
        _write_files(directory, [(RESULT_MARKER, marker)], durable=self._durable)

    async def _finish_row(self, job_id: str, result_json: str, score: int | None, title: str | None) -> JobRecord:
        now = self._now()
        record = await self._update_active(
            job_id,
            "state = 'done', error = NULL, result_json = ?, score = ?, title = ?, "
            "image_file = ?, palette_file = ?, finished_at = ?",
            (result_json, score, title, IMAGE_FILE, PALETTE_FILE, now),
        )
        log.info("job %s: done (score %s)", job_id, score)
        return record

    async def fail(self, job_id: str, error: str, *, state: Literal["failed", "cancelled"] = "failed") -> JobRecord:
        """queued/running → failed or cancelled, with the message to show the user."""
        if state not in ("failed", "cancelled"):
            raise ValueError(f"state must be 'failed' or 'cancelled', not {state!r}")
        record = await self._update_active(job_id, "state = ?, error = ?, finished_at = ?", (state, error, self._now()))
        log.info("job %s: %s", job_id, state)
        return record

    async def begin_delivery(self, job_id: str) -> JobRecord:
        """Note that a send is about to happen (call right before posting the result)."""
        return await self._update_active(job_id, "delivery_started_at = ?", (self._now(),), states=FINISHED_STATES)

    async def record_delivery(self, job_id: str, *, message_id: int, channel_id: int) -> bool:
        """The result was posted: remember where, and forget the interaction token.

        Returns ``True`` the first time, ``False`` if the job had already been delivered (the
        first delivery is kept). Raises :class:`JobStateError` for a job not finished yet.
        """

        async def body(conn: aiosqlite.Connection) -> bool:
            cursor = await conn.execute(
                "UPDATE jobs SET delivered_message_id = ?, delivered_channel_id = ?, "
                "interaction_token = NULL, updated_at = ? "
                "WHERE id = ? AND delivered_message_id IS NULL "
                "AND state IN ('done', 'failed', 'cancelled')",
                (message_id, channel_id, self._now(), job_id),
            )
            if cursor.rowcount:
                return True
            row = await self._fetch(conn, job_id)
            if row is None:
                raise JobNotFound()
            if row["state"] in ACTIVE_STATES:
                raise JobStateError("That picture isn't finished yet.")
            return False

        first = await self._write(body)
        if not first:
            log.warning("job %s: delivered again (message %s ignored)", job_id, message_id)
        return first

    async def clear_expired_tokens(self) -> int:
        """Clear interaction tokens older than 15 min (also done on writes, once a minute)."""

        async def body(conn: aiosqlite.Connection) -> int:
            return await self._sweep_tokens(conn, force=True)

        return await self._write(body)

    # --- removing ------------------------------------------------------------------------------
    async def delete(self, job_id: str, *, user_id: int) -> bool:
        """Delete the user's own finished job: row then files. ``False`` if missing / not theirs.

        Raises :class:`JobStateError` for a queued or running job (cancel it first).
        """
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            return False

        async def body(conn: aiosqlite.Connection) -> bool:
            row = await self._fetch(conn, job_id)
            if row is None or row["user_id"] != user_id:
                return False
            if row["state"] in ACTIVE_STATES:
                raise JobStateError("That picture is still being made — cancel it first.")
            await conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            return True

        deleted = await self._write(body)
        if deleted:
            await asyncio.to_thread(_remove_tree, self.job_dir(job_id))
            log.info("job %s: deleted by its owner", job_id)
        return deleted

    async def purge(self, older_than_days: int) -> int:
        """Retention: delete finished jobs (rows and files) finished more than N days ago.

        Also removes job directories with no row (left by a crash) older than that. ``0`` keeps
        everything. Returns how many jobs were removed.
        """
        if older_than_days <= 0:
            return 0
        cutoff = self._now() - older_than_days * 86_400

        async def body(conn: aiosqlite.Connection) -> list[str]:
            rows = await conn.execute_fetchall(
                "SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') "
                "AND COALESCE(finished_at, updated_at) < ?",
                (cutoff,),
            )
            ids = [r[0] for r in rows]
            await conn.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])
            await self._sweep_tokens(conn, force=True)
            return ids

        removed = await self._write(body)
        known = {r[0] for r in await self._read("SELECT id FROM jobs")}
        await asyncio.to_thread(self._remove_job_dirs, removed, known, cutoff)
        if removed:
            log.info("purged %d job(s) finished more than %d day(s) ago", len(removed), older_than_days)
        return len(removed)

    def _remove_job_dirs(self, removed: list[str], known: set[str], cutoff: float) -> None:
        for job_id in removed:
            _remove_tree(self.jobs_dir / job_id)
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.jobs_dir):
                if entry.is_dir(follow_symlinks=False) and entry.name not in known:
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            _remove_tree(Path(entry.path))

    # --- crash recovery ------------------------------------------------------------------------
    async def _recover_completed(self) -> None:
        """Finish jobs whose files were saved by :meth:`complete` before a crash hit the row."""
        active = await self._read("SELECT id FROM jobs WHERE state IN ('queued', 'running')")
        if not active:
            return
        found = await asyncio.to_thread(self._find_markers, [r[0] for r in active])
        for job_id, marker in found:
            try:
                data = json.loads(marker)
                result_json = data["result_json"]
                json.loads(result_json)
            except (ValueError, KeyError, TypeError):
                log.warning("job %s: unreadable %s after a crash; it will run again", job_id, RESULT_MARKER)
                with contextlib.suppress(OSError):
                    (self.job_dir(job_id) / RESULT_MARKER).unlink()
                continue
            await self._finish_row(job_id, result_json, data.get("score"), data.get("title"))
            log.warning("job %s: finished before the last crash; recovered from its files", job_id)

    def _find_markers(self, job_ids: list[str]) -> list[tuple[str, bytes]]:
        found = []
        for job_id in job_ids:
            directory = self.jobs_dir / job_id
            marker = directory / RESULT_MARKER
            if marker.is_file():
                if (directory / IMAGE_FILE).is_file() and (directory / PALETTE_FILE).is_file():
                    found.append((job_id, marker.read_bytes()))
                else:
                    with contextlib.suppress(OSError):
                        marker.unlink()
        return found

    # --- backup --------------------------------------------------------------------------------
    async def backup(self, dest: Path | str) -> Path:
        """Snapshot the database to ``dest`` (SQLite online backup; runs beside normal work)."""
        self._connection()
        return await asyncio.to_thread(backup_database, self.db_path, Path(dest))


def _state_message(state: str) -> str:
    return {
        "done": "That picture is already finished.",
        "failed": "That job already failed.",
        "cancelled": "That job was cancelled.",
    }.get(state, "That job can't do that right now.")


# ------------------------------------------------------------------------------------------------
# python -m bot.store backup DEST  |  python -m bot.store check
# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bot.store", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, help="defaults to the DATA_DIR setting")
    sub = parser.add_subparsers(dest="command", required=True)
    backup_cmd = sub.add_parser("backup", help="online backup of voxcanvas.db (safe while running)")
    backup_cmd.add_argument("dest", type=Path)
    sub.add_parser("check", help="integrity check and schema version of voxcanvas.db")
    args = parser.parse_args(argv)

    data_dir = args.data_dir
    if data_dir is None:
        from pipeline.settings import get_settings

        data_dir = get_settings().DATA_DIR
    db_path = Path(data_dir) / DB_NAME
    try:
        if args.command == "backup":
            dest = backup_database(db_path, args.dest)
            print(f"backed up {db_path} to {dest}; now copy {Path(data_dir) / JOBS_DIR}/ too")
            return 0
        if not db_path.is_file():
            raise StoreError(f"{db_path} does not exist.")
        uri = "file:" + urllib.parse.quote(str(db_path.resolve())) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            check = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0] if version else 0
        except sqlite3.Error as exc:
            raise _open_error(db_path, exc) from exc
        finally:
            conn.close()
        print(
            f"{db_path}: schema v{version} (this VoxCanvas: v{SCHEMA_VERSION}), {jobs} job(s), "
            f"integrity: {'; '.join(check[:5])}"
        )
        return 0 if check == ["ok"] else 1
    except StoreError as exc:
        print(f"error: {exc}")
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
