"""The optional monitoring overlay (manifests/overlays/monitoring), rendered with the
pinned kubectl: no cluster needed. Its alerts and dashboard query only metrics the
operator and the agent export, and its PodMonitors select the pods they are for."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from devtools.install import OVERLAYS, build
from devtools.localcluster import BIN
from devtools.reference import (
    SAMPLE_SETTINGS,
    exposed_names,
    label_names,
    registries,
    sample_workspace,
)
from rspark_operator import builders
from rspark_operator.api import Phase
from rspark_operator.builders.spark import spark_properties
from rspark_operator.settings import OperatorSettings

Manifest = dict[str, Any]
RULES_TEST = Path(__file__).with_name("monitoring_rules_test.yaml")
EXECUTOR_LABEL = "spark.kubernetes.executor.label."
# Label lists of PromQL (`by (...)`, `on (...)`, ...) and matchers (`{...}`) name
# labels, not metrics; strings are label values.
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
_STRINGS = re.compile(r'"[^"]*"')
_SELECTOR = re.compile(r"\b(rspark_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_PHASE_MATCHER = re.compile(r'phase\s*=~\s*"([^"]*)"')


@pytest.fixture(scope="module")
def objects() -> list[Manifest]:
    return build(OVERLAYS / "monitoring")


def one(objects: list[Manifest], kind: str, name_prefix: str) -> Manifest:
    (found,) = [
        o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name_prefix)
    ]
    return found


def pod_monitor(objects: list[Manifest], name: str) -> Manifest:
    return one(objects, "PodMonitor", name)


def operator_container(objects: list[Manifest]) -> Manifest:
    deployment = one(objects, "Deployment", "rspark-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def ports(containers: list[Manifest]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}


def dashboard_queries(objects: list[Manifest]) -> list[str]:
    dashboard = json.loads(one(objects, "ConfigMap", "rspark-dashboard")["data"]["rspark.json"])
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def expressions(objects: list[Manifest]) -> list[str]:
    """Every PromQL expression of the rules and of the dashboard's panels."""
    rule = one(objects, "PrometheusRule", "rspark")
    exprs = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    return exprs + dashboard_queries(objects)


def exported() -> dict[str, list[str]]:
    """Each name Prometheus scrapes from the operator or an agent, with its labels."""
    found = {}
    for metrics in registries().values():
        for family in metrics.registry.collect():
            for name in exposed_names(family):
                found[name] = label_names(metrics, family.name)
    return found


def metric_names(expr: str) -> set[str]:
    bare = _STRINGS.sub("", _MATCHERS.sub("", _LABEL_LISTS.sub("", expr)))
    return set(re.findall(r"\brspark_[a-z0-9_]+\b", bare))


def test_the_operator_serves_metrics_on_its_named_port(objects: list[Manifest]) -> None:
    data = one(objects, "ConfigMap", "rspark-operator-settings")["data"]
    settings = OperatorSettings(
        metrics_address=data["RSPARK_METRICS_ADDRESS"],
        metrics_namespace=data["RSPARK_METRICS_NAMESPACE"],
    )
    container = operator_container(objects)
    assert (
        container["envFrom"][0]["configMapRef"]["name"]
        == (one(objects, "ConfigMap", "rspark-operator-settings")["metadata"]["name"])
    )
    assert ports([container])["metrics"] == int(settings.metrics_address.rpartition(":")[2])
    # Prometheus' namespace: where the monitoring objects live, the one namespace the
    # operator's and the workspaces' NetworkPolicies let reach the metrics ports.
    policy = one(objects, "NetworkPolicy", "rspark-operator")
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": settings.metrics_namespace
    }
    assert rule["ports"] == [{"protocol": "TCP", "port": "metrics"}]
    monitoring = [o for o in objects if o["kind"] in ("PodMonitor", "PrometheusRule")]
    assert len(monitoring) == 3
    for o in monitoring:
        assert o["metadata"]["namespace"] == settings.metrics_namespace
    dashboard = one(objects, "ConfigMap", "rspark-dashboard")
    assert dashboard["metadata"]["namespace"] == settings.metrics_namespace
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_rules_and_dashboard_query_only_exported_metrics(objects: list[Manifest]) -> None:
    names = exported()
    exprs = expressions(objects)
    assert len(exprs) >= 10
    used: set[str] = set()
    for expr in exprs:
        found = metric_names(expr)
        assert found, f"no rspark metric in {expr!r}"
        assert found <= set(names), f"{sorted(found - set(names))} not exported: {expr!r}"
        used |= found
        for metric, matchers in _SELECTOR.findall(expr):
            labels = set(_MATCHER_LABEL.findall(matchers))
            assert labels <= set(names[metric]), f"{metric} has no label {labels}: {expr!r}"
        for alternatives in _PHASE_MATCHER.findall(expr):
            assert set(alternatives.split("|")) <= set(get_args(Phase)), expr
    # Every metric family appears somewhere (a histogram through one of its names).
    families = {name.removesuffix(suffix) for name in used
                for suffix in ("_bucket", "_count", "_sum", "_total", "")
                if name.endswith(suffix)}  # fmt: skip
    unused = {
        family.name
        for metrics in registries().values()
        for family in metrics.registry.collect()
        if family.name not in families
    }
    assert unused <= {
        "rspark_agent_restore_duration_seconds",
        "rspark_agent_snapshot_bytes_added",
        "rspark_agent_last_maintenance_timestamp_seconds",
    }


