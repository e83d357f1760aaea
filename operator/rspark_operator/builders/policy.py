"""The workspace pod's NetworkPolicy: who may reach the IDE, Spark's driver and the agent.

A NetworkPolicy is namespaced and "the executors of the same workspace" is a
per-workspace selector, so it is a child of each workspace rather than one
install-time manifest. Selecting the pod denies every other ingress to it.
"""

from __future__ import annotations

from typing import Any

from rspark_operator import names
from rspark_operator.api import Workspace
from rspark_operator.builders.metadata import Manifest, child, workspace_pod_selector
from rspark_operator.builders.spark import BLOCK_MANAGER_PORTS, DRIVER_PORTS, PortRange
from rspark_operator.ide import IDES
from rspark_operator.settings import OperatorSettings

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _tcp_range(ports: PortRange) -> dict[str, Any]:
    return {"protocol": "TCP", "port": ports.first, "endPort": ports.last}


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def build_network_policy(ws: Workspace, settings: OperatorSettings) -> Manifest:
    """The IDE (its port) from the ingress controller only (its namespace, and the CIDRs it
    sends from when it is not a pod: `ingress_controller_cidrs`); the Spark driver and
    block manager from this workspace's executors only (the UI, 4040, from nowhere: users
    reach it with kubectl port-forward); the agent's metrics from `metrics_namespace`
    when one is given (Prometheus), else from nowhere."""
    executors = {
        "podSelector": {
            "matchLabels": {
                names.WORKSPACE_LABEL: ws.name,
                names.COMPONENT_LABEL: names.SPARK_EXECUTOR_COMPONENT,
            }
        }
    }
    rules: list[dict[str, Any]] = [
        {
            "from": [
                _namespace(settings.ingress_controller_namespace),
                *({"ipBlock": {"cidr": str(cidr)}} for cidr in settings.ingress_controller_cidrs),
            ],
            "ports": _tcp(IDES[ws.spec.ide].port),
        },
        {"from": [executors], "ports": [_tcp_range(DRIVER_PORTS), _tcp_range(BLOCK_MANAGER_PORTS)]},
    ]
    if settings.metrics_namespace:
        metrics = _tcp(settings.agent_metrics_port)
        rules.append({"from": [_namespace(settings.metrics_namespace)], "ports": metrics})
    policy = child(ws, "networking.k8s.io/v1", "NetworkPolicy", names.network_policy_name(ws.name))
    policy["spec"] = {
        "podSelector": {"matchLabels": workspace_pod_selector(ws)},
        "policyTypes": ["Ingress"],
        "ingress": rules,
    }
    return policy
