"""The resync queue: due times by workspace, one reconcile at a time per workspace."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest

from rspark_operator.cluster import Failure, KubeError
from rspark_operator.main import AHEAD_SECONDS, LEGACY_FINALIZER, Indexes, catch_up
from rspark_operator.resync import Job, Result, ResyncQueue

pytestmark = pytest.mark.unit

RESYNC = 600.0
A = ("team", "a")
B = ("team", "b")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def queue() -> tuple[ResyncQueue, Clock]:
    clock = Clock()
    return ResyncQueue(RESYNC, clock=clock, rng=random.Random(1)), clock


def test_nothing_is_taken_before_it_is_due() -> None:
    q, clock = queue()
    q.schedule(A, 10)
    assert q.take(timeout=0) is None
    clock.now += 10
    assert q.take(timeout=0) == Job(A, children=True)
    assert q.take(timeout=0) is None


def test_the_earliest_due_time_wins_and_a_workspace_is_taken_once() -> None:
    q, clock = queue()
    q.schedule(A, 300)
    q.schedule(A, 5)
    q.schedule(A, 100)
    clock.now += 5
    assert q.take(timeout=0) == Job(A, children=True)
    clock.now += 1000
    assert q.take(timeout=0) is None  # the later times were merged into the one taken


def test_due_order_and_a_change_goes_first() -> None:
    q, _ = queue()
    q.schedule(A, 0, children=False)
    q.schedule(B, -60)  # a change of the spec: ahead of the backlog
    assert q.take(timeout=0) == Job(B, children=True)
    assert q.take(timeout=0) == Job(A, children=False)


def test_a_refresh_does_not_push_the_full_resync_back() -> None:
    q, clock = queue()
    q.schedule(A, 0)
    job = q.take(timeout=0)
    assert job == Job(A, children=True)
    q.done(job, Result.DONE)  # next full resync in RESYNC
    for _ in range(5):
        clock.now += RESYNC / 5 - 1
        q.schedule(A, 0, children=False)  # a pod event
        refresh = q.take(timeout=0)
        assert refresh == Job(A, children=False)
        q.done(refresh, Result.DONE)
    clock.now += 5
    assert q.take(timeout=0) == Job(A, children=True)


def test_an_event_during_a_reconcile_waits_for_it_to_finish() -> None:
    q, _ = queue()
    q.schedule(A, 0)
    job = q.take(timeout=0)
    assert job is not None
    q.schedule(A, 0, children=False)
    assert q.take(timeout=0) is None  # A is running
    q.done(job, Result.DONE)
    assert q.take(timeout=0) == Job(A, children=False)


def test_retry_delays_grow_and_are_capped() -> None:
    q, clock = queue()
    q.schedule(A, 0)
    delays = []
    for _ in range(14):
        job = q.take(timeout=0)
        assert job is not None
        q.done(job, Result.FAILED)
        before = clock.now
        due = q.due_at(A)
        assert due is not None
        delays.append(due - before)
        clock.now = due
    assert delays[0] <= 1.0
    assert all(later >= earlier / 2 for earlier, later in itertools.pairwise(delays))
    assert max(delays) <= RESYNC
    assert delays[-1] >= RESYNC / 2  # reached the cap
    job = q.take(timeout=0)
    assert job is not None
    q.done(job, Result.DONE)
    assert q.due_at(A) == clock.now + RESYNC  # success resets it


def test_a_gone_workspace_is_forgotten() -> None:
    q, clock = queue()
    q.schedule(A, 0)
    job = q.take(timeout=0)
    assert job is not None
    q.done(job, Result.GONE)
    assert len(q) == 0
    q.schedule(B, 0)
    q.forget(B)
    clock.now += 2 * RESYNC
    assert q.take(timeout=0) is None


def workspace(name: str, generation: int, observed: int, **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "team",
            "name": name,
            "uid": f"{name}-uid",
            "generation": generation,
            **metadata,
        },
        "status": {"observedGeneration": observed},
    }


def test_a_restart_queues_what_changed_meanwhile_from_its_own_listing() -> None:
    """Ahead of kopf's first events: the changed spec and the legacy finalizer to take
    off; every other workspace within a resync period, as kopf's first event of it does
    (a workspace listed and deleted before kopf's own listing has no other reconcile to
    find it gone). A listing that fails midway keeps what it queued."""
    q, clock = queue()
    indexes = Indexes()

    def listed() -> Iterator[dict[str, Any]]:
        yield workspace("a", 2, 1)
        yield workspace("b", 1, 1)
        yield workspace("c", 1, 1, deletionTimestamp="x", finalizers=[LEGACY_FINALIZER])
        yield workspace("d", 2, 1, deletionTimestamp="x")
        raise KubeError(Failure.UNAVAILABLE, 0, "no answer")

    with pytest.raises(KubeError):
        catch_up(listed(), q, indexes, None)
    due = {name: q.due_at(("team", name)) for name in "abcd"}
    assert due["a"] == due["c"] == clock.now + AHEAD_SECONDS
    assert all(clock.now <= (due[name] or -1) <= clock.now + RESYNC for name in "bd")
    assert indexes.workspace_keys() == {("team", name) for name in "abcd"}
