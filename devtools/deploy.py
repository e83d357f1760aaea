"""Install the operator's CRDs on the local cluster and run the operator as in production.

`python -m devtools.deploy` is `make dev`: cluster up, the local images built and
pushed, CRDs installed, a namespace with S3 credentials and the JupyterLab sample,
the operator with the real-node settings; it prints the workspace's URL (through
the ingress controller) and its password, and keeps the operator in the foreground.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import yaml

from devtools import images, localcluster, services
from devtools.gateway import bucket_secret_data, cluster_gateway
from devtools.localcluster import ROOT, kubectl
from devtools.network import HOST_ADDRESS, REAL_NODE_LABEL, REAL_NODE_VALUE, REGISTRY
from devtools.s3 import S3Credentials, free_port_pair
from rspark_operator.builders.pod import IDE_PASSWORD_KEY
from rspark_operator.names import passwords_secret_name
from rspark_operator.settings import OperatorSettings

CRDS = ROOT / "crds"
DEV_SAMPLE = ROOT / "manifests" / "samples" / "jupyterlab.yaml"
DEV_NAMESPACE = "rspark-dev"
# The images a JupyterLab workspace on the real nodes runs (the IDE and Spark's
# driver, the snapshot agent, Spark's executors), from `make images-local`.
WORKSPACE_IMAGES = ("jupyterlab", "agent", "spark")
# Pods that mean to run real containers tolerate the real nodes' taint.
REAL_NODE_TOLERATION = {
    "key": REAL_NODE_LABEL,
    "operator": "Equal",
    "value": REAL_NODE_VALUE,
    "effect": "NoSchedule",
}
REAL_NODE_SELECTOR = {REAL_NODE_LABEL: REAL_NODE_VALUE}
# The operator's image and settings ConfigMap in manifests/base.
OPERATOR_IMAGE = "ghcr.io/rspark-dev/operator"
# The base's snapshot gateway: its images, Deployment and retention CronJob; the
# component that leaves them out (RSPARK_SNAPSHOT_MODE=direct).
DIRECT_COMPONENT = "snapshot-direct"
GATEWAY_IMAGE = "ghcr.io/rspark-dev/rclone"
AGENT_IMAGE = "ghcr.io/rspark-dev/agent"
GATEWAY_DEPLOYMENT = "rspark-snapshot-gateway"
RETENTION_CRONJOB = "rspark-snapshot-retention"
# The platform's Secret with the bucket's key, in the gateway's namespace.
GATEWAY_BUCKET_SECRET = "rspark-snapshot-bucket"
GATEWAY_NAMESPACE = OperatorSettings.model_fields["snapshot_gateway_namespace"].default
SETTINGS_CONFIG_MAP = "rspark-operator-settings"
# A first pull of the JupyterLab image onto a node takes minutes on a busy machine.
DEV_READY_TIMEOUT_SECONDS = 900
CREDENTIALS_SECRET = "rspark-s3-credentials"
PEERING = """
apiVersion: kopf.dev/v1
kind: ClusterKopfPeering
metadata:
  name: rspark-operator
"""


def install_crds() -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    kubectl("apply", "-f", "-", stdin=PEERING)


def credentials_secret(namespace: str, s3: S3Credentials) -> None:
    """The S3 credentials Secret the operator's default setting names."""
    manifest = kubectl(
        "create", "secret", "generic", CREDENTIALS_SECRET, "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
        "--dry-run=client", "-o", "yaml",
    )  # fmt: skip
    kubectl("apply", "-f", "-", stdin=manifest)


def local_cluster_settings(s3: S3Credentials) -> dict[str, str]:
    """The operator's settings on the local cluster: snapshots go straight to its S3
    bucket (direct: the tests that want the gateway, and `make dev`, say so); the
    ingress controller (Traefik, on the host) reaches pods from the bridge address."""
    return {
        "snapshot_mode": "direct",
        "snapshot_repository_base": f"s3:{s3.endpoint}/{s3.bucket}",
        "snapshot_credentials_secret": CREDENTIALS_SECRET,
        "ingress_controller_cidrs": json.dumps([f"{HOST_ADDRESS}/32"]),
    }


def operator_environment(s3: S3Credentials, **settings: str) -> dict[str, str]:
    """The environment of an operator process on this machine, on the local cluster."""
    return {
        **os.environ,
        "KUBECONFIG": str(localcluster.KUBECONFIG),
        **settings_env({**local_cluster_settings(s3), **settings}),
    }


def settings_env(settings: dict[str, str]) -> dict[str, str]:
    """Operator settings (`OperatorSettings` field names) as its environment variables."""
    return {f"RSPARK_{key.upper()}": value for key, value in settings.items()}


