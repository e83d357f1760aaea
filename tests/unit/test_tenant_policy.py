"""What a workspace may choose under the platform's settings: images, hosts, variables."""

from __future__ import annotations

from typing import Any

import pytest

from rspark_operator.settings import load_settings
from rspark_operator.validation import InvalidSpecError, parse_workspace
from tests.unit.workspaces import settings

pytestmark = pytest.mark.unit


def body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo", "namespace": "team", "uid": "u"},
        "spec": {"user": "alice@example.com", **spec},
    }


def problems(spec: dict[str, Any], **overrides: Any) -> str:
    try:
        parse_workspace(body(**spec), settings(**overrides))
    except InvalidSpecError as error:
        return str(error)
    return ""


def test_configured_images_only_by_default() -> None:
    configured = settings()
    assert problems({"image": configured.workspace_image}) == ""
    assert problems({"spark": {"executorImage": configured.spark_executor_image}}) == ""
    assert "spec.image: evil.example/rstudio:1 is not an allowed image (the operator's own" in (
        problems({"image": "evil.example/rstudio:1"})
    )
    assert "spec.spark.executorImage: evil.example/spark:1 is not an allowed image" in problems(
        {"spark": {"executorImage": "evil.example/spark:1"}}
    )


def test_images_under_the_allowed_prefixes() -> None:
    allowed = {"allowed_image_prefixes": ["registry.example.com/rspark/", "ghcr.io/team/"]}
    assert problems({"image": "ghcr.io/team/rstudio:2"}, **allowed) == ""
    message = problems({"image": "ghcr.io/other/rstudio:2"}, **allowed)
    assert "under registry.example.com/rspark/, ghcr.io/team/" in message


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("alice.data.example.com", True),
        ("data.example.com", True),
        ("alice.example.org", False),
        ("evil-data.example.com", False),
    ],
)
def test_hosts_only_in_allowed_domains(host: str, allowed: bool) -> None:
    message = problems({"ingress": {"host": host}}, allowed_ingress_domains=["data.example.com"])
    assert (message == "") is allowed, message


def test_no_chosen_host_without_allowed_domains() -> None:
    message = problems({"ingress": {"host": "alice.example.org"}})
    assert "not in an allowed domain (none; RSPARK_ALLOWED_INGRESS_DOMAINS)" in message


@pytest.mark.parametrize("name", ["ROOT", "USERID", "GROUPID", "DISABLE_AUTH", "PASSWORD", "USER"])
def test_switches_of_the_ide_image_are_refused(name: str) -> None:
    message = problems({"env": [{"name": name, "value": "1"}]})
    assert f"must not set operator-managed variables: {name}" in message


def test_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSPARK_ALLOWED_IMAGE_PREFIXES", "a.example/x/, b.example/")
    monkeypatch.setenv("RSPARK_ALLOWED_INGRESS_DOMAINS", "data.example.com")
    loaded = load_settings()
    assert loaded.allowed_image_prefixes == ["a.example/x/", "b.example/"]
    assert loaded.allowed_ingress_domains == ["data.example.com"]
    assert loaded.block_metadata_egress is True
