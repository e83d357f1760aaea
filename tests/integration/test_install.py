"""The install manifests on a real API server: dry run, apply, deploy, admission."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devtools.deploy import GATEWAY_BUCKET_SECRET
from devtools.gateway import bucket_secret_data
from devtools.install import (
    BASE,
    COMPONENTS,
    OVERLAYS,
    SERVICE_ACCOUNT,
    SYSTEM_NAMESPACE,
    build,
    deploy,
)
from devtools.localcluster import ROOT, kubectl
from devtools.s3 import S3Credentials
from rspark_operator.builders.signin import (
    CLIENT_SECRET_KEY,
    COOKIE_SECRET_KEY,
    SECRET_DIR,
    waker_proxy_args,
)
from rspark_operator.settings import OperatorSettings
from rspark_operator.validation import parse_workspace
from tests.support.kube import wait_until

SAMPLES = ROOT / "manifests" / "samples"
# path-prefix.yaml chooses its host, in a domain the platform allows.
SAMPLE_SETTINGS = OperatorSettings(
    snapshot_repository_base="s3:http://s3/b", allowed_ingress_domains=["example.com"]
)
BASE_KINDS = {
    "Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
    "ClusterRoleBinding", "ConfigMap", "Deployment", "PodDisruptionBudget", "ClusterKopfPeering",
    "NetworkPolicy", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    "Service", "CronJob",
}  # fmt: skip
# What the admission policy reads from its copy of the settings (admission.yaml).
# The admission policy's variables that carry an operator setting
# (manifests/components/admission-settings).
ADMISSION_VARIABLES = {
    "prefixes": "RSPARK_ALLOWED_IMAGE_PREFIXES",
    "executorImage": "RSPARK_SPARK_EXECUTOR_IMAGE",
}


def apply(manifest: dict[str, Any], *, dry_run: bool) -> str:
    args = ["apply", "--server-side", "--force-conflicts", "-f", "-"]
    return kubectl(
        *args, *(["--dry-run=server"] if dry_run else []), stdin=yaml.safe_dump(manifest)
    )


def config_map(objects: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    (found,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(prefix)
    ]
    return dict(found["data"])


def settings_of(objects: list[dict[str, Any]]) -> OperatorSettings:
    data = config_map(objects, "rspark-operator-settings")
    fields = {key.removeprefix("RSPARK_").lower(): value
              for key, value in data.items()}  # fmt: skip
    return OperatorSettings(**fields)


def test_every_manifest_of_the_base_passes_a_dry_run_then_applies(local_cluster: Path) -> None:
    objects = build(BASE)
    assert {o["kind"] for o in objects} == BASE_KINDS
    for manifest in objects:
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        assert "(server dry run)" in apply(manifest, dry_run=True), name
        assert "serverside-applied" in apply(manifest, dry_run=False), name
        if manifest["kind"] == "CustomResourceDefinition":
            kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                f"crd/{manifest['metadata']['name']}",
            )


@pytest.mark.parametrize("overlay", ["dev", "production-example"])
def test_every_manifest_of_each_overlay_passes_a_server_side_dry_run(
    kube: client.ApiClient, overlay: str
) -> None:
    dry_runs(kube, build(OVERLAYS / overlay))


def dry_runs(kube: client.ApiClient, objects: list[dict[str, Any]]) -> None:
    """Each object passes a server-side dry run on top of the installed base."""
    deploy()  # the CRDs and rspark-system exist, as they do once the base is installed
    core = client.CoreV1Api(kube)
    existing = {ns.metadata.name for ns in core.list_namespace().items}
    created = []
    try:
        for manifest in objects:
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            assert "(server dry run)" in apply(manifest, dry_run=True), name
            # Later objects live in the overlay's namespaces: those must exist.
            if manifest["kind"] == "Namespace" and manifest["metadata"]["name"] not in existing:
                apply(manifest, dry_run=False)
                created.append(manifest["metadata"]["name"])
    finally:
        for created_namespace in created:
            core.delete_namespace(created_namespace)


def test_the_waker_oidc_component_runs_the_operators_proxy_as_its_settings_say(
    kube: client.ApiClient, tmp_path: Path
) -> None:
    """An overlay with oidc sign-in and the waker-oidc component: the proxy container
    listens where the operator's arguments say, has the Secret where they read it, the
    NetworkPolicy opens that port, and every object passes a dry run."""
    overlay = tmp_path / "waker-oidc"
    overlay.mkdir()
    oidc = {"RSPARK_SIGNIN": "oidc", "RSPARK_OIDC_ISSUER_URL": "https://sso.example.com/realms/r",
            "RSPARK_OIDC_CLIENT_ID": "rspark-workspaces"}  # fmt: skip
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, overlay)],
        "components": [os.path.relpath(COMPONENTS / "waker-oidc", overlay)],
        "configMapGenerator": [{
            "name": "rspark-operator-settings", "namespace": SYSTEM_NAMESPACE,
            "behavior": "merge", "literals": [f"{k}={v}" for k, v in oidc.items()],
        }],
    }  # fmt: skip
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    objects = build(overlay)
    data = config_map(objects, "rspark-operator-settings")
    settings = OperatorSettings(
        **{key.removeprefix("RSPARK_").lower(): value for key, value in data.items()},
        waker_ip="10.244.1.9",  # the pod's IP, from the downward API
    )
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"
                     and o["metadata"]["name"] == "rspark-operator"]  # fmt: skip
    pod = deployment["spec"]["template"]["spec"]
    operator, proxy = pod["containers"]
    assert proxy["image"] == operator["image"] and proxy["args"] == ["--waker-proxy"]
    (port,) = proxy["ports"]
    assert f"--http-address=0.0.0.0:{port['containerPort']}" in waker_proxy_args(settings)
    (mount,) = proxy["volumeMounts"]
    assert mount["mountPath"] == SECRET_DIR
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == settings.oidc_secret
    assert {item["key"] for item in volume["secret"]["items"]} == {
        CLIENT_SECRET_KEY,
        COOKIE_SECRET_KEY,
    }
    (policy,) = [o for o in objects if o["metadata"]["name"] == "rspark-waker-proxy"]
    assert policy["spec"]["ingress"][0]["ports"] == [
        {"port": settings.waker_proxy_port, "protocol": "TCP"}
    ]
    dry_runs(kube, objects)


def test_the_dev_overlays_single_replica_does_not_block_a_node_drain(
    kube: client.ApiClient,
) -> None:
    apps, policy = client.AppsV1Api(kube), client.PolicyV1Api(kube)
    core = client.CoreV1Api(kube)
    try:
        deploy(OVERLAYS / "dev")
        wait_until(
            "one operator replica",
            lambda: (d := apps.read_namespaced_deployment("rspark-operator", SYSTEM_NAMESPACE))
            .status.replicas == 1 and d.status.available_replicas == 1,
        )  # fmt: skip
        budget = wait_until(
            "the budget sees the one replica",
            lambda: (b := policy.read_namespaced_pod_disruption_budget(
                "rspark-operator", SYSTEM_NAMESPACE)).status.current_healthy == 1
                and b.status.observed_generation == b.metadata.generation and b,
        )  # fmt: skip
        assert budget.status.disruptions_allowed == 1
        selector = "app.kubernetes.io/name=rspark-operator,app.kubernetes.io/component=operator"

        def one_live_pod() -> list[Any] | None:
            listed = core.list_namespaced_pod(SYSTEM_NAMESPACE, label_selector=selector).items
            live = [p for p in listed if p.metadata.deletion_timestamp is None]
            return live if len(live) == 1 else None

        (pod,) = wait_until("one operator pod (the rollout to one replica done)", one_live_pod)
        name = pod.metadata.name
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE}}  # fmt: skip
        # What `kubectl drain` asks; a budget that forbids it answers 429.
        core.create_namespaced_pod_eviction(name, SYSTEM_NAMESPACE, eviction, dry_run="All")
    finally:
        deploy()


def test_make_deploy_applies_the_base_and_is_idempotent(local_cluster: Path) -> None:
    first = deploy()
    again = deploy()
    assert "deployment.apps/rspark-operator serverside-applied" in first
    assert again.count("serverside-applied") == first.count("serverside-applied")


def test_operator_pods_are_admitted_under_restricted_pod_security(
    kube: client.ApiClient,
) -> None:
    deploy()
    apps, policy = client.AppsV1Api(kube), client.PolicyV1Api(kube)
    wait_until(
        "2 operator replicas available",
        lambda: (apps.read_namespaced_deployment("rspark-operator", SYSTEM_NAMESPACE)
                 .status.available_replicas == 2),
    )  # fmt: skip
    budget = wait_until(
        "the budget sees both replicas",
        lambda: (b := policy.read_namespaced_pod_disruption_budget(
            "rspark-operator", SYSTEM_NAMESPACE)).status.current_healthy == 2 and b,
    )  # fmt: skip
    assert budget.status.disruptions_allowed == 1
    # The namespace enforces the restricted standard: a root pod is refused there.
    root_pod = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "root", "namespace": SYSTEM_NAMESPACE},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                                         "securityContext": {"runAsUser": 0}}]}}  # fmt: skip
    with pytest.raises(subprocess.CalledProcessError) as refused:
        apply(root_pod, dry_run=True)
    assert 'violates PodSecurity "restricted:latest"' in refused.value.stderr


def test_settings_of_the_base_and_every_overlay_are_valid() -> None:
    base = settings_of(build(BASE))
    assert base.snapshot_repository_base is None  # each install names its bucket
    dev = build(OVERLAYS / "dev")
    assert settings_of(dev).peering_lifetime_seconds == 10
    (deployment,) = [
        o for o in dev if o["kind"] == "Deployment" and o["metadata"]["name"] == SERVICE_ACCOUNT
    ]
    assert deployment["spec"]["replicas"] == 1
    production = build(OVERLAYS / "production-example")
    settings = settings_of(production)
    assert settings.ingress_class == "nginx" and settings.ingress_tls_secret
    assert settings.snapshot_mode == "gateway" and settings.snapshot_repository_base is None
    assert settings.spark_executor_image.startswith("registry.example.com/rspark/spark:")
    assert settings.jupyterlab_image.startswith("registry.example.com/rspark/jupyterlab:")
    # The bucket's key only in the gateway's namespace, with the keys the base names.
    (secret,) = [o for o in production if o["kind"] == "Secret"]
    assert (secret["metadata"]["namespace"], secret["metadata"]["name"]) == (
        settings.snapshot_gateway_namespace,
        GATEWAY_BUCKET_SECRET,
    )
    sample = bucket_secret_data(S3Credentials("k", "s", "https://s3", "b"), "gateway")
    assert set(secret["data"]) == set(sample)


def test_every_committed_crd_is_in_the_base() -> None:
    listed = yaml.safe_load((ROOT / "crds" / "Kustomization").read_text())["resources"]
    files = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert sorted(listed) == files


def test_every_sample_is_a_valid_workspace(kube: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(kube)
    # SparkProfile samples: tests/integration/test_profiles.py.
    samples = [
        manifest
        for path in sorted(SAMPLES.glob("*.yaml"))
        for manifest in yaml.safe_load_all(path.read_text())
        if manifest["kind"] == "RStudioWorkspace"
    ]
    assert len(samples) >= 4
    for manifest in samples:
        created = custom.create_namespaced_custom_object(
            "rspark.dev", "v1alpha1", namespace, "rstudioworkspaces", manifest,
            dry_run="All", field_validation="Strict",
        )  # fmt: skip
        created["metadata"].setdefault("uid", "dry-run")
        parse_workspace(created, SAMPLE_SETTINGS)


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_make_crds_leaves_the_committed_crd_alone_when_generation_fails() -> None:
    crd = ROOT / "crds" / "rspark.dev_rstudioworkspaces.yaml"
    before = crd.read_bytes()
    failed = make("crds", "PY=false")
    assert failed.returncode != 0 and "left as it was" in failed.stderr
    assert crd.read_bytes() == before
    assert not [p.name for p in crd.parent.iterdir() if p.name.startswith(crd.name + ".")]
    regenerated = make("crds")
    assert regenerated.returncode == 0, regenerated.stderr
    assert crd.read_bytes() == before  # the committed CRD is the generated one


@pytest.mark.parametrize("kustomization", [BASE, OVERLAYS / "dev", OVERLAYS / "production-example"])
def test_the_admission_policy_enforces_the_operators_image_settings(kustomization: Path) -> None:
    objects = build(kustomization)
    operator = config_map(objects, "rspark-operator-settings")
    (policy,) = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicy"]
    # The setting is the CEL string literal of the variable's expression.
    written = {
        variable["name"]: variable["expression"].split("'")[1]
        for variable in policy["spec"]["variables"]
        if variable["name"] in ADMISSION_VARIABLES
    }
    assert written == {name: operator[key] for name, key in ADMISSION_VARIABLES.items()}
    if kustomization.name == "production-example":
        assert written["executorImage"].startswith("registry.example.com/")
