"""The workspace's identities: which token reaches which container."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rspark_operator import names
from rspark_operator.builders import build_children, build_pod
from rspark_operator.builders.identity import SERVICE_ACCOUNT_DIR
from tests.unit.workspaces import settings, workspace

pytestmark = pytest.mark.unit

Manifest = dict[str, Any]


def _containers(pod: Manifest) -> dict[str, Manifest]:
    spec = pod["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def _token_volume(pod: Manifest, container: Manifest) -> Manifest:
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == SERVICE_ACCOUNT_DIR]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    return dict(volumes[mount["name"]])


def test_each_container_gets_its_own_identity_and_no_other() -> None:
    pod = build_pod(workspace(), settings())
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["serviceAccountName"] == names.service_account_name("demo")
    containers = _containers(pod)
    ide = _token_volume(pod, containers["ide"])
    sources = ide["projected"]["sources"]
    # A projected token is the pod's own account's: the IDE's.
    assert {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}} in sources
    assert not any("secret" in source for source in sources)
    agent = _token_volume(pod, containers["snapshot-agent"])
    assert agent["secret"] == {"secretName": names.agent_token_secret_name("demo")}
    assert ide["name"] != agent["name"]


def test_without_the_agent_the_pod_has_no_agent_token() -> None:
    pod = build_pod(workspace(snapshot={"enabled": False}), settings())
    volumes = [v for v in pod["spec"]["volumes"] if "secret" in v]
    assert volumes == []


def test_the_agent_token_secret_belongs_to_the_agent_account() -> None:
    children = build_children(workspace(), settings())
    (token,) = [
        c for c in children if c["metadata"]["name"] == names.agent_token_secret_name("demo")
    ]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": names.agent_service_account_name("demo")
    }
    assert "data" not in token  # Kubernetes fills it in


def test_every_account_leaves_token_mounting_to_the_pod() -> None:
    accounts = [c for c in build_children(workspace(), settings()) if c["kind"] == "ServiceAccount"]
    assert {a["metadata"]["name"] for a in accounts} == {
        "demo-rspark-ide",
        "demo-rspark-agent",
        "demo-rspark-executor",
    }
    assert all(a["automountServiceAccountToken"] is False for a in accounts)


def test_executors_hold_no_rights() -> None:
    bindings = [c for c in build_children(workspace(), settings()) if c["kind"] == "RoleBinding"]
    subjects = {s["name"] for b in bindings for s in b["subjects"]}
    assert subjects == {"demo-rspark-ide", "demo-rspark-agent"}


def test_ide_identity_has_no_secrets_exec_or_workspace_rights() -> None:
    (role,) = [
        c
        for c in build_children(workspace(), settings())
        if c["kind"] == "Role" and c["metadata"]["name"] == names.role_name("demo")
    ]
    resources = {resource for rule in role["rules"] for resource in rule["resources"]}
    assert resources == {"pods", "configmaps"}


ADMISSION = Path(__file__).parents[2] / "manifests" / "base" / "admission.yaml"


def test_the_admission_policy_knows_the_identities_by_their_names() -> None:
    """The policy's CEL spells the names.py contract: a renamed account or label must
    change both (the integration tests prove the policy itself)."""
    policy, binding = yaml.safe_load_all(ADMISSION.read_text())
    (condition,) = policy["spec"]["matchConditions"]
    assert f"endsWith('{names.IDE_IDENTITY_SUFFIX}')" in condition["expression"]
    text = ADMISSION.read_text()
    for spelled in (
        f"'{names.EXECUTOR_IDENTITY_SUFFIX}'",
        f"'{names.WORKSPACE_LABEL}'",
        f"'{names.COMPONENT_LABEL}'",
        f"'{names.SPARK_EXECUTOR_COMPONENT}'",
    ):
        assert spelled in text, spelled
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]


def test_the_agent_meets_pod_security_restricted_and_the_ide_baseline() -> None:
    pod = build_pod(workspace(), settings())
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    containers = _containers(pod)
    agent = containers["snapshot-agent"]["securityContext"]
    assert agent["runAsNonRoot"] is True and agent["readOnlyRootFilesystem"] is True
    assert agent["allowPrivilegeEscalation"] is False
    assert agent["capabilities"] == {"drop": ["ALL"]}
    assert "memory" in containers["snapshot-agent"]["resources"]["limits"]
    ide = containers["ide"]["securityContext"]
    assert ide["allowPrivilegeEscalation"] is False
    assert ide["capabilities"]["drop"] == ["ALL"]
    # Within Pod Security baseline's allowed capabilities (NET_RAW is not among them).
    baseline = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD"}
    baseline |= {"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
    assert set(ide["capabilities"]["add"]) <= baseline
