"""spark-defaults.conf for Spark in client mode, the driver being the workspace pod.

Everything a SparkProfile decides ends up here, in the Spark ConfigMap only: a
switch of profile rewrites this file (and the executor pod template next to it)
and never the pod, so the next Spark session uses it without a restart. The
operator's placement settings send the executors where the workspace pod goes:
the node selector as Spark properties, the tolerations (which Spark has no
property for) in the executor pod template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from rspark_operator import contract, names
from rspark_operator.api import Workspace
from rspark_operator.builders.metadata import Manifest, child, secret_env
from rspark_operator.ide import CONNECT_TOKEN_ENV, SPARK_REMOTE_ENV
from rspark_operator.quantity import spark_mebibytes
from rspark_operator.settings import OperatorSettings

SPARK_CONF_DIR = "/opt/spark/conf"
SPARK_DEFAULTS_FILE = "spark-defaults.conf"
EXECUTOR_POD_TEMPLATE_FILE = "executor-pod-template.yaml"
KUBERNETES_API = "k8s://https://kubernetes.default.svc"
# Without a profile nor a value of its own, a workspace has up to this many executors.
DEFAULT_MAX_EXECUTORS = 4
# Spark applications one session may run at once (a second spark_connect()): each
# takes the next free port of each range below, trying `PORT_MAX_RETRIES` more.
SPARK_APPLICATIONS = 4
PORT_MAX_RETRIES = SPARK_APPLICATIONS - 1


@dataclass(frozen=True)
class PortRange:
    """Consecutive ports of one Spark service, one per application of the session."""

    name: str
    first: int
    count: int = SPARK_APPLICATIONS

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    @property
    def ports(self) -> range:
        return range(self.first, self.last + 1)


DRIVER_PORTS = PortRange("driver", 7078)
BLOCK_MANAGER_PORTS = PortRange("blockmgr", DRIVER_PORTS.last + 1)
UI_PORTS = PortRange("ui", 4040)
SPARK_PORT_RANGES = (DRIVER_PORTS, BLOCK_MANAGER_PORTS, UI_PORTS)
DRIVER_PORT = DRIVER_PORTS.first
BLOCK_MANAGER_PORT = BLOCK_MANAGER_PORTS.first
SPARK_UI_PORT = UI_PORTS.first


@dataclass(frozen=True)
class Placement:
    """Where executor pods run: node selector, tolerations, priority class."""

    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    priority_class_name: str | None = None


def profile_placement(ws: Workspace) -> Placement:
    """The executors' placement under the workspace's SparkProfile (none without one)."""
    kubernetes = ws.profile.spec.kubernetes if ws.profile else None
    if kubernetes is None:
        return Placement(node_selector={}, tolerations=[])
    return Placement(
        node_selector=dict(kubernetes.node_selector),
        tolerations=[toleration.wire() for toleration in kubernetes.tolerations],
        priority_class_name=kubernetes.priority_class_name,
    )


def executor_placement(ws: Workspace, settings: OperatorSettings) -> Placement:
    """The one place where the executors' placement is decided: the operator's placement
    settings (where workspace pods run), then the profile's (it wins on a shared label)."""
    profile = profile_placement(ws)
    return Placement(
        node_selector={**settings.workspace_node_selector, **profile.node_selector},
        tolerations=[
            *(toleration.wire() for toleration in settings.workspace_tolerations),
            *profile.tolerations,
        ],
        priority_class_name=profile.priority_class_name,
    )


def driver_host(ws: Workspace) -> str:
    """The headless Service's DNS name; it resolves to this pod even before it is ready."""
    return f"{names.spark_driver_service_name(ws.name)}.{ws.namespace}.svc"


