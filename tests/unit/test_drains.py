"""The watch of cordoned nodes (`main.node_cordoned`): what it queues and remembers."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from rspark_operator.main import Indexes, node_cordoned
from rspark_operator.resync import ResyncQueue

pytestmark = pytest.mark.unit

NOW = 100.0


def node_event(memo: kopf.Memo, kind: str | None, name: str, unschedulable: bool) -> None:
    body = {"metadata": {"name": name}, "spec": {"unschedulable": unschedulable}}
    event: Any = {"type": kind, "object": body}
    handler: Any = node_cordoned  # kopf's typing of a decorated handler
    asyncio.run(handler(event=event, type=kind, body=body, name=name, memo=memo))


def memo() -> kopf.Memo:
    """Alice's and Bob's pods on node-a, Carol's on node-b (`pod_event` keeps these)."""
    indexes = Indexes()
    for workspace, node in (("alice", "node-a"), ("bob", "node-a"), ("carol", "node-b")):
        indexes.by_node.set(f"{workspace}-pod-uid", {node: ("team", workspace)})
    return kopf.Memo(queue=ResyncQueue(600, clock=lambda: NOW), cordoned=set(), indexes=indexes)


def test_a_cordoned_node_queues_the_workspaces_of_its_pods_and_is_remembered() -> None:
    ours = memo()
    node_event(ours, "MODIFIED", "node-a", unschedulable=True)
    assert ours.cordoned == {"node-a"}
    assert ours.queue.due_at(("team", "alice")) == NOW
    assert ours.queue.due_at(("team", "bob")) == NOW
    assert ours.queue.due_at(("team", "carol")) is None


def test_an_uncordoned_node_is_forgotten_and_queues_its_workspaces_again() -> None:
    ours = memo()
    node_event(ours, None, "node-a", unschedulable=True)  # listed at start
    node_event(ours, None, "node-b", unschedulable=True)
    ours.queue = ResyncQueue(600, clock=lambda: NOW)
    # Leaving the watch's selection (uncordoned) comes as a deletion.
    node_event(ours, "DELETED", "node-a", unschedulable=False)
    node_event(ours, "MODIFIED", "node-b", unschedulable=False)
    assert ours.cordoned == set()
    assert ours.queue.due_at(("team", "alice")) == NOW  # its pod back under its budget
    assert ours.queue.due_at(("team", "carol")) == NOW


def test_a_node_seen_cordoned_again_queues_nothing_more() -> None:
    ours = memo()
    node_event(ours, "MODIFIED", "node-a", unschedulable=True)
    ours.queue = ResyncQueue(600, clock=lambda: NOW)
    node_event(ours, "MODIFIED", "node-a", unschedulable=True)  # its status, say
    node_event(ours, "DELETED", "node-c", unschedulable=False)  # never seen cordoned
    assert len(ours.queue) == 0
