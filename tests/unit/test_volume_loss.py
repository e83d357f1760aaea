"""A node-local home volume on a lost node (`lifecycle.volume_lost`): when the operator
gives it up, and how the reconcile replaces it (claim deleted, then a new claim and pod)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from rspark_operator.conditions import timestamp
from rspark_operator.lifecycle import (
    KEPT,
    VOLUME_LOST,
    claim_terminating,
    volume_lost,
    volume_node,
)
from tests.unit.fakeapi import FakeApi
from tests.unit.test_reconcile import NAMESPACE, NOW, POD, SETTINGS, put_workspace, run, running

pytestmark = pytest.mark.unit

CLAIM = ("PersistentVolumeClaim", NAMESPACE, "demo-home")
LOST_AFTER = 600.0
SNAPSHOT = {"time": "2026-01-02T03:00:00Z", "id": "0123456789abcdef"}


def local_volume(node: str) -> dict[str, Any]:
    term = {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "pv-1"},
        "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [term]}]}}},
    }  # fmt: skip


def node(
    ready: bool = True, since: timedelta = timedelta(0), cordoned: bool = False
) -> dict[str, Any]:
    condition = {
        "type": "Ready",
        "status": "True" if ready else "Unknown",
        "lastTransitionTime": timestamp(NOW - since),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-a"},
        "spec": {"unschedulable": cordoned},
        "status": {"conditions": [condition]},
    }


@pytest.mark.parametrize(
    ("volume", "holder"),
    [
        (local_volume("node-a"), "node-a"),
        ({"spec": {}}, ""),
        # A volume any node but the real ones can attach (the local cluster's kwok disks).
        ({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "rspark.dev/node-kind", "operator": "DoesNotExist"}]}]}}}}, ""),
        # A zonal disk: several nodes.
        ({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a", "b"]}]}]}}}}, ""),
    ],
)  # fmt: skip
def test_only_a_volume_pinned_to_one_node_is_node_local(volume: Any, holder: str) -> None:
    assert volume_node(volume) == holder


def test_a_deleted_node_loses_its_volume_at_once() -> None:
    verdict = volume_lost("node-a", None, {"lastSnapshot": SNAPSHOT}, NOW, LOST_AFTER)
    assert "is gone" in verdict.lost
    assert SNAPSHOT["time"] in verdict.lost  # what the user may lose: work since then


def test_a_not_ready_node_keeps_its_volume_until_the_setting_then_loses_it() -> None:
    young = volume_lost("node-a", node(False, timedelta(seconds=60)), {}, NOW, LOST_AFTER)
    assert not young.lost
    assert young.due == NOW + timedelta(seconds=LOST_AFTER - 60)
    old = volume_lost("node-a", node(False, timedelta(seconds=601)), {}, NOW, LOST_AFTER)
    assert "not ready since" in old.lost
    never = volume_lost("node-a", node(False, timedelta(days=9)), {}, NOW, 0)
    assert never == KEPT


def test_a_cordoned_node_gives_its_volume_up_only_after_a_final_snapshot() -> None:
    cordoned = node(cordoned=True)
    assert volume_lost("node-a", cordoned, {"lastSnapshot": SNAPSHOT}, NOW, LOST_AFTER) == KEPT
    final = {"lastSnapshot": {**SNAPSHOT, "finalAt": "2026-01-02T03:00:01Z"}}
    assert "cordoned" in volume_lost("node-a", cordoned, final, NOW, LOST_AFTER).lost
    assert volume_lost("node-a", node(), final, NOW, LOST_AFTER) == KEPT


def bound_to_local_volume(fake: FakeApi) -> None:
    claim = fake.objects[CLAIM]
    claim["spec"]["volumeName"] = "pv-1"
    claim["status"] = {"phase": "Bound"}
    fake.put(local_volume("node-a"))


def test_a_lost_volume_is_replaced_claim_first_then_the_pod() -> None:
    fake = FakeApi()
    running(fake)
    bound_to_local_volume(fake)
    # The node is deleted: its pods go with it; the Node is not there.
    fake.finish_termination(*POD)
    old_claim = fake.objects[CLAIM]["metadata"]["uid"]
    outcome = run(fake)
    assert CLAIM not in fake.objects
    assert POD not in fake.objects  # no pod before the new claim
    (lost,) = [e for e in outcome.events if e.reason == VOLUME_LOST]
    assert lost.warning and "node-a" in lost.message
    put_workspace(fake)
    run(fake)
    assert fake.objects[CLAIM]["metadata"]["uid"] != old_claim
    assert POD in fake.objects


def test_a_pod_that_no_node_takes_is_deleted_with_the_lost_volume() -> None:
    fake = FakeApi()
    running(fake)
    bound_to_local_volume(fake)
    fake.put(node(ready=False, since=timedelta(seconds=700)))
    del fake.objects[POD]["spec"]["nodeName"]  # the new pod, unschedulable
    fake.objects[POD]["status"] = {"phase": "Pending"}
    outcome = run(fake)
    assert [e.reason for e in outcome.events].count(VOLUME_LOST) == 2  # pod, claim
    assert "deletionTimestamp" in fake.objects[POD]["metadata"]


def test_a_running_pod_keeps_its_volume_whatever_its_node_says() -> None:
    fake = FakeApi()
    running(fake)
    bound_to_local_volume(fake)
    fake.put(node(ready=False, since=timedelta(seconds=700)))
    outcome = run(fake)
    assert CLAIM in fake.objects
    assert not any(e.reason == VOLUME_LOST for e in outcome.events)


def test_no_pod_while_the_old_claim_terminates() -> None:
    fake = FakeApi()
    running(fake)
    fake.finish_termination(*POD)
    fake.objects[CLAIM]["metadata"]["deletionTimestamp"] = timestamp(NOW)
    outcome = run(fake)
    assert POD not in fake.objects
    assert claim_terminating(fake.objects[CLAIM])
    assert outcome.due is not None and outcome.due > NOW


def test_a_pod_terminating_on_a_node_is_looked_at_again_when_it_may_be_force_deleted() -> None:
    """A dead kubelet sends no pod event: the reconcile itself asks to come back then."""
    fake = FakeApi()
    running(fake)
    fake.objects[POD]["metadata"]["deletionTimestamp"] = timestamp(NOW + timedelta(seconds=10))
    outcome = run(fake)
    force_after = SETTINGS.node_lost_force_delete_seconds
    assert outcome.due == NOW + timedelta(seconds=10 + force_after)
