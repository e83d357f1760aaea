"""RSPARK_SNAPSHOT_MODE=gateway on the local cluster: the operator (with the manifests'
identity) gives each workspace its own credential and registers it in the gateway's
users Secret, copied to the gateway's file as devtools/gateway.py does on the local
cluster; the real gateway (rclone serve restic) lets a workspace's credential reach
its own repository only; `rspark-agent retention`, with the bucket's key and the cluster's
workspaces, prunes; workspaces of two users in one namespace say so (NamespaceShared); a
deleted workspace's line leaves the gateway's users."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devtools import localcluster
from devtools.gateway import Gateway, sync_users, users_secret_reader
from devtools.install import BASE, build
from devtools.s3 import S3Credentials
from rspark_operator import contract, names
from rspark_operator.agent.retention import STORAGE_BASE
from rspark_operator.conditions import NAMESPACE_SHARED, find
from rspark_operator.gateway import HTPASSWD_KEY, REST_PASSWORD, REST_USERNAME
from rspark_operator.settings import OperatorSettings
from rspark_operator.tenancy import OTHER_USERS
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, sample

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RESTIC = str(ROOT / ".local" / "bin" / "restic")
AGENT = str(Path(sys.executable).parent / "rspark-agent")
KEEP_ONE = {"keepLast": 1, "keepHourly": 0, "keepDaily": 0, "keepWeekly": 0}


def secret_data(core: client.CoreV1Api, namespace: str, name: str, key: str) -> str | None:
    try:
        data = core.read_namespaced_secret(name, namespace).data or {}
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return base64.b64decode(data[key]).decode() if key in data else None


def agent_env(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, str] | None:
    """The agent's repository and credentials, from its pod's spec and the Secrets it names;
    None while there is no pod (the operator registers a workspace before its pod)."""
    try:
        pod = core.read_namespaced_pod(names.pod_name(name), namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    agent = next(c for c in pod.spec.init_containers if c.name == "snapshot-agent")
    env: dict[str, str] = {}
    for item in agent.env:
        if item.value is not None:
            env[item.name] = item.value
        else:
            ref = item.value_from.secret_key_ref
            value = secret_data(core, namespace, ref.name, ref.key)
            assert value is not None, f"{ref.name} has no {ref.key}"
            env[item.name] = value
    return env


def restic(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RESTIC, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )


def test_workspaces_reach_only_their_own_repository_and_the_platform_prunes(
    kube: client.ApiClient,
    namespace: str,
    operator_with: Callable[..., Any],
    cluster_s3: S3Credentials,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(kube)
    gateway = Gateway(tmp_path / "gateway", cluster_s3, prefix=f"gw-{uuid.uuid4().hex[:8]}")
    operator_with(snapshot_mode="gateway", snapshot_gateway_url=gateway.url)
    workspaces = Workspaces(kube, namespace)  # no bucket key in this namespace at all
    workspaces.create(sample("alice", snapshot={"interval": "5m", "retention": KEEP_ONE}))
    workspaces.create(sample("bob", user="bob@example.com"))

    stop = threading.Event()
    sync_users(gateway, users_secret_reader(kube, OperatorSettings()), stop)

    def both_registered() -> str | None:
        text = gateway.htpasswd_file.read_text()
        wanted = (f"{namespace}.alice:", f"{namespace}.bob:")
        return text if all(user in text for user in wanted) else None

    try:
        gateway.start()
        wait_until("both workspaces at the gateway (from the operator's Secret)", both_registered)
        alice = wait_until("alice's pod", lambda: agent_env(core, namespace, "alice"))
        bob = wait_until("bob's pod", lambda: agent_env(core, namespace, "bob"))
        assert not set(contract.S3_CREDENTIAL_KEYS) & set(alice)
        assert contract.RETENTION not in alice
        home = tmp_path / "home"
        home.mkdir()
        alice_env = {**alice, "XDG_CACHE_HOME": str(tmp_path / "cache")}
        assert restic(alice_env, "init").returncode == 0
        for text in ("one", "two", "three"):
            (home / "a.R").write_text(text)
            backup = restic(alice_env, "backup", "--host", alice[contract.SNAPSHOT_HOST], str(home))
            assert backup.returncode == 0, backup.stderr

        # alice's credential on bob's repository: refused.
        stolen = {**bob, REST_USERNAME: alice[REST_USERNAME], REST_PASSWORD: alice[REST_PASSWORD]}
        refused = restic({**stolen, "XDG_CACHE_HOME": str(tmp_path / "c2")}, "init")
        assert refused.returncode != 0 and "Forbidden" in refused.stderr, refused.stderr

        # The platform's retention: the cluster's workspaces, the bucket's key.
        retention = subprocess.run(
            [AGENT, "retention", "--restic", RESTIC],
            env={
                **os.environ,
                **cluster_s3.env(),
                "KUBECONFIG": str(localcluster.KUBECONFIG),
                STORAGE_BASE: gateway.storage_base,
                "XDG_CACHE_HOME": str(tmp_path / "cache-platform"),
            },
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert retention.returncode == 0, retention.stderr
        listing = restic(alice_env, "snapshots", "--json", "--no-lock")
        assert len(json.loads(listing.stdout)) == 1, listing.stderr
    finally:
        stop.set()
        gateway.stop()

    def shared() -> dict[str, Any] | None:
        status = (workspaces.get("alice") or {}).get("status") or {}
        found = find(status.get("conditions") or [], NAMESPACE_SHARED)
        return found if found and found["status"] == "True" else None

    condition = wait_until("alice's NamespaceShared condition", shared)
    assert condition["reason"] == OTHER_USERS and "bob@example.com" in condition["message"]

    # bob's workspace deleted: his line leaves the gateway's users, alice's stays.
    workspaces.delete("bob")
    settings = OperatorSettings()
    users_where = (settings.snapshot_gateway_namespace, settings.snapshot_gateway_users_secret)

    def bob_gone() -> str | None:
        text = secret_data(core, users_where[0], users_where[1], HTPASSWD_KEY) or ""
        return text if f"{namespace}.bob:" not in text else None

    left = wait_until("bob's line gone from the gateway's users", bob_gone, timeout=60)
    assert f"{namespace}.alice:" in left


def test_the_direct_component_leaves_the_gateway_out(
    operator_kubeconfig: Path, tmp_path: Path
) -> None:
    """manifests/components/snapshot-direct on the base: RSPARK_SNAPSHOT_MODE=direct, none
    of the gateway's or retention's objects, and what is left passes a server dry run."""
    manifests = os.path.relpath(ROOT / "manifests", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [f"{manifests}/base"],
                "components": [f"{manifests}/components/snapshot-direct"],
            }
        )
    )
    # The settings ConfigMap's name carries a hash of its data: compared apart.
    kept = ("CustomResourceDefinition", "ConfigMap")
    base = {(o["kind"], o["metadata"]["name"]) for o in build(BASE) if o["kind"] not in kept}
    direct = [o for o in build(tmp_path) if o["kind"] != "CustomResourceDefinition"]
    left_out = base - {(o["kind"], o["metadata"]["name"]) for o in direct}
    assert {kind for kind, name in left_out if "snapshot" in name} == {
        "Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount",
        "ClusterRole", "ClusterRoleBinding", "CronJob",
    }  # fmt: skip
    assert all("snapshot" in name for kind, name in left_out), left_out
    settings = next(o["data"] for o in direct if o["kind"] == "ConfigMap")
    assert settings["RSPARK_SNAPSHOT_MODE"] == "direct"
    applied = subprocess.run(
        [str(localcluster.BIN / "kubectl"), "--kubeconfig", str(localcluster.KUBECONFIG),
         "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-"],
        input=yaml.safe_dump_all(direct), capture_output=True, text=True,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
