"""Names of a workspace's children, labels and annotations: one function each.

Every name derives from the workspace name alone, so the operator finds the
children again after a restart without storing anything.
"""

from __future__ import annotations

import hashlib
import re

from rspark_operator.api import GROUP

FIELD_MANAGER = "rspark-operator"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
COMPONENT_LABEL = "app.kubernetes.io/component"
WORKSPACE_LABEL = f"{GROUP}/workspace"
USER_LABEL = f"{GROUP}/user"
POD_SPEC_HASH_ANNOTATION = f"{GROUP}/pod-spec-hash"
# Set by a user on the workspace (an RFC 3339 time) to restart its pod once.
RESTART_ANNOTATION = f"{GROUP}/restart-requested-at"


def restart_patch(at: str) -> dict[str, dict[str, dict[str, str]]]:
    """The merge patch that asks the operator for a new pod (or wakes an idle workspace)."""
    return {"metadata": {"annotations": {RESTART_ANNOTATION: at}}}


# On the home-secrets Secret, which outlives the workspace: where its snapshots are.
SNAPSHOT_REPOSITORY_ANNOTATION = f"{GROUP}/snapshot-repository"
SNAPSHOT_CREDENTIALS_ANNOTATION = f"{GROUP}/snapshot-credentials-secret"

# On a workspace pod whose node is cordoned: its disruption budget no longer covers it,
# so the drain may evict it (builders/disruption.py).
DRAIN_LABEL = f"{GROUP}/drain"

RSTUDIO_COMPONENT = "rstudio"
SPARK_EXECUTOR_COMPONENT = "spark-executor"

LABEL_VALUE_MAX_LENGTH = 63
_LABEL_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_SUFFIX_LENGTH = 8


def pod_name(workspace: str) -> str:
    return workspace


# The workspace's three identities (see docs/security.md). The suffixes are the
# contract with the admission policy (manifests/base/admission.yaml), which knows a
# workspace's IDE identity by its username, system:serviceaccount:<ns>:<ws>-rspark-ide.
IDE_IDENTITY_SUFFIX = "-rspark-ide"
AGENT_IDENTITY_SUFFIX = "-rspark-agent"
EXECUTOR_IDENTITY_SUFFIX = "-rspark-executor"


def service_account_name(workspace: str) -> str:
    """The pod's own account: the IDE container, where Spark's driver runs, holds its token."""
    return f"{workspace}{IDE_IDENTITY_SUFFIX}"


def role_name(workspace: str) -> str:
    return service_account_name(workspace)


def role_binding_name(workspace: str) -> str:
    return service_account_name(workspace)


def agent_service_account_name(workspace: str) -> str:
    """The snapshot agent's account; its token reaches the agent container only."""
    return f"{workspace}{AGENT_IDENTITY_SUFFIX}"


def agent_role_name(workspace: str) -> str:
    return agent_service_account_name(workspace)


def agent_role_binding_name(workspace: str) -> str:
    return agent_service_account_name(workspace)


def agent_token_secret_name(workspace: str) -> str:
    """The agent account's token, filled in by Kubernetes (type service-account-token)."""
    return f"{agent_service_account_name(workspace)}-token"


def signin_config_map_name(workspace: str) -> str:
    """Who may pass the sign-in proxy (builders/signin.py)."""
    return f"{workspace}-signin"


def executor_service_account_name(workspace: str) -> str:
    """Spark's executors run under it: no rights, no token mounted."""
    return f"{workspace}{EXECUTOR_IDENTITY_SUFFIX}"


HOME_CLAIM_SUFFIX = "-home"


def home_claim_name(workspace: str) -> str:
    return f"{workspace}{HOME_CLAIM_SUFFIX}"


def rstudio_service_name(workspace: str) -> str:
    return f"{workspace}-rstudio"


def waker_service_name(workspace: str) -> str:
    return f"{workspace}-waker"


def spark_driver_service_name(workspace: str) -> str:
    return f"{workspace}-spark-driver"


def spark_config_map_name(workspace: str) -> str:
    return f"{workspace}-spark"


def passwords_secret_name(workspace: str) -> str:
    return f"{workspace}-passwords"


def gateway_credential_secret_name(workspace: str) -> str:
    """The workspace's own credential at the snapshot gateway (gateway.CREDENTIAL_KEY)."""
    return f"{workspace}-snapshot-gateway"


def home_secrets_name(workspace: str) -> str:
    return f"{workspace}-home-secrets"


def network_policy_name(workspace: str) -> str:
    return workspace


def egress_policy_name(workspace: str) -> str:
    return f"{workspace}-egress"


def ingress_name(workspace: str) -> str:
    return workspace


def disruption_budget_name(workspace: str) -> str:
    return workspace


def executor_pod_name_prefix(workspace: str) -> str:
    return workspace


def workspace_of(kind: str, name: str) -> str | None:
    """The workspace whose pod or home claim may bear this name; None for other kinds."""
    if kind == "Pod":
        return name
    if kind == "PersistentVolumeClaim" and name.endswith(HOME_CLAIM_SUFFIX):
        return name.removesuffix(HOME_CLAIM_SUFFIX)
    return None


def snapshot_host(namespace: str, workspace: str) -> str:
    """restic --host: fixed per workspace so snapshots of every pod form one history."""
    return f"{namespace}-{workspace}"


def label_safe(value: str) -> str:
    """A label value for any string; a changed value gets a hash suffix so it stays distinct.

    "alice" stays "alice"; "Alice@Example.com" becomes "alice-example.com-1a2b3c4d".
    """
    cleaned = _LABEL_UNSAFE.sub("-", value.lower()).strip("._-")
    if cleaned == value and len(cleaned) <= LABEL_VALUE_MAX_LENGTH:
        return value
    suffix = hashlib.sha256(value.encode()).hexdigest()[:_SUFFIX_LENGTH]
    stem = cleaned[: LABEL_VALUE_MAX_LENGTH - _SUFFIX_LENGTH - 1].rstrip("._-")
    return f"{stem}-{suffix}" if stem else suffix
