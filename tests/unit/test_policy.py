"""The workspace NetworkPolicy selects what the other builders label."""

from __future__ import annotations

from typing import Any

import pytest

from rspark_operator.builders import build_pod
from rspark_operator.builders.policy import build_network_policy
from rspark_operator.builders.spark import spark_properties
from tests.unit.workspaces import settings, workspace

pytestmark = pytest.mark.unit

EXECUTOR_LABEL_PREFIX = "spark.kubernetes.executor.label."


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def rule_for(policy: dict[str, Any], port: int) -> dict[str, Any]:
    rules: list[dict[str, Any]] = policy["spec"]["ingress"]
    (rule,) = [r for r in rules if any(allows(p, port) for p in r["ports"])]
    return rule


def allows(policy_port: dict[str, Any], port: int) -> bool:
    first: int = policy_port["port"]
    last: int = policy_port.get("endPort", first)
    return policy_port["protocol"] == "TCP" and first <= port <= last


def test_selects_the_workspace_pod_and_denies_other_ingress() -> None:
    ws = workspace()
    policy = build_network_policy(ws, settings())
    pod = build_pod(ws, settings())
    assert matches(policy["spec"]["podSelector"], pod["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    owner = policy["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("RStudioWorkspace", ws.uid)


def test_rstudio_only_from_the_ingress_controller_namespace() -> None:
    policy = build_network_policy(
        workspace(), settings(ingress_controller_namespace="nginx-system")
    )
    rule = rule_for(policy, 8787)
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nginx-system"}}}
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8787}]


def test_rstudio_also_from_the_ingress_controller_cidrs() -> None:
    """An ingress controller outside the pods (Traefik on the host) sends from its CIDRs."""
    cidrs = settings(ingress_controller_cidrs=["10.200.0.1/32", "fd00:1::/64"])
    policy = build_network_policy(workspace(), cidrs)
    rule = rule_for(policy, 8787)
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
        {"ipBlock": {"cidr": "10.200.0.1/32"}},
        {"ipBlock": {"cidr": "fd00:1::/64"}},
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8787}]
    # Only the IDE: the Spark ports stay the executors'.
    assert all("ipBlock" not in peer for peer in rule_for(policy, 7078)["from"])


def test_spark_ports_only_from_executors_of_the_same_workspace() -> None:
    ws = workspace(name="demo")
    rule = rule_for(build_network_policy(ws, settings()), 7078)
    assert [(p["port"], p["endPort"]) for p in rule["ports"]] == [(7078, 7081), (7082, 7085)]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # this namespace only
    executor_labels = {
        key.removeprefix(EXECUTOR_LABEL_PREFIX): value
        for key, value in spark_properties(ws, settings()).items()
        if key.startswith(EXECUTOR_LABEL_PREFIX)
    }
    assert matches(peer["podSelector"], executor_labels)
    other = {**executor_labels, "rspark.dev/workspace": "other"}
    assert not matches(peer["podSelector"], other)
    pod = build_pod(ws, settings())
    assert not matches(peer["podSelector"], pod["metadata"]["labels"])


def test_agent_metrics_open_only_when_a_metrics_namespace_is_given() -> None:
    closed = build_network_policy(workspace(), settings())
    assert all(9090 not in [p["port"] for p in r["ports"]] for r in closed["spec"]["ingress"])
    opened = build_network_policy(workspace(), settings(metrics_namespace="monitoring"))
    assert rule_for(opened, 9090)["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
