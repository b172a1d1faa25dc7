"""The executor's scheduling policy as pure functions: admission caps, per-user round robin,
started-first order, batch picking, queue positions and ETAs — no thread, no future, no model.

Jobs and work items here are plain values with the fields the policy reads (its ``Admitted`` and
``Queued`` protocols); ``test_executor.py`` checks the same rules through the live GPU thread."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from pipeline.errors import QueueFull, TooManyJobs
from pipeline.executor.jobs import BatchKey
from pipeline.executor.metrics import MetricsRecorder
from pipeline.executor.policy import (
    UserRing,
    check_admission,
    eta_at,
    pick_batch,
    priority_order,
    queue_position,
    rotated_users,
    round_robin,
    service_order,
)


@dataclass(eq=False)
class Ticket:
    """A job as the policy sees it."""

    user_id: str
    seq: int
    started: bool = False
    finished: bool = False


@dataclass(eq=False)
class Work:
    """A work item as the policy sees it; ``key`` is a render's batch key (None: not a render)."""

    job: Ticket | None
    seq: int
    key: BatchKey | None = None
    label: str = ""


def tickets(*users: str) -> list[Ticket]:
    return [Ticket(user, seq) for seq, user in enumerate(users)]


def users_of(jobs: list[Ticket]) -> list[str]:
    return [job.user_id for job in jobs]


def key_of(item: Work) -> BatchKey | None:
    return item.key


# --- round robin ---------------------------------------------------------------------------------
def test_round_robin_serves_one_job_per_user_per_round_in_each_users_own_order() -> None:
    jobs = tickets("a", "a", "a", "b", "c", "c")
    ordered = round_robin(jobs, user_of=lambda job: job.user_id, ring=UserRing())
    assert users_of(ordered) == ["a", "b", "c", "a", "c", "a"]
    assert [job.seq for job in ordered if job.user_id == "a"] == [0, 1, 2]  # a's own order kept


def test_a_flooding_user_cannot_starve_the_others() -> None:
    # user0 submits all five of its jobs first, then ten users (user0 included) keep arriving.
    jobs = tickets(*(["user0"] * 5), *(f"user{u}" for _ in range(4) for u in range(1, 10)))
    ordered = round_robin(jobs, user_of=lambda job: job.user_id, ring=UserRing())
    served = users_of(ordered)
    assert len(served) == 41
    for start in range(0, 40, 10):  # every window of ten serves each user once
        assert sorted(served[start : start + 10]) == sorted(f"user{u}" for u in range(10))
    assert served[40] == "user0"


def test_users_take_turns_in_ring_order_starting_after_the_one_served_last() -> None:
    ring = UserRing(users=["c", "a", "b"])
    assert rotated_users(["a", "b", "c"], ring) == ["c", "a", "b"]  # the ring's order, not the arrival
    ring.last_served = "a"
    assert rotated_users(["a", "b", "c"], ring) == ["b", "c", "a"]
    assert rotated_users(["a", "c"], ring) == ["c", "a"]  # b has nothing waiting: skipped
    assert rotated_users(["newcomer", "a", "b"], ring) == ["b", "newcomer", "a"]  # newcomers join at the end
    ring.last_served = "gone"
    assert rotated_users(["a", "b"], ring) == ["a", "b"]  # no rotation past a user who left


def test_the_ring_remembers_joins_leaves_and_who_was_served_last() -> None:
    ring = UserRing()
    for user in ("a", "b", "a", "c"):
        ring.join(user)
    assert ring.users == ["a", "b", "c"]
    ring.leave("a")
    ring.leave("nobody")
    ring.join("a")
    assert ring.users == ["b", "c", "a"]  # a came back: its turn is now at the end

    fresh_b, fresh_c, begun_a = Ticket("b", 0), Ticket("c", 1), Ticket("a", 2, started=True)
    ring.served([Work(begun_a, 0), Work(None, 1)])
    assert ring.last_served is None  # started jobs and jobless work do not move the ring
    ring.served([Work(fresh_b, 2), Work(fresh_c, 3), Work(begun_a, 4)])
    assert ring.last_served == "c"  # the last fresh job of a batch


