"""spark-defaults.conf for Spark in client mode, the driver being the RStudio pod."""

from __future__ import annotations

import math

from rspark_operator import names
from rspark_operator.api import Workspace
from rspark_operator.builders.metadata import Manifest, child
from rspark_operator.quantity import parse_quantity
from rspark_operator.settings import OperatorSettings

SPARK_CONF_DIR = "/opt/spark/conf"
SPARK_DEFAULTS_FILE = "spark-defaults.conf"
DRIVER_PORT = 7078
BLOCK_MANAGER_PORT = 7079
SPARK_UI_PORT = 4040
KUBERNETES_API = "k8s://https://kubernetes.default.svc"
MEBIBYTE = 2**20


def driver_host(ws: Workspace) -> str:
    """The headless Service's DNS name; it resolves to this pod even before it is ready."""
    return f"{names.spark_driver_service_name(ws.name)}.{ws.namespace}.svc"


def spark_properties(ws: Workspace, settings: OperatorSettings) -> dict[str, str]:
    spark = ws.spec.spark
    properties = {
        "spark.master": KUBERNETES_API,
        "spark.submit.deployMode": "client",
        "spark.driver.host": driver_host(ws),
        "spark.driver.port": str(DRIVER_PORT),
        "spark.driver.bindAddress": "0.0.0.0",
        "spark.blockManager.port": str(BLOCK_MANAGER_PORT),
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
        "spark.kubernetes.container.image": spark.executor_image or settings.spark_executor_image,
        "spark.kubernetes.executor.podNamePrefix": names.executor_pod_name_prefix(ws.name),
        f"spark.kubernetes.executor.label.{names.WORKSPACE_LABEL}": ws.name,
        f"spark.kubernetes.executor.label.{names.COMPONENT_LABEL}": (
            names.SPARK_EXECUTOR_COMPONENT
        ),
        "spark.dynamicAllocation.enabled": "true",
        # No external shuffle service on Kubernetes: track shuffle files instead.
        "spark.dynamicAllocation.shuffleTracking.enabled": "true",
        "spark.dynamicAllocation.maxExecutors": str(spark.max_executors),
        # Spark generates a secret per application and hands it to its executors: a pod
        # that merely carries an executor's labels cannot talk to the driver.
        "spark.authenticate": "true",
    }
    if spark.executor_cores is not None:
        properties["spark.executor.cores"] = str(spark.executor_cores)
    if spark.executor_memory is not None:
        properties["spark.executor.memory"] = spark_memory(spark.executor_memory)
    return {**properties, **spark.conf}


def spark_memory(quantity: str) -> str:
    """Spark reads "2048m" (mebibytes), not "2Gi"; round up to whole mebibytes."""
    return f"{math.ceil(parse_quantity(quantity) / MEBIBYTE)}m"


def render_spark_defaults(properties: dict[str, str]) -> str:
    return "".join(f"{key} {value}\n" for key, value in sorted(properties.items()))


def build_spark_config_map(ws: Workspace, settings: OperatorSettings) -> Manifest:
    config_map = child(ws, "v1", "ConfigMap", names.spark_config_map_name(ws.name))
    config_map["data"] = {
        SPARK_DEFAULTS_FILE: render_spark_defaults(spark_properties(ws, settings))
    }
    return config_map
