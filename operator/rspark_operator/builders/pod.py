"""The workspace pod: the IDE (the Spark driver) and the snapshot agent sidecar."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from rspark_operator import contract, gateway, names
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
from rspark_operator.builders.metadata import (
    Manifest,
    child,
    secret_env,
    workspace_pod_selector,
)
from rspark_operator.builders.signin import (
    signin_container,
    signin_enabled,
    signin_log_mount,
    signin_volumes,
    spark_ui_url,
)
from rspark_operator.builders.spark import (
    BLOCK_MANAGER_PORT,
    DRIVER_PORT,
    SPARK_CONF_DIR,
    SPARK_UI_PORT,
    spark_env,
)
from rspark_operator.builders.url import ingress_path
from rspark_operator.ide import (
    HEALTHCHECK_COMMAND,
    IDES,
    PASSWORD_ENV,
    PRESTOP_COMMAND,
    ROOT_PATH_ENV,
    SPARK_CONF_DIR_ENV,
    SPARK_UI_URL_ENV,
    USER_ENV,
)
from rspark_operator.settings import OperatorSettings

HOME = "/home/rstudio"
IDE_USER = "rstudio"
# Both IDE images run the IDE as uid/gid 1000 (rocker's rstudio); the home volume must be theirs.
IDE_GID = 1000
IDE_CONTAINER = "ide"
HOME_VOLUME = "home"
SPARK_CONF_VOLUME = "spark-conf"
IDE_RUNTIME_VOLUME = "ide-runtime"
RESTIC_PASSWORD_KEY = "restic-password"
# The key keeps RStudio's name: the Secret outlives workspaces, whatever their IDE.
IDE_PASSWORD_KEY = "rstudio-password"
# A restore may take long on a big home: allow an hour before the kubelet gives up.
AGENT_STARTUP_PERIOD_SECONDS = 5
AGENT_STARTUP_FAILURE_THRESHOLD = 720


def through_gateway(ws: Workspace, settings: OperatorSettings) -> bool:
    """The agent reaches the platform's bucket through the snapshot gateway (a repository
    of the workspace's own choice, `spec.snapshot.repository`, is reached directly)."""
    return settings.snapshot_mode == "gateway" and not ws.spec.snapshot.repository


def snapshot_repository(ws: Workspace, settings: OperatorSettings) -> str | None:
    """The restic repository of the workspace; None when nothing configures one."""
    if ws.spec.snapshot.repository:
        return ws.spec.snapshot.repository
    if through_gateway(ws, settings):
        assert settings.snapshot_gateway_url is not None  # settings require it
        return gateway.repository(
            settings.snapshot_gateway_url, gateway.gateway_user(ws.namespace, ws.name)
        )
    if settings.snapshot_repository_base:
        return f"{settings.snapshot_repository_base}/{ws.namespace}/{ws.name}"
    return None


def snapshot_credentials_secret(ws: Workspace, settings: OperatorSettings) -> str:
    """The Secret holding the repository's credentials, in the workspace's namespace: its
    own gateway credential, or S3 keys."""
    if through_gateway(ws, settings):
        return names.gateway_credential_secret_name(ws.name)
    return ws.spec.snapshot.credentials_secret or settings.snapshot_credentials_secret