# --- started first ------------------------------------------------------------------------------
def test_work_of_started_jobs_and_of_no_job_goes_before_fresh_jobs() -> None:
    alice = Ticket("alice", 0, started=True)
    fresh = [Ticket(f"user{i}", i + 1) for i in range(3)]
    pending = [Work(job, seq=10 + i, label=f"{job.user_id}:render") for i, job in enumerate(fresh)]
    pending.append(Work(alice, seq=20, label="alice:review"))  # arrives last
    pending.append(Work(None, seq=15, label="warmup"))
    pending.append(Work(alice, seq=13, label="alice:render"))
    ordered = [item.label for item in priority_order(pending, UserRing())]
    assert ordered == ["alice:render", "warmup", "alice:review", "user0:render", "user1:render", "user2:render"]


def test_fresh_work_follows_admission_order_within_a_user_and_round_robin_across_users() -> None:
    a_first, a_second, b_only = Ticket("a", 0), Ticket("a", 1), Ticket("b", 2)
    pending = [
        Work(a_second, seq=0, label="a2"),  # a's second job submitted its work first
        Work(b_only, seq=1, label="b1"),
        Work(a_first, seq=2, label="a1"),
    ]
    assert [item.label for item in priority_order(pending, UserRing())] == ["a1", "b1", "a2"]
    ring = UserRing(users=["a", "b"], last_served="a")
    assert [item.label for item in priority_order(pending, ring)] == ["b1", "a1", "a2"]


# --- batch picking ------------------------------------------------------------------------------
SMALL: BatchKey = ("text2img", 64, 64, 4, 7.5, None)
LARGE: BatchKey = ("text2img", 128, 128, 4, 7.5, None)


def test_a_batch_takes_the_compatible_renders_behind_the_head_and_nothing_else() -> None:
    order = [
        Work(None, 0, SMALL, "head"),
        Work(None, 1, LARGE, "other size"),
        Work(None, 2, None, "review"),
        Work(None, 3, SMALL, "mate 1"),
        Work(None, 4, SMALL, "mate 2"),
    ]
    assert [item.label for item in pick_batch(order, max_batch=4, key_of=key_of)] == ["head", "mate 1", "mate 2"]
    assert [item.label for item in pick_batch(order, max_batch=2, key_of=key_of)] == ["head", "mate 1"]
    assert [item.label for item in pick_batch(order, max_batch=1, key_of=key_of)] == ["head"]
    assert [item.label for item in pick_batch(order[1:], max_batch=4, key_of=key_of)] == ["other size"]


def test_work_that_is_not_a_render_runs_alone() -> None:
    order = [Work(None, 0, None, "transcribe"), Work(None, 1, None, "review"), Work(None, 2, SMALL, "render")]
    assert [item.label for item in pick_batch(order, max_batch=4, key_of=key_of)] == ["transcribe"]


def test_batch_keys_are_asked_only_while_the_batch_can_still_grow() -> None:
    asked: list[str] = []

    def counting_key(item: Work) -> BatchKey | None:
        asked.append(item.label)
        return item.key

    order = [Work(None, i, SMALL, f"r{i}") for i in range(6)]
    assert len(pick_batch(order, max_batch=3, key_of=counting_key)) == 3
    assert asked == ["r0", "r1", "r2"]
    asked.clear()
    pick_batch(order, max_batch=1, key_of=counting_key)
    assert asked == []  # batching off: no key needed (it may need the tokenizer)


@pytest.mark.parametrize("seed", range(20))
def test_random_queues_never_mix_keys_or_exceed_max_batch(seed: int) -> None:
    rng = random.Random(seed)
    keys: list[BatchKey | None] = [SMALL, LARGE, ("img2img", 64, 64, 4, 7.5, 0.75), None]
    order = [Work(None, i, rng.choice(keys), f"w{i}") for i in range(rng.randint(1, 12))]
    max_batch = rng.randint(1, 5)
    batch = pick_batch(order, max_batch=max_batch, key_of=key_of)
    assert batch[0] is order[0]
    assert 1 <= len(batch) <= max_batch
    assert len({item.key for item in batch}) == 1
    if order[0].key is None or max_batch == 1:
        assert len(batch) == 1
    else:  # greedy: every compatible item it skipped came after the batch was full
        compatible = [item for item in order if item.key == order[0].key]
        assert batch == compatible[:max_batch]
    assert [item.seq for item in batch] == sorted(item.seq for item in batch)  # queue order kept


