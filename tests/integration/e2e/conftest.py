"""Fixtures of the end-to-end tests: workspaces on the real nodes, their images from
`make images-local` in the cluster's registry, reached through the ingress controller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devtools.deploy import OperatorProcess, push_images, real_node_overlay, real_node_settings
from devtools.install import deploy, session_operator_stopped
from devtools.network import REAL_NODES
from devtools.s3 import S3Credentials
from tests.integration.conftest import assert_clean, start_operator
from tests.support.browser import ARTIFACTS
from tests.support.workspaces import Workspaces, sample

# The first pull of the JupyterLab image (1.5 GB unpacked) onto a node.
FIRST_START_SECONDS = 600
# Small enough that two workspaces and a few executors fit on the two real nodes.
E2E_RESOURCES = {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}}
E2E_SPARK = {"maxExecutors": 2, "executorMemory": "512m"}
# spec.idle.stopAfter of the idle tests, whose operator has the shortest quiet time
# (QUICK_IDLE): longer than it, so a pause of the test between two signals of activity
# (the IDE's start, then a computation, a cell, a job) never stops a workspace.
E2E_STOP_AFTER = "2m"


@pytest.fixture(scope="session")
def local_images(local_cluster: Path) -> dict[str, str]:
    """`make images-local` (cached) in the cluster's registry: image name to reference."""
    return push_images(("jupyterlab", "agent", "spark", "operator"))


@pytest.fixture(scope="module")
def real_node_install(
    operator_kubeconfig: Path, cluster_s3: S3Credentials, local_images: dict[str, str]
) -> Iterator[Path]:
    """manifests/base through the real-node overlay (`devtools.deploy.real_node_overlay`:
    the local operator image, the real-node settings, which the admission policy
    follows); the base again after."""
    overlay = real_node_overlay(local_images, cluster_s3)
    deploy(overlay)
    yield overlay
    deploy()


# A test module's own operator settings, over the real-node ones: a module-level dict,
# or a function that returns one once the cluster is up (e.g. a free port on its bridge).
MODULE_SETTINGS = "OPERATOR_SETTINGS"


@pytest.fixture(scope="module")
def real_node_operator(
    request: pytest.FixtureRequest,
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    cluster_s3: S3Credentials,
    local_images: dict[str, str],
    real_node_install: Path,
) -> Iterator[OperatorProcess]:
    """The operator with the real-node settings (`make dev`'s) and the test module's
    `OPERATOR_SETTINGS`, under the manifests' ServiceAccount; the session's operator is
    stopped meanwhile."""
    own = getattr(request.module, MODULE_SETTINGS, {})
    settings = {**real_node_settings(local_images), **(own() if callable(own) else own)}
    with session_operator_stopped(operator):
        process = start_operator("e2e", operator_kubeconfig, cluster_s3, **settings)
        try:
            yield process
        finally:
            process.stop()
    assert_clean(process)


def create_on_real_nodes(workspaces: Workspaces, name: str, **spec: Any) -> dict[str, Any]:
    """A JupyterLab workspace, Running on a real node (the operator must have the
    real-node settings); spec.spark E2E_SPARK unless `spec` says."""
    spec.setdefault("spark", E2E_SPARK)
    manifest = sample(name, ide="jupyterlab", resources=E2E_RESOURCES, **spec)
    workspaces.create(manifest)
    running = workspaces.wait_phase(name, "Running", timeout=FIRST_START_SECONDS)
    assert workspaces.running_pod(name).spec.node_name in {n.name for n in REAL_NODES}
    return running


@pytest.fixture
def real_workspaces(
    kube: client.ApiClient, workspace_namespace: str, real_node_operator: OperatorProcess
) -> Callable[..., dict[str, Any]]:
    """Create a JupyterLab workspace on the real nodes and wait until it is Running."""
    workspaces = Workspaces(kube, workspace_namespace)
    return lambda name, **spec: create_on_real_nodes(workspaces, name, **spec)


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """Where this test's screenshots go: .local/artifacts/e2e/<test>/."""
    return ARTIFACTS / str(request.node.name)
