"""compute_status: phase and Ready from what exists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rspark_operator import status
from rspark_operator.conditions import HOME_RESTORED, SNAPSHOT_HEALTHY, condition, find
from rspark_operator.status import (
    Observed,
    Refusal,
    Transition,
    compute_status,
    ready_transition,
    restore_report_unseen,
    status_changed,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
URL = "http://demo-team.rspark.localhost/"
POD_UID = "pod-uid"
CLAIM_UID = "claim-uid"


def pod(
    phase: str = "Running",
    *,
    ready: bool = False,
    node: str | None = "node-1",
    conditions: list[dict[str, Any]] | None = None,
    waiting: dict[str, str] | None = None,
    deleting: bool = False,
    **extra_status: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "demo", "uid": POD_UID}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-02T03:00:00Z"
    ready_condition = {"type": "Ready", "status": "True" if ready else "False"}
    if not ready:
        ready_condition["message"] = "containers with unready status: [ide]"
    container = {"name": "ide", "state": {"waiting": waiting} if waiting else {"running": {}}}
    return {
        "metadata": metadata,
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": phase,
            "conditions": [ready_condition, *(conditions or [])],
            "containerStatuses": [container],
            **extra_status,
        },
    }


def event(
    reason: str, message: str, uid: str = POD_UID, at: str = "2026-01-02T03:04:00Z"
) -> dict[str, Any]:
    return {
        "type": "Warning",
        "reason": reason,
        "message": message,
        "involvedObject": {"uid": uid},
        "lastTimestamp": at,
    }


def agent_condition(type_: str, status_: str, reason: str, message: str = "") -> dict[str, Any]:
    return condition(type_, status_, reason, message, observed_generation=None, now=NOW)  # type: ignore[arg-type]


CLAIM = {"metadata": {"uid": CLAIM_UID}}
UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/2 nodes are available: 2 Insufficient memory.",
}


@pytest.mark.parametrize(
    ("case", "suspended", "observed", "agent", "phase", "reason", "message"),
    [
        (
            "invalid spec",
            False,
            Observed(invalid_spec="spec.image: bad"),
            [],
            "Failed",
            "InvalidSpec",
            "spec.image: bad",
        ),
        (
            "a change refused by the API server, the running pod kept",
            False,
            Observed(
                pod=pod(ready=True),
                refusals=(Refusal("Pod/demo", "the API server refused Pod demo: forbidden"),),
            ),
            [],
            "Running",
            "ChildRejected",
            "refused Pod demo: forbidden",
        ),
        (
            "a new workspace refused by the API server",
            False,
            Observed(
                refusals=(
                    Refusal("Pod/demo", "the API server refused Pod demo: violates PodSecurity"),
                )
            ),
            [],
            "Failed",
            "ChildRejected",
            "violates PodSecurity",
        ),
        ("suspended, no pod", True, Observed(), [], "Suspended", "Suspended", "compute is stopped"),
        (
            "suspended, pod stopping",
            True,
            Observed(pod=pod(ready=True, deleting=True)),
            [],
            "Pending",
            "Suspending",
            "last snapshot",
        ),
        ("no pod yet", False, Observed(), [], "Pending", "PodMissing", "being created"),
        (
            "old pod going",
            False,
            Observed(pod=pod(deleting=True)),
            [],
            "Pending",
            "PodReplacing",
            "once the old one is gone",
        ),
        (
            "ready",
            False,
            Observed(pod=pod(ready=True)),
            [],
            "Running",
            "PodReady",
            "the IDE is ready",
        ),
        (
            "evicted",
            False,
            Observed(pod=pod("Failed", reason="Evicted", message="low on memory")),
            [],
            "Failed",
            "PodFailed",
            "Evicted: low on memory",
        ),
        (
            "unschedulable",
            False,
            Observed(pod=pod("Pending", node=None, conditions=[UNSCHEDULABLE])),
            [],
            "Pending",
            "FailedScheduling",
            "2 Insufficient memory",
        ),
        (
            "the scheduler's condition wins over its lagging event",
            False,
            Observed(
                pod=pod("Pending", node=None, conditions=[UNSCHEDULABLE]),
                events=[
                    event("FailedScheduling", "pod has unbound immediate PersistentVolumeClaims")
                ],
            ),
            [],
            "Pending",
            "FailedScheduling",
            "2 Insufficient memory",
        ),
        (
            "the scheduling event when the condition has no message yet",
            False,
            Observed(
                pod=pod("Pending", node=None, conditions=[{**UNSCHEDULABLE, "message": ""}]),
                events=[
                    event(
                        "FailedScheduling", "0/3 nodes: 3 node(s) had volume node affinity conflict"
                    )
                ],
            ),
            [],
            "Pending",
            "FailedScheduling",
            "volume node affinity conflict",
        ),
        (
            "image pull",
            False,
            Observed(
                pod=pod("Pending", waiting={"reason": "ImagePullBackOff", "message": "not found"})
            ),
            [],
            "Pending",
            "ImagePullBackOff",
            "container ide: not found",
        ),
        (
            "crash loop beats restoring",
            False,
            Observed(pod=pod(waiting={"reason": "CrashLoopBackOff", "message": "back-off 5m"})),
            [agent_condition(HOME_RESTORED, "False", "Restoring")],
            "Pending",
            "CrashLoopBackOff",
            "back-off 5m",
        ),
        (
            "restoring",
            False,
            Observed(pod=pod("Pending")),
            [agent_condition(HOME_RESTORED, "False", "Restoring", "restoring snapshot 0123abcd")],
            "Restoring",
            "Restoring",
            "restoring snapshot 0123abcd",
        ),
        (
            "restore failed",
            False,
            Observed(pod=pod("Pending")),
            [agent_condition(HOME_RESTORED, "False", "RepositoryUnreachable", "dial tcp: refused")],
            "Pending",
            "HomeNotRestored",
            "RepositoryUnreachable: dial tcp: refused",
        ),
        (
            "mount failure",
            False,
            Observed(pod=pod("Pending"), events=[event("FailedMount", "MountVolume.SetUp failed")]),
            [],
            "Pending",
            "FailedMount",
            "MountVolume.SetUp failed",
        ),
        (
            "multi-attach",
            False,
            Observed(
                pod=pod("Pending"), events=[event("FailedAttachVolume", "Multi-Attach error")]
            ),
            [],
            "Pending",
            "FailedAttachVolume",
            "Multi-Attach error",
        ),
        (
            "claim provisioning",
            False,
            Observed(
                pod=pod("Pending"),
                claim=CLAIM,
                events=[event("ProvisioningFailed", "no capacity", CLAIM_UID)],
            ),
            [],
            "Pending",
            "ProvisioningFailed",
            "no capacity",
        ),
        (
            "an unbound claim's provisioning failure, not the scheduler's complaint about it",
            False,
            Observed(
                pod=pod("Pending", node=None, conditions=[UNSCHEDULABLE]),
                claim=CLAIM,
                events=[
                    event("FailedScheduling", "pod has unbound immediate PersistentVolumeClaims"),
                    event("ProvisioningFailed", "quota exceeded", CLAIM_UID),
                ],
            ),
            [],
            "Pending",
            "ProvisioningFailed",
            "quota exceeded",
        ),
        (
            "a refused change while suspended",
            True,
            Observed(
                refusals=(
                    Refusal(
                        "Pod/demo", "the API server refused PersistentVolumeClaim demo-home: no"
                    ),
                )
            ),
            [],
            "Suspended",
            "ChildRejected",
            "refused PersistentVolumeClaim demo-home",
        ),
        (
            "events of an old pod are ignored",
            False,
            Observed(pod=pod("Pending"), events=[event("FailedMount", "old", uid="old-pod")]),
            [],
            "Pending",
            "PodNotReady",
            "unready status: [ide]",
        ),
        ("not ready", False, Observed(pod=pod()), [], "Pending", "PodNotReady", "unready status"),
    ],
)
def test_phase_and_ready(
    case: str,
    suspended: bool,
    observed: Observed,
    agent: list[dict[str, Any]],
    phase: str,
    reason: str,
    message: str,
) -> None:
    result = compute_status(
        generation=4,
        suspended=suspended,
        url=URL,
        previous={"conditions": agent},
        observed=observed,
        now=NOW,
    )
    (ready,) = result["conditions"]
    assert (result["phase"], ready["reason"]) == (phase, reason), case
    assert message in ready["message"], case
    assert ready["status"] == ("True" if reason == status.Reason.POD_READY else "False")
    assert ready["observedGeneration"] == 4
    assert result["observedGeneration"] == 4
    assert result["url"] == URL


def test_status_owns_only_its_fields() -> None:
    previous = {
        "phase": "Running",
        "lastSnapshot": {"time": "2026-01-02T03:00:00Z", "id": "0123abcd"},
        "conditions": [agent_condition(SNAPSHOT_HEALTHY, "True", "SnapshotSucceeded")],
    }
    result = compute_status(
        generation=1, suspended=False, url=URL, previous=previous, observed=Observed(), now=NOW
    )
    assert set(result) == {"phase", "url", "observedGeneration", "pendingRestart", "conditions"}
    assert [c["type"] for c in result["conditions"]] == ["Ready"]


@pytest.mark.parametrize(
    ("observed", "pending"),
    [
        (Observed(pod=pod(ready=True), pod_spec_current=False), True),
        (Observed(pod=pod(ready=True), pod_spec_current=True), False),
        (Observed(pod=None, pod_spec_current=False), False),
    ],
)
def test_pending_restart(observed: Observed, pending: bool) -> None:
    result = compute_status(
        generation=1, suspended=False, url=URL, previous=None, observed=observed, now=NOW
    )
    assert result["pendingRestart"] is pending


def test_last_transition_time_moves_only_when_ready_flips() -> None:
    def at(now: datetime, observed: Observed, previous: dict[str, Any] | None) -> dict[str, Any]:
        return compute_status(
            generation=1, suspended=False, url=URL, previous=previous, observed=observed, now=now
        )

    first = at(NOW, Observed(), None)
    later = NOW + timedelta(minutes=1)
    still_pending = at(later, Observed(pod=pod()), first)
    ready = at(later + timedelta(minutes=1), Observed(pod=pod(ready=True)), still_pending)

    def transition(status_: dict[str, Any]) -> str:
        found = find(status_["conditions"], "Ready")
        assert found is not None
        return str(found["lastTransitionTime"])

    assert transition(still_pending) == transition(first) == "2026-01-02T03:04:05Z"
    assert find(still_pending["conditions"], "Ready") != find(first["conditions"], "Ready")
    assert transition(ready) == "2026-01-02T03:06:05Z"


def test_status_changed_ignores_fields_it_does_not_own() -> None:
    new = compute_status(
        generation=1, suspended=False, url=URL, previous=None, observed=Observed(), now=NOW
    )
    stored = {
        **new,
        "lastSnapshot": {"id": "0123abcd"},
        "conditions": [*new["conditions"], agent_condition(HOME_RESTORED, "True", "Restored")],
    }
    assert not status_changed(stored, new)
    assert status_changed(None, new)
    assert status_changed({**stored, "phase": "Running"}, new)
    assert status_changed({**stored, "observedGeneration": 0}, new)
    assert status_changed({**stored, "conditions": []}, new)


@pytest.mark.parametrize(
    ("home_restored", "ready_reason", "unseen"),
    [
        (None, "PodNotReady", False),
        (("False", "Restoring"), "PodNotReady", True),
        (("False", "Restoring"), "Restoring", False),
        (("False", "Restoring"), "PodReady", False),
        (("False", "Restoring"), "FailedScheduling", False),
        (("False", "WrongPassword"), "Restoring", True),
        (("False", "WrongPassword"), "HomeNotRestored", False),
        (("True", "Restored"), "Restoring", True),
        (("True", "Restored"), "PodNotReady", False),
    ],
)
def test_restore_report_unseen(
    home_restored: tuple[str, str] | None, ready_reason: str, unseen: bool
) -> None:
    conditions = [{"type": "Ready", "status": "False", "reason": ready_reason}]
    if home_restored:
        status, reason = home_restored
        conditions.append({"type": "HomeRestored", "status": status, "reason": reason})
    assert restore_report_unseen({"conditions": conditions}) is unseen


def ready(reason: str, message: str = "", status_: str = "False") -> dict[str, Any]:
    return {
        "conditions": [{"type": "Ready", "status": status_, "reason": reason, "message": message}]
    }


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # A new workspace's first verdict: only a problem is news.
        (None, ready("PodMissing", "creating"), None),
        (
            None,
            ready("InvalidSpec", "spec.image: bad"),
            Transition("InvalidSpec", "spec.image: bad", True),
        ),
        (
            ready("PodMissing"),
            ready("PodNotReady", "starting"),
            Transition("PodNotReady", "starting", False),
        ),
        (ready("PodMissing"), ready("PodMissing", "other words"), None),
        (
            ready("PodNotReady"),
            ready("PodReady", "the IDE is ready", "True"),
            Transition("PodReady", "the IDE is ready", False),
        ),
        (
            ready("PodReady", "", "True"),
            ready("FailedMount", "no such volume"),
            Transition("FailedMount", "no such volume", True),
        ),
        # A problem that changes its explanation is news; the same one is not.
        (
            ready("InvalidSpec", "spec.image: bad"),
            ready("InvalidSpec", "spec.env: bad"),
            Transition("InvalidSpec", "spec.env: bad", True),
        ),
        (ready("InvalidSpec", "spec.image: bad"), ready("InvalidSpec", "spec.image: bad"), None),
    ],
)
def test_ready_transition_is_an_event_only_when_the_verdict_changes(
    old: dict[str, Any] | None, new: dict[str, Any], expected: Transition | None
) -> None:
    assert ready_transition(old, new) == expected
