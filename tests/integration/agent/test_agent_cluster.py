"""End to end on the local cluster: the agent runs as a plain process on a local
directory (standing in for the sidecar) and reports into a real workspace.

Uses the lead's fixtures from tests/integration/conftest.py: `kube` (ApiClient),
`namespace` (fresh per test), `crds` (CRD installed), `local_cluster` (kubeconfig).
No operator runs here: the agent is the only writer of what it reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from rspark_operator import names
from rspark_operator.agent import reasons
from rspark_operator.agent.secrets import SECRET_KEY
from rspark_operator.api import GROUP, PLURAL, VERSION
from rspark_operator.conditions import find
from tests.integration.agent.helpers import AgentProcess, Repo, clear, contents, spawn, write_tree
from tests.support.workspaces import Workspaces, sample

pytestmark = pytest.mark.integration


def _status(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    found = client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return dict(found.get("status") or {})


def _condition(kube: client.ApiClient, namespace: str, name: str, type_: str) -> dict[str, Any]:
    return find(_status(kube, namespace, name).get("conditions", []), type_) or {}


def test_agent_reports_into_the_workspace_and_brings_a_lost_home_back(
    kube: client.ApiClient,
    namespace: str,
    crds: None,
    local_cluster: Path,
    repo: Repo,
    tmp_path: Path,
    agents: list[AgentProcess],
) -> None:
    name = "alice"
    Workspaces(kube, namespace).create(sample(name))
    secret_name = names.home_secrets_name(name)
    core = client.CoreV1Api(kube)
    try:  # the operator makes it; without an operator here, make it as it would: empty
        core.create_namespaced_secret(namespace, {"metadata": {"name": secret_name}})
    except client.ApiException as error:
        if error.status != 409:
            raise
    env = {
        "KUBECONFIG": str(local_cluster),
        "RSPARK_WORKSPACE": f"{namespace}/{name}",
        "RSPARK_SNAPSHOT_HOST": names.snapshot_host(namespace, name),
        # No RSPARK_SECRETS_NAME: the workspace's own home-secrets Secret by default.
    }
    home = tmp_path / "home"
    home.mkdir()
    write_tree(home)
    expected = contents(home)

    first = spawn(agents, repo, home, **env)
    first.wait_ready()
    first.wait_for(
        "lastSnapshot in the workspace status",
        lambda: "lastSnapshot" in _status(kube, namespace, name),
    )
    status = _status(kube, namespace, name)
    snapshot = status["lastSnapshot"]
    assert snapshot["id"] == first.status()["lastSnapshot"]["id"]
    assert snapshot["bytesAdded"] > 0
    healthy = find(status["conditions"], "SnapshotHealthy")
    assert healthy is not None
    assert (healthy["status"], healthy["reason"]) == ("True", reasons.SNAPSHOT_SUCCEEDED)
    restored = find(status["conditions"], "HomeRestored")
    assert restored is not None
    assert restored["reason"] == reasons.HOME_PRESENT

    # The agent's fields are its own (server-side apply, field manager rspark-agent).
    managed = client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )["metadata"]["managedFields"]
    assert any(m["manager"] == "rspark-agent" and m.get("subresource") == "status" for m in managed)

    # The private key went to the Secret, not to the repository.
    secret = core.read_namespaced_secret(secret_name, namespace)
    assert SECRET_KEY in (secret.data or {})
    assert ".ssh" not in repo.restic("ls", "latest").stdout
    assert first.terminate() == 0

    # Lost volume: the home comes back, secret paths included, with their modes.
    clear(home)
    second = spawn(agents, repo, home, **env)
    second.wait_ready()
    second.wait_for(
        "HomeRestored=Restored in the workspace status",
        lambda: _condition(kube, namespace, name, "HomeRestored").get("reason") == reasons.RESTORED,
    )
    message = _condition(kube, namespace, name, "HomeRestored")["message"]
    assert snapshot["id"][:8] in message
    assert contents(home) == expected
    assert (home / ".ssh" / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert second.terminate() == 0
    # After a restore every inode is new: restic (which records inodes in its trees)
    # takes one small metadata-only snapshot, reading no file again.
    newest = repo.snapshots()[0]
    assert _status(kube, namespace, name)["lastSnapshot"]["id"] == newest["id"]

    # A plain restart on the same volume: nothing changed, no snapshot, and the
    # restarted agent's status writes (all of its fields) keep lastSnapshot.
    third = spawn(agents, repo, home, **env)
    third.wait_ready()
    third.wait_for(
        "HomeRestored=HomePresent in the workspace status",
        lambda: (
            _condition(kube, namespace, name, "HomeRestored").get("reason") == reasons.HOME_PRESENT
        ),
    )
    assert third.terminate() == 0
    assert repo.snapshots()[0]["id"] == newest["id"]
    kept = _status(kube, namespace, name)["lastSnapshot"]
    assert kept["id"] == newest["id"]
    assert kept["bytesAdded"] == newest["summary"]["data_added_packed"]
