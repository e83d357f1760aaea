"""`kubectl drain` of the real node that runs a workspace: the workspace's disruption
budget refuses the eviction, the operator moves the pod gracefully, and the snapshot
the agent takes as the old pod stops holds what was written just before."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kubernetes import client

from devtools.localcluster import BIN, KUBECONFIG, tool_env
from rspark_operator import names
from rspark_operator.agent.restic import parse_time
from rspark_operator.builders.pod import HOME
from tests.integration.e2e.test_jupyterlab import ide_exec
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, restic_env

WRITTEN = "written-before-the-drain.txt"
# kubectl drain waits this long for the node to empty (the IDE's shutdown and the
# last snapshot run within the pod's grace period, 120 s by default).
DRAIN_TIMEOUT_SECONDS = 240


def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(KUBECONFIG), *args],
        env=tool_env(), capture_output=True, text=True, check=False,
        timeout=DRAIN_TIMEOUT_SECONDS + 60,
    )  # fmt: skip


def restic(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [str(BIN / "restic"), *args, "--json"],
        env=env, check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip


def test_a_drain_moves_the_workspace_after_its_last_snapshot(
    kube: client.ApiClient,
    workspace_namespace: str,
    real_workspaces: Callable[..., dict[str, Any]],
) -> None:
    ns = workspace_namespace
    core = client.CoreV1Api(kube)
    workspaces = Workspaces(kube, ns)
    real_workspaces("dora")
    old = workspaces.running_pod("dora")
    ide_exec(ns, old.metadata.name, "sh", "-c", f"date +%s%N > {HOME}/{WRITTEN}")
    try:
        drain = kubectl("drain", old.spec.node_name, "--ignore-daemonsets",
                        "--delete-emptydir-data", f"--timeout={DRAIN_TIMEOUT_SECONDS}s",
                        )  # fmt: skip
        assert drain.returncode == 0, drain.stderr
        new = wait_until(
            "dora's new pod Running",
            lambda: next(
                (p for p in workspaces.pods("dora")
                 if p.metadata.uid != old.metadata.uid and p.status.phase == "Running"),
                None,
            ),
            timeout=300,
        )  # fmt: skip
        assert new.spec.node_name != old.spec.node_name
        selector = "involvedObject.kind=RStudioWorkspace,reason=NodeDrained"
        (moved,) = core.list_namespaced_event(ns, field_selector=selector).items
        assert old.spec.node_name in moved.message
        workspaces.wait_phase("dora", "Running", timeout=300)
    finally:
        kubectl("uncordon", old.spec.node_name)
    # The shutdown's snapshot: taken after the move began, before the new pod existed.
    env = restic_env(kube, ns, "dora")
    # Both Kubernetes times are whole seconds: compare the snapshot's at that precision.
    began: datetime = moved.first_timestamp or moved.event_time
    created: datetime = new.metadata.creation_timestamp
    shutdown = [
        s for s in json.loads(restic(env, "snapshots", "--host", names.snapshot_host(ns, "dora")))
        if began <= parse_time(s["time"]).replace(microsecond=0) <= created
    ]  # fmt: skip
    assert shutdown, "no snapshot between the move and the new pod"
    # `ls` answers one JSON object a line: the snapshot, then its files.
    listed = [json.loads(line) for line in restic(env, "ls", shutdown[-1]["id"]).splitlines()]
    files = {entry["path"] for entry in listed if entry.get("struct_type") == "node"}
    assert any(path.endswith(f"/{WRITTEN}") for path in files), sorted(files)
