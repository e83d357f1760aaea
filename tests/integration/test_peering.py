"""Two operator replicas, as the Deployment runs them: exactly one acts; killing it hands over.

Both replicas run with the ServiceAccount's identity and a short peering
lifetime; the session's operator is stopped meanwhile, so that no third one acts.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from devtools import localcluster
from devtools.deploy import OperatorProcess, operator_environment
from devtools.install import (
    deploy,
    refusals,
    service_account_kubeconfig,
    service_account_operator,
    session_operator_stopped,
)
from devtools.s3 import S3Credentials
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, sample

PEERING = "rspark-operator"
# kopf starts a replica paused (mandatory peering) and logs these as it changes state.
PAUSED = "Pausing operations in favour of"
RESUMED = "Resuming operations after the pause"
IDENTITIES = ("replica1", "replica2")


def acting(process: OperatorProcess) -> bool:
    log = process.log()
    return log.rfind(RESUMED) > log.rfind(PAUSED)


def priorities(kube: client.ApiClient) -> dict[str, int]:
    """Priority of each of our replicas as recorded in the peering object (kopf's POD_ID)."""
    peering = client.CustomObjectsApi(kube).get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", "rspark-operator"
    )
    status = peering.get("status") or {}
    return {name: status[name]["priority"] for name in IDENTITIES if name in status}


@pytest.fixture
def replicas(
    operator: OperatorProcess,
    kube: client.ApiClient,
    cluster_s3: S3Credentials,
    tmp_path: Path,
) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    """Two replicas, (active, standby), once the one of highest priority acts alone."""
    deploy()
    kubeconfig = service_account_kubeconfig(tmp_path / "kubeconfig")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    processes = {}
    for identity in IDENTITIES:
        process = service_account_operator(
            localcluster.LOCAL / "logs" / f"operator-{identity}-{stamp}.log",
            kubeconfig,
            cluster_s3,
            peering_lifetime_seconds="5",
        )
        process.env["POD_ID"] = identity  # kopf's peer identity, as the Deployment sets it
        processes[identity] = process
    with session_operator_stopped(operator):
        try:
            for process in processes.values():
                process.start()

            def settled() -> tuple[OperatorProcess, OperatorProcess] | None:
                known = priorities(kube)
                if len(known) < len(IDENTITIES):
                    return None
                top = max(known, key=known.__getitem__)
                (other,) = [name for name in IDENTITIES if name != top]
                active, standby = processes[top], processes[other]
                return (active, standby) if acting(active) and not acting(standby) else None

            yield wait_until("the replica of highest priority acting alone", settled)
        finally:
            for process in processes.values():
                process.stop()
    for process in processes.values():
        assert not refusals(process.log()), "\n".join(refusals(process.log()))
        assert "Traceback" not in process.log()


def handled(process: OperatorProcess, namespace: str, name: str) -> bool:
    """Did this replica's handlers act on the workspace (its reconcile logs it)?"""
    return re.search(rf"{re.escape(namespace)}/{re.escape(name)}: ", process.log()) is not None


def test_exactly_one_replica_handles_each_workspace_and_a_kill_hands_over(
    kube: client.ApiClient,
    workspace_namespace: str,
    replicas: tuple[OperatorProcess, OperatorProcess],
) -> None:
    active, standby = replicas
    workspaces = Workspaces(kube, workspace_namespace)
    for name in ("ws1", "ws2", "ws3"):
        workspaces.create(sample(name))
    for name in ("ws1", "ws2", "ws3"):
        workspaces.wait_phase(name, "Running")
        assert handled(active, workspace_namespace, name)
        assert not handled(standby, workspace_namespace, name)

    active.stop(kill=True)  # no goodbye: the standby must notice the silence
    wait_until("the standby acting", lambda: acting(standby), timeout=60)
    workspaces.create(sample("ws4"))
    workspaces.wait_phase("ws4", "Running")
    assert handled(standby, workspace_namespace, "ws4")
    assert not handled(active, workspace_namespace, "ws4")


def test_a_missing_peering_object_is_created_or_named_at_once(
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    kube: client.ApiClient,
    cluster_s3: S3Credentials,
    tmp_path: Path,
) -> None:
    """Peering is mandatory: without its object kopf would wait forever, silently."""
    custom = client.CustomObjectsApi(kube)
    with session_operator_stopped(operator):
        custom.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING)
        try:
            # The manifests' ClusterRole may not create it: one line says so, exit 1.
            env = operator_environment(cluster_s3)
            env["KUBECONFIG"] = str(operator_kubeconfig)
            script = Path(sys.executable).parent / "rspark-operator"
            result = subprocess.run(
                [str(script)], env=env, capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 1, result
            lines = (result.stdout + result.stderr).strip().splitlines()
            assert len(lines) == 1, lines
            assert "ClusterKopfPeering rspark-operator is needed and the operator lacks " \
                "permission to create clusterkopfpeerings cluster-wide" in lines[0]  # fmt: skip
            # An identity that may (the admin's kubeconfig, as `make dev` runs it) creates it.
            admin = OperatorProcess(
                localcluster.LOCAL / "logs" / f"operator-admin-{time.strftime('%H%M%S')}.log",
                operator_environment(cluster_s3),
            )
            admin.start()
            admin.stop()
            assert f"created ClusterKopfPeering {PEERING}" in admin.log()
        finally:
            deploy()  # as installed, whatever happened
    assert custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING)
