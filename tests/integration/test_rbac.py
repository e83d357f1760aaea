"""The manifests' ServiceAccount and ClusterRole: least privilege, no way to escalate.

The session's operator (tests/integration/conftest.py) runs with a token of
`rspark-system/rspark-operator`, so every workspace scenario already runs under
this ClusterRole; here: what it grants and what it refuses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from devtools.deploy import OperatorProcess
from devtools.install import (
    SERVICE_ACCOUNT,
    SYSTEM_NAMESPACE,
    can_i,
    service_account_kubeconfig,
    session_operator_stopped,
)
from devtools.localcluster import kubectl
from devtools.s3 import S3Credentials
from tests.integration.conftest import start_operator
from tests.integration.test_workspace import CHILD_KINDS, children
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, sample

# An identity with the manifests' ClusterRole minus NetworkPolicies: an install whose
# ClusterRole is older than the operator.
LACKING = f"{SERVICE_ACCOUNT}-without-networkpolicies"


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
        ("delete", "networkpolicies.networking.k8s.io", "default"),
        ("delete", "services", "default"),  # Spark in client mode makes none
        ("delete", "poddisruptionbudgets.policy", "default"),
        ("create", "pods/eviction", "default"),
        ("patch", "sparkprofiles.rspark.dev", None),  # written by the platform team only
        ("delete", "sparkprofiles.rspark.dev", None),
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
                           ("delete", "pods"), ("create", "events"), ("watch", "events"),
                           # spec.idle.releaseVolume, after the last snapshot
                           ("delete", "persistentvolumeclaims"),
                           ("get", "serviceaccounts"), ("create", "kopfpeerings.kopf.dev"),
                           ("patch", "clusterkopfpeerings.kopf.dev")]:  # fmt: skip
        assert can_i(verb, resource, "default"), (verb, resource)
    for verb in ("get", "list", "watch"):  # cordoned nodes (drains)
        assert can_i(verb, "nodes", None), verb
    # Is a home volume node-local, on which node (lifecycle.volume_lost); read only.
    assert can_i("get", "persistentvolumes", None)
    assert not can_i("delete", "persistentvolumes", None)
    assert can_i("patch", "poddisruptionbudgets.policy", "default")
    for verb in ("get", "list", "watch"):
        assert can_i(verb, "sparkprofiles.rspark.dev", None), verb
    assert can_i("get", "namespaces", None)  # a profile's namespaceSelector


def test_it_cannot_grant_more_than_it_holds(
    as_operator: client.ApiClient, kube: client.ApiClient, namespace: str
) -> None:
    """RBAC escalation prevention: a Role granting what the ClusterRole lacks is refused."""
    role = {
        "metadata": {"name": "too-much"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"],
                   "verbs": ["create"]}],
    }  # fmt: skip
    with pytest.raises(ApiException) as refused:
        client.RbacAuthorizationV1Api(as_operator).create_namespaced_role(namespace, role)
    assert refused.value.status == 403
    assert "attempting to grant RBAC permissions not currently held" in str(refused.value.body)
    assert SYSTEM_NAMESPACE in str(refused.value.body)


@pytest.fixture
def operator_lacking_networkpolicies(
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    kube: client.ApiClient,
    cluster_s3: S3Credentials,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """The operator under an identity that may not touch NetworkPolicies (the session's
    operator is stopped meanwhile)."""
    rbac, core = client.RbacAuthorizationV1Api(kube), client.CoreV1Api(kube)
    role = rbac.read_cluster_role(SERVICE_ACCOUNT)
    rules = [
        {"apiGroups": rule.api_groups, "resources": kept, "verbs": rule.verbs}
        for rule in role.rules
        if (kept := [resource for resource in rule.resources if resource != "networkpolicies"])
    ]
    rbac.create_cluster_role({"metadata": {"name": LACKING}, "rules": rules})
    core.create_namespaced_service_account(SYSTEM_NAMESPACE, {"metadata": {"name": LACKING}})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": LACKING},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": LACKING},
            "subjects": [{"kind": "ServiceAccount", "name": LACKING,
                          "namespace": SYSTEM_NAMESPACE}],
        }
    )  # fmt: skip
    try:
        kubeconfig = service_account_kubeconfig(tmp_path / "kubeconfig", account=LACKING)
        with session_operator_stopped(operator):
            process = start_operator("lacking", kubeconfig, cluster_s3)
            try:
                yield process
            finally:
                process.stop()
        assert "Traceback" not in process.log()
    finally:
        rbac.delete_cluster_role_binding(LACKING)
        rbac.delete_cluster_role(LACKING)
        core.delete_namespaced_service_account(LACKING, SYSTEM_NAMESPACE)


def test_a_permission_the_operator_lacks_is_told_apart_from_a_refused_spec(
    kube: client.ApiClient,
    workspace_namespace: str,
    operator_lacking_networkpolicies: OperatorProcess,
) -> None:
    workspaces = Workspaces(kube, workspace_namespace)
    workspaces.create(sample("alice"))

    def forbidden() -> dict[str, object] | None:
        ready = workspaces.ready_condition("alice") or {}
        return ready if ready.get("reason") == "OperatorForbidden" else None

    ready = wait_until("Ready=False OperatorForbidden", forbidden)
    assert ready["status"] == "False"
    assert ready["message"] == (
        f"the operator lacks permission to patch networkpolicies in namespace {workspace_namespace}"
    )
    # A new workspace is made whole or not at all.
    found = children(kube, workspace_namespace, "alice")
    assert not any(found[kind] for kind in CHILD_KINDS), found
