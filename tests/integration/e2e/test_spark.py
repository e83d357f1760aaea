"""Spark on Kubernetes from a JupyterLab workspace on the real nodes, driven from R
through reticulate and pyspark; and the workspace's NetworkPolicy, enforced by
kube-router, around the driver and the IDE."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from kubernetes import client

from devtools.network import REAL_NODES
from rspark_operator import names
from rspark_operator.builders.spark import DRIVER_PORT
from rspark_operator.ide import IDES
from tests.integration.e2e.spark_session import RSparkSession
from tests.integration.e2e.test_jupyterlab import ide_exec
from tests.support.kube import wait_until

# A connection kube-router's policy drops gets no answer: give up after this.
CONNECT_TIMEOUT_SECONDS = 5
PROBE = (
    "import socket, sys\n"
    "s = socket.socket()\n"
    f"s.settimeout({CONNECT_TIMEOUT_SECONDS})\n"
    "try:\n"
    "    s.connect((sys.argv[1], int(sys.argv[2])))\n"
    "    print('open')\n"
    "except OSError as error:\n"
    "    print('closed', error)\n"
)


def executor_pods(core: client.CoreV1Api, namespace: str, workspace: str) -> list[Any]:
    selector = (
        f"{names.WORKSPACE_LABEL}={workspace},"
        f"{names.COMPONENT_LABEL}={names.SPARK_EXECUTOR_COMPONENT}"
    )
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def reaches(namespace: str, pod: str, address: str, port: int) -> bool:
    """Whether `pod`'s IDE container opens a TCP connection to address:port."""
    answer = ide_exec(namespace, pod, "python3", "-c", PROBE, address, str(port)).strip()
    return answer == "open"


def test_spark_from_r_runs_executors_on_the_real_nodes_behind_the_network_policy(
    kube: client.ApiClient,
    workspace_namespace: str,
    real_workspaces: Callable[..., dict[str, Any]],
) -> None:
    """Client mode from R (reticulate + pyspark) with the operator's spark-defaults only:
    executors are pods on the real nodes, owned by the workspace pod, that call the
    driver back through its headless Service; they are gone after. Meanwhile another
    workspace's pod cannot open the driver's port nor the IDE's; the ingress
    controller's address (the host's bridge address, where Traefik sends from) can."""
    ns = workspace_namespace
    core = client.CoreV1Api(kube)
    real_workspaces("alice")
    real_workspaces("bob")
    alice = core.read_namespaced_pod(names.pod_name("alice"), ns)
    driver_service = core.read_namespaced_service(names.spark_driver_service_name("alice"), ns)
    assert driver_service.spec.cluster_ip == "None"

    with RSparkSession(ns, alice.metadata.name, "policy") as report:
        assert report["master"].startswith("k8s://")

        executors = [p for p in executor_pods(core, ns, "alice") if p.status.phase == "Running"]
        assert executors, "no running executor while the session holds them"
        for executor in executors:
            assert executor.spec.node_name in {n.name for n in REAL_NODES}
            owner = executor.metadata.owner_references[0]
            assert (owner.kind, owner.name, owner.uid) == (
                "Pod",
                alice.metadata.name,
                alice.metadata.uid,
            )

        bob = names.pod_name("bob")
        ide_port = IDES["jupyterlab"].port
        assert not reaches(ns, bob, alice.status.pod_ip, DRIVER_PORT)
        assert not reaches(ns, bob, alice.status.pod_ip, ide_port)
        with socket.create_connection((alice.status.pod_ip, ide_port), timeout=10):
            pass  # from this machine's bridge address, as Traefik connects
    wait_until("the executors gone", lambda: not executor_pods(core, ns, "alice"), timeout=120)
