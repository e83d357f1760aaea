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
from tests.support.workspaces import Workspaces, sample

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
    assert restarted == {"name": "alice", "pod": names.pod_name("alice"), "deleted": True}
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
