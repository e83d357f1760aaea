"""The operator's own indexes (`indexes.py`, `main.Indexes`): what the watch handlers
keep in them, the listing that fills the workspace ones before any job runs, and the
reconcile that takes out a workspace gone."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any, cast

import kopf
import pytest

from rspark_operator.api import API_VERSION, KIND
from rspark_operator.cluster import Failure, KubeError, Manifest
from rspark_operator.gateway import gateway_user
from rspark_operator.indexes import Index
from rspark_operator.main import (
    GATEWAY_USERS_JOB,
    Indexes,
    ListedWhenActing,
    _run_job,
    pod_event,
    seed,
    start_resync,
    warning_event,
    workspace_event,
)
from rspark_operator.metrics import OperatorMetrics
from rspark_operator.names import WORKSPACE_LABEL
from rspark_operator.resync import Job, Key, Result, ResyncQueue
from rspark_operator.rollout import Rollout
from rspark_operator.settings import OperatorSettings
from tests.unit.fakeapi import FakeApi
from tests.unit.test_gateway import GATEWAY, put, run, users
from tests.unit.test_reconcile import NAME, NAMESPACE, SETTINGS, put_workspace
from tests.unit.workspaces import settings

pytestmark = pytest.mark.unit

ALICE = "alice@example.com"
BOB = "bob@example.com"
RESYNC = 600.0


def test_an_object_gives_values_by_key_and_its_next_mapping_replaces_the_last() -> None:
    index: Index[str, str] = Index()
    index.set("u1", {"team-a": "one"})
    index.set("u2", {"team-a": "two", "team-b": "two"})
    assert index.get("team-a") == ("one", "two")
    index.set("u1", {"team-b": "one"})
    assert index.get("team-a") == ("two",)
    assert index.get("team-b") == ("two", "one")
    index.set("u2", {"team-a": "TWO", "team-b": "TWO"})  # in place: the order stays
    assert index.get("team-b") == ("TWO", "one")
    index.remove("u2")
    index.remove("never-seen")
    assert index.get("team-a") == ()
    assert index.items() == [("team-b", "one")]
    assert "u1" in index and "u2" not in index


def test_the_listings_copy_never_replaces_what_a_watch_event_gave() -> None:
    indexes = Indexes()
    watched = {"metadata": {"uid": "u1", "namespace": "team", "name": "alice"},
               "spec": {"user": "alice@example.com"}}  # fmt: skip
    indexes.set_workspace(watched, None)
    stale = {**watched, "spec": {"user": "someone@example.com"}}
    indexes.add_workspace(stale, None)
    assert indexes.by_namespace.get("team") == (("alice", "alice@example.com"),)
    indexes.forget_workspaces(["u1"])
    indexes.add_workspace(stale, None)
    assert indexes.by_namespace.get("team") == (("alice", "someone@example.com"),)


def test_other_threads_read_while_one_writes() -> None:
    """The reconciles read from their threads while kopf's loop writes: every read is
    whole (kopf's own index, read the same way, raised "changed size during
    iteration")."""
    index: Index[str, tuple[str, int]] = Index()
    done = threading.Event()

    def write() -> None:
        for round_ in range(1000):
            for n in range(20):
                index.set(f"u{n}", {f"ns{n % 3}": (f"w{n}", round_)})
            for n in range(0, 20, 2):
                index.remove(f"u{n}")
        done.set()

    reads = 0
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        writer = threading.Thread(target=write)
        writer.start()
        while not done.is_set():
            for key, (name, _round) in index.items():
                assert key == f"ns{int(name[1:]) % 3}"
            assert all(name in {f"w{n}" for n in range(0, 20, 3)} for name, _ in index.get("ns0"))
            reads += 1
        writer.join()
    finally:
        sys.setswitchinterval(interval)
    assert reads > 0
    assert sorted(name for _, (name, _round) in index.items()) == sorted(
        f"w{n}" for n in range(1, 20, 2)
    )


def memo(
    queue: ResyncQueue | None = None,
    ours: OperatorSettings = SETTINGS,
    indexes: Indexes | None = None,
) -> kopf.Memo:
    return kopf.Memo(
        queue=ResyncQueue(RESYNC, clock=lambda: 0.0) if queue is None else queue,
        settings=ours,
        indexes=indexes or Indexes(),
        kube=FakeApi(),
        rollout=Rollout(max_pods=1),
        metrics=OperatorMetrics(),
        cordoned=set(),
    )


def deliver(handler: Any, memo: kopf.Memo, kind: str | None, body: dict[str, Any]) -> None:
    """A watch event, with the keyword arguments kopf gives every handler that needs them."""
    metadata = body["metadata"]
    event = {"type": kind, "object": body}
    asyncio.run(
        handler(
            event=event,
            type=kind,
            body=body,
            name=metadata.get("name"),
            namespace=metadata.get("namespace"),
            memo=memo,
        )
    )


def workspace(name: str, user: str = ALICE, uid: str | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": NAMESPACE, "name": name, "uid": uid or f"{name}-uid"},
        "spec": {"user": user, **spec},
    }


def test_workspace_events_keep_the_workspace_indexes() -> None:
    ours = memo(ours=settings(default_spark_profile="standard"))
    indexes: Indexes = ours.indexes
    deliver(workspace_event, ours, None, workspace("a1"))
    deliver(workspace_event, ours, "ADDED", workspace("b1", BOB, spark={"profile": "big"}))
    assert indexes.by_namespace.get(NAMESPACE) == (("a1", ALICE), ("b1", BOB))
    assert indexes.by_profile.get("standard") == ((NAMESPACE, "a1"),)
    assert indexes.by_profile.get("big") == ((NAMESPACE, "b1"),)

    deliver(workspace_event, ours, "MODIFIED", workspace("a1", "carol", spark={"profile": "big"}))
    assert indexes.by_namespace.get(NAMESPACE) == (("a1", "carol"), ("b1", BOB))
    assert indexes.by_profile.get("standard") == ()
    assert indexes.by_profile.get("big") == ((NAMESPACE, "b1"), (NAMESPACE, "a1"))

    deliver(workspace_event, ours, "DELETED", workspace("b1", BOB, spark={"profile": "big"}))
    assert indexes.by_namespace.get(NAMESPACE) == (("a1", "carol"),)
    assert indexes.by_profile.get("big") == ((NAMESPACE, "a1"),)
    assert indexes.workspace_keys() == {(NAMESPACE, "a1")}


class Noting(ResyncQueue):
    """A queue that notes, for each workspace queued, whether the index held it then."""

    def __init__(self, indexes: Indexes) -> None:
        super().__init__(RESYNC, clock=lambda: 0.0)
        self.indexes = indexes
        self.indexed: dict[Key, bool] = {}

    def schedule(self, key: Key, delay: float = 0.0, *, children: bool = True) -> None:
        names = {name for name, _user in self.indexes.by_namespace.get(key[0])}
        self.indexed.setdefault(key, key[1] in names)
        super().schedule(key, delay, children=children)


def test_a_workspace_is_in_the_index_before_its_reconcile_is_queued() -> None:
    """Its reconcile registers it at the gateway, whose sweep keeps the lines of the
    workspaces in the index only: from a watch event and from the listing alike."""
    indexes = Indexes()
    ours = memo(Noting(indexes), GATEWAY, indexes)
    new = workspace("new")
    new["metadata"]["generation"] = 1  # not reconciled yet: queued at once
    deliver(workspace_event, ours, "ADDED", new)
    fake: FakeApi = ours.kube
    put(fake, "listed")
    assert seed(ours)
    indexed = ours.queue.indexed
    assert (indexed[(NAMESPACE, "new")], indexed[(NAMESPACE, "listed")]) == (True, True)


def test_pod_events_keep_the_workspace_pods_by_node() -> None:
    ours = memo()
    pod: dict[str, Any] = {
        "metadata": {
            "namespace": NAMESPACE,
            "name": "a1",
            "uid": "pod-uid",
            "labels": {WORKSPACE_LABEL: "a1"},
        },
        "spec": {},
    }
    deliver(pod_event, ours, None, pod)  # not scheduled yet: on no node
    assert "pod-uid" in ours.indexes.by_node
    assert ours.indexes.by_node.items() == []
    pod["spec"]["nodeName"] = "node-a"
    deliver(pod_event, ours, "MODIFIED", pod)
    assert ours.indexes.by_node.get("node-a") == ((NAMESPACE, "a1"),)
    deliver(pod_event, ours, "DELETED", pod)
    assert ours.indexes.by_node.get("node-a") == ()
    assert "pod-uid" not in ours.indexes.by_node
    assert ours.queue.due_at((NAMESPACE, "a1")) == 0.0  # its status refreshed


def test_warning_events_keep_what_the_status_quotes_and_a_listed_one_refreshes() -> None:
    ours = memo()
    event: dict[str, Any] = {
        "metadata": {"namespace": NAMESPACE, "name": "a1.17", "uid": "event-uid"},
        "type": "Warning",
        "reason": "FailedScheduling",
        "message": "0/3 nodes are available",
        "lastTimestamp": "2026-01-02T03:04:05Z",
        "count": 4,
        "involvedObject": {"kind": "Pod", "namespace": NAMESPACE, "name": "a1", "uid": "pod"},
    }
    event["metadata"]["creationTimestamp"] = "2026-01-02T03:00:00Z"
    deliver(warning_event, ours, None, event)
    assert ours.indexes.warnings.get("pod") == (
        {
            "type": "Warning",
            "reason": "FailedScheduling",
            "message": "0/3 nodes are available",
            "lastTimestamp": "2026-01-02T03:04:05Z",
            "eventTime": None,
            "involvedObject": {"uid": "pod"},
            "metadata": {"creationTimestamp": "2026-01-02T03:00:00Z"},
        },
    )
    # Listed: a reconcile may have run before the warning came.
    assert ours.queue.due_at((NAMESPACE, "a1")) == 0.0
    event["message"] = "0/4 nodes are available"
    deliver(warning_event, ours, "MODIFIED", event)
    assert [seen["message"] for seen in ours.indexes.warnings.get("pod")] == [event["message"]]
    deliver(warning_event, ours, "DELETED", event)
    assert ours.indexes.warnings.get("pod") == ()


def test_the_listing_fills_the_index_so_the_first_sweep_keeps_every_workspaces_line() -> None:
    """No kopf event has come yet: the sweep keeps the lines of the workspaces listed,
    and drops only the line of the one gone."""
    ours = memo(ours=GATEWAY)
    fake: FakeApi = ours.kube
    for name in ("a1", "b1", "gone"):
        put(fake, name)
        run(fake, name)
    del fake.objects[(KIND, NAMESPACE, "gone")]

    assert seed(ours)
    assert ours.indexes.workspace_keys() == {(NAMESPACE, "a1"), (NAMESPACE, "b1")}
    assert all(ours.queue.due_at((NAMESPACE, name)) is not None for name in ("a1", "b1"))
    assert _run_job(ours, Job(GATEWAY_USERS_JOB, children=True)) is Result.DONE
    assert set(users(fake)) == {gateway_user(NAMESPACE, "a1"), gateway_user(NAMESPACE, "b1")}


def test_a_failed_listing_is_not_whole() -> None:
    ours = memo()
    fake: FakeApi = ours.kube
    put(fake, "a1")

    def failing(api_version: str, kind: str, namespace: str, selector: str = "") -> Any:
        yield from FakeApi.list(fake, api_version, kind, namespace, selector)
        raise KubeError(Failure.UNAVAILABLE, 0, "no answer")

    fake.list = failing  # type: ignore[method-assign]
    assert not seed(ours)
    assert ours.indexes.workspace_keys() == {(NAMESPACE, "a1")}  # kept, and queued
    assert ours.queue.due_at((NAMESPACE, "a1")) is not None


def test_no_job_runs_before_a_whole_listing_since_the_replica_began_to_act() -> None:
    acting = [False]
    outcomes = iter([False, True, True])
    listings: list[bool] = []

    def listing() -> bool:
        listings.append(next(outcomes))
        return listings[-1]

    gate = ListedWhenActing(lambda: acting[0], listing)
    assert not gate()
    assert listings == []  # a replica that does not act lists nothing
    acting[0] = True
    assert not gate()  # the listing failed
    assert gate()
    assert gate()
    assert listings == [False, True]  # listed once
    acting[0] = False
    assert not gate()
    acting[0] = True
    assert gate()  # after a pause (kopf did not watch): listed again
    assert listings == [False, True, True]


def test_kopf_starts_watching_once_the_first_listing_is_over() -> None:
    """kopf starts its watches when `start_resync` returns: after the operator's own
    first listing, which then does not compete with kopf's listings."""
    ours = memo(ResyncQueue(RESYNC))  # the real clock: the loop looks at `stop` each second
    fake: FakeApi = ours.kube
    put(fake, "a1")
    ours.stop = threading.Event()
    ours.acting = lambda: True
    try:
        cast(Any, start_resync)(memo=ours)
        # Listed and queued before kopf saw anything: the index is whole already.
        assert ours.indexes.workspace_keys() == {(NAMESPACE, "a1")}
        assert ours.queue.due_at((NAMESPACE, "a1")) is not None
    finally:
        ours.stop.set()
        ours.thread.join(timeout=10)
    assert not ours.thread.is_alive()


def test_the_first_look_is_over_whatever_it_found() -> None:
    for acting, listing in ((False, True), (True, False), (True, True)):
        gate = ListedWhenActing(partial(bool, acting), partial(bool, listing))
        assert not gate.first_look.is_set()
        assert gate() is (acting and listing)
        assert gate.first_look.is_set()


def listed(*bodies: dict[str, Any]) -> Iterator[Manifest]:
    for body in bodies:
        yield {"apiVersion": API_VERSION, "kind": KIND, **body}


def test_a_workspace_gone_before_kopf_saw_it_leaves_the_indexes_at_its_reconcile() -> None:
    """Listed, then deleted before kopf's own listing: no watch event will ever tell.
    The listing queued it; its reconcile finds it gone."""
    ours = memo()
    fake: FakeApi = ours.kube
    put(fake, "a1")
    stale = listed(workspace("a1"), workspace("ghost"))
    fake.list = lambda *args, **kwargs: stale  # type: ignore[method-assign]
    assert seed(ours)
    ghost = (NAMESPACE, "ghost")
    assert ours.queue.due_at(ghost) is not None

    assert _run_job(ours, Job(ghost, children=True)) is Result.GONE
    assert ours.indexes.workspace_keys() == {(NAMESPACE, "a1")}
    assert ours.indexes.by_namespace.get(NAMESPACE) == (("a1", ALICE),)
    assert ours.indexes.by_profile.items() == []


def test_a_listing_after_a_pause_queues_the_workspaces_it_lacks() -> None:
    """Deleted while this replica did not act (kopf did not watch, and tells nothing of
    it when it lists again): the new listing lacks it, and its reconcile comes at once."""
    ours = memo()
    ours.indexes.set_workspace(workspace("before-the-pause"), None)
    assert seed(ours)
    gone = (NAMESPACE, "before-the-pause")
    assert ours.queue.due_at(gone) == 0.0
    assert _run_job(ours, Job(gone, children=False)) is Result.GONE
    assert ours.indexes.workspace_keys() == set()


def test_a_workspace_created_again_under_its_name_replaces_the_old_in_the_indexes() -> None:
    """The index holds the old one (its deletion unseen); the API server has a new one
    whose event has not come: the reconcile indexes the new one before it registers it."""
    ours = memo()
    fake: FakeApi = ours.kube
    put_workspace(fake)  # uid ws-uid, Alice's
    ours.indexes.set_workspace(workspace(NAME, BOB, uid="old-uid"), None)

    assert _run_job(ours, Job((NAMESPACE, NAME), children=True)) is Result.DONE
    assert ours.indexes.uids.get((NAMESPACE, NAME)) == ("ws-uid",)
    assert ours.indexes.by_namespace.get(NAMESPACE) == ((NAME, ALICE),)
