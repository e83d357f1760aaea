"""The reconcile against an in-memory API server (`fakeapi.FakeApi`): refusals,
replacement, invalid specs and status writes, without a cluster."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from rspark_operator.api import API_VERSION, KIND
from rspark_operator.conditions import READY, find
from rspark_operator.lifecycle import (
    NODE_DRAINED,
    NODE_UNCORDONED,
    PENDING_RESTART,
    POD_CREATED,
    POD_RESTARTING,
)
from rspark_operator.names import DRAIN_LABEL, RESTART_ANNOTATION
from rspark_operator.reconcile import Outcome, reconcile
from rspark_operator.rollout import Rollout
from rspark_operator.settings import OperatorSettings
from rspark_operator.status import Reason
from tests.unit.fakeapi import FakeApi, Write
from tests.unit.workspaces import settings

pytestmark = pytest.mark.unit

NAMESPACE = "team"
NAME = "demo"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# Workspaces here may name their own images (spec.image).
SETTINGS = settings(allowed_image_prefixes=["rstudio:"])
WORKSPACE = (KIND, NAMESPACE, NAME)
POD = ("Pod", NAMESPACE, NAME)
ROLLOUT = Rollout(max_pods=1)
# What a reconcile at rest does not apply: the pod (as it is) and its passwords.
AT_START_ONLY = ("Pod/demo", "Secret/demo-passwords")


def no_warnings(uid: str) -> Iterable[Mapping[str, Any]]:
    return ()


def put_workspace(fake: FakeApi, generation: int = 1, **spec: Any) -> None:
    """The workspace as a user applies it (its status as it is)."""
    current = fake.get(API_VERSION, KIND, NAMESPACE, NAME)
    fake.put(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": NAME,
                "namespace": NAMESPACE,
                "uid": "ws-uid",
                "generation": generation,
            },
            "spec": {"user": "alice@example.com", **spec},
            "status": (current or {}).get("status") or {},
        }
    )


def run(fake: FakeApi, *, children: bool = True) -> Outcome:
    """One reconcile of the workspace as the API server has it now."""
    body = fake.get(API_VERSION, KIND, NAMESPACE, NAME)
    assert body is not None
    return reconcile(fake, SETTINGS, body, no_warnings, ROLLOUT, children=children, now=NOW)


def ready(fake: FakeApi) -> dict[str, Any]:
    body = fake.get(API_VERSION, KIND, NAMESPACE, NAME) or {}
    found = find((body.get("status") or {}).get("conditions") or [], READY)
    assert found is not None
    return found


def children_of(fake: FakeApi) -> list[str]:
    return [name for name in fake.kinds(NAMESPACE) if not name.startswith(KIND)]


def pod_ready(fake: FakeApi) -> None:
    """The kubelet started the pod and RStudio answers."""
    pod = fake.objects[POD]
    pod["spec"]["nodeName"] = "node-a"
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}


def is_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return not pod["metadata"].get("deletionTimestamp") and bool(find(conditions, "Ready"))


def running(fake: FakeApi) -> None:
    put_workspace(fake)
    run(fake)
    pod_ready(fake)
    run(fake)
    assert ready(fake)["reason"] == Reason.POD_READY


def test_a_new_workspace_is_created_whole() -> None:
    fake = FakeApi()
    put_workspace(fake)
    outcome = run(fake)
    assert "Pod/demo" in children_of(fake)
    assert "PersistentVolumeClaim/demo-home" in children_of(fake)
    assert "Secret/demo-passwords" in children_of(fake)
    assert outcome.status["phase"] == "Pending"
    assert outcome.events[0].reason == POD_CREATED


@pytest.mark.parametrize("forbidden", [False, True])
def test_a_new_workspace_refused_in_part_creates_nothing(forbidden: bool) -> None:
    fake = FakeApi()
    fake.refuse("Ingress", NAMESPACE, NAME, forbidden=forbidden)
    put_workspace(fake)
    outcome = run(fake)
    assert children_of(fake) == []
    assert [w.verb for w in fake.writes if w.key != WORKSPACE] == []
    condition = ready(fake)
    assert condition["status"] == "False"
    if forbidden:
        assert condition["reason"] == Reason.OPERATOR_FORBIDDEN
        assert condition["message"] == (
            "the operator lacks permission to create ingresss in namespace team"
        )
    else:
        assert condition["reason"] == Reason.CHILD_REJECTED
        assert "the API server refused Ingress demo" in condition["message"]
    assert outcome.status["phase"] == "Failed"
    assert [(e.reason, e.warning) for e in outcome.events] == [(condition["reason"], True)]
    # Once the API server accepts it, the next reconcile creates it whole.
    fake.allow("Ingress", NAMESPACE, NAME)
    run(fake)
    assert "Pod/demo" in children_of(fake)
    assert "Ingress/demo" in children_of(fake)
    assert ready(fake)["reason"] == Reason.POD_NOT_READY


def test_a_refused_update_leaves_the_running_workspace_as_it_was() -> None:
    fake = FakeApi()
    running(fake)
    before = fake.get("v1", "Pod", NAMESPACE, NAME)
    # A change of the pod that admission refuses (say, a quota on memory).
    fake.refuse("Pod", NAMESPACE, NAME)
    put_workspace(fake, generation=2, resources={"limits": {"memory": "64Gi"}})
    outcome = run(fake)
    assert fake.get("v1", "Pod", NAMESPACE, NAME) == before  # not deleted, not replaced
    assert "Ingress/demo" in children_of(fake)
    condition = ready(fake)
    assert (condition["status"], condition["reason"]) == ("False", Reason.CHILD_REJECTED)
    assert "the API server refused Pod demo" in condition["message"]
    assert outcome.status["phase"] == "Running"  # it still runs as before
    assert outcome.status["pendingRestart"] is True
    assert outcome.status["observedGeneration"] == 2


def test_a_refused_child_keeps_its_old_version_and_the_rest_of_the_change_applies() -> None:
    fake = FakeApi()
    running(fake)
    old_ingress = fake.get("networking.k8s.io/v1", "Ingress", NAMESPACE, NAME)
    fake.refuse("Ingress", NAMESPACE, NAME)
    put_workspace(fake, generation=2, image="rstudio:next")
    run(fake)
    assert fake.get("networking.k8s.io/v1", "Ingress", NAMESPACE, NAME) == old_ingress
    # The pod change was accepted: the old pod goes.
    assert fake.objects[POD]["metadata"].get("deletionTimestamp")
    assert ready(fake)["reason"] == Reason.CHILD_REJECTED
    # The refusal is tried again even on a pod event, and cleared once accepted.
    fake.allow("Ingress", NAMESPACE, NAME)
    run(fake, children=False)
    assert ready(fake)["reason"] == Reason.POD_REPLACING


def test_replace_waits_for_the_old_pod_to_be_gone() -> None:
    fake = FakeApi()
    running(fake)
    old_uid = fake.objects[POD]["metadata"]["uid"]
    put_workspace(fake, generation=2, image="rstudio:next")
    outcome = run(fake)
    # One event: the replacement is both the action and the new Ready reason.
    assert [event.reason for event in outcome.events] == [Reason.POD_REPLACING]
    assert fake.objects[POD]["metadata"]["deletionTimestamp"]
    fake.writes.clear()
    # The old pod is still Terminating (RStudio stopping, last snapshot): no second pod.
    for _ in range(3):
        outcome = run(fake)
        assert fake.objects[POD]["metadata"]["uid"] == old_uid
        assert not [w for w in fake.writes if w.key == POD]
        assert outcome.status["phase"] == "Pending"
    assert ready(fake)["reason"] == Reason.POD_REPLACING
    # Gone: the next one starts, built from the new spec.
    fake.finish_termination(*POD)
    outcome = run(fake)
    pod = fake.objects[POD]
    assert pod["metadata"]["uid"] != old_uid
    assert pod["spec"]["containers"][0]["image"] == "rstudio:next"
    assert outcome.events[0].reason == POD_CREATED


def test_an_invalid_spec_creates_nothing() -> None:
    fake = FakeApi()
    put_workspace(fake, user="", homeSize="lots")
    outcome = run(fake)
    assert children_of(fake) == []
    condition = ready(fake)
    assert (condition["status"], condition["reason"]) == ("False", Reason.INVALID_SPEC)
    assert outcome.status["phase"] == "Failed"


def test_an_unchanged_status_is_not_written() -> None:
    fake = FakeApi()
    running(fake)
    fake.writes.clear()
    run(fake)  # a resync: children applied again, the status as it is
    assert Write("apply", WORKSPACE, "status") not in fake.writes
    fake.writes.clear()
    run(fake, children=False)  # a pod event that changes nothing
    assert fake.writes == []
    assert fake.events == []


def requests_of(fake: FakeApi, *, children: bool) -> Counter[str]:
    """The API requests of one reconcile of the workspace as the API server has it now."""
    body = fake.get(API_VERSION, KIND, NAMESPACE, NAME)
    assert body is not None
    fake.requests.clear()
    reconcile(fake, SETTINGS, body, no_warnings, ROLLOUT, children=children, now=NOW)
    return fake.requests


def test_a_workspace_at_rest_costs_two_reads_and_its_children_applies() -> None:
    """A resync at rest reads the pod and the claim and applies every child again (drift);
    it creates nothing (no POST answered 409), dry-runs, deletes or writes back nothing."""
    fake = FakeApi()
    running(fake)
    kinds = Counter(n.split("/")[0] for n in children_of(fake) if n not in AT_START_ONLY)
    applies = {f"PATCH {kind}": count for kind, count in kinds.items()}
    assert (
        requests_of(fake, children=True) == {"GET Pod": 1, "GET PersistentVolumeClaim": 1} | applies
    )
    # A status refresh at rest (a pod event that changes nothing): the pod only.
    assert requests_of(fake, children=False) == {"GET Pod": 1}


def test_the_passwords_secret_comes_back_with_the_next_pod() -> None:
    """Only a starting pod reads the passwords: a Secret deleted under a running pod is
    created again (new passwords) before the next pod, not by every resync."""
    fake = FakeApi()
    running(fake)
    del fake.objects[("Secret", NAMESPACE, "demo-passwords")]
    run(fake)
    assert "Secret/demo-passwords" not in children_of(fake)
    put_workspace(fake, generation=2, image="rstudio:next")
    run(fake)  # the old pod goes
    fake.finish_termination(*POD)
    fake.writes.clear()
    run(fake, children=False)  # its deletion's event: the next pod, its Secret first
    created = [w.key for w in fake.writes if w.verb in ("create", "apply")]
    assert created[:2] == [("Secret", NAMESPACE, "demo-passwords"), POD]


def test_a_change_of_the_operator_waits_for_the_rollout_or_a_restart() -> None:
    fake = FakeApi()
    running(fake)
    upgraded = settings(workspace_image="rstudio:upgraded", allowed_image_prefixes=["rstudio:"])
    body = fake.get(API_VERSION, KIND, NAMESPACE, NAME)
    assert body is not None
    busy = Rollout(max_pods=1)
    assert busy.admit(("team", "someone-else"))
    outcome = reconcile(fake, upgraded, body, no_warnings, busy, now=NOW)
    assert not fake.objects[POD]["metadata"].get("deletionTimestamp")  # held
    assert outcome.status["pendingRestart"] is True
    assert outcome.status["phase"] == "Running"
    assert [e.reason for e in outcome.events] == [PENDING_RESTART]
    assert "ide image" in outcome.events[0].message
    assert "rstudio:upgraded" in outcome.events[0].message
    # Its turn: replaced, and it counts until its new pod is Ready.
    busy.finish(("team", "someone-else"))
    body = fake.get(API_VERSION, KIND, NAMESPACE, NAME)
    assert body is not None
    outcome = reconcile(fake, upgraded, body, no_warnings, busy, now=NOW)
    assert fake.objects[POD]["metadata"].get("deletionTimestamp")
    assert busy.under_way() == 1
    fake.finish_termination(*POD)
    for _ in range(2):
        body = fake.get(API_VERSION, KIND, NAMESPACE, NAME)
        assert body is not None
        reconcile(fake, upgraded, body, no_warnings, busy, now=NOW)
        pod_ready(fake)
    assert fake.objects[POD]["spec"]["containers"][0]["image"] == "rstudio:upgraded"
    assert busy.under_way() == 0


def test_never_more_pods_replaced_at_once_than_the_rollout_allows() -> None:
    fake = FakeApi()
    names = [f"ws{i}" for i in range(5)]
    for name in names:
        fake.put({"apiVersion": API_VERSION, "kind": KIND,
                  "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"{name}-uid",
                               "generation": 1},
                  "spec": {"user": "alice@example.com"}})  # fmt: skip
    rollout = Rollout(max_pods=2)

    def reconcile_all(with_settings: OperatorSettings) -> None:
        for name in names:
            body = fake.get(API_VERSION, KIND, NAMESPACE, name)
            assert body is not None
            reconcile(fake, with_settings, body, no_warnings, rollout, now=NOW)

    reconcile_all(SETTINGS)
    for name in names:
        fake.objects[("Pod", NAMESPACE, name)]["status"] = {
            "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}  # fmt: skip
    upgraded = settings(workspace_image="rstudio:upgraded", allowed_image_prefixes=["rstudio:"])
    for _ in range(10):
        reconcile_all(upgraded)
        pods = [fake.objects.get(("Pod", NAMESPACE, name)) for name in names]
        replaced = [pod for pod in pods if pod is None or not is_ready(pod)]
        assert len(replaced) <= 2
        for name, pod in zip(names, pods, strict=True):  # the kubelet moves on
            if pod is not None and pod["metadata"].get("deletionTimestamp"):
                fake.finish_termination("Pod", NAMESPACE, name)
            elif pod is not None and not pod.get("status"):
                pod["status"] = {"phase": "Running",
                                 "conditions": [{"type": "Ready", "status": "True"}]}  # fmt: skip
    images = {fake.objects[("Pod", NAMESPACE, n)]["spec"]["containers"][0]["image"] for n in names}
    assert images == {"rstudio:upgraded"}


def test_a_restart_request_replaces_a_current_pod() -> None:
    fake = FakeApi()
    running(fake)
    fake.objects[WORKSPACE]["metadata"]["annotations"] = {
        RESTART_ANNOTATION: "2026-01-02T04:00:00Z"
    }
    outcome = run(fake, children=False)
    assert fake.objects[POD]["metadata"].get("deletionTimestamp")
    assert outcome.events[0].reason == POD_RESTARTING
    fake.finish_termination(*POD)
    run(fake, children=False)
    pod_ready(fake)
    fake.objects[POD]["metadata"]["creationTimestamp"] = "2026-01-02T04:00:05Z"
    run(fake, children=False)
    assert not fake.objects[POD]["metadata"].get("deletionTimestamp")  # once


def test_a_finished_replacement_wakes_the_workspace_that_waited_longest() -> None:
    woken: list[tuple[str, str]] = []
    rollout = Rollout(max_pods=1, wake=woken.append)
    a, b, c = ("team", "a"), ("team", "b"), ("team", "c")
    assert rollout.admit(a)
    assert not rollout.admit(b)
    assert not rollout.admit(c)
    rollout.finish(b)  # b needs no replacement any more (say, suspended)
    assert woken == []
    rollout.finish(a)
    assert woken == [c]
    assert rollout.admit(c)


def test_a_pod_on_a_cordoned_node_is_released_to_the_drain_then_starts_elsewhere() -> None:
    fake = FakeApi()
    running(fake)
    old_uid = fake.objects[POD]["metadata"]["uid"]

    def reconcile_on(cordoned: set[str]) -> Outcome:
        body = fake.get(API_VERSION, KIND, NAMESPACE, NAME)
        assert body is not None
        return reconcile(fake, SETTINGS, body, no_warnings, ROLLOUT,
                         cordoned=cordoned.__contains__, children=False, now=NOW)  # fmt: skip

    assert reconcile_on({"node-b"}).events == []  # not its node
    outcome = reconcile_on({"node-a", "node-b"})
    labels = fake.objects[POD]["metadata"]["labels"]
    assert labels[DRAIN_LABEL] == "true"  # out of its budget: the drain may evict it
    assert not fake.objects[POD]["metadata"].get("deletionTimestamp")  # the drain does
    assert [e.reason for e in outcome.events] == [NODE_DRAINED]
    assert "node-a" in outcome.events[0].message
    fake.writes.clear()
    assert reconcile_on({"node-a"}).events == []
    assert fake.writes == []  # once
    # The drain evicts it: a graceful deletion; once gone, the next pod starts.
    fake.delete("v1", "Pod", NAMESPACE, NAME, old_uid)
    reconcile_on({"node-a"})
    fake.finish_termination(*POD)
    reconcile_on({"node-a"})
    pod = fake.objects[POD]
    assert pod["metadata"]["uid"] != old_uid
    assert DRAIN_LABEL not in pod["metadata"]["labels"]  # protected by its budget
    assert "nodeName" not in pod["spec"]  # the scheduler places it, off the cordoned node


def test_a_released_pod_is_protected_again_when_its_node_is_uncordoned() -> None:
    fake = FakeApi()
    running(fake)
    body = fake.get(API_VERSION, KIND, NAMESPACE, NAME)
    assert body is not None
    reconcile(fake, SETTINGS, body, no_warnings, ROLLOUT, cordoned={"node-a"}.__contains__,
              children=False, now=NOW)  # fmt: skip
    outcome = run(fake, children=False)
    assert DRAIN_LABEL not in fake.objects[POD]["metadata"]["labels"]
    assert [e.reason for e in outcome.events] == [NODE_UNCORDONED]


def test_a_budget_selects_the_pod_until_it_is_released() -> None:
    fake = FakeApi()
    running(fake)
    budget = fake.get("policy/v1", "PodDisruptionBudget", NAMESPACE, NAME)
    pod = fake.objects[POD]
    assert budget is not None
    selector = budget["spec"]["selector"]
    assert selector["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert selector["matchExpressions"] == [{"key": DRAIN_LABEL, "operator": "DoesNotExist"}]
    assert budget["spec"]["minAvailable"] == 1
    assert budget["metadata"]["ownerReferences"][0]["uid"] == "ws-uid"
