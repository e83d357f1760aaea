"""The operator under the identity of the manifests' ServiceAccount (not cluster-admin).

Every workspace scenario of test_workspace.py runs again here, against an
operator whose kubeconfig holds a token of `rspark-system/rspark-operator`: what
the ClusterRole of manifests/base does not grant, the operator cannot do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.integration import test_workspace as scenarios
from tests.support import localcluster
from tests.support.deploy import OperatorProcess
from tests.support.install import (
    SYSTEM_NAMESPACE,
    can_i,
    deploy,
    refusals,
    service_account_kubeconfig,
    service_account_operator,
    session_operator_stopped,
)
from tests.support.localcluster import kubectl
from tests.support.s3 import S3Credentials

# The scenarios and the fixtures they use, collected here as this module's own
# tests: they then get this module's `operator` (the ServiceAccount's).
globals().update(
    {
        name: value
        for name, value in vars(scenarios).items()
        if name.startswith("test_") or hasattr(value, "_fixture_function_marker")
    }
)


@pytest.fixture(scope="module")
def operator_kubeconfig(local_cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    deploy()
    return service_account_kubeconfig(tmp_path_factory.mktemp("rbac") / "kubeconfig")


@pytest.fixture(scope="module")
def operator(
    operator: OperatorProcess, operator_kubeconfig: Path, cluster_s3: S3Credentials
) -> Iterator[OperatorProcess]:
    """Replaces the session's operator for this module: same settings, the ServiceAccount's
    identity. Nothing it did may have been refused."""
    logs = localcluster.LOCAL / "logs"
    process = service_account_operator(
        logs / f"operator-sa-{time.strftime('%Y%m%d-%H%M%S')}.log",
        operator_kubeconfig,
        cluster_s3,
        peering_lifetime_seconds="10",
    )
    with session_operator_stopped(operator):
        process.start()
        yield process
        process.stop()
    assert not refusals(process.log()), "\n".join(refusals(process.log()))


@pytest.fixture(scope="module")
def as_operator(operator_kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(str(operator_kubeconfig))


def test_cluster_role_has_no_wildcards(operator_kubeconfig: Path) -> None:
    role = json.loads(kubectl("get", "clusterrole", "rspark-operator", "-o", "json"))
    assert "aggregationRule" not in role
    for rule in role["rules"]:
        fields: list[str] = [*rule["verbs"], *rule["resources"], *rule["apiGroups"]]
        assert not [f for f in fields if "*" in f], rule
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule, rule
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert not verbs & {"escalate", "bind", "impersonate"}


@pytest.mark.parametrize(
    ("verb", "resource", "namespace"),
    [
        ("delete", "nodes", None),
        ("patch", "nodes", None),
        ("list", "secrets", "kube-system"),
        ("watch", "secrets", None),
        ("delete", "secrets", "default"),
        ("delete", "persistentvolumeclaims", "default"),  # homes are never deleted
        ("delete", "rstudioworkspaces.rspark.dev", "default"),
        ("create", "pods/exec", "default"),
        ("create", "deployments.apps", "default"),
        ("create", "clusterroles.rbac.authorization.k8s.io", None),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
        ("escalate", "roles.rbac.authorization.k8s.io", "default"),
        ("bind", "roles.rbac.authorization.k8s.io", "default"),
        ("impersonate", "users", None),
        ("delete", "namespaces", None),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("create", "networkpolicies.networking.k8s.io", "default"),
    ],
)
def test_permissions_it_does_not_need_are_not_granted(
    operator_kubeconfig: Path, verb: str, resource: str, namespace: str | None
) -> None:
    assert not can_i(verb, resource, namespace)


def test_permissions_it_needs_are_granted(operator_kubeconfig: Path) -> None:
    for verb, resource in [("patch", "rstudioworkspaces.rspark.dev"),
                           ("patch", "rstudioworkspaces.rspark.dev/status"),
                           ("create", "roles.rbac.authorization.k8s.io"),
                           ("delete", "pods"), ("create", "events"),
                           ("patch", "clusterkopfpeerings.kopf.dev")]:  # fmt: skip
        assert can_i(verb, resource, "default"), (verb, resource)


def test_it_cannot_grant_more_than_it_holds(
    as_operator: client.ApiClient, kube: client.ApiClient, namespace: str
) -> None:
    """RBAC escalation prevention: a Role granting what the ClusterRole lacks is refused."""
    role = {
        "metadata": {"name": "too-much"},
        "rules": [{"apiGroups": [""], "resources": ["persistentvolumeclaims"],
                   "verbs": ["delete"]}],
    }  # fmt: skip
    with pytest.raises(ApiException) as refused:
        client.RbacAuthorizationV1Api(as_operator).create_namespaced_role(namespace, role)
    assert refused.value.status == 403
    assert "attempting to grant RBAC permissions not currently held" in str(refused.value.body)
    assert SYSTEM_NAMESPACE in str(refused.value.body)
