"""The local cluster is real: scheduling, volumes, garbage collection, node failure, S3 + restic."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from devtools.localcluster import NODE_NAMES
from devtools.s3 import S3Credentials
from tests.support.kube import fail_node, node_is_ready, recover_node, wait_until

LABELS = {"app": "probe"}


def deployment_with_claim(claim: str, toleration_seconds: int) -> dict[str, Any]:
    # Tolerate a NotReady node briefly (the default is 300 s) so eviction is quick.
    tolerations = [
        {"key": key, "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": toleration_seconds}
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
    ]  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe"},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "tolerations": tolerations,
                    "containers": [
                        {
                            "name": "main",
                            "image": "example.invalid/probe:1",
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                },
            },
        },
    }


def claim(name: str, size: str = "1Gi") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def running_pods(core: client.CoreV1Api, namespace: str) -> list[Any]:
    pods = core.list_namespaced_pod(namespace, label_selector="app=probe").items
    return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


def test_nodes_are_ready(kube: client.ApiClient) -> None:
    nodes = client.CoreV1Api(kube).list_node().items
    assert {n.metadata.name for n in nodes} >= set(NODE_NAMES)
    assert all(node_is_ready(n) for n in nodes if n.metadata.name in NODE_NAMES)
    version = client.VersionApi(kube).get_code()
    assert (int(version.major), int(version.minor.rstrip("+"))) >= (1, 33)


def test_deployment_with_claim_runs_and_claim_binds(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_persistent_volume_claim(namespace, claim("data"))
    client.AppsV1Api(kube).create_namespaced_deployment(namespace, deployment_with_claim("data", 5))
    pods = wait_until("a Running pod", lambda: running_pods(core, namespace))
    assert pods[0].spec.node_name in NODE_NAMES
    pvc = core.read_namespaced_persistent_volume_claim("data", namespace)
    assert pvc.status.phase == "Bound"
    pv = core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.spec.claim_ref.name == "data"
    assert Path(pv.spec.host_path.path).is_dir()


def test_claim_grows_when_asked(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_persistent_volume_claim(namespace, claim("grow", "1Gi"))
    # The StorageClass binds a claim once a pod uses it (WaitForFirstConsumer).
    client.AppsV1Api(kube).create_namespaced_deployment(namespace, deployment_with_claim("grow", 5))
    wait_until("claim Bound", lambda: core.read_namespaced_persistent_volume_claim(
        "grow", namespace).status.phase == "Bound")  # fmt: skip
    core.patch_namespaced_persistent_volume_claim(
        "grow", namespace, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}
    )
    wait_until("capacity 2Gi", lambda: core.read_namespaced_persistent_volume_claim(
        "grow", namespace).status.capacity.get("storage") == "2Gi")  # fmt: skip


def test_garbage_collection_removes_owned_objects(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid,
        "blockOwnerDeletion": True, "controller": True,
    }  # fmt: skip
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "child", "ownerReferences": [reference]}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "child", "ownerReferences": [reference]}}
    )
    core.delete_namespaced_config_map("owner", namespace)

    def children_left() -> list[str]:
        maps = [c.metadata.name for c in core.list_namespaced_config_map(namespace).items]
        secrets = [s.metadata.name for s in core.list_namespaced_secret(namespace).items]
        return [n for n in ("child",) if n in maps] + [n for n in ("child",) if n in secrets]

    wait_until("owned objects collected", lambda: not children_left())


def test_node_failure_evicts_and_replacement_lands_on_other_node(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_persistent_volume_claim(namespace, claim("data"))
    client.AppsV1Api(kube).create_namespaced_deployment(namespace, deployment_with_claim("data", 2))
    first = wait_until("a Running pod", lambda: running_pods(core, namespace))[0]
    failed_node = first.spec.node_name
    fail_node(core, failed_node)
    try:

        def replacement() -> list[Any]:
            return [
                p for p in running_pods(core, namespace) if p.metadata.uid != first.metadata.uid
            ]

        pods = wait_until("a replacement pod", replacement, timeout=180)
        assert pods[0].spec.node_name != failed_node
        assert pods[0].spec.volumes[0].persistent_volume_claim.claim_name == "data"
        taints = core.read_node(failed_node).spec.taints or []
        assert any(t.key == "node.kubernetes.io/unreachable" for t in taints)
        # A dead kubelet cannot confirm the evicted pod stopped: it stays Terminating.
        evicted = core.read_namespaced_pod(first.metadata.name, namespace)
        assert evicted.metadata.deletion_timestamp is not None
    finally:
        recover_node(core, failed_node)


def test_restic_backs_up_to_s3_and_restores(cluster_s3: S3Credentials, tmp_path: Path) -> None:
    source = tmp_path / "home"
    (source / "project" / "empty").mkdir(parents=True)
    (source / "project" / "analysis.R").write_text("library(sparklyr)\n")
    (source / "data.bin").write_bytes(os.urandom(300_000))
    env = {
        **os.environ,
        **cluster_s3.env(),
        "RESTIC_REPOSITORY": cluster_s3.restic_repository(f"tests/{uuid.uuid4().hex}"),
        "RESTIC_PASSWORD": "correct horse",
    }

    def restic(*args: str) -> str:
        return subprocess.run(
            ["restic", *args], env=env, check=True, capture_output=True, text=True, timeout=120
        ).stdout

    restic("init")
    summary = [json.loads(line) for line in restic("backup", "--json", str(source)).splitlines()]
    snapshot_id = next(m["snapshot_id"] for m in summary if m["message_type"] == "summary")
    target = tmp_path / "restored"
    restic("restore", snapshot_id, "--target", str(target))
    restored = target / source.relative_to("/")
    assert (restored / "project" / "analysis.R").read_text() == "library(sparklyr)\n"
    assert (restored / "data.bin").read_bytes() == (source / "data.bin").read_bytes()
    assert (restored / "project" / "empty").is_dir()
    restic("check")