def spark_properties(ws: Workspace, settings: OperatorSettings) -> dict[str, str]:
    """spark-defaults.conf: the operator's wiring, the profile's, the workspace's own conf."""
    spark = ws.spec.spark
    profile = ws.profile
    if profile is not None and profile.spec.connect is not None:
        # One Spark Connect server is the driver: nothing of client mode applies.
        return {"spark.remote": profile.spec.connect.endpoint, **s3a_properties(ws), **spark.conf}
    kubernetes = profile.spec.kubernetes if profile else None
    executor_image = (
        spark.executor_image
        or (kubernetes.executor_image if kubernetes else None)
        or settings.spark_executor_image
    )
    properties = {
        "spark.master": KUBERNETES_API,
        "spark.submit.deployMode": "client",
        "spark.driver.host": driver_host(ws),
        "spark.driver.port": str(DRIVER_PORTS.first),
        "spark.driver.bindAddress": "0.0.0.0",
        "spark.blockManager.port": str(BLOCK_MANAGER_PORTS.first),
        "spark.ui.port": str(UI_PORTS.first),
        "spark.port.maxRetries": str(PORT_MAX_RETRIES),
        "spark.kubernetes.namespace": ws.namespace,
        "spark.kubernetes.authenticate.driver.serviceAccountName": names.service_account_name(
            ws.name
        ),
        # Executors hold no rights and no token (builders/identity.py).
        "spark.kubernetes.authenticate.executor.serviceAccountName": (
            names.executor_service_account_name(ws.name)
        ),
        # Executors get an owner reference to the driver pod and die with it.
        "spark.kubernetes.driver.pod.name": names.pod_name(ws.name),
        "spark.kubernetes.container.image": executor_image,
        "spark.kubernetes.executor.podNamePrefix": names.executor_pod_name_prefix(ws.name),
        f"spark.kubernetes.executor.label.{names.WORKSPACE_LABEL}": ws.name,
        f"spark.kubernetes.executor.label.{names.COMPONENT_LABEL}": (
            names.SPARK_EXECUTOR_COMPONENT
        ),
        # Spark generates a secret per application and hands it to its executors: a pod
        # that merely carries an executor's labels cannot talk to the driver.
        "spark.authenticate": "true",
        # At its stop Spark deletes every Service and claim labelled with its application
        # (its driver Service and on-demand claims in cluster mode). Client mode makes
        # neither, and the IDE's Role grants no delete on either (the home claim, the
        # workspace's Services): off, rather than a refused request at every stop.
        "spark.kubernetes.driver.service.deleteOnTermination": "false",
        "spark.kubernetes.driver.ownPersistentVolumeClaim": "false",
        **_executor_sizes(ws),
        **_placement_properties(executor_placement(ws, settings)),
        **s3a_properties(ws),
    }
    if spark.driver_memory is not None:
        properties["spark.driver.memory"] = spark_mebibytes(spark.driver_memory)
    if kubernetes is not None:
        if kubernetes.scheduler_name:
            properties["spark.kubernetes.scheduler.name"] = kubernetes.scheduler_name
        for label, value in kubernetes.queue_labels.items():
            properties[f"spark.kubernetes.executor.label.{label}"] = value
        # The workspace's own conf wins over the profile's (limit_problems refuses a
        # workspace conf that sets what the profile governs).
        return {**properties, **kubernetes.conf, **spark.conf}
    return {**properties, **spark.conf}


def s3a_properties(ws: Workspace) -> dict[str, str]:
    """s3a:// (spec.spark.s3): where the server is. The credentials are not here: Spark
    copies the driver's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (`spark_env`) into
    the Hadoop configuration it ships with each job (fs.s3a.access.key, secret.key), so
    executors read s3a:// without a Secret of their own."""
    s3 = ws.spec.spark.s3
    if s3 is None:
        return {}
    path_style = s3.path_style_access if s3.path_style_access is not None else bool(s3.endpoint)
    properties = {"spark.hadoop.fs.s3a.path.style.access": str(path_style).lower()}
    if s3.endpoint is not None:
        properties["spark.hadoop.fs.s3a.endpoint"] = s3.endpoint
        properties["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(
            s3.endpoint.startswith("https://")
        ).lower()
    return properties