# --- admission caps -----------------------------------------------------------------------------
def test_a_user_at_the_per_user_cap_is_refused_with_the_limit_named() -> None:
    jobs = tickets("a", "a", "b")
    with pytest.raises(TooManyJobs) as refused:
        check_admission(jobs, "a", max_jobs_per_user=2, max_queue=10)
    assert "You already have 2 pictures in progress (the limit is 2)" in str(refused.value)
    check_admission(jobs, "b", max_jobs_per_user=2, max_queue=10)  # somebody else is fine
    with pytest.raises(TooManyJobs, match="have 1 picture in progress"):
        check_admission(jobs, "b", max_jobs_per_user=1, max_queue=10)


def test_finished_jobs_free_their_slot() -> None:
    jobs = tickets("a", "a")
    jobs[0].finished = True
    check_admission(jobs, "a", max_jobs_per_user=2, max_queue=2)
    jobs[1].finished = True
    check_admission(jobs, "a", max_jobs_per_user=1, max_queue=1)


def test_a_full_queue_refuses_newcomers_and_the_per_user_cap_is_checked_first() -> None:
    jobs = tickets("a", "b", "c")
    with pytest.raises(QueueFull, match=r"The queue is full \(3 pictures waiting\)"):
        check_admission(jobs, "newcomer", max_jobs_per_user=2, max_queue=3)
    with pytest.raises(TooManyJobs):
        check_admission(jobs, "a", max_jobs_per_user=1, max_queue=3)


# --- positions and ETAs -------------------------------------------------------------------------
def test_queue_positions_follow_the_service_order_and_end_when_a_job_begins() -> None:
    a1, a2, b1, done, running = Ticket("a", 0), Ticket("a", 1), Ticket("b", 2), Ticket("c", 3), Ticket("d", 4)
    done.finished = True
    running.started = True
    jobs = [a1, a2, b1, done, running]
    order = service_order(jobs, UserRing(users=["a", "b", "c", "d"]))
    assert order == [a1, b1, a2]
    assert [queue_position(job, order) for job in jobs] == [1, 3, 2, None, None]
    a1.started = True
    order = service_order(jobs, UserRing(users=["a", "b", "c", "d"], last_served="a"))
    assert [queue_position(job, order) for job in (a1, b1, a2)] == [None, 1, 2]


def test_eta_grows_with_the_position_and_shrinks_with_batching() -> None:
    first, second = (eta_at(p, running_jobs=0, mean_job_s=10.0, mean_batch_size=1.0) for p in (1, 2))
    assert (first, second) == (10.0, 20.0)
    assert eta_at(1, running_jobs=3, mean_job_s=10.0, mean_batch_size=1.0) == 20.0  # waits for the running one
    assert eta_at(3, running_jobs=1, mean_job_s=10.0, mean_batch_size=4.0) == 17.5  # 3 ahead, 4 per call


def test_metrics_give_the_policy_its_means() -> None:
    recorder = MetricsRecorder()
    assert recorder.mean_batch_size() == 1.0
    assert recorder.mean_job_seconds() == 5.5  # before anything ran: a render and a review
    recorder.stage_times["render"].extend([2.0, 4.0])
    assert recorder.mean_job_seconds() == 3.5
    recorder.batch_sizes.update({4: 1, 1: 2})
    assert recorder.mean_batch_size() == 2.0
    for outcome, cancelled in (("done", False), ("failed", False), ("done", True), ("cancelled", False)):
        recorder.job_finished(6.0, outcome, cancelled=cancelled)
    assert (recorder.done, recorder.failed, recorder.cancelled) == (1, 1, 2)
    assert recorder.mean_job_seconds() == 6.0
    snapshot = recorder.snapshot(queue_depth=0, running_jobs=0, pending_items=0)
    assert snapshot.batch_sizes == {1: 2, 4: 1} and snapshot.stage_mean_s == {"render": 3.0}
