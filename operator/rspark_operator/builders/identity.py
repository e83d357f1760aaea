"""A workspace's identities: who may do what from inside its pod (docs/security.md).

Three ServiceAccounts, none reachable from another's container:

- the IDE's (the pod's own account): its token is projected into the IDE container
  only, where Spark's driver runs the user's code. Its Role lets Spark manage its
  executors (pods and their configuration maps) and nothing else: no Secrets, no
  workspace, no pods/exec. RBAC cannot tell the workspace's own executors from other
  pods by name, so the admission policy (manifests/base/admission.yaml) refuses any
  other pod it tries to create, change or delete.
- the agent's: its rights (its workspace's status, its home-secrets Secret) come
  from a token Secret mounted into the agent container only. A projected token is
  always the pod's own account's, and the IDE must not hold the agent's rights.
- the executors': no rights, and no token mounted.

The pod turns off the automatic token mount, which would put the pod's token into
every container.
"""

from __future__ import annotations

from typing import Any

from rspark_operator import names
from rspark_operator.api import GROUP, PLURAL, Workspace
from rspark_operator.builders.metadata import Manifest, child

RBAC = "rbac.authorization.k8s.io"
# Where Kubernetes clients (Spark's fabric8, the Python client) look for their token,
# CA and namespace inside a pod.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
IDE_TOKEN_VOLUME = "ide-token"
AGENT_TOKEN_VOLUME = "agent-token"
# Kubernetes' own value for the automatic mount: the kubelet renews the token hourly.
TOKEN_EXPIRATION_SECONDS = 3607
ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"
SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"
SPARK_DRIVER_POD_VERBS = ["create", "get", "list", "watch", "delete", "deletecollection", "patch"]
# deletecollection: at its stop, Spark 3.5 deletes its executors' configuration maps by
# label in one request.
SPARK_DRIVER_CONFIG_MAP_VERBS = ["create", "get", "list", "watch", "delete", "deletecollection"]


def _rule(
    api_group: str, resources: list[str], verbs: list[str], resource_names: list[str] | None = None
) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": [api_group], "resources": resources, "verbs": verbs}
    if resource_names:
        rule["resourceNames"] = resource_names
    return rule


def _service_account(ws: Workspace, name: str, *, automount: bool) -> Manifest:
    account = child(ws, "v1", "ServiceAccount", name)
    account["automountServiceAccountToken"] = automount
    return account


def _role(ws: Workspace, name: str, rules: list[dict[str, Any]]) -> Manifest:
    role = child(ws, f"{RBAC}/v1", "Role", name)
    role["rules"] = rules
    return role


def _role_binding(ws: Workspace, name: str, account: str) -> Manifest:
    binding = child(ws, f"{RBAC}/v1", "RoleBinding", name)
    binding["roleRef"] = {"apiGroup": RBAC, "kind": "Role", "name": name}
    binding["subjects"] = [{"kind": "ServiceAccount", "name": account, "namespace": ws.namespace}]
    return binding


def ide_rules() -> list[dict[str, Any]]:
    """Spark's driver in client mode: executor pods and their configuration maps (client
    mode makes no Service)."""
    return [
        _rule("", ["pods"], SPARK_DRIVER_POD_VERBS),
        _rule("", ["configmaps"], SPARK_DRIVER_CONFIG_MAP_VERBS),
    ]


def agent_rules(ws: Workspace) -> list[dict[str, Any]]:
    """The snapshot agent: its workspace's status and its home-secrets Secret, by name."""
    return [
        _rule(GROUP, [PLURAL], ["get"], [ws.name]),
        _rule(GROUP, [f"{PLURAL}/status"], ["get", "patch", "update"], [ws.name]),
        _rule("", ["secrets"], ["get", "update", "patch"], [names.home_secrets_name(ws.name)]),
    ]


def build_agent_token_secret(ws: Workspace) -> Manifest:
    """Kubernetes fills it with the agent account's token, the cluster CA and the
    namespace (the files a client looks for), once the account exists."""
    secret = child(
        ws,
        "v1",
        "Secret",
        names.agent_token_secret_name(ws.name),
        annotations={SERVICE_ACCOUNT_NAME_ANNOTATION: names.agent_service_account_name(ws.name)},
    )
    secret["type"] = "kubernetes.io/service-account-token"
    return secret


def build_identities(ws: Workspace) -> list[Manifest]:
    """Accounts first, then Roles and bindings, then the agent's token Secret."""
    ide = names.service_account_name(ws.name)
    agent = names.agent_service_account_name(ws.name)
    return [
        # The pod turns the automatic mount off itself; off here too for any other pod.
        _service_account(ws, ide, automount=False),
        _service_account(ws, agent, automount=False),
        _service_account(ws, names.executor_service_account_name(ws.name), automount=False),
        _role(ws, names.role_name(ws.name), ide_rules()),
        _role_binding(ws, names.role_binding_name(ws.name), ide),
        _role(ws, names.agent_role_name(ws.name), agent_rules(ws)),
        _role_binding(ws, names.agent_role_binding_name(ws.name), agent),
        build_agent_token_secret(ws),
    ]


def ide_token_volume() -> dict[str, Any]:
    """The pod's own (the IDE's) token, as the automatic mount would project it."""
    namespace = {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
    return {
        "name": IDE_TOKEN_VOLUME,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "path": "token",
                        "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                    }
                },
                {
                    "configMap": {
                        "name": ROOT_CA_CONFIG_MAP,
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {"downwardAPI": {"items": [namespace]}},
            ]
        },
    }


def agent_token_volume(ws: Workspace) -> dict[str, Any]:
    return {
        "name": AGENT_TOKEN_VOLUME,
        "secret": {"secretName": names.agent_token_secret_name(ws.name)},
    }


def token_mount(volume: str) -> dict[str, Any]:
    return {"name": volume, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}
