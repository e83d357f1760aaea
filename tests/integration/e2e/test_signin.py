"""Sign-in at a workspace's URL on the real nodes: Keycloak (the identity provider),
oauth2-proxy in the workspace pod (RSPARK_SIGNIN=oidc), JupyterLab behind it, and
Chromium as alice and bob see it through the ingress controller.

Keycloak starts here, not with the cluster (devtools/keycloak.py: it takes about half
a GiB and most of a minute); its start time and memory are printed and written next
to the screenshots.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from devtools import keycloak
from devtools.deploy import OperatorProcess, browser_url, push_images, real_node_settings
from devtools.install import session_operator_stopped
from devtools.localcluster import LOCAL, kubectl
from devtools.s3 import S3Credentials
from rspark_operator import names
from rspark_operator.builders.signin import (
    ALLOWED_KEY,
    CLIENT_SECRET_KEY,
    COOKIE_SECRET_KEY,
    SIGNIN_CONTAINER,
)
from tests.integration.conftest import assert_clean, start_operator
from tests.integration.e2e.conftest import create_on_real_nodes
from tests.support.kube import wait_until
from tests.support.signin import walk_through
from tests.support.workspaces import Workspaces


@pytest.fixture(scope="module")
def identity_provider(local_cluster: Path) -> Iterator[keycloak.KeycloakProcess]:
    logs = LOCAL / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    process = keycloak.KeycloakProcess(logs / f"keycloak-{time.strftime('%Y%m%d-%H%M%S')}.log")
    process.start()
    print(process.measured())
    yield process
    process.stop()


@pytest.fixture(scope="module")
def signin_operator(
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    cluster_s3: S3Credentials,
    local_images: dict[str, str],
    real_node_install: Path,
    identity_provider: keycloak.KeycloakProcess,
) -> Iterator[OperatorProcess]:
    """The operator with the real-node settings and sign-in through Keycloak."""
    proxy_image = push_images(("oauth2-proxy",))["oauth2-proxy"]
    settings = {
        **real_node_settings(local_images),
        "signin": "oidc",
        "oidc_issuer_url": keycloak.ISSUER_URL,
        "oidc_client_id": keycloak.CLIENT_ID,
        "signin_proxy_image": proxy_image,
    }
    with session_operator_stopped(operator):
        process = start_operator("signin", operator_kubeconfig, cluster_s3, **settings)
        try:
            yield process
        finally:
            process.stop()
    assert_clean(process)


def signin_secret(namespace: str) -> None:
    """The platform's Secret of the client and the proxies' cookie secret."""
    manifest = kubectl(
        "create", "secret", "generic", "rspark-oidc", "-n", namespace,
        f"--from-literal={CLIENT_SECRET_KEY}={keycloak.CLIENT_SECRET}",
        f"--from-literal={COOKIE_SECRET_KEY}={secrets.token_hex(16)}",
        "--dry-run=client", "-o", "yaml",
    )  # fmt: skip
    kubectl("apply", "-f", "-", stdin=manifest)


def test_only_the_owner_and_spec_access_pass_the_sign_in(
    kube: client.ApiClient,
    workspace_namespace: str,
    signin_operator: OperatorProcess,
    identity_provider: keycloak.KeycloakProcess,
    artifacts: Path,
) -> None:
    """Unauthenticated: the provider's login page. alice signs in and reaches her
    JupyterLab; bob, signed in, gets a 403 page there; alice adds bob to spec.access
    and bob gets in, the pod unchanged; alice signs out and must sign in again."""
    ns = workspace_namespace
    signin_secret(ns)
    workspaces = Workspaces(kube, ns)
    ws = create_on_real_nodes(workspaces, "alice", user=keycloak.ALICE.email)
    pod = workspaces.running_pod("alice")
    assert SIGNIN_CONTAINER in {c.name for c in pod.spec.containers}

    def add_bob() -> None:
        workspaces.patch("alice", {"access": [keycloak.BOB.email]})
        allowed = names.signin_config_map_name("alice")

        def listed() -> bool:
            data = client.CoreV1Api(kube).read_namespaced_config_map(allowed, ns).data
            return keycloak.BOB.email in data[ALLOWED_KEY]

        wait_until("bob in the sign-in list", listed, timeout=60)

    walk_through(artifacts, browser_url(ws["status"]["url"]), keycloak.ISSUER_URL, add_bob)
    # The same pod all along: spec.access reached the running proxy.
    after = workspaces.running_pod("alice")
    assert after.metadata.uid == pod.metadata.uid
    assert [s.restart_count for s in after.status.container_statuses] == [
        s.restart_count for s in pod.status.container_statuses
    ]
    (artifacts / "keycloak.txt").write_text(identity_provider.measured() + "\n")
