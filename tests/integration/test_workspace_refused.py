"""What the API server refuses: a new workspace is made whole or not at all; a refused
change leaves the workspace running as it was, says why, and recovers once it can."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from devtools.provisioner import PROVISIONER_NAME
from tests.integration.test_workspace import CHILD_KINDS, children
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, sample

# The session operator retries a refused change on its resync (60 s, once idle 30 s).
RECOVERY_SECONDS = 180


def refused(workspaces: Workspaces, name: str) -> dict[str, Any] | None:
    ready = workspaces.ready_condition(name) or {}
    return ready if ready.get("reason") == "ChildRejected" else None


def label_namespace(core: client.CoreV1Api, namespace: str, level: str) -> None:
    labels = {"pod-security.kubernetes.io/enforce": level}
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})


def test_a_workspace_the_namespace_does_not_admit_creates_nothing(
    kube: client.ApiClient, workspace_namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    # RStudio's image runs as root: Pod Security "restricted" refuses its pod.
    label_namespace(core, workspace_namespace, "restricted")
    workspaces = Workspaces(kube, workspace_namespace)
    workspaces.create(sample("alice"))
    ready = wait_until("Ready=False ChildRejected", lambda: refused(workspaces, "alice"))
    assert "Pod alice" in ready["message"] and "violates PodSecurity" in ready["message"]
    assert (workspaces.get("alice") or {})["status"]["phase"] == "Failed"
    # Nothing half-made: not one child, not even the passwords Secret.
    found = children(kube, workspace_namespace, "alice")
    assert not any(found[kind] for kind in CHILD_KINDS), found

    label_namespace(core, workspace_namespace, "baseline")
    workspaces.wait_phase("alice", "Running", timeout=RECOVERY_SECONDS)
    assert all(children(kube, workspace_namespace, "alice")[kind] for kind in CHILD_KINDS)


def test_a_refused_growth_keeps_the_workspace_running_until_it_can_grow(
    kube: client.ApiClient, workspace_namespace: str
) -> None:
    storage, core = client.StorageV1Api(kube), client.CoreV1Api(kube)
    fixed = f"fixed-{workspace_namespace}"[:63]
    storage.create_storage_class(
        {
            "metadata": {"name": fixed},
            "provisioner": PROVISIONER_NAME,
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": False,
        }
    )
    try:
        workspaces = Workspaces(kube, workspace_namespace)
        workspaces.create(sample("alice", home={"size": "10Gi", "storageClassName": fixed}))
        workspaces.wait_phase("alice", "Running")
        pod = workspaces.running_pod("alice")
        workspaces.patch(
            "alice", {"home": {"size": "20Gi"}, "env": [{"name": "TZ", "value": "UTC"}]}
        )

        ready = wait_until("Ready=False ChildRejected", lambda: refused(workspaces, "alice"))
        assert "PersistentVolumeClaim alice-home" in ready["message"]
        ws = workspaces.wait_phase("alice", "Running")
        assert ws["status"]["observedGeneration"] == ws["metadata"]["generation"]

        # The rest of the change went ahead: the pod was replaced for the new variable.
        def replaced() -> Any:
            current = workspaces.running_pod("alice")
            return current if current.metadata.uid != pod.metadata.uid else None

        new = wait_until("the pod replaced for TZ", replaced)
        assert any(e.name == "TZ" and e.value == "UTC" for e in new.spec.containers[0].env)
        claim = core.read_namespaced_persistent_volume_claim("alice-home", workspace_namespace)
        assert claim.spec.resources.requests["storage"] == "10Gi"

        # The administrator allows expansion: the next resync grows the home.
        storage.patch_storage_class(fixed, {"allowVolumeExpansion": True})

        def grown() -> bool:
            claim = core.read_namespaced_persistent_volume_claim("alice-home", workspace_namespace)
            return (claim.status.capacity or {}).get("storage") == "20Gi"

        wait_until("the claim at 20Gi", grown, timeout=RECOVERY_SECONDS)
        wait_until(
            "Ready=True",
            lambda: (workspaces.ready_condition("alice") or {}).get("status") == "True",
        )
    finally:
        storage.delete_storage_class(fixed)
