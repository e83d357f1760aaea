"""The workspace pod: RStudio (the Spark driver) and the snapshot agent sidecar."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from rspark_operator import names
from rspark_operator.api import Workspace
from rspark_operator.builders.hardening import (
    AGENT_RESOURCES,
    agent_security_context,
    agent_tmp_mount,
    agent_tmp_volume,
    ide_security_context,
    pod_security_context,
)
from rspark_operator.builders.identity import (
    AGENT_TOKEN_VOLUME,
    IDE_TOKEN_VOLUME,
    agent_token_volume,
    ide_token_volume,
    token_mount,
)
from rspark_operator.builders.metadata import Manifest, child, rstudio_pod_selector
from rspark_operator.builders.spark import (
    BLOCK_MANAGER_PORT,
    DRIVER_PORT,
    SPARK_CONF_DIR,
    SPARK_UI_PORT,
)
from rspark_operator.builders.url import ingress_path
from rspark_operator.settings import OperatorSettings

HOME = "/home/rstudio"
RSTUDIO_PORT = 8787
RSTUDIO_USER = "rstudio"
# Rocker images run RStudio as uid/gid 1000; the home volume must be theirs.
RSTUDIO_GID = 1000
HOME_VOLUME = "home"
SPARK_CONF_VOLUME = "spark-conf"
RESTIC_PASSWORD_KEY = "restic-password"
RSTUDIO_PASSWORD_KEY = "rstudio-password"
S3_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# The image turns this into RStudio's www-root-path: the URL prefix the Ingress strips.
RSTUDIO_ROOT_PATH_ENV = "RSPARK_WWW_ROOT_PATH"
# The image's clean shutdown: suspend open R sessions (bounded wait), then stop RStudio,
# so the next start does not report an abnormally terminated session.
PRESTOP_COMMAND = ["/usr/local/bin/rspark-prestop"]
# A restore may take long on a big home: allow an hour before the kubelet gives up.
AGENT_STARTUP_PERIOD_SECONDS = 5
AGENT_STARTUP_FAILURE_THRESHOLD = 720


def snapshot_repository(ws: Workspace, settings: OperatorSettings) -> str | None:
    """The restic repository of the workspace; None when nothing configures one."""
    if ws.spec.snapshot.repository:
        return ws.spec.snapshot.repository
    if settings.snapshot_repository_base:
        return f"{settings.snapshot_repository_base}/{ws.namespace}/{ws.name}"
    return None


def agent_env(ws: Workspace, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The contract with `rspark-agent run`: its whole configuration."""
    snapshot = ws.spec.snapshot
    credentials = snapshot.credentials_secret or settings.snapshot_credentials_secret
    repository = snapshot_repository(ws, settings)
    if repository is None:
        raise ValueError("no snapshot repository: validate the workspace before building it")
    env: list[dict[str, Any]] = [
        {"name": "RESTIC_REPOSITORY", "value": repository},
        _secret_env("RESTIC_PASSWORD", names.passwords_secret_name(ws.name), RESTIC_PASSWORD_KEY),
        *(_secret_env(key, credentials, key) for key in S3_CREDENTIAL_KEYS),
        {"name": "RSPARK_WORKSPACE", "value": f"{ws.namespace}/{ws.name}"},
        {"name": "RSPARK_SNAPSHOT_HOST", "value": names.snapshot_host(ws.namespace, ws.name)},
        {"name": "RSPARK_SNAPSHOT_INTERVAL", "value": snapshot.interval},
        {"name": "RSPARK_SNAPSHOT_EXCLUDE", "value": json.dumps(snapshot.exclude)},
        {"name": "RSPARK_SECRET_PATHS", "value": json.dumps(ws.spec.secret_paths)},
        {"name": "RSPARK_RETENTION", "value": json.dumps(snapshot.retention.wire())},
        {"name": "RSPARK_METRICS_PORT", "value": str(settings.agent_metrics_port)},
    ]
    if snapshot.restore_from:
        env.append({"name": "RSPARK_RESTORE_FROM", "value": snapshot.restore_from})
    return env


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _home_mount() -> dict[str, Any]:
    return {"name": HOME_VOLUME, "mountPath": HOME}


