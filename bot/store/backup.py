"""Back-up and check of the database file, safe while VoxCanvas runs (read-only connections).

Images live in ``DATA_DIR/jobs/`` next to the database: copy that directory after a backup (its
files are never modified once written).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreError, open_error
from .files import FILE_MODE, temp_name
from .schema import BUSY_TIMEOUT_MS


def _connect_read_only(path: Path) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)


def backup_database(source: Path, dest: Path) -> Path:
    """Copy the live database ``source`` to ``dest`` with SQLite's online backup API.

    Safe while VoxCanvas is running (a consistent snapshot of committed jobs). ``dest`` is written
    atomically and checked.
    """
    source, dest = Path(source), Path(dest)
    if not source.is_file():
        raise StoreError(f"{source} does not exist: nothing to back up.")
    if dest.exists() and dest.resolve() == source.resolve():
        raise StoreError(f"Refusing to back {source} up onto itself.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    try:
        # The copy holds every job (who, where, prompts): readable by its owner only, like DATA_DIR.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        with contextlib.closing(_connect_read_only(source)) as src, contextlib.closing(sqlite3.connect(tmp)) as dst:
            src.backup(dst)
            check = [row[0] for row in dst.execute("PRAGMA quick_check")]
            if check != ["ok"]:
                raise StoreError(f"The backup of {source} failed its check: {check[:3]}")
        os.replace(tmp, dest)
    except sqlite3.Error as exc:
        raise open_error(source, exc, BUSY_TIMEOUT_MS) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return dest


@dataclass(frozen=True)
class DatabaseCheck:
    """What ``python -m bot.store check`` reports about a database file."""

    schema_version: int
    jobs: int
    integrity: list[str]

    @property
    def ok(self) -> bool:
        return self.integrity == ["ok"]


def check_database(db_path: Path) -> DatabaseCheck:
    """Schema version, job count and ``PRAGMA integrity_check`` of ``db_path`` (read-only)."""
    if not db_path.is_file():
        raise StoreError(f"{db_path} does not exist.")
    with contextlib.closing(_connect_read_only(db_path)) as conn:
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
            jobs = int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0]) if version else 0
        except sqlite3.Error as exc:
            raise open_error(db_path, exc, BUSY_TIMEOUT_MS) from exc
    return DatabaseCheck(schema_version=version, jobs=jobs, integrity=integrity)
