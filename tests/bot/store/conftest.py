"""Fixtures of the job store's tests: a DATA_DIR and a store open on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import JobStore


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def store(data_dir: Path) -> AsyncIterator[JobStore]:
    store = await JobStore.open(data_dir)
    yield store
    await store.close()
