"""The base's snapshot gateway and retention run as containers on the real nodes: the
gateway's Deployment and Service (the local rclone image), the platform's bucket Secret
in rspark-system only, the operator with the default settings (RSPARK_SNAPSHOT_MODE
=gateway, the gateway's in-cluster URL). A JupyterLab workspace snapshots through the
gateway and gets its home back from it; its own credential can neither delete a snapshot
nor read another workspace's repository; the retention CronJob, run once as a Job on a
real node with the bucket's key, forgets and prunes. The time it all takes goes to the
test's artifacts."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devtools.deploy import (
    GATEWAY_BUCKET_SECRET,
    GATEWAY_DEPLOYMENT,
    GATEWAY_NAMESPACE,
    RETENTION_CRONJOB,
    gateway_bucket_secret,
    gateway_settings,
    push_images,
    real_node_overlay,
)
from devtools.install import build, deploy
from devtools.localcluster import BIN, KUBECONFIG, kubectl, tool_env
from devtools.network import REAL_NODES
from devtools.s3 import S3Credentials
from rspark_operator import contract, names
from rspark_operator.builders.pod import HOME
from rspark_operator.conditions import HOME_RESTORED, find
from rspark_operator.gateway import gateway_user, repository
from tests.integration.e2e.conftest import E2E_RESOURCES, E2E_SPARK, create_on_real_nodes
from tests.integration.e2e.test_jupyterlab import ide_exec
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, sample

GATEWAY = gateway_settings()
# Read by the real-node operator fixture (conftest.MODULE_SETTINGS).
OPERATOR_SETTINGS = GATEWAY
AGENT_CONTAINER = "snapshot-agent"
GATEWAY_PODS = "app.kubernetes.io/component=snapshot-gateway"
KEPT = "through-the-gateway.txt"
KEEP_ONE = {"keepLast": 1, "keepHourly": 0, "keepDaily": 0, "keepWeekly": 0}
REAL_NODE_NAMES = {node.name for node in REAL_NODES}


def ready_on_real_nodes(core: client.CoreV1Api) -> list[Any] | None:
    """The gateway's pods, when every one is Ready on a real node."""
    pods = core.list_namespaced_pod(GATEWAY_NAMESPACE, label_selector=GATEWAY_PODS).items
    ready = [
        pod
        for pod in pods
        if pod.spec.node_name in REAL_NODE_NAMES
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]
    return ready if pods and len(ready) == len(pods) else None


@pytest.fixture(scope="module")
def real_node_install(
    kube: client.ApiClient,
    operator_kubeconfig: Path,
    cluster_s3: S3Credentials,
    local_images: dict[str, str],
) -> Iterator[Path]:
    """The real-node overlay with the base's snapshot gateway (in place of conftest's,
    which leaves it out): its pods on the real nodes, repositories under a prefix of
    this run in the cluster's bucket. After: its objects and the bucket Secret
    deleted, then the base again (its gateway back on the kwok nodes)."""
    refs = {**local_images, **push_images(("rclone",))}
    gateway_bucket_secret(cluster_s3, f"gw-e2e-{uuid.uuid4().hex[:8]}")
    overlay = real_node_overlay(refs, cluster_s3, gateway=True)
    deploy(overlay)
    ours = [
        doc
        for doc in build(overlay)
        if doc["metadata"]["name"] in (GATEWAY_DEPLOYMENT, RETENTION_CRONJOB)
    ]
    try:
        wait_until(
            "the gateway's pods Ready on the real nodes",
            lambda: ready_on_real_nodes(client.CoreV1Api(kube)),
            timeout=300,
        )
        yield overlay
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": ours}
        ))  # fmt: skip
        kubectl("delete", "secret", GATEWAY_BUCKET_SECRET, "-n", GATEWAY_NAMESPACE)
        deploy()


def agent_restic(
    namespace: str, name: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """restic in the workspace's agent container, with the agent's own environment (its
    repository and credential at the gateway), `env` over it."""
    assignments = [f"{key}={value}" for key, value in env.items()]
    return subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(KUBECONFIG), "exec", names.pod_name(name),
         "-n", namespace, "-c", AGENT_CONTAINER, "--",
         "env", *assignments, "restic", "--no-cache", *args],
        env=tool_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def snapshot_ids(namespace: str, name: str) -> list[str]:
    listing = agent_restic(namespace, name, "snapshots", "--json", "--no-lock")
    assert listing.returncode == 0, listing.stderr
    return [snapshot["id"] for snapshot in json.loads(listing.stdout)]


