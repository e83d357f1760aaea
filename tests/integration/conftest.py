"""Fixtures for tests against the local cluster (real control plane, kwok nodes, S3, restic).

The cluster is brought up once per test session when it is not already running,
and stopped at the end only if this session started it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.support import localcluster
from tests.support.kube import describe_namespace
from tests.support.s3 import S3Credentials


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
