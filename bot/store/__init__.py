"""The job store: every job, its files and its delivery, on disk, surviving restarts and crashes.

Layout under ``DATA_DIR``::

    voxcanvas.db          SQLite (WAL), one row per job in ``jobs``
    voxcanvas.db-wal/-shm SQLite's write-ahead log (present while open, or after a crash)
    voxcanvas.lock        advisory lock: one VoxCanvas process per DATA_DIR
    jobs/<job_id>/        audio.<ext>, init.png, control-input.png, image.png, palette.png, result.json

The package, by room:

    errors.py    StoreError, JobNotFound, JobStateError; what an unusable file means
    records.py   job kinds and states (defined once), JobRecord, the SQL state lists built from them
    schema.py    versioned migrations, the one transaction helper, opening and checking the file
    database.py  one shared connection: serialized, cancellation-safe transactions
    rows.py      the SQL over the ``jobs`` table
    files.py     atomic fsynced writes, reads, removal; the DATA_DIR lock
    store.py     JobStore: the job life cycle over all of the above
    backup.py    online backup and check; ``python -m bot.store backup DEST | check`` (__main__.py)

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
  :meth:`JobStore.undelivered` (done/failed, never delivered → deliver). :meth:`JobStore.record_delivery`
  succeeds once per job, so a job records exactly one delivered message.
- Delivery: every job gets a random ``delivery_nonce`` when it is admitted.
  :meth:`JobStore.begin_delivery`, called right before a result is posted, durably sets
  ``delivery_started_at`` and returns the record; the send carries ``nonce=record.delivery_nonce,
  enforce_nonce=True``, so within Discord's de-duplication window (a few minutes) a repeat of that
  send is answered with the message already posted instead of a second one. The store records and
  reports; it does not look into Discord: an undelivered record with ``delivery_started_at`` set
  tells the bot that a send may have happened before a crash.
- The interaction token is a credential: never in ``repr``/logs, hidden once older than
  :data:`pipeline.limits.INTERACTION_TOKEN_LIFETIME_S` (15 min), and cleared in the database on
  delivery or expiry.

Back-up: ``python -m bot.store backup DEST`` (safe while the bot runs; SQLite's online backup API),
then copy ``DATA_DIR/jobs/``.
"""

from __future__ import annotations

from .backup import DatabaseCheck, backup_database, check_database
from .errors import JobNotFound, JobStateError, StoreError
from .files import DB_NAME, IMAGE_FILE, INIT_IMAGE_FILE, JOBS_DIR, LOCK_NAME, PALETTE_FILE, RESULT_MARKER
from .records import (
    ACTIVE_STATES,
    DELIVERABLE_STATES,
    FINISHED_STATES,
    KINDS,
    STATES,
    JobKind,
    JobRecord,
    JobState,
)
from .schema import APPLICATION_ID, BUSY_TIMEOUT_MS, MIGRATIONS, SCHEMA_VERSION, Migration
from .store import JobStore

__all__ = [
    "ACTIVE_STATES",
    "APPLICATION_ID",
    "BUSY_TIMEOUT_MS",
    "DB_NAME",
    "DELIVERABLE_STATES",
    "FINISHED_STATES",
    "IMAGE_FILE",
    "INIT_IMAGE_FILE",
    "JOBS_DIR",
    "KINDS",
    "LOCK_NAME",
    "MIGRATIONS",
    "PALETTE_FILE",
    "RESULT_MARKER",
    "SCHEMA_VERSION",
    "STATES",
    "DatabaseCheck",
    "JobKind",
    "JobNotFound",
    "JobRecord",
    "JobState",
    "JobStateError",
    "JobStore",
    "Migration",
    "StoreError",
    "backup_database",
    "check_database",
]