def promtool(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [str(BIN / "promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_prometheus_accepts_the_rules_and_they_fire_when_they_should(
    objects: list[Manifest], tmp_path: Path
) -> None:
    """promtool (Prometheus' own parser and rule engine, hack/promtool): the rules
    check clean, and on made-up series alert exactly as monitoring_rules_test.yaml says."""
    rule = one(objects, "PrometheusRule", "rspark")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    (tmp_path / "test.yaml").write_text(RULES_TEST.read_text())
    count = sum(len(group["rules"]) for group in rule["spec"]["groups"])
    checked = promtool("check", "rules", "--lint=all", "rules.yaml", cwd=tmp_path)
    assert f"SUCCESS: {count} rules found" in checked
    assert "SUCCESS" in promtool("test", "rules", "test.yaml", cwd=tmp_path)


def test_prometheus_parses_the_dashboards_queries(objects: list[Manifest], tmp_path: Path) -> None:
    """Each panel's query as a recording rule, for promtool to parse."""
    queries = dashboard_queries(objects)
    rules = [{"record": f"rspark_dashboard_query_{i}", "expr": q} for i, q in enumerate(queries)]
    (tmp_path / "queries.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    checked = promtool("check", "rules", "queries.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in checked


def test_metric_names_are_told_from_labels() -> None:
    expr = (
        "sum by (rspark_dev_workspace) (increase(rspark_agent_failures_total"
        '{reason="rspark_x"}[1h])) unless on (rspark_dev_user) rspark_agent_ready'
    )
    assert metric_names(expr) == {"rspark_agent_failures_total", "rspark_agent_ready"}
    assert metric_names("rspark_nope_total > 0") - set(exported()) == {"rspark_nope_total"}


def test_the_agents_pod_monitor_selects_workspace_pods_only(objects: list[Manifest]) -> None:
    monitor = pod_monitor(objects, "rspark-snapshot-agents")["spec"]
    assert monitor["namespaceSelector"] == {"any": True}
    selector = monitor["selector"]["matchLabels"]
    ws = sample_workspace({})
    pod = builders.build_pod(ws, SAMPLE_SETTINGS)
    assert selector.items() <= pod["metadata"]["labels"].items()
    spec = pod["spec"]
    agent_ports = ports(spec["containers"] + spec.get("initContainers", []))
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert agent_ports[endpoint["port"]] == SAMPLE_SETTINGS.agent_metrics_port
    # The target labels are labels of the pod (Prometheus writes rspark_dev_workspace).
    assert set(monitor["podTargetLabels"]) <= set(pod["metadata"]["labels"])
    executor = {
        key.removeprefix(EXECUTOR_LABEL): value
        for key, value in spark_properties(ws, SAMPLE_SETTINGS).items()
        if key.startswith(EXECUTOR_LABEL)
    }
    assert not selector.items() <= executor.items()


def test_the_operators_pod_monitor_selects_the_operator_pods(objects: list[Manifest]) -> None:
    monitor = pod_monitor(objects, "rspark-operator")["spec"]
    deployment = one(objects, "Deployment", "rspark-operator")
    assert monitor["namespaceSelector"] == {"matchNames": [deployment["metadata"]["namespace"]]}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["port"] in ports([operator_container(objects)])
