"""Operator settings: defaults, parsing, and one clear message for bad configuration."""

from __future__ import annotations

import re

import pytest

from rspark_operator.settings import SettingsError, load_settings

pytestmark = pytest.mark.unit


def test_defaults_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RSPARK_SNAPSHOT_REPOSITORY_BASE", raising=False)
    loaded = load_settings()
    assert loaded.ingress_mode == "host"
    assert loaded.agent_metrics_port == 9090
    assert loaded.watch_namespaces == []


def test_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSPARK_WATCH_NAMESPACES", "team-a, team-b")
    monkeypatch.setenv("RSPARK_SNAPSHOT_REPOSITORY_BASE", "s3:http://s3:8333/rspark/")
    monkeypatch.setenv("RSPARK_INGRESS_MODE", "path")
    loaded = load_settings()
    assert loaded.watch_namespaces == ["team-a", "team-b"]
    assert loaded.snapshot_repository_base == "s3:http://s3:8333/rspark"
    assert loaded.ingress_mode == "path"


def test_every_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSPARK_AGENT_METRICS_PORT", "ninety")
    monkeypatch.setenv("RSPARK_INGRESS_HOST_TEMPLATE", "{user}.{domain}")
    monkeypatch.setenv("RSPARK_WATCH_NAMESPACES", "ok,Not_OK")
    monkeypatch.setenv("RSPARK_INGRESS_MODE", "subdomain")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "RSPARK_AGENT_METRICS_PORT='ninety': Input should be a valid integer" in message
    assert "RSPARK_INGRESS_HOST_TEMPLATE='{user}.{domain}': unknown placeholder" in message
    assert "RSPARK_WATCH_NAMESPACES=" in message and "not namespace names: Not_OK" in message
    assert "RSPARK_INGRESS_MODE='subdomain'" in message


@pytest.mark.parametrize(
    ("variables", "bad", "why"),
    [
        (
            {"RSPARK_INGRESS_HOST_TEMPLATE": "{name}.{domain}"},
            "INGRESS_HOST_TEMPLATE",
            "{namespace}",
        ),
        (
            {"RSPARK_INGRESS_MODE": "path", "RSPARK_INGRESS_PATH_TEMPLATE": "/{name}/"},
            "INGRESS_PATH_TEMPLATE",
            "{namespace}",
        ),
        ({"RSPARK_INGRESS_PATH_TEMPLATE": "{namespace}/{name}"}, "INGRESS_PATH_TEMPLATE", "'/'"),
        (
            {"RSPARK_INGRESS_HOST_TEMPLATE": "{name}_{namespace}.{domain}"},
            "INGRESS_HOST_TEMPLATE",
            "not a DNS name",
        ),
        ({"RSPARK_INGRESS_CLASS": "Nginx Class"}, "INGRESS_CLASS", "should match"),
        (
            {"RSPARK_TERMINATION_GRACE_SECONDS": "1"},
            "TERMINATION_GRACE_SECONDS",
            "greater than or equal to 10",
        ),
        ({"RSPARK_IDLE_QUIET": "30s"}, "IDLE_QUIET", "'30s': must be a duration of at least 1m"),
        ({"RSPARK_IDLE_QUIET": "soon"}, "IDLE_QUIET", "'soon': must be a duration of at least 1m"),
        (
            {"RSPARK_IDLE_STOP_AFTER": "2m"},
            "IDLE_STOP_AFTER",
            "'2m': stopAfter 2m is shorter than this platform's quiet time (5m)",
        ),
        (
            {"RSPARK_IDLE_QUIET": "15m", "RSPARK_IDLE_STOP_AFTER": "10m"},
            "IDLE_STOP_AFTER",
            "'10m': stopAfter 10m is shorter than this platform's quiet time (15m)",
        ),
    ],
)
def test_bad_urls_and_names(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], bad: str, why: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"RSPARK_{bad}=") as raised:
        load_settings()
    assert why in str(raised.value)


