"""The CPU signal on the real nodes: a computation in the IDE container with no
browser and no busy kernel (R run by `kubectl exec`, as from a terminal) keeps its
workspace up, while a workspace with the same stopAfter, started after it, with
nothing running, stops. The agent reads the copy of the IDE container's cgroup usage
its image publishes (images/rspark/rspark-cpu-stat)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

from kubernetes import client

from devtools.localcluster import BIN, KUBECONFIG
from rspark_operator import idle
from rspark_operator.builders.pod import IDE_CONTAINER
from rspark_operator.conditions import IDLE, find
from rspark_operator.quantity import parse_duration
from tests.integration.e2e.conftest import E2E_STOP_AFTER
from tests.integration.e2e.test_jupyterlab import ide_exec
from tests.integration.test_idle import QUICK_IDLE
from tests.support.workspaces import Workspaces

OPERATOR_SETTINGS = QUICK_IDLE


def test_a_busy_process_keeps_its_workspace_up_while_an_idle_one_stops(
    kube: client.ApiClient,
    workspace_namespace: str,
    real_workspaces: Callable[..., dict[str, Any]],
) -> None:
    namespace = workspace_namespace
    workspaces = Workspaces(kube, namespace)
    stop_after = {"stopAfter": E2E_STOP_AFTER}
    real_workspaces("busy", idle=stop_after)
    pod = workspaces.running_pod("busy").metadata.name
    # Published by the IDE image: the file the agent reads.
    published = ide_exec(namespace, pod, "ls", "/run/rspark/jupyter").split()
    assert set(published) & set(idle.CPU_USAGE_FILES), published
    loop = subprocess.Popen(
        [str(BIN / "kubectl"), "--kubeconfig", str(KUBECONFIG), "exec", pod, "-n", namespace,
         "-c", IDE_CONTAINER, "--",
         "Rscript", "-e", "repeat {}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        real_workspaces("quiet", idle=stop_after)
        timeout = parse_duration(E2E_STOP_AFTER).total_seconds() + 300
        workspaces.wait_phase("quiet", "Idle", timeout=timeout)
        assert loop.poll() is None  # R still running
        busy = workspaces.get("busy") or {}
        status = busy.get("status") or {}
        assert status.get("phase") == "Running", status
        verdict = find(status.get("conditions") or [], IDLE) or {}
        assert verdict.get("status") != "True", verdict
    finally:
        loop.terminate()
        loop.wait(timeout=30)