def _agent_container(ws: Workspace, settings: OperatorSettings) -> dict[str, Any]:
    return {
        "name": "snapshot-agent",
        "image": settings.agent_image,
        # Native sidecar: starts before RStudio, stops after it (last snapshot).
        "restartPolicy": "Always",
        "command": ["rspark-agent", "run", "--home", HOME],
        "env": agent_env(ws, settings),
        "ports": [{"name": "metrics", "containerPort": settings.agent_metrics_port}],
        # RStudio starts only once this passes: after the home is restored.
        "startupProbe": {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": AGENT_STARTUP_PERIOD_SECONDS,
            "failureThreshold": AGENT_STARTUP_FAILURE_THRESHOLD,
        },
        "resources": AGENT_RESOURCES,
        "securityContext": agent_security_context(),
        "volumeMounts": [_home_mount(), token_mount(AGENT_TOKEN_VOLUME), agent_tmp_mount()],
    }


def rstudio_env(ws: Workspace, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The user's variables, then the ones the operator manages (api.OPERATOR_MANAGED_ENV)."""
    env = [
        *(var.wire() for var in ws.spec.env),
        {"name": "USER", "value": RSTUDIO_USER},
        # Rocker's login password; authentication stays on (DISABLE_AUTH is refused).
        _secret_env("PASSWORD", names.passwords_secret_name(ws.name), RSTUDIO_PASSWORD_KEY),
        {"name": "SPARK_CONF_DIR", "value": SPARK_CONF_DIR},
    ]
    prefix = ingress_path(ws, settings)
    if prefix != "/":
        env.append({"name": RSTUDIO_ROOT_PATH_ENV, "value": prefix})
    return env


def _rstudio_container(ws: Workspace, settings: OperatorSettings) -> dict[str, Any]:
    spec = ws.spec
    return {
        "name": "rstudio",
        "image": spec.image or settings.workspace_image,
        "ports": [
            {"name": "http", "containerPort": RSTUDIO_PORT},
            {"name": "spark-driver", "containerPort": DRIVER_PORT},
            {"name": "spark-blockmgr", "containerPort": BLOCK_MANAGER_PORT},
            {"name": "spark-ui", "containerPort": SPARK_UI_PORT},
        ],
        "env": rstudio_env(ws, settings),
        "resources": spec.resources.with_defaults(),
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
        "lifecycle": {"preStop": {"exec": {"command": PRESTOP_COMMAND}}},
        "securityContext": ide_security_context(),
        "volumeMounts": [
            _home_mount(),
            {"name": SPARK_CONF_VOLUME, "mountPath": SPARK_CONF_DIR, "readOnly": True},
            token_mount(IDE_TOKEN_VOLUME),
        ],
    }


def build_pod(ws: Workspace, settings: OperatorSettings) -> Manifest:
    """The pod, annotated with the hash of its spec (see `pod_spec_hash`)."""
    spark_service = names.spark_driver_service_name(ws.name)
    spec: dict[str, Any] = {
        "serviceAccountName": names.service_account_name(ws.name),
        # Each container mounts its own identity's token (builders/identity.py).
        "automountServiceAccountToken": False,
        # Containers restart in place; the operator replaces a pod that is gone or failed.
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "hostname": names.pod_name(ws.name),
        "subdomain": spark_service,
        # Service links would flood the R session with variables of every Service.
        "enableServiceLinks": False,
        "securityContext": {
            "fsGroup": RSTUDIO_GID,
            "fsGroupChangePolicy": "OnRootMismatch",
            **pod_security_context(),
        },
        # Leave a failed node sooner than Kubernetes' default 300 s.
        "tolerations": [
            {
                "key": taint,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": settings.node_failure_toleration_seconds,
            }
            for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
        ],
        "containers": [_rstudio_container(ws, settings)],
        "volumes": [
            {
                "name": HOME_VOLUME,
                "persistentVolumeClaim": {"claimName": names.home_claim_name(ws.name)},
            },
            {
                "name": SPARK_CONF_VOLUME,
                "configMap": {"name": names.spark_config_map_name(ws.name)},
            },
        ],
    }
    spec["volumes"].append(ide_token_volume())
    if ws.spec.snapshot.enabled:
        spec["initContainers"] = [_agent_container(ws, settings)]
        spec["volumes"] += [agent_token_volume(ws), agent_tmp_volume()]
    pod = child(ws, "v1", "Pod", names.pod_name(ws.name), extra_labels=rstudio_pod_selector(ws))
    pod["spec"] = spec
    pod["metadata"]["annotations"] = {names.POD_SPEC_HASH_ANNOTATION: pod_spec_hash(pod)}
    return pod


def pod_spec_hash(pod: Manifest) -> str:
    """A stable digest of the pod's spec: equal specs, equal hashes, whatever the key order.

    The operator compares the running pod's annotation with the desired one to
    decide whether the pod must be replaced (status.pendingRestart meanwhile).
    """
    canonical = json.dumps(pod["spec"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
