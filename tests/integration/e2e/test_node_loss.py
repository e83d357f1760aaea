"""A real node holding a workspace loses power: the workspace comes back on the other
node. The time from the power loss to Ready again is written to the test's artifacts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from devtools.network import REAL_NODES
from rspark_operator.builders.pod import HOME
from tests.integration.e2e.test_jupyterlab import ide_exec
from tests.support.kube import wait_until
from tests.support.nodes import start_real_node, stop_real_node
from tests.support.workspaces import Workspaces


def test_a_workspace_comes_back_on_the_other_node_after_a_power_loss(
    kube: client.ApiClient,
    workspace_namespace: str,
    real_workspaces: Callable[..., dict[str, Any]],
    artifacts: Path,
) -> None:
    """The node's containerd, containers and kubelet are killed; the node controller
    evicts the pod, the operator force-deletes it once the node is lost, and a new pod
    is Ready on the other node with the files of the home."""
    ns = workspace_namespace
    core = client.CoreV1Api(kube)
    workspaces = Workspaces(kube, ns)
    real_workspaces("frank")
    first = workspaces.running_pod("frank")
    ide_exec(ns, first.metadata.name, "sh", "-c", f"echo kept > {HOME}/before-the-loss.txt")
    lost = next(node for node in REAL_NODES if node.name == first.spec.node_name)
    lost_at = time.monotonic()
    assert stop_real_node(lost)
    try:

        def ready_elsewhere() -> Any:
            ws = workspaces.get("frank") or {}
            pods = [
                p
                for p in workspaces.pods("frank")
                if p.spec.node_name not in (None, lost.name) and p.status.phase == "Running"
            ]
            return pods[0] if pods and (ws.get("status") or {}).get("phase") == "Running" else None

        moved = wait_until("frank Running on the other node", ready_elsewhere, timeout=600)
        seconds = time.monotonic() - lost_at
    finally:
        start_real_node(core, lost)
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "recovery.txt").write_text(
        f"node {lost.name} lost; Ready on {moved.spec.node_name} after {seconds:.1f} s\n"
    )
    print(f"recovery after the loss of {lost.name}: {seconds:.1f} s")
    assert ide_exec(ns, moved.metadata.name, "cat", f"{HOME}/before-the-loss.txt") == "kept\n"