def real_node_settings(refs: dict[str, str]) -> dict[str, str]:
    """Operator settings that put workspaces and their executors on the real nodes,
    with the images of `make images-local` (`refs`: image name to reference)."""
    return {
        "jupyterlab_image": refs["jupyterlab"],
        "agent_image": refs["agent"],
        "spark_executor_image": refs["spark"],
        "allowed_image_prefixes": f"{REGISTRY}/",
        "workspace_node_selector": json.dumps(REAL_NODE_SELECTOR),
        "workspace_tolerations": json.dumps([REAL_NODE_TOLERATION]),
    }


def waker_settings() -> dict[str, str]:
    """The operator's waker on the bridge address, on a port free there now, where the
    ingress controller (Traefik, on this machine) reaches it (needs the cluster up)."""
    port = services.free_port(HOST_ADDRESS)
    return {"waker_address": f"{HOST_ADDRESS}:{port}", "waker_ip": HOST_ADDRESS}


def real_node_overlay(refs: dict[str, str], s3: S3Credentials, gateway: bool = False) -> Path:
    """A kustomization on manifests/base, as a platform team writes one, for the local
    cluster's real nodes: the operator image of `make images-local` (`refs`), the
    settings of `local_cluster_settings` and `real_node_settings` (so the admission
    policy allows the local executor image), written under .local/overlays. With
    `gateway`, the base's snapshot gateway and retention with their pods on the real
    nodes and the local rclone and agent images (the platform's bucket Secret:
    `gateway_bucket_secret`); without, the direct component leaves them out."""
    directory = (
        localcluster.LOCAL / "overlays" / ("real-nodes-gateway" if gateway else "real-nodes")
    )
    directory.mkdir(parents=True, exist_ok=True)
    settings = settings_env(
        {
            **local_cluster_settings(s3),
            **real_node_settings(refs),
            **(gateway_settings() if gateway else {}),
        }
    )
    base = Path(os.path.relpath(ROOT / "manifests", directory))
    components = [str(base / "components" / "admission-settings")]
    images = {OPERATOR_IMAGE: refs["operator"]}
    patches: list[dict[str, Any]] = []
    if not gateway:
        components.append(str(base / "components" / DIRECT_COMPONENT))
    else:
        images |= {GATEWAY_IMAGE: refs["rclone"], AGENT_IMAGE: refs["agent"]}
        patches = [
            real_node_placement("Deployment", GATEWAY_DEPLOYMENT, "/spec/template"),
            real_node_placement("CronJob", RETENTION_CRONJOB, "/spec/jobTemplate/spec/template"),
        ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [str(base / "base")],
        "images": [
            {"name": name, "newName": ref.rsplit(":", 1)[0], "newTag": ref.rsplit(":", 1)[1]}
            for name, ref in images.items()
        ],
        "configMapGenerator": [
            {
                "name": SETTINGS_CONFIG_MAP,
                "namespace": "rspark-system",
                "behavior": "merge",
                "literals": [f"{key}={value}" for key, value in settings.items()],
            }
        ],
        "components": components,
        **({"patches": patches} if patches else {}),
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return directory


def real_node_placement(kind: str, name: str, template: str) -> dict[str, Any]:
    """A kustomize patch (JSON 6902) that puts the pods of one object's template (at the
    JSON pointer `template`) on the real nodes."""
    operations = [
        {"op": "add", "path": f"{template}/spec/nodeSelector", "value": REAL_NODE_SELECTOR},
        {"op": "add", "path": f"{template}/spec/tolerations", "value": [REAL_NODE_TOLERATION]},
    ]
    return {"target": {"kind": kind, "name": name}, "patch": json.dumps(operations)}


def gateway_settings(url: str | None = None) -> dict[str, str]:
    """Operator settings for snapshots through a gateway: the mode, and the gateway's URL
    (default: the defaults, the base's Service in the cluster)."""
    fields = OperatorSettings.model_fields
    return {
        "snapshot_mode": str(fields["snapshot_mode"].default),
        "snapshot_gateway_url": url or str(fields["snapshot_gateway_url"].default),
    }


def gateway_bucket_secret(s3: S3Credentials, prefix: str) -> None:
    """The platform's Secret for the gateway and retention, in rspark-system: the
    cluster's bucket key, repositories kept under `prefix` in the bucket."""
    manifest = kubectl(
        "create", "secret", "generic", GATEWAY_BUCKET_SECRET, "-n", GATEWAY_NAMESPACE,
        *(f"--from-literal={key}={value}" for key, value in bucket_secret_data(s3, prefix).items()),
        "--dry-run=client", "-o", "yaml",
    )  # fmt: skip
    kubectl("apply", "-f", "-", stdin=manifest)


def push_images(names: tuple[str, ...] = WORKSPACE_IMAGES) -> dict[str, str]:
    """`make images-local` for `names` (cached builds) into the cluster's registry."""
    return images.build_and_push(list(names), REGISTRY)


def ingress_address() -> str:
    """host:port of the ingress controller (Traefik on 127.0.0.1), from .local/ingress.env."""
    lines = (localcluster.LOCAL / services.INGRESS_ENV_FILE).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)[services.INGRESS_HTTP_KEY]


