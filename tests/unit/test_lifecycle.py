"""decide_pod: what happens to the workspace pod, from what exists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rspark_operator.lifecycle import PodAction, PodPlan, decide_pod, waiting_on_lost_node
from rspark_operator.names import DRAIN_LABEL, POD_SPEC_HASH_ANNOTATION, workspace_of

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
FORCE_AFTER = 30.0
DESIRED = {"metadata": {"name": "demo", "annotations": {POD_SPEC_HASH_ANNOTATION: "new"}}}


def pod(
    *, spec_hash: str = "new", phase: str = "Running", deadline: datetime | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": "demo",
        "uid": "uid-1",
        "annotations": {POD_SPEC_HASH_ANNOTATION: spec_hash},
    }
    if deadline is not None:
        metadata["deletionTimestamp"] = deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": metadata, "spec": {"nodeName": "node-a"}, "status": {"phase": phase}}


def node(ready: str) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": "Ready", "status": ready}]}}


def decide(
    suspended: bool,
    current: dict[str, Any] | None,
    *,
    node_: dict[str, Any] | None,
    user_edit: bool,
    cordoned: bool,
) -> PodPlan:
    return decide_pod(
        suspended=suspended,
        pod=current,
        desired=DESIRED,
        node=node_,
        now=NOW,
        force_delete_after=FORCE_AFTER,
        user_edit=user_edit,
        restart_requested=False,
        node_cordoned=cordoned,
    )


LONG_AGO = NOW - timedelta(seconds=FORCE_AFTER + 1)
JUST_NOW = NOW - timedelta(seconds=FORCE_AFTER - 1)


@pytest.mark.parametrize(
    ("case", "suspended", "current", "node_", "action", "reason"),
    [
        ("no pod: create one", False, None, None, PodAction.CREATE, "PodCreated"),
        ("no pod, suspended: nothing", True, None, None, PodAction.NONE, ""),
        ("current pod: keep", False, pod(), None, PodAction.NONE, ""),
        ("suspended: stop it", True, pod(), None, PodAction.DELETE, "PodStopping"),
        ("spec changed: replace", False, pod(spec_hash="old"), None, PodAction.REPLACE,
         "PodReplacing"),
        ("ended: replace", False, pod(phase="Failed"), None, PodAction.DELETE, "PodFailed"),
        ("completed: replace", False, pod(phase="Succeeded"), None, PodAction.DELETE,
         "PodFailed"),
        # Never a second pod: the old one must be gone first.
        ("terminating: wait", False, pod(deadline=NOW + timedelta(seconds=60)), None,
         PodAction.WAIT, ""),
        ("past the deadline on a ready node: the kubelet finishes it", False,
         pod(deadline=LONG_AGO), node("True"), PodAction.WAIT, ""),
        ("past the deadline on a lost node: force", False, pod(deadline=LONG_AGO),
         node("Unknown"), PodAction.FORCE_DELETE, "NodeLost"),
        ("past the deadline, node deleted: force", False, pod(deadline=LONG_AGO), None,
         PodAction.FORCE_DELETE, "NodeLost"),
        ("suspended and lost: force too", True, pod(deadline=LONG_AGO), node("False"),
         PodAction.FORCE_DELETE, "NodeLost"),
        ("lost node, not long enough past the deadline: wait", False, pod(deadline=JUST_NOW),
         node("Unknown"), PodAction.WAIT, ""),
    ],
)  # fmt: skip
def test_decide_pod(
    case: str,
    suspended: bool,
    current: dict[str, Any] | None,
    node_: dict[str, Any] | None,
    action: PodAction,
    reason: str,
) -> None:
    decision = decide(suspended, current, node_=node_, user_edit=True, cordoned=False)
    assert (decision.action, decision.reason) == (action, reason), case


def test_force_delete_can_be_turned_off() -> None:
    lost = pod(deadline=NOW - timedelta(days=1))
    assert waiting_on_lost_node(lost, NOW, FORCE_AFTER)
    assert not waiting_on_lost_node(lost, NOW, 0)
    decision = decide_pod(
        suspended=False,
        pod=lost,
        desired=DESIRED,
        node=None,
        now=NOW,
        force_delete_after=0,
        user_edit=True,
        restart_requested=False,
        node_cordoned=False,
    )
    assert decision.action == PodAction.WAIT


def released(current: dict[str, Any]) -> dict[str, Any]:
    current["metadata"]["labels"] = {DRAIN_LABEL: "true"}
    return current


@pytest.mark.parametrize(
    ("case", "suspended", "current", "cordoned", "action", "reason"),
    [
        ("current pod: released for the drain", False, pod(), True, PodAction.RELEASE,
         "NodeDrained"),
        ("held for the rollout: released too", False, pod(spec_hash="old"), True,
         PodAction.RELEASE, "NodeDrained"),
        ("released: the drain evicts it", False, released(pod()), True, PodAction.NONE, ""),
        ("released and held: still held", False, released(pod(spec_hash="old")), True,
         PodAction.HOLD, ""),
        ("released, node uncordoned: protected again", False, released(pod()), False,
         PodAction.PROTECT, "NodeUncordoned"),
        ("already stopping: wait", False, pod(deadline=NOW + timedelta(seconds=60)), True,
         PodAction.WAIT, ""),
        ("suspended: stopped", True, pod(), True, PodAction.DELETE, "PodStopping"),
        ("ended: deleted, the next one starts elsewhere", False, pod(phase="Failed"), True,
         PodAction.DELETE, "PodFailed"),
    ],
)  # fmt: skip
def test_a_pod_on_a_cordoned_node_is_left_to_the_drain(
    case: str,
    suspended: bool,
    current: dict[str, Any],
    cordoned: bool,
    action: PodAction,
    reason: str,
) -> None:
    decision = decide(suspended, current, node_=None, user_edit=False, cordoned=cordoned)
    assert (decision.action, decision.reason) == (action, reason), case
    if action in (PodAction.RELEASE, PodAction.PROTECT):
        assert "node-a" in decision.message


@pytest.mark.parametrize(
    ("kind", "name", "workspace"),
    [
        ("Pod", "alice", "alice"),
        ("PersistentVolumeClaim", "alice-home", "alice"),
        ("PersistentVolumeClaim", "data", None),
        ("Service", "alice-rstudio", None),
    ],
)
def test_workspace_of_an_event(kind: str, name: str, workspace: str | None) -> None:
    assert workspace_of(kind, name) == workspace
