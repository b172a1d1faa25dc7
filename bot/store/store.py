"""The job store itself: :class:`JobStore`, one async object over the SQLite file and the job files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from . import files, rows, schema
from .backup import backup_database
from .database import Database
from .errors import JobNotFound, JobStateError
from .files import (
    CANDIDATE_FILES,
    CONTROL_FILE,
    CONTROL_INPUT_FILE,
    DB_NAME,
    GRID_FILE,
    IMAGE_FILE,
    JOBS_DIR,
    MUSIC_FILE,
    MUSIC_RESULT_FILES,
    MUSIC_WAV_FILE,
    PALETTE_FILE,
    RESULT_FILES,
    RESULT_MARKER,
    JobFiles,
    JobInputs,
    candidate_file,
)
from .records import (
    ACTIVE_SQL,
    ACTIVE_STATES,
    DELIVERABLE_SQL,
    END_STATES,
    FINISHED_STATES,
    KINDS,
    EndState,
    JobKind,
    JobRecord,
    JobState,
    is_job_id,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

TOKEN_SWEEP_EVERY_S = 60.0


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
        self._files = JobFiles(self.jobs_dir, durable=durable)
        self._db = Database(self.db_path, conn)
        self._lock_fd = lock_fd
        self._now = clock
        self._last_token_sweep = float("-inf")

    # --- life cycle ----------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        data_dir: Path | str,
        *,
        busy_timeout_ms: int = schema.BUSY_TIMEOUT_MS,
        durable: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> JobStore:
        """Open (creating if needed) the store in ``data_dir``, migrating it to this version.

        Raises :class:`StoreError` when the directory can't be used, another process holds it,
        the database is corrupt, not a database, not VoxCanvas's, or from a newer VoxCanvas.
        ``durable=False`` skips fsyncs (tests and benchmarks only).
        """
        data_dir = Path(data_dir)
        lock_fd = await asyncio.to_thread(files.prepare_data_dir, data_dir)
        try:
            conn = await schema.connect(data_dir / DB_NAME, busy_timeout_ms=busy_timeout_ms, durable=durable)
        except BaseException:
            files.release_lock(lock_fd)
            raise
        store = cls(data_dir, conn, lock_fd, durable=durable, clock=clock)
        try:
            await store._recover_completed()
            await store.clear_expired_tokens()
        except BaseException:
            with contextlib.suppress(Exception):
                await store.close()
            raise
        active = await store.count_active()
        log.info("job store open: %s (schema v%d, %d unfinished job(s))", store.db_path, schema.SCHEMA_VERSION, active)
        return store

    async def close(self) -> None:
        """Finish in-flight writes, checkpoint and close. Idempotent."""
        try:
            await self._db.close()
        finally:
            files.release_lock(self._lock_fd)
            self._lock_fd = None

    async def __aenter__(self) -> JobStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._db.closed

    def job_dir(self, job_id: str) -> Path:
        """``DATA_DIR/jobs/<job_id>`` (the id is checked: it comes from user-visible custom ids)."""
        return self._files.job_dir(job_id)

    # --- plumbing ------------------------------------------------------------------------------
    async def _read_records(self, sql: str, params: Iterable[Any] = ()) -> list[JobRecord]:
        return [self._record(row) for row in await self._db.read(sql, params)]

    async def _write(self, body: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """``body`` in one transaction (see :meth:`Database.write`), sweeping expired tokens on the way."""

        async def body_and_sweep(conn: aiosqlite.Connection) -> T:
            result = await body(conn)
            await self._sweep_tokens(conn)
            return result

        return await self._db.write(body_and_sweep)

    async def _sweep_tokens(self, conn: aiosqlite.Connection, *, force: bool = False) -> int:
        now = self._now()
        if not force and now - self._last_token_sweep < TOKEN_SWEEP_EVERY_S:
            return 0
        self._last_token_sweep = now
        return await rows.clear_expired_tokens(conn, now=now)

    def _record(self, row: sqlite3.Row) -> JobRecord:
        return JobRecord.from_row(row, now=self._now())

    async def _update(
        self, job_id: str, assignments: str, params: tuple[object, ...], *, states: tuple[JobState, ...] = ACTIVE_STATES
    ) -> JobRecord:
        """Change an active job (or one in ``states``); the new record."""
        row = await self._write(
            lambda conn: rows.update_in_states(conn, job_id, assignments, params, states=states, now=self._now())
        )
        return self._record(row)

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
        control_image: bytes | None = None,
        job_id: str | None = None,
    ) -> JobRecord:
        """Admit a job in state ``queued``. Its audio / init image / ControlNet source image are
        saved first, then the row.

        ``idea`` holds the request options (JSON-serializable); ``has_audio``,
        ``has_init_image`` and ``has_control_image`` are set in the stored copy. The job gets its
        ``delivery_nonce`` here.
        Raises :class:`JobNotFound` when ``parent_job_id`` no longer exists.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
        job_id = job_id or uuid.uuid4().hex
        self.job_dir(job_id)  # checks the id
        inputs = JobInputs.of(audio, audio_ext, init_image, control_image)
        stored_idea = dict(
            idea,
            has_audio=audio is not None,
            has_init_image=init_image is not None,
            has_control_image=control_image is not None,
        )
        now = self._now()
        if interaction_token is not None and interaction_created_at is None:
            interaction_created_at = now
        row = {
            "id": job_id,
            "user_id": user_id,
            "guild_id": guild_id,
            "channel_id": channel_id,
            "kind": kind,
            "parent_job_id": parent_job_id,
            "idea": json.dumps(stored_idea, ensure_ascii=False, sort_keys=True),
            "source_message_id": source_message_id,
            "interaction_id": interaction_id,
            "interaction_token": interaction_token,
            "interaction_created_at": interaction_created_at,
            "progress_message_id": progress_message_id,
            "state": "queued",
            "audio_file": inputs.audio_file,
            "init_image_file": inputs.init_image_file,
            "delivery_nonce": secrets.token_hex(10),
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }

        if inputs.files:
            await self._files.save_inputs(job_id, inputs)

        async def body(conn: aiosqlite.Connection) -> JobRecord:
            return self._record(await rows.insert(conn, row))

        try:
            record = await self._write(body)
        except Exception:  # not on cancellation: the shielded insert may still commit
            if inputs.files:
                await self._files.remove(job_id)
            raise
        log.info("job %s: queued (%s, user %s)", job_id, kind, user_id)
        return record

    # --- reading -------------------------------------------------------------------------------
    async def get(self, job_id: str) -> JobRecord | None:
        if not is_job_id(job_id):
            return None
        records = await self._read_records("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return records[0] if records else None

    async def _require(self, job_id: str) -> JobRecord:
        record = await self.get(job_id)
        if record is None:
            raise JobNotFound()
        return record

    async def _read_result_file(self, job_id: str, name_of: Callable[[JobRecord], str | None]) -> bytes:
        name = name_of(await self._require(job_id))
        if name is None:
            raise JobStateError("That picture isn't ready yet.")
        return await self._files.read(job_id, name)

    async def _read_input_file(self, job_id: str, name_of: Callable[[JobRecord], str | None]) -> bytes | None:
        name = name_of(await self._require(job_id))
        return None if name is None else await self._files.read(job_id, name)

    async def read_image(self, job_id: str) -> bytes:
        return await self._read_result_file(job_id, lambda record: record.image_file)

    async def read_candidate(self, job_id: str, index: int) -> bytes:
        """Candidate ``index`` (0-based) of a finished job with several candidates; its picture
        for index 0 of a job with one."""
        record = await self._require(job_id)
        if record.image_file is None:
            raise JobNotFound("That picture isn't finished — or it was deleted.")
        name = candidate_file(index)
        if index == 0 and not await asyncio.to_thread((self._files.job_dir(job_id) / name).exists):
            return await self.read_image(job_id)  # a job with one picture
        return await self._files.read(job_id, name)

    async def read_grid(self, job_id: str) -> bytes | None:
        """The labelled grid of a finished job's candidates; None when it had one picture."""
        record = await self._require(job_id)
        if record.image_file is None or not await asyncio.to_thread((self._files.job_dir(job_id) / GRID_FILE).exists):
            return None
        return await self._files.read(job_id, GRID_FILE)

    async def read_control(self, job_id: str) -> bytes | None:
        """The ControlNet control image of a finished job; None when it was rendered without one."""
        record = await self._require(job_id)
        path = self._files.job_dir(job_id) / CONTROL_FILE
        if record.image_file is None or not await asyncio.to_thread(path.exists):
            return None
        return await self._files.read(job_id, CONTROL_FILE)

    async def read_palette(self, job_id: str) -> bytes:
        return await self._read_result_file(job_id, lambda record: record.palette_file)

    async def read_audio(self, job_id: str) -> bytes | None:
        return await self._read_input_file(job_id, lambda record: record.audio_file)

    async def read_init_image(self, job_id: str) -> bytes | None:
        return await self._read_input_file(job_id, lambda record: record.init_image_file)

    async def read_control_input(self, job_id: str) -> bytes | None:
        """The ControlNet source image the job was asked with (canny/depth/pose; an input, kept
        until the job is deleted); None without one. Not the computed control image of
        :meth:`read_control`."""
        return await self._read_input_file(
            job_id, lambda record: CONTROL_INPUT_FILE if record.idea.get("has_control_image") else None
        )

    async def unfinished(self) -> list[JobRecord]:
        """Queued and running jobs, oldest first: re-queue these at start-up."""
        return await self._read_records(f"SELECT * FROM jobs WHERE state IN {ACTIVE_SQL} ORDER BY created_at, rowid")

    async def undelivered(self) -> list[JobRecord]:
        """Done or failed jobs never delivered, oldest first: deliver these at start-up.

        On a record with ``delivery_started_at`` set, :meth:`begin_delivery` was called and the
        process stopped before :meth:`record_delivery`: the result may already have been posted.
        The store only reports this; the caller decides how to look for that post before sending
        again (Discord de-duplicates a channel send with the same ``delivery_nonce`` for a few
        minutes only).
        """
        return await self._read_records(
            f"SELECT * FROM jobs WHERE state IN {DELIVERABLE_SQL} "
            "AND delivered_message_id IS NULL ORDER BY finished_at, rowid"
        )

    async def history(self, user_id: int, limit: int = 10) -> list[JobRecord]:
        """The user's jobs, newest first."""
        if limit < 1:
            return []
        return await self._read_records(
            "SELECT * FROM jobs WHERE user_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?", (user_id, limit)
        )

    async def count_active(self, user_id: int | None = None) -> int:
        """Queued + running jobs, of one user or of everyone."""
        sql = f"SELECT count(*) FROM jobs WHERE state IN {ACTIVE_SQL}"
        found = (
            await self._db.read(sql) if user_id is None else await self._db.read(f"{sql} AND user_id = ?", (user_id,))
        )
        return int(found[0][0])

    # --- state transitions ---------------------------------------------------------------------
    async def job_counts(self) -> list[tuple[str, str, int]]:
        """``(kind, state, count)`` of every stored job (for ``/metrics``)."""
        rows = await self._db.read("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state")
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    async def fallback_counts(self) -> list[tuple[str, str, int]]:
        """``(role, reason, count)``: stored results whose director or critic fell back (Gemini → local)."""
        rows = await self._db.read(
            "SELECT 'director', json_extract(result_json, '$.director_fallback') AS r, COUNT(*) FROM jobs "
            "WHERE r IS NOT NULL GROUP BY r "
            "UNION ALL SELECT 'critic', json_extract(result_json, '$.critic_fallback') AS r, COUNT(*) FROM jobs "
            "WHERE r IS NOT NULL GROUP BY r"
        )
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    async def check_writable(self) -> None:
        """Write to the database (its header's schema version, rewritten as it is) in a transaction:
        raises :class:`StoreError` if the file, its journal or its lock cannot be written."""

        async def body(conn: aiosqlite.Connection) -> None:
            await conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")

        await self._db.write(body)

    # --- servers, members and usage (quotas) ---------------------------------------------------
    async def guild_settings(self, guild_id: int) -> str | None:
        """A server's settings (JSON, see :mod:`bot.guilds`), or ``None`` if never set."""
        rows = await self._db.read("SELECT settings_json FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return str(rows[0][0]) if rows else None

    async def set_guild_settings(self, guild_id: int, settings_json: str, *, updated_by: int | None) -> None:
        async def body(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO guild_settings (guild_id, settings_json, updated_by, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (guild_id) DO UPDATE SET settings_json = excluded.settings_json, "
                "updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                (guild_id, settings_json, updated_by, time.time()),
            )

        await self._write(body)

    async def guild_styles(self, guild_id: int) -> list[tuple[str, str]]:
        """A server's own styles: (name, style JSON) in name order."""
        rows = await self._db.read(
            "SELECT name, style_json FROM guild_styles WHERE guild_id = ? ORDER BY name", (guild_id,)
        )
        return [(str(name), str(data)) for name, data in rows]

    async def add_guild_style(self, guild_id: int, name: str, style_json: str, *, limit: int, by: int | None) -> bool:
        """Add or replace a server style; ``False`` (nothing written) when the server already has
        ``limit`` styles and ``name`` is not one of them."""
        added = False

        async def body(conn: aiosqlite.Connection) -> None:
            nonlocal added
            async with conn.execute(
                "SELECT count(*), sum(name = ?) FROM guild_styles WHERE guild_id = ?", (name, guild_id)
            ) as cursor:
                count, same = await cursor.fetchone() or (0, 0)
            if int(count or 0) >= limit and not same:
                return
            await conn.execute(
                "INSERT INTO guild_styles (guild_id, name, style_json, created_by, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (guild_id, name) DO UPDATE SET style_json = excluded.style_json, "
                "created_by = excluded.created_by, created_at = excluded.created_at",
                (guild_id, name, style_json, by, time.time()),
            )
            added = True

        await self._write(body)
        return added

    async def remove_guild_style(self, guild_id: int, name: str) -> bool:
        removed = False

        async def body(conn: aiosqlite.Connection) -> None:
            nonlocal removed
            cursor = await conn.execute("DELETE FROM guild_styles WHERE guild_id = ? AND name = ?", (guild_id, name))
            removed = cursor.rowcount > 0

        await self._write(body)
        return removed

    async def preferences(self, user_id: int) -> str | None:
        rows = await self._db.read("SELECT prefs_json FROM user_preferences WHERE user_id = ?", (user_id,))
        return str(rows[0][0]) if rows else None

    async def set_preferences(self, user_id: int, prefs_json: str) -> None:
        async def body(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO user_preferences (user_id, prefs_json, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET "
                "prefs_json = excluded.prefs_json, updated_at = excluded.updated_at",
                (user_id, prefs_json, time.time()),
            )

        await self._write(body)

    async def take_quota(
        self, *, day: str, user_id: int, guild_id: int | None, user_limit: int, member_limit: int, cooldown_s: float
    ) -> tuple[str, float] | None:
        """Count one job for ``user_id`` on ``day`` (UTC, ``YYYY-MM-DD``) in ``guild_id``, unless
        that would pass ``user_limit`` (all servers; 0: none), ``member_limit`` (this server; 0:
        none) or come within ``cooldown_s`` of the user's last job here. Check and count are one
        transaction. Returns ``None`` when counted, else ``(scope, value)``: ``("user", limit)``,
        ``("member", limit)`` or ``("cooldown", seconds left)``."""
        guild = guild_id or 0

        async def body(conn: aiosqlite.Connection) -> tuple[str, float] | None:
            now = time.time()
            async with conn.execute(
                "SELECT COALESCE(SUM(jobs), 0) FROM usage WHERE day = ? AND user_id = ?", (day, user_id)
            ) as cur:
                total = int((await cur.fetchone() or (0,))[0])
            async with conn.execute(
                "SELECT jobs, last_at FROM usage WHERE day = ? AND user_id = ? AND guild_id = ?", (day, user_id, guild)
            ) as cur:
                row = await cur.fetchone()
            here, last_at = (int(row[0]), float(row[1])) if row else (0, 0.0)
            if user_limit and total >= user_limit:
                return ("user", float(user_limit))
            if member_limit and here >= member_limit:
                return ("member", float(member_limit))
            if cooldown_s and row is not None and now - last_at < cooldown_s:
                return ("cooldown", cooldown_s - (now - last_at))
            await conn.execute(
                "INSERT INTO usage (day, user_id, guild_id, jobs, last_at) VALUES (?, ?, ?, 1, ?) "
                "ON CONFLICT (day, user_id, guild_id) DO UPDATE SET jobs = jobs + 1, last_at = excluded.last_at",
                (day, user_id, guild, now),
            )
            await conn.execute("DELETE FROM usage WHERE day < date(?, '-7 days')", (day,))
            return None

        return await self._write(body)

    async def guild_stats(self, guild_id: int, since: float) -> tuple[int, int, float | None, int]:
        """Since ``since`` (epoch s) in a server: ``(jobs, done, average score, corrected)``; a job was
        corrected when its picture took more than one round."""
        rows = await self._db.read(
            "SELECT COUNT(*), SUM(state = 'done'), AVG(CASE WHEN state = 'done' THEN score END), "
            "SUM(state = 'done' AND COALESCE(json_array_length(result_json, '$.rounds'), 0) > 1) "
            "FROM jobs WHERE guild_id = ? AND created_at >= ?",
            (guild_id, since),
        )
        jobs, done, average, corrected = rows[0]
        return int(jobs or 0), int(done or 0), float(average) if average is not None else None, int(corrected or 0)

    async def usage_today(self, day: str, *, guild_id: int | None = None) -> int:
        """Jobs admitted on ``day`` (in one server, or everywhere)."""
        sql = "SELECT COALESCE(SUM(jobs), 0) FROM usage WHERE day = ?"
        rows = await (
            self._db.read(sql, (day,))
            if guild_id is None
            else self._db.read(f"{sql} AND guild_id = ?", (day, guild_id))
        )
        return int(rows[0][0])

    async def mark_running(self, job_id: str) -> JobRecord:
        """queued/running → running; ``attempts`` + 1 (a re-run after a crash counts again)."""
        return await self._update(job_id, "state = 'running', attempts = attempts + 1", ())

    async def set_progress_message(self, job_id: str, message_id: int | None) -> None:
        await self._write(lambda conn: rows.set_progress_message(conn, job_id, message_id, now=self._now()))

    async def complete(
        self,
        job_id: str,
        *,
        result_json: str,
        score: int | None,
        title: str | None,
        image_png: bytes,
        palette_png: bytes,
        candidate_pngs: Sequence[bytes] = (),
        grid_png: bytes | None = None,
        control_png: bytes | None = None,
    ) -> JobRecord:
        """→ done. Files first (image, palette, the candidates and their grid, then ``result.json``
        as marker), row second."""
        json.loads(result_json)  # must be JSON: it is read back by /history and buttons
        record = await self._require(job_id)
        if not record.active:
            raise JobStateError.for_state(record.state)
        marker = json.dumps({"result_json": result_json, "score": score, "title": title}).encode()
        extra = [(candidate_file(i), png) for i, png in enumerate(candidate_pngs)]
        if grid_png is not None:
            extra.append((GRID_FILE, grid_png))
        if control_png is not None:
            extra.append((CONTROL_FILE, control_png))
        await self._files.save_result(job_id, image_png, palette_png, marker, extra)
        try:
            return await self._finish_row(job_id, result_json, score, title)
        except JobNotFound:  # deleted while rendering: don't leave its files behind
            await self._files.remove(job_id)
            raise
        except JobStateError:  # cancelled/failed while rendering: drop the unused picture
            current = await self.get(job_id)
            if current is not None and current.image_file is None:
                await self._files.unlink(job_id, (*RESULT_FILES, *CANDIDATE_FILES))
            raise

    async def complete_music(
        self, job_id: str, *, result_json: str, title: str | None, music_ogg: bytes, music_wav: bytes | None = None
    ) -> JobRecord:
        """→ done, for a composed piece. The piece (OGG/Opus, and its WAV when given: the HTTP
        API serves it) first, then ``result.json`` as marker, row second."""
        json.loads(result_json)
        record = await self._require(job_id)
        if not record.active:
            raise JobStateError.for_state(record.state)
        marker = json.dumps({"result_json": result_json, "score": None, "title": title, "music": True}).encode()
        await self._files.save_music(job_id, music_ogg, marker, music_wav)
        try:
            return await self._finish_row(job_id, result_json, None, title, music=True)
        except JobNotFound:
            await self._files.remove(job_id)
            raise
        except JobStateError:
            current = await self.get(job_id)
            if current is not None and current.music_file is None:
                await self._files.unlink(job_id, MUSIC_RESULT_FILES)
            raise

    async def read_music(self, job_id: str) -> bytes:
        """A finished music job's OGG/Opus file."""
        return await self._read_result_file(job_id, lambda record: record.music_file)

    async def read_music_wav(self, job_id: str) -> bytes:
        """A finished music job's WAV (saved beside its OGG since the HTTP API serves it; a piece
        saved without one: :class:`JobNotFound`)."""
        return await self._read_result_file(job_id, lambda record: MUSIC_WAV_FILE if record.music_file else None)

    async def _finish_row(
        self, job_id: str, result_json: str, score: int | None, title: str | None, *, music: bool = False
    ) -> JobRecord:
        files = "music_file = ?" if music else "image_file = ?, palette_file = ?"
        names = (MUSIC_FILE,) if music else (IMAGE_FILE, PALETTE_FILE)
        record = await self._update(
            job_id,
            f"state = 'done', error = NULL, result_json = ?, score = ?, title = ?, {files}, finished_at = ?",
            (result_json, score, title, *names, self._now()),
        )
        log.info("job %s: done (%s)", job_id, "music" if music else f"score {score}")
        return record

    async def fail(self, job_id: str, error: str, *, state: EndState = "failed") -> JobRecord:
        """queued/running → failed or cancelled, with the message to show the user."""
        if state not in END_STATES:
            raise ValueError(f"state must be one of {END_STATES}, not {state!r}")
        record = await self._update(job_id, "state = ?, error = ?, finished_at = ?", (state, error, self._now()))
        log.info("job %s: %s", job_id, state)
        return record

    # --- delivery ------------------------------------------------------------------------------
    async def begin_delivery(self, job_id: str) -> JobRecord:
        """Durably mark the finished job as "sending"; call right before posting its result.

        Sets ``delivery_started_at`` in a committed transaction and returns the record, whose
        ``delivery_nonce`` the send must carry (``nonce=record.delivery_nonce,
        enforce_nonce=True``). Raises :class:`JobStateError` for a job not finished yet and
        :class:`JobNotFound` for a missing one.
        """
        return await self._update(job_id, "delivery_started_at = ?", (self._now(),), states=FINISHED_STATES)

    async def record_delivery(self, job_id: str, *, message_id: int, channel_id: int, note: str | None = None) -> bool:
        """The result was posted (Discord accepted it): remember where, and forget the interaction token.

        ``note`` is kept in ``error`` when the message shown is not the full result (what was
        refused, what was shown instead). Returns ``True`` the first time, ``False`` if the job
        had already been delivered (the first delivery is kept). Raises :class:`JobStateError`
        for a job not finished yet.
        """
        first = await self._write(
            lambda conn: rows.mark_delivered(
                conn, job_id, message_id=message_id, channel_id=channel_id, now=self._now(), note=note
            )
        )
        if not first:
            log.warning("job %s: delivered again (message %s ignored)", job_id, message_id)
        return first

    async def clear_expired_tokens(self) -> int:
        """Clear interaction tokens past their 15-minute lifetime (also done on writes, once a minute)."""
        return await self._write(lambda conn: self._sweep_tokens(conn, force=True))

    # --- removing ------------------------------------------------------------------------------
    async def delete(self, job_id: str, *, user_id: int) -> bool:
        """Delete the user's own finished job: row then files. ``False`` if missing / not theirs.

        Raises :class:`JobStateError` for a queued or running job (cancel it first).
        """
        if not is_job_id(job_id):
            return False
        deleted = await self._write(lambda conn: rows.delete_owned(conn, job_id, user_id=user_id))
        if deleted:
            await self._files.remove(job_id)
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
            ids = await rows.delete_finished_before(conn, cutoff)
            await self._sweep_tokens(conn, force=True)
            return ids

        removed = await self._write(body)
        known = {str(r[0]) for r in await self._db.read("SELECT id FROM jobs")}
        await self._files.remove_dirs(removed, known, cutoff)
        if removed:
            log.info("purged %d job(s) finished more than %d day(s) ago", len(removed), older_than_days)
        return len(removed)

    # --- crash recovery ------------------------------------------------------------------------
    async def _recover_completed(self) -> None:
        """Finish jobs whose files were saved by :meth:`complete` before a crash hit the row."""
        active = await self._db.read(f"SELECT id FROM jobs WHERE state IN {ACTIVE_SQL}")
        if not active:
            return
        found = await self._files.result_markers([str(r[0]) for r in active])
        for job_id, marker in found:
            try:
                data = json.loads(marker)
                result_json = data["result_json"]
                json.loads(result_json)
            except (ValueError, KeyError, TypeError):
                log.warning("job %s: unreadable %s after a crash; it will run again", job_id, RESULT_MARKER)
                await self._files.unlink(job_id, (RESULT_MARKER,))
                continue
            await self._finish_row(
                job_id, result_json, data.get("score"), data.get("title"), music=bool(data.get("music"))
            )
            log.warning("job %s: finished before the last crash; recovered from its files", job_id)

    # --- backup --------------------------------------------------------------------------------
    async def backup(self, dest: Path | str) -> Path:
        """Snapshot the database to ``dest`` (SQLite online backup; runs beside normal work)."""
        self._db.check_open()
        return await asyncio.to_thread(backup_database, self.db_path, Path(dest))
