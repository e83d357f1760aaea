"""Operator settings: defaults, parsing, and one clear message for bad configuration."""

from __future__ import annotations

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