def browser_url(status_url: str) -> str:
    """A workspace's status.url as a browser on this machine opens it: the same host
    (`*.localhost` names resolve to 127.0.0.1) on the ingress controller's port."""
    parts = urlsplit(status_url)
    port = ingress_address().rsplit(":", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


def ide_password(namespace: str, workspace: str) -> str:
    """The IDE's password, as the user guide tells the user to read it."""
    encoded = kubectl(
        "get", "secret", passwords_secret_name(workspace), "-n", namespace,
        "-o", f"jsonpath={{.data.{IDE_PASSWORD_KEY}}}",
    )  # fmt: skip
    return base64.b64decode(encoded).decode()


def operator_command(liveness_port: int) -> list[str]:
    script = Path(sys.executable).parent / "rspark-operator"
    return [str(script), "--liveness", f"http://127.0.0.1:{liveness_port}/healthz"]


class OperatorProcess:
    """`rspark-operator` as a child process, as it runs in production."""

    # Every one that runs now, so a test that stops the cluster can stop them first.
    running: ClassVar[set[OperatorProcess]] = set()

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file: IO[bytes] | None = None

    def start(self) -> None:
        port = free_port_pair()
        self.log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            operator_command(port), env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        OperatorProcess.running.add(self)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                return
            except (urllib.error.URLError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"operator did not start:\n{self.log()}") from None
                time.sleep(0.3)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=60)
        self.process = None
        OperatorProcess.running.discard(self)
        if self.log_file:
            self.log_file.close()

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MB."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kilobytes = next(
            line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")
        )
        return int(kilobytes) / 1024

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def workspace_status(namespace: str, name: str) -> dict[str, Any]:
    found = kubectl("get", "rsw", name, "-n", namespace, "-o", "json", "--ignore-not-found")
    status: dict[str, Any] = json.loads(found).get("status") or {} if found.strip() else {}
    return status


def show_workspace(name: str, operator: OperatorProcess) -> None:
    """Print how to watch the sample, then its URL and password once it is Running;
    return when the operator stops."""
    kubectl_line = f"KUBECONFIG={localcluster.KUBECONFIG} .local/bin/kubectl -n {DEV_NAMESPACE}"
    print(
        f"[dev] operator running (log: {operator.log_path}); sample workspace {name} in namespace "
        f"{DEV_NAMESPACE} starts on a real node (the first pull of the image takes minutes).\n"
        f"[dev] Watch it:  {kubectl_line} get rsw,pods -w",
        flush=True,
    )
    deadline = time.monotonic() + DEV_READY_TIMEOUT_SECONDS
    status = workspace_status(DEV_NAMESPACE, name)
    while status.get("phase") != "Running" and time.monotonic() < deadline:
        time.sleep(2)
        status = workspace_status(DEV_NAMESPACE, name)
    if status.get("phase") == "Running":
        print(
            f"[dev] Open {browser_url(status['url'])} in a browser on this machine "
            "(*.localhost names are 127.0.0.1; from elsewhere, send that Host header to "
            f"{ingress_address()}).\n"
            f"[dev] Sign in with the password alone: {ide_password(DEV_NAMESPACE, name)}\n"
            f"[dev] ({kubectl_line} get secret {passwords_secret_name(name)} "
            f"-o jsonpath='{{.data.{IDE_PASSWORD_KEY}}}' | base64 -d)",
            flush=True,
        )
    else:
        print(f"[dev] {name} is not Running yet: {status}; see the watch line above.", flush=True)
    print("[dev] Ctrl-C stops the operator; make cluster-down stops the cluster.", flush=True)
    assert operator.process is not None
    operator.process.wait()


def dev() -> None:
    # A TERM (a supervisor, or `kill`) stops the operator as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    localcluster.up()
    refs = push_images()
    install_crds()
    s3 = localcluster.s3_credentials()
    # The workspace's namespace holds no bucket key; the operator's namespace holds the
    # gateway's users, which the gateway on the bridge reads.
    for namespace in (DEV_NAMESPACE, GATEWAY_NAMESPACE):
        kubectl(
            "apply",
            "-f",
            "-",
            stdin=f"{{apiVersion: v1, kind: Namespace, metadata: {{name: {namespace}}}}}",
        )
    kubectl("apply", "-n", DEV_NAMESPACE, "-f", str(DEV_SAMPLE))
    name = str(yaml.safe_load(DEV_SAMPLE.read_text())["metadata"]["name"])
    log_path = localcluster.LOCAL / "logs" / "operator-dev.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with cluster_gateway() as gateway:
        settings = {**real_node_settings(refs), **gateway_settings(gateway.url)}
        operator = OperatorProcess(log_path, operator_environment(s3, **settings))
        operator.start()
        try:
            show_workspace(name, operator)
        except KeyboardInterrupt:
            pass
        finally:
            operator.stop()


if __name__ == "__main__":
    dev()
