"""The committed CRD is the one the models generate, and its defaults agree with them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rspark_operator import crd
from rspark_operator.api import WorkspaceSpec

pytestmark = pytest.mark.unit

CRDS = Path(__file__).parents[2] / "crds"
COMMITTED = CRDS / "rspark.dev_rstudioworkspaces.yaml"
COMMITTED_PROFILES = CRDS / "rspark.dev_sparkprofiles.yaml"
# What kube-apiserver 1.33 stored for `spec: {user: alice@example.com}`.
SERVER_DEFAULTED = {
    "user": "alice@example.com",
    "ide": "rstudio",
    "suspended": False,
    "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    "home": {"size": "10Gi"},
    "snapshot": {
        "enabled": True,
        "interval": "5m",
        "retention": {"keepLast": 10, "keepHourly": 24, "keepDaily": 7, "keepWeekly": 4},
    },
    "secretPaths": [".ssh"],
    "spark": {},
    "idle": {"releaseVolume": False},
    "ingress": {},
}


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: absent fields get their default."""
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(child, value[name])
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(found for child in node.values() for found in walk(child))]
    if isinstance(node, list):
        return [found for child in node for found in walk(child)]
    return []


def schema() -> dict[str, Any]:
    version = crd.custom_resource_definition()["spec"]["versions"][0]
    return dict(version["schema"]["openAPIV3Schema"])


def test_committed_crd_is_fresh() -> None:
    assert COMMITTED.read_text() == crd.render(), (
        "stale CRD: run `python -m rspark_operator.crd > crds/rspark.dev_rstudioworkspaces.yaml`"
    )


def test_schema_is_structural() -> None:
    nodes = walk(schema())
    assert not [n for n in nodes if {"$ref", "title", "nullable"} & n.keys()]
    assert not [n for n in nodes if isinstance(n.get("additionalProperties"), bool)]
    assert not [n for n in nodes if {"type": "null"} in n.get("anyOf", [])]
    assert "x-kubernetes-preserve-unknown-fields" not in schema()


def test_every_spec_and_status_field_is_described() -> None:
    root = schema()["properties"]
    for part in ("spec", "status"):
        for node in walk(root[part]):
            for name, child in node.get("properties", {}).items():
                assert child.get("description"), f"{part}: {name} has no description"


def test_quantities_env_and_conditions_have_kubernetes_markers() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    size = spec["home"]["properties"]["size"]
    assert size["x-kubernetes-int-or-string"] is True and "pattern" in size
    assert "rule" in size["x-kubernetes-validations"][0]
    value_from = spec["env"]["items"]["properties"]["valueFrom"]
    assert value_from["x-kubernetes-preserve-unknown-fields"] is True
    conditions = schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert spec["user"]["minLength"] == 1
    assert schema()["properties"]["spec"]["required"] == ["user"]


def test_printer_columns_and_names() -> None:
    definition = crd.custom_resource_definition()["spec"]
    assert definition["names"]["shortNames"] == ["rsw"]
    columns = {
        c["name"]: c["jsonPath"] for c in definition["versions"][0]["additionalPrinterColumns"]
    }
    assert columns == {
        "User": ".spec.user",
        "IDE": ".spec.ide",
        "Phase": ".status.phase",
        "URL": ".status.url",
        "Last Snapshot": ".status.lastSnapshot.time",
        "Age": ".metadata.creationTimestamp",
    }


def test_schema_defaults_match_the_api_server_and_the_model() -> None:
    spec_schema = schema()["properties"]["spec"]
    defaulted = apply_defaults(spec_schema, {"user": "alice@example.com"})
    assert defaulted == SERVER_DEFAULTED
    model = WorkspaceSpec.model_validate({"user": "alice@example.com"})
    assert WorkspaceSpec.model_validate(defaulted) == model


def test_committed_crd_parses_as_yaml() -> None:
    assert yaml.safe_load(COMMITTED.read_text()) == crd.custom_resource_definition()


def test_committed_profile_crd_is_fresh_and_structural() -> None:
    assert COMMITTED_PROFILES.read_text() == crd.render("sparkprofiles"), "stale CRD: make crds"
    definition = crd.profile_custom_resource_definition()
    assert yaml.safe_load(COMMITTED_PROFILES.read_text()) == definition
    assert definition["spec"]["scope"] == "Cluster"
    root = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    nodes = walk(root)
    assert not [n for n in nodes if {"$ref", "title", "nullable"} & n.keys()]
    assert not [n for n in nodes if {"type": "null"} in n.get("anyOf", [])]
    for node in walk(root["properties"]["spec"]):
        for name, child in node.get("properties", {}).items():
            assert child.get("description"), f"SparkProfile spec: {name} has no description"


def test_profile_printer_columns_show_kind_limits_and_who_may_use_it() -> None:
    version = crd.profile_custom_resource_definition()["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Kind"] == ".spec.kind"
    assert columns["Max Memory"] == ".spec.kubernetes.executorMemory.max"
    assert columns["Namespaces"] == ".spec.namespaces"
    assert columns["Selector"] == ".spec.namespaceSelector"
