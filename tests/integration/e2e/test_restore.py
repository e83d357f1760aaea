"""The snapshot agent gates the IDE on a real node: a home that has a snapshot and an
empty volume is restored before the IDE container starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from rspark_operator import names
from rspark_operator.builders.pod import HOME
from rspark_operator.conditions import HOME_RESTORED, find
from tests.integration.e2e.test_jupyterlab import ide_exec
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces

RESTORED_FILES = 20
# Run in the IDE container: the start of its PID 1 (tini, which starts the IDE) and
# the latest change time (ctime, set when the agent wrote the file) of the home's
# files, both in nanoseconds since the epoch, from the container's own view.
FIRST_LOOK = f"""
import os
from pathlib import Path
boot = next(int(l.split()[1]) for l in open("/proc/stat") if l.startswith("btime"))
ticks = int(Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()[19])
started = boot * 10**9 + ticks * 10**9 // os.sysconf("SC_CLK_TCK")
files = [p for p in Path("{HOME}/restore-me").iterdir()]
print(len(files), started, max(p.stat().st_ctime_ns for p in files))
"""


def test_the_ide_starts_on_a_home_the_agent_already_restored(
    kube: client.ApiClient,
    workspace_namespace: str,
    real_workspaces: Callable[..., dict[str, Any]],
) -> None:
    """Files written, the workspace deleted (last snapshot at shutdown; the home's claim
    goes with it), created again: a new empty volume, and the IDE container's PID 1
    started after the agent wrote the last restored file."""
    ns = workspace_namespace
    core = client.CoreV1Api(kube)
    workspaces = Workspaces(kube, ns)
    real_workspaces("carol")
    first_claim = core.read_namespaced_persistent_volume_claim(names.home_claim_name("carol"), ns)
    ide_exec(
        ns, names.pod_name("carol"), "sh", "-c",
        f"mkdir -p {HOME}/restore-me && for i in $(seq {RESTORED_FILES}); do "
        f"echo $i > {HOME}/restore-me/$i.txt; done",
    )  # fmt: skip
    workspaces.delete("carol")

    wait_until(
        "carol's pod and home claim gone", lambda: workspaces.home_claim_gone("carol"), timeout=180
    )

    again = real_workspaces("carol")
    claim = core.read_namespaced_persistent_volume_claim(names.home_claim_name("carol"), ns)
    assert claim.metadata.uid != first_claim.metadata.uid
    restored = find(again["status"]["conditions"], HOME_RESTORED) or {}
    assert (restored.get("status"), restored.get("reason")) == ("True", "Restored"), restored
    count, ide_started, last_restored = map(
        int, ide_exec(ns, names.pod_name("carol"), "python3", "-c", FIRST_LOOK).split()
    )
    assert count == RESTORED_FILES
    assert last_restored < ide_started, (last_restored, ide_started)
