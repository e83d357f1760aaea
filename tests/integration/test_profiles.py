"""SparkProfiles on the local cluster: the API server's validation, the limits the operator
enforces, and a switch of profile that rewrites spark-defaults.conf and keeps the pod."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devtools.deploy import OperatorProcess
from devtools.localcluster import kubectl
from rspark_operator import names
from rspark_operator.api import PROFILE_PLURAL
from rspark_operator.builders.spark import SPARK_DEFAULTS_FILE
from tests.support.kube import wait_until
from tests.support.profiles import Profiles, apply, profile_manifest
from tests.support.workspaces import Workspaces, sample

ROOT = Path(__file__).parents[2]
CORPUS = ROOT / "tests" / "corpus" / "invalid-profiles"
CASES = sorted(CORPUS.glob("*.yaml"))
SAMPLES = ROOT / "manifests" / "samples" / "sparkprofiles.yaml"


def small(namespace: str) -> dict[str, Any]:
    return {
        "kind": "kubernetes",
        "namespaces": [namespace],
        "kubernetes": {
            "executors": {"default": 2, "max": 4},
            "executorCores": {"default": 1, "max": 2},
            "executorMemory": {"default": "2g", "max": "4g"},
        },
    }


def large() -> dict[str, Any]:
    return {
        "kind": "kubernetes",
        # The test namespaces' label (the operator reads the namespace to match it).
        "namespaceSelector": {"matchLabels": {"rspark.dev/test": "true"}},
        "kubernetes": {
            "executors": {"default": 8, "max": 16},
            "executorCores": {"default": 4, "max": 8},
            "executorMemory": {"default": "16g", "max": "32g"},
            "nodeSelector": {"node.example.com/pool": "spark"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "conf": {"spark.sql.shuffle.partitions": "400"},
        },
    }


def spark_defaults(kube: client.ApiClient, namespace: str, workspace: str) -> dict[str, str]:
    config_map = client.CoreV1Api(kube).read_namespaced_config_map(
        names.spark_config_map_name(workspace), namespace
    )
    lines = config_map.data[SPARK_DEFAULTS_FILE].splitlines()
    return dict(line.split(" ", 1) for line in lines)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_invalid_profile_is_refused_by_the_api_server(path: Path, crds: None) -> None:
    case = yaml.safe_load(path.read_text())
    with pytest.raises(subprocess.CalledProcessError) as refused:
        apply(case["manifest"])
    assert case["expect"] in str(refused.value.stderr)


@pytest.mark.parametrize(
    ("default", "maximum", "accepted"),
    [
        ("4096m", "4Gi", True),
        ("4gb", "4G", True),
        ("1.5g", "1536Mi", True),
        ("1537m", "1536Mi", False),
        ("2048k", "2m", True),
        ("1t", "1023g", False),
    ],
)
def test_the_api_server_compares_sizes_across_notations(
    profiles: Profiles, default: str, maximum: str, accepted: bool
) -> None:
    spec = {
        "kind": "kubernetes",
        "kubernetes": {"executorMemory": {"default": default, "max": maximum}},
    }
    if accepted:
        profiles("sizes", spec)
        return
    with pytest.raises(subprocess.CalledProcessError) as refused:
        profiles("sizes", spec)
    assert "default must not exceed max" in str(refused.value.stderr)


def test_samples_apply_and_list_kind_limits_and_users(crds: None) -> None:
    samples = list(yaml.safe_load_all(SAMPLES.read_text()))
    try:
        kubectl("apply", "--server-side", "-f", str(SAMPLES))
        table = kubectl("get", PROFILE_PLURAL, *(s["metadata"]["name"] for s in samples))
    finally:
        kubectl("delete", "-f", str(SAMPLES), "--ignore-not-found")
    header, *rows = table.splitlines()
    assert header.split()[:5] == ["NAME", "KIND", "MAX", "EXECUTORS", "MAX"]
    by_name = {row.split()[0]: row for row in rows}
    assert by_name["small"].split()[1:5] == ["kubernetes", "4", "2", "4g"]
    assert "sc://spark-connect.spark.svc:15002" in by_name["shared-connect"]
    assert '["team-a","team-b"]' in by_name["shared-connect"]
    assert "rspark.dev/spark-tier" in by_name["large"]


def test_workspace_under_a_profile_switches_without_a_restart(
    kube: client.ApiClient, workspace_namespace: str, profiles: Profiles
) -> None:
    small_profile = profiles("small", small(workspace_namespace))
    large_profile = profiles("large", large())
    workspaces = Workspaces(kube, workspace_namespace)
    # Sizes as Spark users write them.
    spark = {"profile": small_profile, "executorMemory": "3g", "driverMemory": "1g"}
    workspaces.create(sample("alice", spark=spark))
    ws = workspaces.wait_phase("alice", "Running")
    assert ws["status"]["spark"] == {"profile": small_profile}
    conf = spark_defaults(kube, workspace_namespace, "alice")
    assert conf["spark.executor.memory"] == "3072m"
    assert conf["spark.driver.memory"] == "1024m"
    assert conf["spark.dynamicAllocation.maxExecutors"] == "2"
    assert conf["spark.kubernetes.executor.request.cores"] == "1"
    pod = workspaces.running_pod("alice")

    workspaces.patch("alice", {"spark": {"profile": large_profile}})

    def switched() -> dict[str, Any] | None:
        current = workspaces.get("alice") or {}
        status = current.get("status") or {}
        done = status.get("observedGeneration") == current["metadata"]["generation"]
        return current if done and status.get("spark") == {"profile": large_profile} else None

    switched_ws = wait_until("the large profile in the status", switched)
    assert switched_ws["status"]["phase"] == "Running"
    assert switched_ws["status"]["pendingRestart"] is False
    conf = spark_defaults(kube, workspace_namespace, "alice")
    assert conf["spark.executor.memory"] == "3072m"  # the workspace's own, within the limit
    assert conf["spark.dynamicAllocation.maxExecutors"] == "8"
    assert conf["spark.kubernetes.executor.request.cores"] == "4"
    assert conf["spark.kubernetes.node.selector.node.example.com/pool"] == "spark"
    assert conf["spark.sql.shuffle.partitions"] == "400"
    assert workspaces.running_pod("alice").metadata.uid == pod.metadata.uid

    # The platform team changes the profile: its workspaces follow, their pods stay.
    changed = large()
    changed["kubernetes"]["conf"] = {"spark.sql.shuffle.partitions": "800"}
    apply(profile_manifest(large_profile, changed))
    wait_until(
        "the changed profile in spark-defaults.conf",
        lambda: (
            spark_defaults(kube, workspace_namespace, "alice").get("spark.sql.shuffle.partitions")
            == "800"
        ),
    )
    assert workspaces.running_pod("alice").metadata.uid == pod.metadata.uid


def test_a_value_beyond_the_profile_is_refused_with_its_limit(
    kube: client.ApiClient, workspace_namespace: str, profiles: Profiles
) -> None:
    small_profile = profiles("small", small(workspace_namespace))
    workspaces = Workspaces(kube, workspace_namespace)
    workspaces.create(sample("bob", spark={"profile": small_profile, "executorMemory": "16g"}))

    def refused() -> dict[str, Any] | None:
        ready = workspaces.ready_condition("bob")
        return ready if ready and ready["reason"] == "SparkLimitExceeded" else None

    ready = wait_until("Ready=False SparkLimitExceeded", refused)
    assert ready["status"] == "False"
    assert ready["message"] == (
        f"spec.spark.executorMemory 16g is more than profile '{small_profile}' allows (4g)"
    )
    assert not workspaces.pods("bob")


def test_a_profile_for_other_namespaces_is_refused(
    kube: client.ApiClient, workspace_namespace: str, profiles: Profiles
) -> None:
    elsewhere = profiles("elsewhere", small("some-other-team"))
    workspaces = Workspaces(kube, workspace_namespace)
    workspaces.create(sample("carol", spark={"profile": elsewhere}))

    def refused() -> dict[str, Any] | None:
        ready = workspaces.ready_condition("carol")
        return ready if ready and ready["reason"] == "SparkProfileNotAllowed" else None

    ready = wait_until("Ready=False SparkProfileNotAllowed", refused)
    assert ready["message"] == (
        f"namespace '{workspace_namespace}' may not use profile '{elsewhere}' "
        "(it allows namespaces some-other-team)"
    )


def test_workspaces_that_name_no_profile_get_the_default(
    kube: client.ApiClient,
    workspace_namespace: str,
    profiles: Profiles,
    operator_with: Callable[..., OperatorProcess],
) -> None:
    default = profiles("small", small(workspace_namespace))
    operator_with(default_spark_profile=default)
    workspaces = Workspaces(kube, workspace_namespace)
    workspaces.create(sample("dave", spark={}))
    ws = workspaces.wait_phase("dave", "Running")
    assert ws["status"]["spark"] == {"profile": default}
    conf = spark_defaults(kube, workspace_namespace, "dave")
    assert conf["spark.executor.memory"] == "2048m"  # the profile's default
