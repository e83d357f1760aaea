"""Small helpers the integration tests share: waiting, node failure, dumping a namespace."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client

from devtools.localcluster import KUBELET_LABEL

T = TypeVar("T")


def wait_until(
    what: str, probe: Callable[[], T | None], timeout: float = 120, interval: float = 0.5
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def node_is_ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def fail_node(core: client.CoreV1Api, name: str) -> None:
    """Simulate a dead node: its kubelet stops (kwok no longer manages it), so its lease
    expires, the real kube-controller-manager marks it NotReady, taints it unreachable
    and evicts its pods, and those pods stay Terminating: nobody confirms they stopped."""
    core.patch_node(name, {"metadata": {"labels": {KUBELET_LABEL: None}}})
    wait_until(f"node {name} NotReady", lambda: not node_is_ready(core.read_node(name)))


def recover_node(core: client.CoreV1Api, name: str) -> None:
    """Undo fail_node: the kubelet is back, finishes what was deleted, the node is Ready."""
    core.patch_node(name, {"metadata": {"labels": {KUBELET_LABEL: "running"}}})
    wait_until(f"node {name} Ready", lambda: node_is_ready(core.read_node(name)))
    wait_until(
        f"node {name} untainted",
        lambda: (
            not any(
                t.key.startswith("node.kubernetes.io/")
                for t in core.read_node(name).spec.taints or []
            )
        ),
    )


def describe_namespace(api: client.ApiClient, namespace: str) -> str:
    """Events and objects of a namespace, for the report of a failed test."""
    core = client.CoreV1Api(api)
    lines = [f"==== namespace {namespace}: events"]
    events = sorted(
        core.list_namespaced_event(namespace).items,
        key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp),
    )
    for event in events:
        obj = event.involved_object
        lines.append(
            f"{event.last_timestamp or event.event_time} {event.type} {obj.kind}/{obj.name} "
            f"{event.reason}: {event.message}"
        )
    listers: dict[str, Callable[[], Any]] = {
        "pods": lambda: core.list_namespaced_pod(namespace),
        "persistentvolumeclaims": lambda: core.list_namespaced_persistent_volume_claim(namespace),
        "services": lambda: core.list_namespaced_service(namespace),
        "configmaps": lambda: core.list_namespaced_config_map(namespace),
    }
    for kind, lister in listers.items():
        lines.append(f"==== {kind}")
        for item in lister().items:
            status = getattr(getattr(item, "status", None), "phase", "") or ""
            lines.append(f"{item.metadata.name} {status}")
    custom = client.CustomObjectsApi(api)
    try:
        workspaces = custom.list_namespaced_custom_object(
            "rspark.dev", "v1alpha1", namespace, "rstudioworkspaces"
        )
    except client.ApiException:
        workspaces = {"items": []}
    for ws in workspaces["items"]:
        lines.append(f"==== rstudioworkspace {ws['metadata']['name']}")
        lines.append(f"spec: {ws.get('spec')}")
        lines.append(f"status: {ws.get('status')}")
    return "\n".join(lines)
