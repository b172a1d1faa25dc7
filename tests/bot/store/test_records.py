"""Job kinds and states are defined once (``bot.store.records``): the schema, the SQL state lists
and the store's checks all agree with them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.store import DB_NAME, JobStore
from bot.store.records import (
    ACTIVE_SQL,
    ACTIVE_STATES,
    DELIVERABLE_STATES,
    END_STATES,
    FINISHED_STATES,
    KINDS,
    STATES,
    is_job_id,
    sql_list,
    token_live,
)
from pipeline.limits import INTERACTION_TOKEN_LIFETIME_S


def test_states_split_into_active_and_finished() -> None:
    assert set(ACTIVE_STATES) | set(FINISHED_STATES) == set(STATES) and not set(ACTIVE_STATES) & set(FINISHED_STATES)
    assert set(END_STATES) < set(FINISHED_STATES) and set(DELIVERABLE_STATES) < set(FINISHED_STATES)
    assert "cancelled" not in DELIVERABLE_STATES  # a cancelled job posts no result
    assert KINDS == ("text", "voice", "regenerate", "vary", "compose", "soundtrack")


def test_sql_lists_are_built_from_the_names_only() -> None:
    assert ACTIVE_SQL == "('queued', 'running')"
    assert sql_list(["done"]) == "('done')"
    for bad in ([], ["done'); DROP TABLE jobs; --"], ["Done"], [""]):
        with pytest.raises(ValueError):
            sql_list(bad)


async def test_the_schema_accepts_exactly_the_kinds_and_states(tmp_path: Path) -> None:
    """The CHECK lists (migration 1, rebuilt by 3) are history; they must still say what records.py says."""
    store = await JobStore.open(tmp_path)
    await store.close()
    insert = (
        "INSERT INTO jobs (id, user_id, channel_id, kind, idea, state, created_at, updated_at) "
        "VALUES (?, 1, 2, ?, '{}', ?, 0, 0)"
    )
    with sqlite3.connect(tmp_path / DB_NAME) as raw:
        for kind in KINDS:
            for state in STATES:
                raw.execute(insert, (f"{kind}-{state}", kind, state))
        for kind, state in (("sketch", "queued"), ("text", "paused")):
            with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
                raw.execute(insert, (f"{kind}-{state}", kind, state))
    store = await JobStore.open(tmp_path)
    try:
        assert len(await store.unfinished()) == len(KINDS) * len(ACTIVE_STATES)
        assert len(await store.undelivered()) == len(KINDS) * len(DELIVERABLE_STATES)
        with pytest.raises(ValueError, match="kind must be one of"):
            await store.create_job(user_id=1, channel_id=2, kind="sketch", idea={})  # type: ignore[arg-type]
    finally:
        await store.close()


def test_job_ids_are_safe_path_components() -> None:
    assert is_job_id("a" * 64) and is_job_id("0f3e-_A")
    for bad in ("", "a" * 65, "../etc", "a/b", "a b", None, 12):
        assert not is_job_id(bad)


def test_token_lifetime_is_the_interaction_token_lifetime() -> None:
    assert INTERACTION_TOKEN_LIFETIME_S == 15 * 60
    assert token_live(1000.0, 1000.0 + INTERACTION_TOKEN_LIFETIME_S - 0.001)
    assert not token_live(1000.0, 1000.0 + INTERACTION_TOKEN_LIFETIME_S)
    assert not token_live(None, 0.0)