def test_placement_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSPARK_WORKSPACE_NODE_SELECTOR", '{"rspark.dev/node-kind": "real"}')
    monkeypatch.setenv(
        "RSPARK_WORKSPACE_TOLERATIONS",
        '[{"key": "rspark.dev/node-kind", "operator": "Equal", "value": "real", '
        '"effect": "NoSchedule"}, {"operator": "Exists", "effect": "NoExecute", '
        '"tolerationSeconds": 60}]',
    )
    loaded = load_settings()
    assert loaded.workspace_node_selector == {"rspark.dev/node-kind": "real"}
    assert [t.wire() for t in loaded.workspace_tolerations] == [
        {
            "key": "rspark.dev/node-kind",
            "operator": "Equal",
            "value": "real",
            "effect": "NoSchedule",
        },
        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
    ]


def test_placement_defaults_to_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_settings()
    assert loaded.workspace_node_selector == {}
    assert loaded.workspace_tolerations == []
    assert loaded.ingress_controller_cidrs == []
    assert loaded.jupyterlab_image == "ghcr.io/rspark-dev/jupyterlab:0.1.0"


@pytest.mark.parametrize(
    ("variable", "value", "where", "why"),
    [
        ("WORKSPACE_NODE_SELECTOR", "node-kind=real", "", "not JSON (Expecting value"),
        ("WORKSPACE_NODE_SELECTOR", '["real"]', "", "Input should be a valid dictionary"),
        ("WORKSPACE_NODE_SELECTOR", '{"kind": 1}', "[kind]", "Input should be a valid string"),
        ("WORKSPACE_NODE_SELECTOR", '{"bad key": "x"}', "", "not node labels: bad key=x"),
        ("WORKSPACE_NODE_SELECTOR", '{"kind": "a b"}', "", "not node labels: kind=a b"),
        ("WORKSPACE_TOLERATIONS", '{"key": "a"}', "", "Input should be a valid list"),
        ("WORKSPACE_TOLERATIONS", "[{", "", "not JSON"),
        (
            "WORKSPACE_TOLERATIONS",
            '[{"key": "a", "operator": "In"}]',
            "[0][operator]",
            "'Equal' or 'Exists'",
        ),
        (
            "WORKSPACE_TOLERATIONS",
            '[{"key": "a"}, {"key": "b", "efect": "NoSchedule"}]',
            "[1][efect]",
            "Extra inputs",
        ),
        (
            "WORKSPACE_TOLERATIONS",
            '[{"value": "x"}]',
            "[0]",
            "without a key must have operator Exists",
        ),
        (
            "WORKSPACE_TOLERATIONS",
            '[{"key": "a", "operator": "Exists", "value": "x"}]',
            "[0]",
            "operator Exists must not have a value",
        ),
        (
            "WORKSPACE_TOLERATIONS",
            '[{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}]',
            "[0]",
            "tolerationSeconds needs effect NoExecute",
        ),
        ("WORKSPACE_TOLERATIONS", '[{"key": "a/b/c"}]', "[0]", "is not a label key"),
        ("INGRESS_CONTROLLER_CIDRS", "10.200.0.1/32", "", "not JSON"),
        ("INGRESS_CONTROLLER_CIDRS", '"10.200.0.1/32"', "", "Input should be a valid list"),
        ("INGRESS_CONTROLLER_CIDRS", '["10.200.0.1/24"]', "[0]", "not a valid IPv4 or IPv6"),
        ("INGRESS_CONTROLLER_CIDRS", '["ok/8"]', "[0]", "not a valid IPv4 or IPv6 network"),
    ],
)
def test_bad_placement_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, where: str, why: str
) -> None:
    monkeypatch.setenv(f"RSPARK_{variable}", value)
    with pytest.raises(SettingsError, match=f"RSPARK_{variable}{re.escape(where)}=") as raised:
        load_settings()
    assert why in str(raised.value)


def test_a_shorter_quiet_time_allows_a_shorter_default_stop_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RSPARK_IDLE_QUIET", "1m")
    monkeypatch.setenv("RSPARK_IDLE_STOP_AFTER", "2m")
    loaded = load_settings()
    assert (loaded.idle_quiet, loaded.idle_stop_after) == ("1m", "2m")