# Two workspaces started (a first pull of the image onto a node included), one again.
@pytest.mark.timeout(1500)
def test_workspaces_snapshot_through_the_gateway_containers(
    kube: client.ApiClient,
    namespace: str,
    real_node_operator: Any,
    artifacts: Path,
) -> None:
    started = time.monotonic()
    ns = namespace  # no bucket key here: the test's namespace gets none
    core = client.CoreV1Api(kube)
    workspaces = Workspaces(kube, ns)
    snapshot = {"interval": "30s", "retention": KEEP_ONE}
    workspaces.create(sample("hank", ide="jupyterlab", resources=E2E_RESOURCES, spark=E2E_SPARK))
    create_on_real_nodes(workspaces, "gina", snapshot=snapshot)
    workspaces.wait_phase("hank", "Running", timeout=600)
    for secret in core.list_namespaced_secret(ns).items:
        assert not set(contract.S3_CREDENTIAL_KEYS) & set(secret.data or {}), secret.metadata.name
    gina_repository = repository(GATEWAY["snapshot_gateway_url"], gateway_user(ns, "gina"))
    pod = workspaces.running_pod("gina")
    agent = next(c for c in pod.spec.init_containers if c.name == AGENT_CONTAINER)
    assert {e.name: e.value for e in agent.env}[contract.RESTIC_REPOSITORY] == gina_repository
    # The operator labelled the gateway's pods when it added gina's line, so their
    # kubelet mounted the new users at once: her agent's first look at the repository
    # was let in, not refused and retried until the kubelet's next periodic sync.
    agent_log = core.read_namespaced_pod_log(pod.metadata.name, ns, container=AGENT_CONTAINER)
    assert "startup failed" not in agent_log, agent_log

    # Snapshots through the gateway container.
    written = datetime.now().astimezone()
    ide_exec(ns, pod.metadata.name, "sh", "-c", f"echo kept > {HOME}/{KEPT}")
    taken = wait_until(
        "a snapshot of gina after the write",
        lambda: workspaces.snapshot_begun_after("gina", written),
        timeout=180,
    )

    # Append-only: the workspace's own credential cannot forget its snapshot (restic
    # reports the refusal and exits 0 on `forget ID`: what counts is that it stays).
    forget = agent_restic(ns, "gina", "forget", taken["id"])
    assert "Forbidden" in forget.stderr, (forget.stdout, forget.stderr)
    assert taken["id"] in snapshot_ids(ns, "gina")
    # Private: hank's credential cannot read gina's repository (gina's own can, above).
    stolen = agent_restic(ns, "hank", "snapshots", "--no-lock", RESTIC_REPOSITORY=gina_repository)
    assert stolen.returncode != 0 and "Forbidden" in stolen.stderr, stolen.stderr
    assert agent_restic(ns, "hank", "snapshots", "--no-lock").returncode == 0

    # Pod and claim deleted: the home comes back from the snapshot, through the gateway.
    first_claim = core.read_namespaced_persistent_volume_claim(names.home_claim_name("gina"), ns)
    workspaces.delete("gina")
    wait_until("gina's home claim gone", lambda: workspaces.home_claim_gone("gina"), timeout=180)
    again = create_on_real_nodes(workspaces, "gina", snapshot=snapshot)
    claim = core.read_namespaced_persistent_volume_claim(names.home_claim_name("gina"), ns)
    assert claim.metadata.uid != first_claim.metadata.uid
    restored = find(again["status"]["conditions"], HOME_RESTORED) or {}
    assert (restored.get("status"), restored.get("reason")) == ("True", "Restored"), restored
    assert ide_exec(ns, names.pod_name("gina"), "cat", f"{HOME}/{KEPT}") == "kept\n"

    # The platform's retention, once, on a real node with the bucket's key: of the
    # snapshots before it, at most the newest is left (the agent may add more meanwhile).
    before = snapshot_ids(ns, "gina")
    assert len(before) >= 2, before
    job = f"retention-{uuid.uuid4().hex[:6]}"
    kubectl("create", "job", job, f"--from=cronjob/{RETENTION_CRONJOB}", "-n", GATEWAY_NAMESPACE)
    kubectl("wait", f"job/{job}", "-n", GATEWAY_NAMESPACE, "--for=condition=Complete",
            "--timeout=300s", timeout=320)  # fmt: skip
    (retention_pod,) = core.list_namespaced_pod(
        GATEWAY_NAMESPACE, label_selector=f"job-name={job}"
    ).items
    assert retention_pod.spec.node_name in REAL_NODE_NAMES
    after = snapshot_ids(ns, "gina")
    assert len(set(before) & set(after)) <= 1, (before, after)

    seconds = time.monotonic() - started
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "timing.txt").write_text(
        f"gateway e2e: {seconds:.1f} s; snapshots before retention {len(before)}, "
        f"kept {len(set(before) & set(after))}\n"
    )
    print(f"gateway e2e: {seconds:.1f} s")
