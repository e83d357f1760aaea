"""A workspace on the local cluster, with the operator running as in production."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from rspark_operator import names
from tests.support.deploy import OperatorProcess
from tests.support.kube import fail_node, recover_node, wait_until
from tests.support.workspaces import Workspaces, sample

CHILD_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "PersistentVolumeClaim",
               "Secret", "Service", "Ingress", "NetworkPolicy", "Pod")  # fmt: skip


@pytest.fixture
def alice(kube: client.ApiClient, workspace_namespace: str) -> Workspaces:
    """The sample workspace `alice`, Running."""
    workspaces = Workspaces(kube, workspace_namespace)
    workspaces.create(sample("alice"))
    workspaces.wait_phase("alice", "Running")
    return workspaces


def children(kube: client.ApiClient, namespace: str, name: str) -> dict[str, list[Any]]:
    selector = f"{names.WORKSPACE_LABEL}={name}"
    core, rbac = client.CoreV1Api(kube), client.RbacAuthorizationV1Api(kube)
    net = client.NetworkingV1Api(kube)
    listers = {
        "ServiceAccount": core.list_namespaced_service_account,
        "Role": rbac.list_namespaced_role,
        "RoleBinding": rbac.list_namespaced_role_binding,
        "ConfigMap": core.list_namespaced_config_map,
        "PersistentVolumeClaim": core.list_namespaced_persistent_volume_claim,
        "Secret": core.list_namespaced_secret,
        "Service": core.list_namespaced_service,
        "Ingress": net.list_namespaced_ingress,
        "NetworkPolicy": net.list_namespaced_network_policy,
        "Pod": core.list_namespaced_pod,
    }
    return {
        kind: lister(namespace, label_selector=selector).items for kind, lister in listers.items()
    }


def test_create_makes_every_child_and_runs(
    kube: client.ApiClient, workspace_namespace: str
) -> None:
    workspaces = Workspaces(kube, workspace_namespace)
    created = workspaces.create(sample("alice"))
    ws = workspaces.wait_phase("alice", "Running")
    status = ws["status"]
    assert status["url"] == f"http://alice-{workspace_namespace}.rspark.localhost/"
    assert status["pendingRestart"] is False
    ready = workspaces.ready_condition("alice")
    assert ready is not None and ready["status"] == "True"
    assert ready["observedGeneration"] == ws["metadata"]["generation"]

    found = children(kube, workspace_namespace, "alice")
    for kind in CHILD_KINDS:
        assert found[kind], f"no {kind}"
        for obj in found[kind]:
            owner = obj.metadata.owner_references[0]
            assert (owner.kind, owner.uid, owner.controller) == (
                "RStudioWorkspace", created["metadata"]["uid"], True)  # fmt: skip
            assert obj.metadata.labels[names.MANAGED_BY_LABEL] == "rspark-operator"
            assert obj.metadata.labels[names.USER_LABEL] == names.label_safe("alice@example.com")
    assert {s.metadata.name for s in found["Secret"]} == {"alice-restic", "alice-home-secrets"}
    driver = next(s for s in found["Service"] if s.spec.cluster_ip == "None")
    assert driver.spec.publish_not_ready_addresses is True
    pod = found["Pod"][0]
    sidecar = pod.spec.init_containers[0]
    assert sidecar.restart_policy == "Always" and sidecar.startup_probe is not None


def test_password_secret_is_never_overwritten(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    core = client.CoreV1Api(kube)
    before = core.read_namespaced_secret("alice-restic", workspace_namespace).data
    alice.patch("alice", {"image": "example.org/rspark:2"})
    alice.wait_phase("alice", "Running")
    assert core.read_namespaced_secret("alice-restic", workspace_namespace).data == before


def test_image_change_replaces_the_pod(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    old = alice.running_pod("alice")
    alice.patch("alice", {"image": "example.org/rspark:2"})

    def replaced() -> Any:
        pod = alice.running_pod("alice")
        return pod if pod.metadata.uid != old.metadata.uid else None

    new = wait_until("the pod replaced", replaced)
    assert new.spec.containers[0].image == "example.org/rspark:2"
    ws = alice.wait_phase("alice", "Running")
    assert ws["status"]["pendingRestart"] is False


def test_home_grows_without_replacing_the_pod(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    pod = alice.running_pod("alice")
    alice.patch("alice", {"home": {"size": "20Gi"}})
    core = client.CoreV1Api(kube)

    def grown() -> bool:
        claim = core.read_namespaced_persistent_volume_claim("alice-home", workspace_namespace)
        return (claim.status.capacity or {}).get("storage") == "20Gi"

    wait_until("the claim at 20Gi", grown)
    alice.wait_phase("alice", "Running")
    assert alice.running_pod("alice").metadata.uid == pod.metadata.uid


def test_deleted_pod_comes_back(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    old = alice.running_pod("alice")
    client.CoreV1Api(kube).delete_namespaced_pod("alice", workspace_namespace)
    wait_until("a new pod", lambda: alice.running_pod("alice").metadata.uid != old.metadata.uid)
    alice.wait_phase("alice", "Running")


def test_node_failure_moves_the_pod_with_its_claim(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    old = alice.running_pod("alice")
    core = client.CoreV1Api(kube)
    fail_node(core, old.spec.node_name)
    try:

        def moved() -> Any:
            pod = alice.running_pod("alice")
            return pod if pod.metadata.uid != old.metadata.uid else None

        new = wait_until("the pod on another node", moved, timeout=180)
        assert new.spec.node_name != old.spec.node_name
        claims = [v.persistent_volume_claim.claim_name for v in new.spec.volumes
                  if v.persistent_volume_claim]  # fmt: skip
        assert claims == ["alice-home"]
        alice.wait_phase("alice", "Running")
    finally:
        recover_node(core, old.spec.node_name)


def test_suspend_keeps_everything_but_the_pod_and_resume_brings_it_back(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    alice.patch("alice", {"suspended": True})
    alice.wait_phase("alice", "Suspended")
    found = children(kube, workspace_namespace, "alice")
    assert not found["Pod"]
    assert all(found[kind] for kind in CHILD_KINDS if kind != "Pod")
    alice.patch("alice", {"suspended": False})
    alice.wait_phase("alice", "Running")
    assert len(alice.pods("alice")) == 1


def test_delete_removes_children_by_garbage_collection(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    alice.delete("alice")
    wait_until("workspace gone", lambda: alice.get("alice") is None)

    def all_gone() -> bool:
        found = children(kube, workspace_namespace, "alice")
        return not any(found.values())

    wait_until("children collected", all_gone)


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    kube: client.ApiClient, workspace_namespace: str, operator: OperatorProcess
) -> None:
    workspaces = Workspaces(kube, workspace_namespace)
    operator.stop()
    for index in range(3):
        workspaces.create(sample(f"ws{index}"))
    operator.start()
    # Kill it while the three reconciles are under way, then start it again.
    wait_until("a child created", lambda: any(
        children(kube, workspace_namespace, f"ws{i}")["ServiceAccount"] for i in range(3)),
        interval=0.05)  # fmt: skip
    operator.stop(kill=True)
    operator.start()
    for index in range(3):
        workspaces.wait_phase(f"ws{index}", "Running", timeout=120)
        assert len(workspaces.pods(f"ws{index}")) == 1


def test_unschedulable_workspace_says_why_at_once(
    kube: client.ApiClient, workspace_namespace: str
) -> None:
    workspaces = Workspaces(kube, workspace_namespace)
    too_big = {
        "requests": {"cpu": "500", "memory": "2Gi"},
        "limits": {"cpu": "500", "memory": "4Gi"},
    }
    workspaces.create(sample("alice", resources=too_big))

    def failed_scheduling() -> dict[str, Any] | None:
        ready = workspaces.ready_condition("alice")
        # The first verdict may be about the claim not bound yet; wait for the cpu one.
        if ready and ready["reason"] == "FailedScheduling" and "cpu" in ready["message"]:
            return ready
        return None

    ready = wait_until("Ready=False FailedScheduling", failed_scheduling)
    assert ready["status"] == "False"
    assert "Insufficient cpu" in ready["message"]
    assert (workspaces.get("alice") or {})["status"]["phase"] == "Pending"
