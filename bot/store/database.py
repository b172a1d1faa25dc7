"""One aiosqlite connection, shared safely: serialized, cancellation-safe transactions.

Nothing the event loop awaits blocks it: SQL runs on aiosqlite's connection thread. Reads and
writes take one :class:`asyncio.Lock` (a read never sees another task's uncommitted
transaction); each write is one ``BEGIN IMMEDIATE … COMMIT`` run as its own task and shielded
from the caller's cancellation, so a cancelled caller never leaves a transaction open and
:meth:`Database.close` lets every admitted write finish.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .errors import StoreError
from .schema import transaction

log = logging.getLogger(__name__)

T = TypeVar("T")
Body = Callable[[aiosqlite.Connection], Awaitable[T]]


class Database:
    """Serialized access to one open connection (see :func:`bot.store.schema.connect`)."""

    def __init__(self, db_path: Path, conn: aiosqlite.Connection) -> None:
        self.path = db_path
        self._conn: aiosqlite.Connection | None = conn
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        """Raise :class:`StoreError` once :meth:`close` has begun."""
        if self._closed or self._conn is None:
            raise StoreError("The job store is closed.")

    async def read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        self.check_open()
        async with self._lock:  # never see another task's uncommitted transaction
            self.check_open()
            assert self._conn is not None
            try:
                return list(await self._conn.execute_fetchall(sql, tuple(params)))
            except sqlite3.Error as exc:
                raise self._runtime_error(exc) from exc

    async def write(self, body: Body[T]) -> T:
        """Run ``body`` in one ``BEGIN IMMEDIATE … COMMIT``, serialized and cancellation-safe.

        ``sqlite3.IntegrityError`` reaches the caller as it is (it means something about the
        request); any other SQLite error is logged and becomes a :class:`StoreError`.
        """
        self.check_open()
        task = asyncio.ensure_future(self._transaction(body))
        self._pending.add(task)
        task.add_done_callback(self._task_done)
        return await asyncio.shield(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller cancelled meanwhile must not warn

    async def _transaction(self, body: Body[T]) -> T:
        async with self._lock:
            conn = self._conn  # admitted by write() before close() began: still open
            if conn is None:
                raise StoreError("The job store is closed.")
            try:
                async with transaction(conn):
                    return await body(conn)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise self._runtime_error(exc) from exc

    def _runtime_error(self, exc: sqlite3.Error) -> StoreError:
        log.error("job store %s: %s: %s", self.path, type(exc).__name__, exc)
        return StoreError()

    async def close(self) -> None:
        """Refuse new work, let admitted writes finish, then close (checkpointing the WAL)."""
        if self._closed:
            return
        self._closed = True
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()
