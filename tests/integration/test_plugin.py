"""`kubectl rspark` through kubectl's own plugin lookup (kubectl-rspark on the PATH),
against a workspace the session operator runs on the local cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devtools import localcluster
from rspark_operator import names
from rspark_operator.plugin import EXIT_NOT_FOUND, EXIT_NOT_NOW, EXIT_USAGE
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, restic_env, sample

# The venv's bin holds kubectl-rspark, as pip puts it next to the user's Python.
SCRIPTS = Path(sys.executable).parent


def rspark(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**localcluster.tool_env(), "PATH": f"{localcluster.BIN}:{SCRIPTS}:{os.environ['PATH']}"}
    return subprocess.run(
        [str(localcluster.BIN / "kubectl"), "rspark", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def alice(kube: client.ApiClient, workspace_namespace: str) -> Workspaces:
    workspaces = Workspaces(kube, workspace_namespace)
    workspaces.create(sample("alice"))
    workspaces.wait_phase("alice", "Running")
    return workspaces


def test_list_status_and_open_show_the_running_workspace(alice: Workspaces) -> None:
    ns = alice.namespace
    url = f"http://alice-{ns}.rspark.localhost/"
    (listed,) = as_json(rspark("list", "-n", ns, "-o", "json"))
    assert (listed["name"], listed["phase"], listed["reason"], listed["url"]) == (
        "alice", "Running", "PodReady", url)  # fmt: skip
    table = rspark("list", "-n", ns)
    assert table.stdout.splitlines()[0].split() == [
        "NAME",
        "PHASE",
        "REASON",
        "URL",
        "LAST",
        "SNAPSHOT",
    ]
    assert table.stdout.splitlines()[1].split()[:4] == ["alice", "Running", "PodReady", url]

    status = as_json(rspark("status", "alice", "-n", ns, "-o", "json"))
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "PodReady" and status["pendingRestart"] is False
    assert "Phase:           Running" in rspark("status", "alice", "-n", ns).stdout

    opened = rspark("open", "alice", "-n", ns)  # not a terminal: prints the URL only
    assert (opened.returncode, opened.stdout.strip()) == (0, url)


def test_restart_replaces_the_pod_and_a_suspended_workspace_refuses(alice: Workspaces) -> None:
    ns = alice.namespace
    before = alice.running_pod("alice").metadata.uid
    restarted = as_json(rspark("restart", "alice", "-n", ns, "-o", "json"))
    assert restarted["name"] == "alice"
    workspace = alice.get("alice")
    assert workspace is not None
    annotations = workspace["metadata"]["annotations"]
    assert annotations[names.RESTART_ANNOTATION] == restarted["restartRequestedAt"]
    wait_until("a new pod", lambda: alice.running_pod("alice").metadata.uid != before)

    alice.patch("alice", {"suspended": True})
    alice.wait_phase("alice", "Suspended")
    refused = rspark("restart", "alice", "-n", ns)
    assert refused.returncode == EXIT_NOT_NOW and "suspended" in refused.stderr
    status = as_json(rspark("status", "alice", "-n", ns, "-o", "json"))
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Suspended" and "spec.suspended: false" in ready["user"]


def test_exit_codes_for_a_missing_workspace_and_bad_usage(workspace_namespace: str) -> None:
    missing = rspark("status", "nobody", "-n", workspace_namespace)
    assert missing.returncode == EXIT_NOT_FOUND and "no workspace nobody" in missing.stderr
    assert rspark("status").returncode == EXIT_USAGE
    assert rspark("frobnicate", "x").returncode == EXIT_USAGE


def snapshot(env: dict[str, str], home: Path, at: str) -> str:
    """A snapshot of `home` taken, as restic records it, at `at` (UTC)."""
    result = subprocess.run(
        [str(localcluster.BIN / "restic"), "backup", "--json", "--no-cache", "--time", at, "."],
        cwd=home, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return str(summary["snapshot_id"])


def test_snapshots_and_a_safe_restore(
    alice: Workspaces, kube: client.ApiClient, tmp_path: Path
) -> None:
    ns = alice.namespace
    env = restic_env(kube, ns, "alice")
    subprocess.run([str(localcluster.BIN / "restic"), "init"], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    (tmp_path / "notes.txt").write_text("monday\n")
    monday = snapshot(env, tmp_path, "2026-01-05 10:00:00")
    (tmp_path / "notes.txt").write_text("tuesday\n")
    tuesday = snapshot(env, tmp_path, "2026-01-06 10:00:00")

    listed = as_json(rspark("snapshots", "alice", "-n", ns, "-o", "json"))
    assert [(s["id"], s["time"][:19]) for s in listed] == [
        (monday, "2026-01-05T10:00:00"), (tuesday, "2026-01-06T10:00:00")]  # fmt: skip
    assert rspark("snapshots", "alice", "-n", ns).stdout.splitlines()[1].split()[0] == monday[:8]

    missing = rspark("restore", "alice", "-n", ns, "--snapshot", "deadbeef")
    assert missing.returncode == EXIT_NOT_NOW and "no snapshot with id deadbeef" in missing.stderr
    too_early = rspark("restore", "alice", "-n", ns, "--before", "2026-01-01T00:00:00Z")
    assert too_early.returncode == EXIT_NOT_NOW and "no snapshot before" in too_early.stderr
    assert not (alice.get("alice") or {})["spec"]["suspended"]  # refused before any change

    claim = names.home_claim_name("alice")
    old_claim = alice.core.read_namespaced_persistent_volume_claim(claim, ns).metadata.uid
    restored = as_json(rspark("restore", "alice", "-n", ns, "--before", "2026-01-05T23:00:00Z",
                              "--timeout", "120", "-o", "json"))  # fmt: skip
    assert restored["restoredFrom"]["id"] == monday
    ws = alice.get("alice") or {}
    assert ws["spec"]["suspended"] is False and ws["spec"]["snapshot"]["restoreFrom"] == monday
    assert ws["status"]["phase"] == "Running"
    assert alice.core.read_namespaced_persistent_volume_claim(claim, ns).metadata.uid != old_claim

    alice.patch("alice", {"suspended": True})
    alice.wait_phase("alice", "Suspended")
    assert len(as_json(rspark("snapshots", "alice", "-n", ns, "-o", "json"))) == 2
