"""The Helm chart: what it renders equals the kustomize base, helm lint is clean, and it
installs, upgrades and uninstalls on the local cluster (helm built from hack/helm)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools import localcluster
from devtools.deploy import OperatorProcess
from devtools.install import (
    BASE,
    SERVICE_ACCOUNT,
    SYSTEM_NAMESPACE,
    build,
    deploy,
    service_account_kubeconfig,
    session_operator_stopped,
)
from devtools.localcluster import ROOT, kubectl
from tests.support.kube import wait_until

CHART = ROOT / "charts" / "rspark-operator"
# The operator's Deployment, PodDisruptionBudget and ServiceAccount share its name.
OPERATOR = SERVICE_ACCOUNT
Key = tuple[str, str, str, str]


@pytest.fixture
def helm(tmp_path: Path) -> Iterator[Any]:
    """`helm ARGS...` with the pinned helm, its state in tmp_path, against the local
    cluster; returns the finished process."""
    env = {
        **localcluster.tool_env(),
        **{
            f"HELM_{kind}_HOME": str(tmp_path / kind.lower())
            for kind in ("CACHE", "CONFIG", "DATA")
        },
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(localcluster.BIN / "helm"), *args],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}")
        return result

    yield run


def key(manifest: dict[str, Any]) -> Key:
    metadata = manifest["metadata"]
    return (
        manifest["apiVersion"],
        manifest["kind"],
        metadata.get("namespace", ""),
        metadata["name"],
    )


def objects(text: str) -> dict[Key, dict[str, Any]]:
    return {key(doc): doc for doc in yaml.safe_load_all(text) if doc}


def render(helm: Any, *values: str) -> dict[Key, dict[str, Any]]:
    sets = [arg for value in values for arg in ("--set", value)]
    return objects(helm("template", "rspark-operator", str(CHART), "--include-crds", *sets).stdout)


def kustomize_labels() -> dict[str, str]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return {k: v for entry in kustomization["labels"] for k, v in entry["pairs"].items()}


def test_the_chart_with_default_values_renders_the_kustomize_base(helm: Any) -> None:
    base = {key(o): o for o in build(BASE)}
    # Helm installs crds/ as they are: only kustomize stamps its labels on them.
    for manifest in base.values():
        if manifest["kind"] == "CustomResourceDefinition":
            labels = manifest["metadata"]["labels"]
            for name in kustomize_labels():
                del labels[name]
            if not labels:
                del manifest["metadata"]["labels"]
    chart = render(helm)
    assert sorted(chart) == sorted(base)
    for object_key, manifest in base.items():
        assert chart[object_key] == manifest, object_key


def test_values_change_only_what_they_name(helm: Any) -> None:
    default = render(helm)
    changed = render(
        helm,
        "replicas=3",
        "image.tag=0.2.0",
        "settings.RSPARK_SNAPSHOT_REPOSITORY_BASE=s3:https://s3.example.com/b",
        "settings.RSPARK_RESYNC_SECONDS=300",
    )
    (config_map,) = [o for o in changed.values() if o["kind"] == "ConfigMap"]
    (old_config_map,) = [o for o in default.values() if o["kind"] == "ConfigMap"]
    assert config_map["data"] == {
        **old_config_map["data"],
        "RSPARK_SNAPSHOT_REPOSITORY_BASE": "s3:https://s3.example.com/b",
        "RSPARK_RESYNC_SECONDS": "300",
    }
    assert config_map["metadata"]["name"] != old_config_map["metadata"]["name"]
    deployment = changed[("apps/v1", "Deployment", SYSTEM_NAMESPACE, OPERATOR)]
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/rspark-dev/operator:0.2.0"
    assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
    same = {k for k in default if k[1] != "ConfigMap" and k[3] != OPERATOR}
    assert {k: changed[k] for k in same} == {k: default[k] for k in same}


def test_direct_mode_renders_the_base_with_the_direct_component(helm: Any, tmp_path: Path) -> None:
    """settings.RSPARK_SNAPSHOT_MODE=direct: what kustomize makes of the base with
    components/snapshot-direct (no gateway, no retention)."""
    manifests = os.path.relpath(BASE.parent, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [f"{manifests}/base"],
        "components": [f"{manifests}/components/snapshot-direct"],
    }))  # fmt: skip
    direct = {key(o): o for o in build(tmp_path) if o["kind"] != "CustomResourceDefinition"}
    chart = render(helm, "settings.RSPARK_SNAPSHOT_MODE=direct")
    chart = {k: o for k, o in chart.items() if o["kind"] != "CustomResourceDefinition"}
    assert not [k for k in chart if "snapshot" in k[3]]
    assert sorted(chart) == sorted(direct)
    (config_map,) = [o for o in chart.values() if o["kind"] == "ConfigMap"]
    assert config_map == next(o for o in direct.values() if o["kind"] == "ConfigMap")


def test_the_gateway_image_and_the_agent_image_reach_the_gateway_and_retention(
    helm: Any,
) -> None:
    changed = render(
        helm,
        "snapshotGateway.image.repository=registry.example.com/rclone",
        "snapshotGateway.image.tag=1.76.1",
        "settings.RSPARK_AGENT_IMAGE=registry.example.com/agent:2",
    )
    gateway = changed[("apps/v1", "Deployment", SYSTEM_NAMESPACE, "rspark-snapshot-gateway")]
    retention = changed[("batch/v1", "CronJob", SYSTEM_NAMESPACE, "rspark-snapshot-retention")]
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/rclone:1.76.1"
    (container,) = retention["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/agent:2"


def test_image_settings_reach_the_admission_policy(helm: Any) -> None:
    default = render(helm)
    changed = render(
        helm,
        "settings.RSPARK_ALLOWED_IMAGE_PREFIXES=registry.example.com/rspark/",
        "settings.RSPARK_SPARK_EXECUTOR_IMAGE=registry.example.com/rspark/spark:1",
    )

    def variables(objects: dict[Key, dict[str, Any]]) -> dict[str, str]:
        (policy,) = [o for o in objects.values() if o["kind"] == "ValidatingAdmissionPolicy"]
        return {v["name"]: v["expression"] for v in policy["spec"]["variables"]}

    before, after = variables(default), variables(changed)
    assert after["prefixes"] == before["prefixes"].replace(
        "''.split", "'registry.example.com/rspark/'.split"
    )
    assert after["executorImage"] == "'registry.example.com/rspark/spark:1'"
    assert {k: v for k, v in after.items() if k not in ("prefixes", "executorImage")} == {
        k: v for k, v in before.items() if k not in ("prefixes", "executorImage")
    }


def test_an_unknown_setting_is_refused(helm: Any) -> None:
    result = helm(
        "template", "rspark-operator", str(CHART), "--set", "settings.RSPARK_NO_SUCH=1",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "RSPARK_NO_SUCH is not an operator setting" in result.stderr


def test_helm_lint_is_clean(helm: Any) -> None:
    result = helm("lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert not [
        line for line in result.stdout.splitlines() if "[WARNING]" in line or "[ERROR]" in line
    ]


def test_the_charts_crds_and_base_are_the_repositorys_own() -> None:
    links = {"crds": ROOT / "crds", "base": BASE, "components": BASE.parent / "components"}
    for name, target in links.items():
        assert (CHART / name).is_symlink() and (CHART / name).resolve() == target, name


def exists(manifest: dict[str, Any]) -> bool:
    metadata = manifest["metadata"]
    scope = ["-n", metadata["namespace"]] if "namespace" in metadata else []
    found = kubectl(
        "get", manifest["kind"], metadata["name"], *scope, "--ignore-not-found", "-o", "name"
    )
    return bool(found.strip())


def test_install_upgrade_and_uninstall_on_the_local_cluster(
    helm: Any, operator: OperatorProcess, operator_kubeconfig: Path
) -> None:
    installed = [o for o in build(BASE) if o["kind"] != "CustomResourceDefinition"]
    with session_operator_stopped(operator):
        try:
            # The session's install (make deploy) goes first: helm makes its own.
            kubectl("delete", "--wait", "-f", "-", stdin=yaml.safe_dump_all(installed))
            helm("install", "rspark-operator", str(CHART), "--wait", "--timeout", "180s")
            assert all(exists(o) for o in installed)
            replicas = "{.spec.replicas}"
            assert kubectl("get", "deploy/rspark-operator", "-n", "rspark-system",
                           "-o", f"jsonpath={replicas}") == "2"  # fmt: skip

            helm("upgrade", "rspark-operator", str(CHART), "--reuse-values",
                 "--set", "replicas=1", "--set", "settings.RSPARK_RESYNC_SECONDS=300")  # fmt: skip
            deployment = yaml.safe_load(
                kubectl("get", "deploy/rspark-operator", "-n", "rspark-system", "-o", "yaml")
            )
            assert deployment["spec"]["replicas"] == 1
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            settings = container["envFrom"][0]["configMapRef"]["name"]
            data = yaml.safe_load(kubectl("get", "configmap", settings, "-n", "rspark-system",
                                          "-o", "yaml"))["data"]  # fmt: skip
            assert data["RSPARK_RESYNC_SECONDS"] == "300"

            helm("uninstall", "rspark-operator", "--wait", "--timeout", "180s")
            wait_until("every object of the chart gone", lambda: not any(map(exists, installed)))
            assert kubectl("get", "crd", "rstudioworkspaces.rspark.dev", "-o", "name").strip()
        finally:
            deploy()
            # A new ServiceAccount: the session operator needs a token of it.
            service_account_kubeconfig(operator_kubeconfig)
