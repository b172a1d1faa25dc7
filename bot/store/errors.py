"""The job store's errors: messages fit to show a user, or (when opening) an operator."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import VoxCanvasError


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

    @classmethod
    def for_state(cls, state: str) -> JobStateError:
        """The refusal for a job found in ``state``."""
        return cls(_STATE_MESSAGES.get(state, "That job can't do that right now."))


_STATE_MESSAGES = {
    "done": "That picture is already finished.",
    "failed": "That job already failed.",
    "cancelled": "That job was cancelled.",
}


def open_error(db_path: Path, exc: BaseException, busy_timeout_ms: int) -> StoreError:
    """What SQLite's (or the OS's) complaint about ``db_path`` means, and what to do about it."""
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
