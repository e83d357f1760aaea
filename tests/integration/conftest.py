"""Fixtures for tests against the local cluster (real control plane, kwok nodes, S3, restic).

The cluster is brought up once per test session when it is not already running,
and stopped at the end only if this session started it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from devtools import localcluster
from devtools.deploy import OperatorProcess, credentials_secret, install_crds
from devtools.install import (
    deploy,
    refusals,
    service_account_kubeconfig,
    service_account_operator,
    session_operator_stopped,
)
from devtools.s3 import S3Credentials
from rspark_operator.main import KOPF_OBJECT_LOGGER
from tests.support.kube import describe_namespace
from tests.support.profiles import Profiles, unique_profiles
from tests.support.workspaces import Workspaces, sample


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that restart the local cluster run last: session fixtures (API clients, S3
    credentials, the operator's token) belong to the cluster they were made for."""
    items.sort(key=lambda item: item.get_closest_marker("restarts_cluster") is not None)


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[Path]:
    """The kubeconfig of a running local cluster."""
    started_here = not localcluster.api_is_up()
    if started_here:
        localcluster.up()
    os.environ["PATH"] = f"{localcluster.BIN}:{os.environ['PATH']}"
    yield localcluster.KUBECONFIG
    if started_here and not os.environ.get("RSPARK_KEEP_CLUSTER"):
        localcluster.down()


@pytest.fixture(scope="session")
def kube(local_cluster: Path) -> client.ApiClient:
    return config.new_client_from_config(str(local_cluster))


@pytest.fixture(scope="session")
def cluster_s3(local_cluster: Path) -> S3Credentials:
    return localcluster.s3_credentials()


@pytest.fixture
def namespace(kube: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test; on failure its events and objects are printed."""
    core = client.CoreV1Api(kube)
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    name = "".join(ch for ch in name if ch.isalnum() or ch == "-")
    core.create_namespace({"metadata": {"name": name, "labels": {"rspark.dev/test": "true"}}})
    yield name
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(describe_namespace(kube, name))
    core.delete_namespace(name)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's report on the test item, so fixtures can tell a failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="session")
def crds(local_cluster: Path) -> None:
    install_crds()


@pytest.fixture
def profiles(crds: None) -> Iterator[Profiles]:
    """SparkProfiles under names unique to this test, deleted afterwards."""
    yield from unique_profiles()


@pytest.fixture(scope="session")
def operator_kubeconfig(crds: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifests/base installed; a kubeconfig holding a token of its ServiceAccount."""
    deploy()
    return service_account_kubeconfig(tmp_path_factory.mktemp("operator") / "kubeconfig")


# Settings of the tests' operators: quick to hand over and to leave a failed node
# (the kubelet of a kwok node stops in seconds; production defaults are minutes).
OPERATOR_SETTINGS = {
    # Refused changes are tried again at each resync (test_workspace_refused).
    "resync_seconds": "60",
    "peering_lifetime_seconds": "10",
    "node_failure_toleration_seconds": "5",
    "termination_grace_seconds": "10",
    "node_lost_force_delete_seconds": "5",
    # Workspaces of test_workspace change their image to example.org/rspark:2.
    "allowed_image_prefixes": "ghcr.io/rspark-dev/,example.org/",
}


def start_operator(
    name: str, kubeconfig: Path, s3: S3Credentials, **settings: str
) -> OperatorProcess:
    logs = localcluster.LOCAL / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    process = service_account_operator(
        logs / f"operator-{name}-{time.strftime('%Y%m%d-%H%M%S')}.log",
        kubeconfig,
        s3,
        **{**OPERATOR_SETTINGS, **settings},
    )
    process.start()
    return process


def assert_clean(process: OperatorProcess) -> None:
    """Nothing refused by RBAC, no handler crashed."""
    log = process.log()
    assert not refusals(log), "\n".join(refusals(log))
    assert "Traceback" not in log, log
    assert not kopf_object_info(log)


def kopf_object_info(log: str) -> list[str]:
    """kopf's INFO lines about objects: one per watch event, which the operator turns off."""
    return [line for line in log.splitlines() if KOPF_OBJECT_LOGGER in line and "[INFO" in line]


@pytest.fixture(scope="session")
def operator(operator_kubeconfig: Path, cluster_s3: S3Credentials) -> Iterator[OperatorProcess]:
    """One `rspark-operator` process for the session, as in production: with the identity
    and only the permissions of the manifests' ServiceAccount. Nothing may be refused."""
    process = start_operator("session", operator_kubeconfig, cluster_s3)
    yield process
    process.stop()
    assert not refusals(process.log()), "\n".join(refusals(process.log()))
    assert not kopf_object_info(process.log())


@pytest.fixture
def operator_with(
    operator: OperatorProcess, operator_kubeconfig: Path, cluster_s3: S3Credentials
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start this test's own operator with other settings; the session's is stopped
    meanwhile (only one may act)."""
    started: list[OperatorProcess] = []

    def start(**settings: str) -> OperatorProcess:
        started.append(start_operator("test", operator_kubeconfig, cluster_s3, **settings))
        return started[-1]

    with session_operator_stopped(operator):
        try:
            yield start
        finally:
            for process in started:
                process.stop()
    for process in started:
        assert_clean(process)


@pytest.fixture
def workspace_namespace(
    namespace: str, operator: OperatorProcess, cluster_s3: S3Credentials
) -> Iterator[str]:
    """A namespace with the S3 credentials Secret; the operator's log must stay clean."""
    credentials_secret(namespace, cluster_s3)
    start = len(operator.log())
    yield namespace
    new_lines = operator.log()[start:]
    assert "Traceback" not in new_lines, new_lines
    assert "failed with an exception" not in new_lines, new_lines


@pytest.fixture
def alice(kube: client.ApiClient, workspace_namespace: str) -> Workspaces:
    """The sample workspace `alice`, Running."""
    workspaces = Workspaces(kube, workspace_namespace)
    workspaces.create(sample("alice"))
    workspaces.wait_phase("alice", "Running")
    return workspaces
