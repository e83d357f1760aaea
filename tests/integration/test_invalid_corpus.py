"""Every invalid manifest of tests/corpus/invalid gets its message at the earliest point:
the API server (CRD schema and CEL rules) or, failing that, the operator's Ready condition.
Nothing is created for a rejected workspace."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devtools.localcluster import kubectl
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces

CORPUS = Path(__file__).parents[1] / "corpus" / "invalid"
CASES = sorted(CORPUS.glob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = yaml.safe_load(path.read_text())
    return case


def apply(namespace: str, manifest: dict[str, Any]) -> None:
    """What a user does: kubectl apply --server-side."""
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))


def apply_error(namespace: str, manifest: dict[str, Any]) -> str:
    with pytest.raises(subprocess.CalledProcessError) as raised:
        apply(namespace, manifest)
    return str(raised.value.stderr)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_invalid_manifest_is_rejected_with_its_message(
    path: Path, kube: client.ApiClient, workspace_namespace: str
) -> None:
    case = load(path)
    workspaces = Workspaces(kube, workspace_namespace)
    name = case["manifest"]["metadata"]["name"]
    if case["caughtBy"] == "apiserver":
        if case["stage"] == "update":
            apply(workspace_namespace, case["base"])
        assert case["expect"] in apply_error(workspace_namespace, case["manifest"])
        return

    apply(workspace_namespace, case["manifest"])

    def invalid() -> dict[str, Any] | None:
        ready = workspaces.ready_condition(name)
        return ready if ready and ready["reason"] == "InvalidSpec" else None

    ready = wait_until("Ready=False InvalidSpec", invalid)
    assert ready["status"] == "False"
    assert case["expect"] in ready["message"]
    status = (workspaces.get(name) or {})["status"]
    assert status["phase"] == "Failed"
    # No half-made set of children: nothing at all was created.
    core = client.CoreV1Api(kube)
    assert not workspaces.pods(name)
    assert not core.list_namespaced_persistent_volume_claim(workspace_namespace).items
    assert not core.list_namespaced_config_map(
        workspace_namespace, label_selector=f"rspark.dev/workspace={name}"
    ).items
