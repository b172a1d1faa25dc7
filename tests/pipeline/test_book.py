"""The job book both executors keep in the bot process (admission, ring, positions, ETA): one
implementation, so the local and the Ray executor admit and order jobs the same way."""

from __future__ import annotations

import pytest

from pipeline.errors import QueueFull, TooManyJobs
from pipeline.executor.book import JobBook
from pipeline.executor.metrics import MetricsRecorder


@pytest.fixture
def book():
    from pipeline.executor import GPUExecutor
    from pipeline.settings import Settings

    settings = Settings(_env_file=None, MAX_JOBS_PER_USER=2, MAX_QUEUE=4, GEMINI_API_KEY="")
    executor = GPUExecutor(settings)  # not started: only the owner of the jobs
    return JobBook(executor, settings, MetricsRecorder())


def test_admission_caps_per_user_and_in_all(book):
    book.admit("ann")
    book.admit("ann")
    with pytest.raises(TooManyJobs):
        book.admit("ann")
    book.admit("bob")
    book.admit("cy")
    with pytest.raises(QueueFull):
        book.admit("dee")
    assert book.admit("dee", force=True).user_id == "dee"  # jobs accepted before a restart
    with pytest.raises(ValueError, match="already admitted"):
        book.admit("eve", next(iter(book)).id, force=True)


def test_users_take_turns_and_positions_follow_the_service_order(book):
    a1, a2, b1 = book.admit("ann"), book.admit("ann"), book.admit("bob")
    assert book.service_order() == [a1, b1, a2]
    assert [book.position_of(j) for j in (a1, b1, a2)] == [1, 2, 3]
    a1.started = True  # as the executor does when it serves a1's first work item:
    book.ring.last_served = "ann"
    assert book.position_of(a1) is None and book.position_of(b1) == 1 and book.position_of(a2) == 2
    assert book.eta_at(2) > book.eta_at(1) > 0
    assert book.eta_at(2, parallel=2) < book.eta_at(2)  # replicas serving side by side


def test_close_gives_the_slot_back_once_and_leaves_the_ring(book):
    job = book.admit("ann")
    assert book.of_user("ann") == [job] and book.ring.users == ["ann"]
    assert book.close(job, "done") is True
    assert book.close(job, "done") is False  # a second finish counts nothing
    assert book.get(job.id) is None and book.ring.users == [] and book.unfinished_ids() == []
    assert book.snapshot(pending_items=0).jobs_done == 1
