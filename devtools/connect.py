"""Spark's Connect server in the local cluster, for its `connect` SparkProfile.

The image spark-connect (images/spark-connect: Spark 4.0.1's SparkConnectServer on the
Debian executor image's Java 17) runs as a Deployment on the real nodes, its driver
inside the pod (local[2]), behind the Service ENDPOINT. It asks for no token: a PySpark
client sends its token only over TLS or to localhost, and the server speaks no TLS (a
token across the cluster needs a TLS proxy in front of it). The manifests are pure
(`connect_manifests`); `deploy_connect_server` applies them and waits until the server
listens.
"""

from __future__ import annotations

from typing import Any

import yaml

from devtools.localcluster import kubectl
from devtools.network import REAL_NODE_LABEL, REAL_NODE_VALUE

NAMESPACE = "spark-connect"
NAME = "spark-connect"
PORT = 15002  # Spark Connect's default
ENDPOINT = f"sc://{NAME}.{NAMESPACE}.svc:{PORT}"
LABELS = {"app.kubernetes.io/name": NAME}
POD_IP = "status.podIP"
START_SECONDS = 600  # a first pull of the image onto a node, then the JVM


def connect_manifests(image: str) -> list[dict[str, Any]]:
    """The namespace, the server's Deployment (on a real node) and its Service."""
    container = {
        "name": "server",
        "image": image,
        "args": [
            "--master",
            "local[2]",
            "--driver-memory",
            "768m",
            "--conf",
            f"spark.connect.grpc.binding.port={PORT}",
            "--conf",
            "spark.ui.enabled=false",
        ],
        "env": [
            {"name": "SPARK_LOCAL_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
        ],
        "ports": [{"name": "grpc", "containerPort": PORT}],
        "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 185,
            "runAsGroup": 185,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": {REAL_NODE_LABEL: REAL_NODE_VALUE},
        "tolerations": [
            {
                "key": REAL_NODE_LABEL,
                "operator": "Equal",
                "value": REAL_NODE_VALUE,
                "effect": "NoSchedule",
            },
        ],
        "containers": [container],
    }
    metadata = {"name": NAME, "namespace": NAMESPACE, "labels": LABELS}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": LABELS},
                "template": {"metadata": {"labels": LABELS}, "spec": pod_spec},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {"selector": LABELS, "ports": [{"name": "grpc", "port": PORT}]},
        },
    ]


def deploy_connect_server(image: str) -> str:
    """Apply the manifests; wait until the server listens. Its endpoint."""
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(connect_manifests(image)))
    kubectl(
        "rollout",
        "status",
        f"deployment/{NAME}",
        "-n",
        NAMESPACE,
        f"--timeout={START_SECONDS}s",
        timeout=START_SECONDS + 60,
    )
    return ENDPOINT


def remove_connect_server() -> None:
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