def _repository_credentials(ws: Workspace, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Through the gateway, the workspace's own user and password; else the S3 keys."""
    secret = snapshot_credentials_secret(ws, settings)
    if through_gateway(ws, settings):
        return [
            {"name": gateway.REST_USERNAME, "value": gateway.gateway_user(ws.namespace, ws.name)},
            secret_env(gateway.REST_PASSWORD, secret, gateway.CREDENTIAL_KEY),
        ]
    return [secret_env(key, secret, key) for key in contract.S3_CREDENTIAL_KEYS]


def agent_env(ws: Workspace, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The contract with `rspark-agent run`: its whole configuration."""
    snapshot = ws.spec.snapshot
    repository = snapshot_repository(ws, settings)
    if repository is None:
        raise ValueError("no snapshot repository: validate the workspace before building it")
    env: list[dict[str, Any]] = [
        {"name": contract.RESTIC_REPOSITORY, "value": repository},
        secret_env(
            contract.RESTIC_PASSWORD, names.passwords_secret_name(ws.name), RESTIC_PASSWORD_KEY
        ),
        *_repository_credentials(ws, settings),
        {"name": contract.WORKSPACE, "value": f"{ws.namespace}/{ws.name}"},
        {"name": contract.SNAPSHOT_HOST, "value": names.snapshot_host(ws.namespace, ws.name)},
        {"name": contract.SNAPSHOT_INTERVAL, "value": snapshot.interval},
        {"name": contract.SNAPSHOT_EXCLUDE, "value": json.dumps(snapshot.exclude)},
        {"name": contract.SECRET_PATHS, "value": json.dumps(ws.spec.secret_paths)},
        {"name": contract.METRICS_PORT, "value": str(settings.agent_metrics_port)},
        {"name": contract.IDLE_QUIET, "value": settings.idle_quiet},
    ]
    if not through_gateway(ws, settings):
        # Through the gateway, which refuses deletes, retention runs at the platform.
        env.append({"name": contract.RETENTION, "value": json.dumps(snapshot.retention.wire())})
    if snapshot.restore_from:
        env.append({"name": contract.RESTORE_FROM, "value": snapshot.restore_from})
    return env


def _home_mount() -> dict[str, Any]:
    return {"name": HOME_VOLUME, "mountPath": HOME}


def _agent_container(ws: Workspace, settings: OperatorSettings) -> dict[str, Any]:
    return {
        "name": "snapshot-agent",
        "image": settings.agent_image,
        # Native sidecar: starts before the IDE, stops after it (last snapshot).
        "restartPolicy": "Always",
        "command": ["rspark-agent", "run", "--home", HOME],
        "env": agent_env(ws, settings),
        "ports": [{"name": "metrics", "containerPort": settings.agent_metrics_port}],
        # The IDE starts only once this passes: after the home is restored.
        "startupProbe": {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": AGENT_STARTUP_PERIOD_SECONDS,
            "failureThreshold": AGENT_STARTUP_FAILURE_THRESHOLD,
        },
        "resources": AGENT_RESOURCES,
        "securityContext": agent_security_context(),
        "volumeMounts": [
            _home_mount(),
            token_mount(AGENT_TOKEN_VOLUME),
            agent_tmp_mount(),
            # What the IDE says about its own activity (agent/activity.py).
            {"name": IDE_RUNTIME_VOLUME, "mountPath": contract.IDE_RUNTIME_DIR, "readOnly": True},
            # And the sign-in proxy, about its people's requests.
            *([signin_log_mount(read_only=True)] if signin_enabled(settings) else []),
        ],
    }


def ide_env(ws: Workspace, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The user's variables, then the ones the operator manages (ide.OPERATOR_MANAGED_ENV)."""
    env = [
        *(var.wire() for var in ws.spec.env),
        {"name": USER_ENV, "value": IDE_USER},
        {"name": SPARK_CONF_DIR_ENV, "value": SPARK_CONF_DIR},
        *spark_env(ws),
    ]
    ide = IDES[ws.spec.ide]
    if signin_enabled(settings):
        # Behind the sign-in proxy: on 127.0.0.1 only, its own login off.
        proxied = ide.proxied_env(ide.proxied_port)
        env += [{"name": name, "value": value} for name, value in proxied.items()]
    else:
        # The login password; authentication stays on (its switches are refused).
        env.append(secret_env(PASSWORD_ENV, names.passwords_secret_name(ws.name), IDE_PASSWORD_KEY))
    prefix = ingress_path(ws, settings)
    if prefix != "/":
        env.append({"name": ROOT_PATH_ENV, "value": prefix})
    ui = spark_ui_url(ws, settings)
    if ui is not None:
        env.append({"name": SPARK_UI_URL_ENV, "value": ui})
    return env


def _ide_readiness(ws: Workspace, settings: OperatorSettings) -> dict[str, Any]:
    """GET on the IDE's port; behind the sign-in proxy, which the kubelet must not pass,
    the image's own health check on 127.0.0.1."""
    if signin_enabled(settings):
        return {"exec": {"command": list(HEALTHCHECK_COMMAND)}, "periodSeconds": 5}
    path = IDES[ws.spec.ide].readiness_probe_path(ingress_path(ws, settings))
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": 5}


def _ide_container(ws: Workspace, settings: OperatorSettings) -> dict[str, Any]:
    spec, ide = ws.spec, IDES[ws.spec.ide]
    # Behind the sign-in proxy, the proxy's container has the IDE's port.
    http = [] if signin_enabled(settings) else [{"name": "http", "containerPort": ide.port}]
    return {
        "name": IDE_CONTAINER,
        "image": spec.image or ide.default_image(settings),
        "ports": [
            *http,
            {"name": "spark-driver", "containerPort": DRIVER_PORT},
            {"name": "spark-blockmgr", "containerPort": BLOCK_MANAGER_PORT},
            {"name": "spark-ui", "containerPort": SPARK_UI_PORT},
        ],
        "env": ide_env(ws, settings),
        "resources": spec.resources.with_defaults(),
        "readinessProbe": _ide_readiness(ws, settings),
        "lifecycle": {"preStop": {"exec": {"command": list(PRESTOP_COMMAND)}}},
        "securityContext": ide_security_context(),
        "volumeMounts": [
            _home_mount(),
            {"name": SPARK_CONF_VOLUME, "mountPath": SPARK_CONF_DIR, "readOnly": True},
            token_mount(IDE_TOKEN_VOLUME),
            {"name": IDE_RUNTIME_VOLUME, "mountPath": contract.IDE_RUNTIME_DIR},
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
            "fsGroup": IDE_GID,
            "fsGroupChangePolicy": "OnRootMismatch",
            **pod_security_context(),
        },
        "tolerations": [
            # Leave a failed node sooner than Kubernetes' default 300 s.
            *(
                {
                    "key": taint,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": settings.node_failure_toleration_seconds,
                }
                for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
            ),
            *(toleration.wire() for toleration in settings.workspace_tolerations),
        ],
        "containers": [_ide_container(ws, settings)],
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
    if settings.workspace_node_selector:
        spec["nodeSelector"] = dict(settings.workspace_node_selector)
    spec["volumes"] += [
        ide_token_volume(),
        {"name": IDE_RUNTIME_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    if signin_enabled(settings):
        spec["containers"].append(signin_container(ws, settings))
        spec["volumes"] += signin_volumes(ws, settings)
    if ws.spec.snapshot.enabled:
        spec["initContainers"] = [_agent_container(ws, settings)]
        spec["volumes"] += [agent_token_volume(ws), agent_tmp_volume()]
    pod = child(ws, "v1", "Pod", names.pod_name(ws.name), extra_labels=workspace_pod_selector(ws))
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
