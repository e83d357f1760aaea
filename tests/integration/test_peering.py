"""Two operator replicas, as the Deployment runs them: exactly one acts; killing it hands over.

Both replicas run with the ServiceAccount's identity and a short peering
lifetime; the session's operator is stopped meanwhile, so that no third one acts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.support import localcluster
from tests.support.deploy import OperatorProcess
from tests.support.install import (
    deploy,
    refusals,
    service_account_kubeconfig,
    service_account_operator,
    session_operator_stopped,
)
from tests.support.kube import wait_until
from tests.support.s3 import S3Credentials
from tests.support.workspaces import Workspaces, sample

PAUSED = "Pausing operations in favour of"
RESUMED = "Resuming operations after the pause"


@pytest.fixture
def replicas(
    operator: OperatorProcess,
    local_cluster: Path,
    cluster_s3: S3Credentials,
    tmp_path: Path,
) -> Iterator[list[OperatorProcess]]:
    """Two replicas started one after the other, once one of them has stood down."""
    deploy()
    kubeconfig = service_account_kubeconfig(tmp_path / "kubeconfig")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    processes = [
        service_account_operator(
            localcluster.LOCAL / "logs" / f"operator-replica{index}-{stamp}.log",
            kubeconfig,
            cluster_s3,
            peering_lifetime_seconds="5",
        )
        for index in (1, 2)
    ]
    with session_operator_stopped(operator):
        try:
            for process in processes:
                process.start()
            wait_until(
                "one replica standing down",
                lambda: sum(PAUSED in p.log() for p in processes) == 1,
            )
            yield processes
        finally:
            for process in processes:
                process.stop()
    for process in processes:
        assert not refusals(process.log()), "\n".join(refusals(process.log()))
        assert "Traceback" not in process.log()


def handled(process: OperatorProcess, namespace: str, name: str) -> bool:
    """Did this replica's handlers act on the workspace (its reconcile logs it)?"""
    return re.search(rf"{re.escape(namespace)}/{re.escape(name)}: ", process.log()) is not None


def test_exactly_one_replica_handles_each_workspace_and_a_kill_hands_over(
    kube: client.ApiClient, workspace_namespace: str, replicas: list[OperatorProcess]
) -> None:
    active = next(p for p in replicas if PAUSED not in p.log())
    standby = next(p for p in replicas if p is not active)
    workspaces = Workspaces(kube, workspace_namespace)
    for name in ("ws1", "ws2", "ws3"):
        workspaces.create(sample(name))
    for name in ("ws1", "ws2", "ws3"):
        workspaces.wait_phase(name, "Running")
        assert handled(active, workspace_namespace, name)
        assert not handled(standby, workspace_namespace, name)

    active.stop(kill=True)  # no goodbye: the standby must notice the silence
    wait_until("the standby resuming", lambda: RESUMED in standby.log(), timeout=60)
    workspaces.create(sample("ws4"))
    workspaces.wait_phase("ws4", "Running")
    assert handled(standby, workspace_namespace, "ws4")
    assert not handled(active, workspace_namespace, "ws4")
