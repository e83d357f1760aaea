"""The operator image of `make images-local`, run in the cluster by the manifests'
Deployment, under its ServiceAccount, on a real node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devtools.deploy import (
    REAL_NODE_TOLERATION,
    OperatorProcess,
)
from devtools.install import (
    SERVICE_ACCOUNT,
    SYSTEM_NAMESPACE,
    deploy,
    refusals,
    session_operator_stopped,
)
from devtools.localcluster import kubectl
from devtools.network import REAL_NODE_LABEL, REAL_NODE_VALUE, REAL_NODES
from tests.integration.e2e.conftest import create_on_real_nodes
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces

DEPLOYMENT = "rspark-operator"
CONTAINER = "operator"
OPERATOR_PODS = "app.kubernetes.io/name=rspark-operator,app.kubernetes.io/component=operator"


@pytest.fixture
def operator_in_cluster(
    kube: client.ApiClient,
    operator: OperatorProcess,
    local_images: dict[str, str],
    real_node_install: Path,
) -> Iterator[Any]:
    """The real-node overlay's Deployment (the local operator image, the real-node
    settings) with one replica placed on a real node; the session's operator stopped
    meanwhile. The overlay's Deployment again after."""
    apps = client.AppsV1Api(kube)
    core = client.CoreV1Api(kube)
    placement = {
        "nodeSelector": {REAL_NODE_LABEL: REAL_NODE_VALUE},
        "tolerations": [REAL_NODE_TOLERATION],
    }
    patch = {"spec": {"replicas": 1, "template": {"spec": placement}}}
    with session_operator_stopped(operator):
        apps.patch_namespaced_deployment(DEPLOYMENT, SYSTEM_NAMESPACE, patch)

        def one_ready_pod() -> Any:
            pods = [
                p
                for p in core.list_namespaced_pod(
                    SYSTEM_NAMESPACE, label_selector=OPERATOR_PODS
                ).items
                if not p.metadata.deletion_timestamp
            ]
            ready = [
                p
                for p in pods
                if p.spec.containers[0].image == local_images["operator"]
                and p.spec.node_name in {n.name for n in REAL_NODES}
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            ]
            return ready[0] if len(pods) == 1 and ready else None

        pod = wait_until("the operator's pod Ready on a real node", one_ready_pod, timeout=300)
        try:
            yield pod
        finally:
            apps.delete_namespaced_deployment(DEPLOYMENT, SYSTEM_NAMESPACE)
            deploy(real_node_install)


def test_the_operator_image_runs_in_cluster_under_its_service_account(
    kube: client.ApiClient, workspace_namespace: str, operator_in_cluster: Any
) -> None:
    """From its image, on a real node, as ServiceAccount rspark-operator: it brings a
    JupyterLab workspace to Running, and nothing it asked for was refused."""
    pod = operator_in_cluster
    assert pod.spec.node_name in {n.name for n in REAL_NODES}
    assert pod.spec.service_account_name == SERVICE_ACCOUNT
    create_on_real_nodes(Workspaces(kube, workspace_namespace), "dora")
    log = kubectl("logs", pod.metadata.name, "-n", SYSTEM_NAMESPACE, "-c", CONTAINER)
    assert "Traceback" not in log, log
    assert not refusals(log), "\n".join(refusals(log))
