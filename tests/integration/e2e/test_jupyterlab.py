"""A JupyterLab workspace on the real nodes, as its user sees it: through the
ingress controller, in a browser, with its home kept across pods."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from devtools.deploy import browser_url, ide_password
from devtools.localcluster import BIN, kubectl
from devtools.network import REGISTRY
from rspark_operator import names
from rspark_operator.builders.pod import HOME, IDE_CONTAINER
from tests.support.browser import chromium
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, restic_env, sample


def ide_exec(namespace: str, pod: str, *command: str) -> str:
    """A command in the IDE container of `pod`, as `kubectl exec` runs it."""
    return kubectl("exec", pod, "-n", namespace, "-c", IDE_CONTAINER, "--", *command)


def restic(env: dict[str, str], *args: str) -> Any:
    """restic on this machine, on a workspace's repository; its JSON answer."""
    answer = subprocess.run(
        [str(BIN / "restic"), *args, "--json"],
        env=env, check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    return [json.loads(line) for line in answer.splitlines() if line.strip()]


def files_of_last_snapshot_before(env: dict[str, str], moment: datetime) -> set[str]:
    """The paths in the latest snapshot restic records before `moment` (UTC)."""
    (snapshots,) = restic(env, "snapshots")
    before = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    last = max((s for s in snapshots if s["time"][:19] < before), key=lambda s: s["time"])
    entries = restic(env, "ls", last["id"])
    return {entry["path"] for entry in entries if entry.get("struct_type") == "node"}


def test_a_user_runs_r_in_jupyterlab_through_the_ingress_and_the_home_outlives_the_pod(
    kube: client.ApiClient,
    workspace_namespace: str,
    real_workspaces: Callable[..., dict[str, Any]],
    artifacts: Path,
) -> None:
    """Chromium opens status.url through Traefik, signs in with the password the
    operator generated, runs an R cell that writes into the home and prints a value,
    and sees it. A new pod finds the file; a file written one second before the pod
    is deleted is in the snapshot the agent takes at shutdown."""
    ns = workspace_namespace
    ws = real_workspaces("alice")
    url = browser_url(ws["status"]["url"])
    with chromium(artifacts) as browser:
        browser.jupyterlab_login(url, ide_password(ns, "alice"))
        output = browser.run_r_cell(
            'writeLines(as.character(6L * 7L), "from-the-browser.txt"); '
            'cat("the answer is", 6L * 7L)',
            expected="the answer is 42",
        )
    assert "the answer is 42" in output
    workspaces = Workspaces(kube, ns)
    first = workspaces.running_pod("alice")
    assert ide_exec(ns, first.metadata.name, "cat", f"{HOME}/from-the-browser.txt") == "42\n"

    # One second after a write, the pod goes: the shutdown's last snapshot has the file.
    ide_exec(ns, first.metadata.name, "sh", "-c", f"date +%s%N > {HOME}/just-before-delete.txt")
    time.sleep(1)
    client.CoreV1Api(kube).delete_namespaced_pod(first.metadata.name, ns)
    second = wait_until(
        "a new pod of alice",
        lambda: next(
            (
                p
                for p in workspaces.pods("alice")
                if p.metadata.uid != first.metadata.uid
                and p.status.phase == "Running"
                and not p.metadata.deletion_timestamp
            ),
            None,
        ),
        timeout=300,
    )
    workspaces.wait_phase("alice", "Running", timeout=300)
    assert ide_exec(ns, second.metadata.name, "cat", f"{HOME}/from-the-browser.txt") == "42\n"
    # The new pod is created once the old one is gone: after its shutdown snapshot.
    snapshot = files_of_last_snapshot_before(
        restic_env(kube, ns, "alice"), second.metadata.creation_timestamp
    )
    assert any(path.endswith("/just-before-delete.txt") for path in snapshot), sorted(snapshot)


def test_a_workspace_whose_image_does_not_exist_says_so(
    kube: client.ApiClient, workspace_namespace: str, real_workspaces: Callable[..., Any]
) -> None:
    """The kubelet cannot pull the image: Ready=False names it; the operator goes on."""
    missing = f"{REGISTRY}/rspark/jupyterlab:does-not-exist"
    workspaces = Workspaces(kube, workspace_namespace)
    workspaces.create(sample("ghost", ide="jupyterlab", image=missing))

    def pull_failure() -> dict[str, Any] | None:
        ready = workspaces.ready_condition("ghost") or {}
        failed = ready.get("status") == "False" and ready.get("reason") in (
            "ErrImagePull",
            "ImagePullBackOff",
        )
        return ready if failed else None

    ready = wait_until("Ready=False for the missing image", pull_failure, timeout=180)
    assert missing in ready["message"]
    assert names.pod_name("ghost") in {p.metadata.name for p in workspaces.pods("ghost")}