def spark_env(ws: Workspace) -> list[dict[str, Any]]:
    """The IDE container's Spark variables; a secret one comes from one key of a Secret,
    which the kubelet reads (the workspace's identities get no right on Secrets).

    A `connect` profile: every PySpark session connects to its endpoint (SPARK_REMOTE),
    with its token (SPARK_CONNECT_AUTHENTICATE_TOKEN, read by Spark 4 clients).
    spec.spark.s3: the S3 credentials, for the driver and, through it, the executors.
    """
    env: list[dict[str, Any]] = []
    connect = ws.profile.spec.connect if ws.profile else None
    if connect is not None:
        env.append({"name": SPARK_REMOTE_ENV, "value": connect.endpoint})
        if connect.token_secret is not None:
            token = connect.token_secret
            env.append(secret_env(CONNECT_TOKEN_ENV, token.name, token.key))
    s3 = ws.spec.spark.s3
    if s3 is not None and s3.credentials_secret is not None:
        secret = s3.credentials_secret
        env += [secret_env(key, secret, key) for key in contract.S3_CREDENTIAL_KEYS]
    return env


def _executor_sizes(ws: Workspace) -> dict[str, str]:
    """Executors and their size: the workspace's values, else the profile's defaults."""
    spark = ws.spec.spark
    kubernetes = ws.profile.spec.kubernetes if ws.profile else None
    executors = spark.max_executors or (kubernetes and kubernetes.executors.default)
    cores = spark.executor_cores or (kubernetes and kubernetes.executor_cores.default)
    memory = spark.executor_memory or (kubernetes and kubernetes.executor_memory.default)
    allocation = kubernetes.dynamic_allocation if kubernetes else None
    count = str(executors or DEFAULT_MAX_EXECUTORS)
    if allocation is None or allocation.enabled:
        sizes = {
            "spark.dynamicAllocation.enabled": "true",
            # No external shuffle service on Kubernetes: track shuffle files instead.
            "spark.dynamicAllocation.shuffleTracking.enabled": str(
                allocation is None or allocation.shuffle_tracking
            ).lower(),
            "spark.dynamicAllocation.maxExecutors": count,
        }
    else:
        sizes = {"spark.dynamicAllocation.enabled": "false", "spark.executor.instances": count}
    if cores:
        sizes["spark.executor.cores"] = str(cores)
        if kubernetes is not None:
            # The executor pods request and are limited to what the profile bounds.
            sizes["spark.kubernetes.executor.request.cores"] = str(cores)
            sizes["spark.kubernetes.executor.limit.cores"] = str(cores)
    if memory:
        sizes["spark.executor.memory"] = spark_mebibytes(memory)
    return sizes


def _placement_properties(placement: Placement) -> dict[str, str]:
    properties = {
        f"spark.kubernetes.node.selector.{label}": value
        for label, value in placement.node_selector.items()
    }
    if executor_pod_template(placement) is not None:
        properties["spark.kubernetes.executor.podTemplateFile"] = (
            f"{SPARK_CONF_DIR}/{EXECUTOR_POD_TEMPLATE_FILE}"
        )
    return properties


def executor_pod_template(placement: Placement) -> dict[str, Any] | None:
    """What Spark's conf cannot say (tolerations, priority class), as a pod template."""
    spec: dict[str, Any] = {}
    if placement.tolerations:
        spec["tolerations"] = placement.tolerations
    if placement.priority_class_name:
        spec["priorityClassName"] = placement.priority_class_name
    return {"apiVersion": "v1", "kind": "Pod", "spec": spec} if spec else None


def render_spark_defaults(properties: dict[str, str]) -> str:
    return "".join(f"{key} {value}\n" for key, value in sorted(properties.items()))


def build_spark_config_map(ws: Workspace, settings: OperatorSettings) -> Manifest:
    """Mounted at SPARK_CONF_DIR in the IDE container."""
    config_map = child(ws, "v1", "ConfigMap", names.spark_config_map_name(ws.name))
    data = {SPARK_DEFAULTS_FILE: render_spark_defaults(spark_properties(ws, settings))}
    template = executor_pod_template(executor_placement(ws, settings))
    if template is not None:
        data[EXECUTOR_POD_TEMPLATE_FILE] = yaml.safe_dump(template, sort_keys=True)
    config_map["data"] = data
    return config_map
