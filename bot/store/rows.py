"""SQL over the ``jobs`` table: functions of a connection, called inside a store transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

import aiosqlite

from pipeline.limits import INTERACTION_TOKEN_LIFETIME_S

from .errors import JobNotFound, JobStateError
from .records import ACTIVE_STATES, FINISHED_SQL, JobState


async def fetch(conn: aiosqlite.Connection, job_id: str) -> sqlite3.Row | None:
    rows = list(await conn.execute_fetchall("SELECT * FROM jobs WHERE id = ?", (job_id,)))
    return rows[0] if rows else None


async def insert(conn: aiosqlite.Connection, row: Mapping[str, object]) -> sqlite3.Row:
    """Insert ``row`` (column → value); the stored row, defaults filled in.

    Raises :class:`JobNotFound` when its parent job no longer exists, ``ValueError`` when its id
    is taken.
    """
    marks = ", ".join("?" * len(row))
    try:
        await conn.execute(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({marks})", tuple(row.values()))
    except sqlite3.IntegrityError as exc:
        if row.get("parent_job_id") is not None and "FOREIGN KEY" in str(exc).upper():
            raise JobNotFound("The original picture is gone (deleted or expired), so I can't redo it.") from None
        raise ValueError(f"job id {row['id']!r} is already taken") from None
    stored = await fetch(conn, str(row["id"]))
    assert stored is not None
    return stored


async def update_in_states(
    conn: aiosqlite.Connection,
    job_id: str,
    assignments: str,
    params: tuple[object, ...],
    *,
    states: tuple[JobState, ...],
    now: float,
) -> sqlite3.Row:
    """``UPDATE jobs SET <assignments>, updated_at WHERE id AND state IN states``; the new row.

    Raises :class:`JobNotFound` for a missing job, :class:`JobStateError` for one in another state.
    """
    marks = ", ".join("?" * len(states))
    cursor = await conn.execute(
        f"UPDATE jobs SET {assignments}, updated_at = ? WHERE id = ? AND state IN ({marks})",
        (*params, now, job_id, *states),
    )
    row = await fetch(conn, job_id)
    if row is None:
        raise JobNotFound()
    if cursor.rowcount == 0:
        raise JobStateError.for_state(row["state"])
    return row


async def clear_expired_tokens(conn: aiosqlite.Connection, *, now: float) -> int:
    """Forget interaction tokens past :data:`INTERACTION_TOKEN_LIFETIME_S`; how many."""
    cursor = await conn.execute(
        "UPDATE jobs SET interaction_token = NULL WHERE interaction_token IS NOT NULL AND interaction_created_at < ?",
        (now - INTERACTION_TOKEN_LIFETIME_S,),
    )
    return max(cursor.rowcount, 0)


async def delete_finished_before(conn: aiosqlite.Connection, cutoff: float) -> list[str]:
    """Delete the finished jobs that finished (or last changed) before ``cutoff``; their ids."""
    rows = await conn.execute_fetchall(
        f"SELECT id FROM jobs WHERE state IN {FINISHED_SQL} AND COALESCE(finished_at, updated_at) < ?", (cutoff,)
    )
    ids = [str(row[0]) for row in rows]
    await conn.executemany("DELETE FROM jobs WHERE id = ?", [(job_id,) for job_id in ids])
    return ids


async def set_progress_message(conn: aiosqlite.Connection, job_id: str, message_id: int | None, *, now: float) -> None:
    cursor = await conn.execute(
        "UPDATE jobs SET progress_message_id = ?, updated_at = ? WHERE id = ?", (message_id, now, job_id)
    )
    if cursor.rowcount == 0:
        raise JobNotFound()


async def mark_delivered(
    conn: aiosqlite.Connection, job_id: str, *, message_id: int, channel_id: int, now: float, note: str | None = None
) -> bool:
    """Note where a finished job's result was posted and forget its token; ``False`` if noted before.

    ``note`` (when given) replaces ``error``: what went wrong on the way (e.g. Discord refused the
    full result and a reduced one was shown)."""
    cursor = await conn.execute(
        "UPDATE jobs SET delivered_message_id = ?, delivered_channel_id = ?, interaction_token = NULL, "
        "error = COALESCE(?, error), updated_at = ? "
        f"WHERE id = ? AND delivered_message_id IS NULL AND state IN {FINISHED_SQL}",
        (message_id, channel_id, note, now, job_id),
    )
    if cursor.rowcount:
        return True
    row = await fetch(conn, job_id)
    if row is None:
        raise JobNotFound()
    if row["state"] in ACTIVE_STATES:
        raise JobStateError("That picture isn't finished yet.")
    return False


async def delete_owned(conn: aiosqlite.Connection, job_id: str, *, user_id: int) -> bool:
    """Delete the user's own finished job; ``False`` if it is missing or someone else's."""
    row = await fetch(conn, job_id)
    if row is None or row["user_id"] != user_id:
        return False
    if row["state"] in ACTIVE_STATES:
        raise JobStateError("That picture is still being made — cancel it first.")
    await conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
    return True
