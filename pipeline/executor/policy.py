"""The scheduling policy, as pure functions: who is admitted, which work runs next, which renders
share a pipeline call, and where a waiting job stands in the queue.

No threads, futures or clocks here, so every executor (the local GPU thread, a cluster one) makes
the same decisions, and the rules are unit-tested on their own (``tests/pipeline/test_policy.py``).

* **Admission**: at most ``max_jobs_per_user`` unfinished jobs per user and ``max_queue`` in all.
* **Started first**: work of a job that has begun (its review, its correction round), and work
  that belongs to no job, runs before work of jobs that have not begun, in submission order.
* **Round robin**: among jobs that have not begun, users take turns, one job each per round,
  starting with the user after the one served last; each user's own jobs keep their order.
* **Model affinity**: work for a model that is loaded may pass work that needs another model
  loaded (a switch costs seconds), within a window and at most a few times per item.
* **Batching**: the next item and the compatible renders behind it (equal batch keys), at most
  ``max_batch`` in one call; work that is not a render runs alone.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from ..errors import QueueFull, TooManyJobs
from .jobs import BatchKey


class Admitted(Protocol):
    """What the policy reads of a job."""

    @property
    def user_id(self) -> str: ...
    @property
    def seq(self) -> int: ...  # admission order
    @property
    def started(self) -> bool: ...
    @property
    def finished(self) -> bool: ...


class Queued(Protocol):
    """What the policy reads of a work item."""

    @property
    def job(self) -> Admitted | None: ...
    @property
    def seq(self) -> int: ...  # submission order


T = TypeVar("T")
J = TypeVar("J", bound=Admitted)
W = TypeVar("W", bound=Queued)


@dataclass
class UserRing:
    """Round-robin state: the users with unfinished jobs in the order they arrived, and the user
    whose job that had not yet begun was served last."""

    users: list[str] = field(default_factory=list)
    last_served: str | None = None

    def join(self, user_id: str) -> None:
        if user_id not in self.users:
            self.users.append(user_id)

    def leave(self, user_id: str) -> None:
        if user_id in self.users:
            self.users.remove(user_id)

    def served(self, batch: Iterable[Queued]) -> None:
        """Note who was just served: the next fresh job comes from the user after them."""
        for item in batch:
            if item.job is not None and not item.job.started:
                self.last_served = item.job.user_id


def check_admission(jobs: Iterable[Admitted], user_id: str, *, max_jobs_per_user: int, max_queue: int) -> None:
    """Raise :class:`TooManyJobs` or :class:`QueueFull` when ``user_id`` may not add a job now."""
    active = [job for job in jobs if not job.finished]
    mine = sum(1 for job in active if job.user_id == user_id)
    if mine >= max_jobs_per_user:
        raise TooManyJobs(
            f"You already have {mine} picture{'s' if mine != 1 else ''} in progress "
            f"(the limit is {max_jobs_per_user}). Wait for one to finish, then try again."
        )
    if len(active) >= max_queue:
        raise QueueFull(f"The queue is full ({max_queue} pictures waiting) — please try again in a few minutes.")


def rotated_users(users: Iterable[str], ring: UserRing) -> list[str]:
    """``users`` in ring order (newcomers last), starting after the user served last."""
    present = list(users)
    order = [user for user in ring.users if user in present]
    order += [user for user in present if user not in order]
    if ring.last_served in order:
        i = order.index(ring.last_served) + 1
        order = order[i:] + order[:i]
    return order


def round_robin(entries: Iterable[T], *, user_of: Callable[[T], str], ring: UserRing) -> list[T]:
    """``entries`` (already in each user's own order) interleaved one per user per round,
    starting with the user after the one served last."""
    by_user: dict[str, collections.deque[T]] = {}
    for entry in entries:
        by_user.setdefault(user_of(entry), collections.deque()).append(entry)
    queues = [by_user[user] for user in rotated_users(by_user, ring)]
    ordered: list[T] = []
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.popleft())
    return ordered


def priority_order(pending: Iterable[W], ring: UserRing) -> list[W]:
    """Pending work in the order it would be served (before batching): work of started jobs
    and of no job first, by submission; then fresh jobs' work, round-robin across users."""
    items = list(pending)
    started = sorted((it for it in items if it.job is None or it.job.started), key=lambda it: it.seq)
    fresh = sorted(
        ((it.job, it) for it in items if it.job is not None and not it.job.started),
        key=lambda pair: (pair[0].seq, pair[1].seq),
    )
    return started + [it for _, it in round_robin(fresh, user_of=lambda pair: pair[0].user_id, ring=ring)]


def pick_batch(order: Sequence[W], *, max_batch: int, key_of: Callable[[W], BatchKey | None]) -> list[W]:
    """The head of ``order`` and, when it is a render, the renders behind it with the same batch
    key, at most ``max_batch`` in all. ``key_of`` gives None for work that is not a render; it is
    called only for the items looked at (keys may be costly)."""
    head = order[0]
    if max_batch <= 1:
        return [head]
    head_key = key_of(head)
    if head_key is None:
        return [head]
    batch = [head]
    for item in order[1:]:
        if len(batch) >= max_batch:
            break
        if key_of(item) == head_key:
            batch.append(item)
    return batch


def prefer_loaded(
    order: Sequence[W],
    *,
    needs_load: Callable[[W], bool],
    bypassed: Callable[[W], int],
    window: int,
    max_bypass: int,
) -> list[W]:
    """Group work by model so a burst does not thrash: when the head of ``order`` needs a model
    that is not loaded, the first item among the next ``window`` whose model *is* loaded goes
    first instead, unless the head was already passed over ``max_bypass`` times (then it runs:
    nobody waits for ever). Returns the (possibly) reordered list; the caller counts bypasses."""
    if len(order) < 2 or not needs_load(order[0]) or bypassed(order[0]) >= max_bypass:
        return list(order)
    for i, item in enumerate(order[1 : 1 + window], start=1):
        if not needs_load(item):
            return [item, *order[:i], *order[i + 1 :]]
    return list(order)


def service_order(jobs: Iterable[J], ring: UserRing) -> list[J]:
    """Unfinished jobs that have not begun, in the order they will be served."""
    waiting = sorted((job for job in jobs if not job.finished and not job.started), key=lambda job: job.seq)
    return round_robin(waiting, user_of=lambda job: job.user_id, ring=ring)


def queue_position(job: Admitted, order: Sequence[Admitted]) -> int | None:
    """1-based place of ``job`` in a :func:`service_order`; None once it has begun or finished."""
    if job.started or job.finished or job not in order:
        return None
    return order.index(job) + 1


def eta_at(position: int, *, running_jobs: int, mean_job_s: float, mean_batch_size: float) -> float:
    """Seconds until the job at ``position`` is done: the jobs ahead (and one running) share the
    GPU, and batches serve several at once."""
    return (position - 1 + min(running_jobs, 1)) * mean_job_s / mean_batch_size + mean_job_s
