"""One job as stored: its kinds and states (each defined once, here) and the record read from a row."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from pipeline.limits import INTERACTION_TOKEN_LIFETIME_S

JobKind = Literal["text", "voice", "regenerate", "vary", "compose", "soundtrack"]
ActiveState = Literal["queued", "running"]
EndState = Literal["failed", "cancelled"]  # how :meth:`JobStore.fail` may end a job
FinishedState = Literal["done", EndState]
JobState = Literal[ActiveState, FinishedState]

KINDS: Final[tuple[JobKind, ...]] = get_args(JobKind)
STATES: Final[tuple[JobState, ...]] = get_args(JobState)
ACTIVE_STATES: Final[tuple[ActiveState, ...]] = get_args(ActiveState)
END_STATES: Final[tuple[EndState, ...]] = get_args(EndState)
FINISHED_STATES: Final[tuple[FinishedState, ...]] = get_args(FinishedState)
DELIVERABLE_STATES: Final[tuple[FinishedState, ...]] = ("done", "failed")  # a cancelled job posts nothing

_SQL_WORD = re.compile(r"[a-z]+")


def sql_list(values: Iterable[str]) -> str:
    """``('a', 'b')`` for an ``IN`` clause, from the constants above (never from user input)."""
    words = list(values)
    if not words or not all(_SQL_WORD.fullmatch(word) for word in words):
        raise ValueError(f"not a list of state or kind names: {words!r}")
    return "(" + ", ".join(f"'{word}'" for word in words) + ")"


ACTIVE_SQL: Final = sql_list(ACTIVE_STATES)
FINISHED_SQL: Final = sql_list(FINISHED_STATES)
DELIVERABLE_SQL: Final = sql_list(DELIVERABLE_STATES)

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_job_id(value: object) -> bool:
    """A job id is safe as a path component: it comes back from user-visible custom ids."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


def token_live(created_at: float | None, now: float) -> bool:
    """An interaction token may be used for :data:`INTERACTION_TOKEN_LIFETIME_S` after its interaction."""
    return created_at is not None and now - created_at < INTERACTION_TOKEN_LIFETIME_S


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as stored. Times are UTC epoch seconds (floats). Read-only snapshot.

    ``delivery_nonce`` is a random value fixed when the job is admitted; a channel send of the
    result carries it as the message nonce (with ``enforce_nonce``), so within a few minutes
    Discord answers a repeated send of the same result with the message already posted.
    ``delivery_started_at`` is set by :meth:`JobStore.begin_delivery` right before such a send: on
    a record that is still undelivered at start-up, it means the result may already be in the
    channel.
    """

    id: str
    user_id: int
    guild_id: int | None
    channel_id: int
    kind: JobKind
    parent_job_id: str | None
    idea: dict[str, Any] = field(hash=False)
    source_message_id: int | None = None
    interaction_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)  # credential: never log
    interaction_created_at: float | None = None
    progress_message_id: int | None = None
    state: JobState = "queued"
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
    music_file: str | None = None  # a composed piece (music jobs, and a voice note that asked for music)
    attempts: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row, *, now: float) -> JobRecord:
        """The record of a ``jobs`` row as seen at ``now`` (an expired token reads as ``None``)."""
        values = {name: row[name] for name in RECORD_FIELDS}
        values["idea"] = json.loads(row["idea"])
        if not token_live(values["interaction_created_at"], now):
            values["interaction_token"] = None
        values["delivery_nonce"] = values["delivery_nonce"] or ""
        return cls(**values)

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
    def is_music(self) -> bool:
        """The job's result is a piece of music, not a picture."""
        return self.music_file is not None or self.kind in ("compose", "soundtrack")

    @property
    def has_audio(self) -> bool:
        return self.audio_file is not None

    @property
    def has_init_image(self) -> bool:
        return self.init_image_file is not None


RECORD_FIELDS: Final = tuple(JobRecord.__dataclass_fields__)
