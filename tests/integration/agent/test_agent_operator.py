"""The operator's pod contract, carried out by the real agent.

kwok runs no containers, so the agent runs as a plain process on a local
directory, with exactly what the operator's pod gives its sidecar: the pod's
environment (Secrets resolved) and the token mounted into the agent container.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devtools.install import token_kubeconfig
from rspark_operator.agent import reasons
from rspark_operator.builders.identity import SERVICE_ACCOUNT_DIR
from rspark_operator.conditions import HOME_RESTORED, find
from tests.integration.agent.helpers import (
    LOCAL_BIN,
    AgentProcess,
    clear,
    contents,
    restic_binary,
    write_tree,
)
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, sample

pytestmark = pytest.mark.integration


def sidecar_environment(
    kube: client.ApiClient, namespace: str, name: str, workdir: Path
) -> dict[str, str]:
    """The snapshot agent's environment as the kubelet would give it to the sidecar."""
    core = client.CoreV1Api(kube)
    pod = core.read_namespaced_pod(name, namespace)
    (sidecar,) = pod.spec.init_containers
    env: dict[str, str] = {}
    for var in sidecar.env:
        if var.value_from is None:
            env[var.name] = var.value
            continue
        ref = var.value_from.secret_key_ref
        data = core.read_namespaced_secret(ref.name, namespace).data
        env[var.name] = base64.b64decode(data[ref.key]).decode()
    # The token the agent container mounts (builders/identity.py), not the pod's own.
    (token_mount,) = [m for m in sidecar.volume_mounts if m.mount_path == SERVICE_ACCOUNT_DIR]
    (volume,) = [v for v in pod.spec.volumes if v.name == token_mount.name]
    token = wait_until(
        "the agent's token Secret filled in",
        lambda: (core.read_namespaced_secret(volume.secret.secret_name, namespace).data or {}).get(
            "token"
        ),
    )
    kubeconfig = token_kubeconfig(
        workdir / f"kubeconfig-{pod.metadata.uid}",
        volume.secret.secret_name,
        base64.b64decode(token).decode(),
    )
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("RSPARK_", "RESTIC_"))}
    return {
        **inherited,
        "PATH": f"{LOCAL_BIN}:{os.environ['PATH']}",
        "RSPARK_RESTIC": restic_binary(),
        "XDG_CACHE_HOME": str(workdir / "cache"),
        "KUBECONFIG": str(kubeconfig),
        **env,
    }


def restored(workspaces: Workspaces, name: str) -> dict[str, Any] | None:
    status = (workspaces.get(name) or {}).get("status") or {}
    found = find(status.get("conditions") or [], HOME_RESTORED)
    return found if found and found["reason"] == reasons.RESTORED else None


def test_a_recreated_workspace_gets_its_home_back(
    kube: client.ApiClient,
    workspace_namespace: str,
    tmp_path: Path,
    agents: list[AgentProcess],
) -> None:
    workspaces = Workspaces(kube, workspace_namespace)
    core = client.CoreV1Api(kube)
    workspaces.create(sample("alice"))
    workspaces.wait_phase("alice", "Running")
    home = tmp_path / "home"
    home.mkdir()
    write_tree(home)
    expected = contents(home)

    env = sidecar_environment(kube, workspace_namespace, "alice", tmp_path)
    first = AgentProcess(home, env, tmp_path / "agent-first.log")
    agents.append(first.start())
    first.wait_ready()
    snapshot = wait_until(
        "a snapshot in the workspace status",
        lambda: ((workspaces.get("alice") or {}).get("status") or {}).get("lastSnapshot"),
    )
    assert first.terminate() == 0
    password = core.read_namespaced_secret("alice-passwords", workspace_namespace).data

    # Deleting the workspace collects its children but keeps the key to its snapshots.
    workspaces.delete("alice")
    wait_until("the workspace gone", lambda: workspaces.get("alice") is None)
    wait_until("its pod collected", lambda: not workspaces.pods("alice"))
    kept = core.read_namespaced_secret("alice-passwords", workspace_namespace)
    assert kept.data == password
    assert not kept.metadata.owner_references

    # Same namespace and name, a fresh volume: the home comes back as it was.
    workspaces.create(sample("alice"))
    workspaces.wait_phase("alice", "Running")
    clear(home)
    env = sidecar_environment(kube, workspace_namespace, "alice", tmp_path)
    second = AgentProcess(home, env, tmp_path / "agent-second.log")
    agents.append(second.start())
    second.wait_ready()
    condition = wait_until("HomeRestored=Restored", lambda: restored(workspaces, "alice"))
    assert snapshot["id"][:8] in condition["message"]
    assert contents(home) == expected
    assert (home / ".ssh" / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert second.terminate() == 0
