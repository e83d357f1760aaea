"""A real node holding a workspace loses power: its home volume is node-local, so it is
lost with the node; the workspace comes back on the other node with the home restored
from its last snapshot in S3. The time from the power loss to Running again, the
snapshot restored and the work lost are written to the test's artifacts."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from devtools.localcluster import VOLUMES_DIR
from devtools.network import REAL_NODES
from rspark_operator import names
from rspark_operator.builders.pod import HOME
from rspark_operator.conditions import HOME_RESTORED, find
from rspark_operator.lifecycle import VOLUME_LOST
from tests.integration.e2e.test_jupyterlab import ide_exec
from tests.support.kube import wait_until
from tests.support.nodes import start_real_node, stop_real_node
from tests.support.workspaces import Workspaces

KEPT = "before-the-snapshot.txt"
LOST = "after-the-snapshot.txt"
# Snapshots every 30 s: the file written right after one is not in the next before
# the node dies.
SNAPSHOT_INTERVAL = "30s"
# Read by the real-node operator fixture (conftest.MODULE_SETTINGS): a node NotReady
# for 10 s has lost its volumes (production default: 600 s).
OPERATOR_SETTINGS = {"volume_lost_after_seconds": "10"}


def home_volume(core: client.CoreV1Api, namespace: str) -> Any:
    claim = core.read_namespaced_persistent_volume_claim(names.home_claim_name("frank"), namespace)
    return core.read_persistent_volume(claim.spec.volume_name)


def test_a_workspace_comes_back_on_the_other_node_with_its_home_from_s3(
    kube: client.ApiClient,
    workspace_namespace: str,
    real_workspaces: Callable[..., dict[str, Any]],
    artifacts: Path,
) -> None:
    """The node's containerd, containers and kubelet are killed; the node controller
    evicts the pod, the operator force-deletes it once the node is lost, gives up the
    node-local home volume (VolumeLost), and a new pod on the other node starts on a new
    volume that the agent restored from the last snapshot before the IDE started."""
    ns = workspace_namespace
    core = client.CoreV1Api(kube)
    workspaces = Workspaces(kube, ns)
    real_workspaces("frank", snapshot={"interval": SNAPSHOT_INTERVAL})
    first = workspaces.running_pod("frank")
    lost = next(node for node in REAL_NODES if node.name == first.spec.node_name)
    old_volume = home_volume(core, ns)
    # The volume is node-local: a folder of the node's own, a PV only that node can use.
    assert old_volume.spec.host_path.path.startswith(f"{VOLUMES_DIR / lost.name}/")
    (term,) = old_volume.spec.node_affinity.required.node_selector_terms
    assert [e.values for e in term.match_expressions] == [[lost.name]]

    ide_exec(ns, first.metadata.name, "sh", "-c", f"echo kept > {HOME}/{KEPT}")
    written = datetime.now().astimezone()

    snapshot = wait_until(
        "a snapshot after the write",
        lambda: workspaces.snapshot_begun_after("frank", written),
        timeout=180,
    )
    ide_exec(ns, first.metadata.name, "sh", "-c", f"echo lost > {HOME}/{LOST}")
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
    status = (workspaces.get("frank") or {})["status"]
    restored = find(status["conditions"], HOME_RESTORED) or {}
    selector = "involvedObject.kind=RStudioWorkspace,reason=" + VOLUME_LOST
    events = core.list_namespaced_event(ns, field_selector=selector).items
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "recovery.txt").write_text(
        f"node {lost.name} lost; Running on {moved.spec.node_name} after {seconds:.1f} s\n"
        f"restored: {restored.get('message')}\n"
        f"last snapshot before the loss: {snapshot['id'][:8]} at {snapshot['time']}\n"
        f"work lost: {LOST}, written after that snapshot\n"
    )
    print(f"recovery after the loss of {lost.name}: {seconds:.1f} s; {restored.get('message')}")
    # The operator said why it gave the volume up.
    assert any(lost.name in event.message for event in events), [e.message for e in events]
    # The home is on a new volume of the other node, restored from the snapshot in S3.
    new_volume = home_volume(core, ns)
    assert new_volume.metadata.name != old_volume.metadata.name
    assert new_volume.spec.host_path.path.startswith(f"{VOLUMES_DIR / moved.spec.node_name}/")
    assert (restored.get("status"), restored.get("reason")) == ("True", "Restored"), restored
    assert f"restored snapshot {snapshot['id'][:8]} " in restored["message"]
    assert ide_exec(ns, moved.metadata.name, "cat", f"{HOME}/{KEPT}") == "kept\n"
    # What was written after the last snapshot is the work lost.
    listing = ide_exec(ns, moved.metadata.name, "ls", "-a", HOME).split()
    assert LOST not in listing, listing
