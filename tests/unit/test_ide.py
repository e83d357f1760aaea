"""spec.ide: what each IDE gets, read from the one table in `ide.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from rspark_operator.api import WorkspaceSpec
from rspark_operator.builders import build_children, build_pod
from rspark_operator.ide import IDES, OPERATOR_MANAGED_ENV, IdeName
from tests.unit.test_builders import by_kind, container, env_of
from tests.unit.workspaces import settings, workspace

pytestmark = pytest.mark.unit

JUPYTERLAB_IMAGE = "registry.test/rspark/jupyterlab:1"
RSTUDIO_IMAGE = "registry.test/rspark/rstudio:1"


@dataclass(frozen=True)
class Expected:
    ide: IdeName
    port: int
    image: str
    host_probe: str  # the readiness probe's path when the IDE owns its host
    path_probe: str  # and under the prefix /team/demo/
    ingress_path: str  # the Ingress path under /team/demo/
    strips: bool  # whether the Ingress strips that prefix


CASES = [
    Expected("rstudio", 8787, RSTUDIO_IMAGE, "/", "/", "/team/demo(/|$)(.*)", True),
    Expected("jupyterlab", 8888, JUPYTERLAB_IMAGE, "/api", "/team/demo/api", "/team/demo/", False),
]
IDS = [case.ide for case in CASES]


def ide_settings(**overrides: Any) -> Any:
    return settings(workspace_image=RSTUDIO_IMAGE, jupyterlab_image=JUPYTERLAB_IMAGE, **overrides)


def test_every_ide_of_the_api_has_one_row() -> None:
    assert set(get_args(IdeName)) == set(IDES) == set(IDS)
    assert all(name == row.name for name, row in IDES.items())


def test_rstudio_is_the_default() -> None:
    assert workspace().spec.ide == "rstudio"


def test_an_unknown_ide_is_refused() -> None:
    with pytest.raises(ValidationError, match="'rstudio' or 'jupyterlab'"):
        WorkspaceSpec.model_validate({"user": "alice@example.com", "ide": "vscode"})


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_ide_container_follows_its_row(case: Expected) -> None:
    for config, probe in (
        (ide_settings(), case.host_probe),
        (ide_settings(ingress_mode="path"), case.path_probe),
    ):
        pod = build_pod(workspace(ide=case.ide), config)
        (main,) = pod["spec"]["containers"]
        assert main["name"] == "ide"
        assert main["image"] == case.image
        assert {p["name"]: p["containerPort"] for p in main["ports"]}["http"] == case.port
        assert main["readinessProbe"]["httpGet"] == {"path": probe, "port": "http"}
        assert main["lifecycle"]["preStop"]["exec"]["command"] == ["/usr/local/bin/rspark-prestop"]
        # The same user, home and password key, so the agent and the home do not change.
        env = env_of(main)
        assert env["USER"] == "rstudio"
        assert env["PASSWORD"] == {
            "secretKeyRef": {"name": "demo-passwords", "key": "rstudio-password"}
        }
        assert env["SPARK_CONF_DIR"] == "/opt/spark/conf"
        assert pod["spec"]["securityContext"]["fsGroup"] == 1000
        assert {"name": "home", "mountPath": "/home/rstudio"} in container(pod, "snapshot-agent")[
            "volumeMounts"
        ]
    assert env["RSPARK_WWW_ROOT_PATH"] == "/team/demo/"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_service_ingress_and_policy_follow_its_row(case: Expected) -> None:
    children = by_kind(build_children(workspace(ide=case.ide), ide_settings(ingress_mode="path")))
    service = children["Service"][0]
    assert [p["port"] for p in service["spec"]["ports"]] == [case.port]
    (ingress,) = children["Ingress"]
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == case.ingress_path
    assert path["pathType"] == ("ImplementationSpecific" if case.strips else "Prefix")
    assert path["backend"]["service"] == {"name": "demo-rstudio", "port": {"number": case.port}}
    rewrite = ingress["metadata"]["annotations"].get("nginx.ingress.kubernetes.io/rewrite-target")
    assert rewrite == ("/$2" if case.strips else None)
    (policy,) = [p for p in children["NetworkPolicy"] if p["spec"].get("ingress")]
    from_ingress = policy["spec"]["ingress"][0]
    assert from_ingress["ports"] == [{"protocol": "TCP", "port": case.port}]


@pytest.mark.parametrize("ide", IDS)
def test_host_mode_serves_the_ide_at_the_root(ide: IdeName) -> None:
    (ingress,) = by_kind(build_children(workspace(ide=ide), ide_settings()))["Ingress"]
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    assert "RSPARK_WWW_ROOT_PATH" not in env_of(
        container(build_pod(workspace(ide=ide), ide_settings()), "ide")
    )


def test_spec_image_wins_over_the_ide_default() -> None:
    pod = build_pod(workspace(ide="jupyterlab", image="mine/lab:2"), ide_settings())
    assert container(pod, "ide")["image"] == "mine/lab:2"


def test_changing_the_ide_keeps_the_home_and_spark() -> None:
    rstudio = by_kind(build_children(workspace(), ide_settings()))
    lab = by_kind(build_children(workspace(ide="jupyterlab"), ide_settings()))
    for kind in ("PersistentVolumeClaim", "ConfigMap", "Role", "Secret"):
        assert rstudio[kind] == lab[kind]


@pytest.mark.parametrize(
    "name",
    [
        "DISABLE_AUTH",
        "JUPYTER_TOKEN",
        "JUPYTER_TOKEN_FILE",
        "RSPARK_JUPYTER_IP",
        "RSPARK_JUPYTER_PORT",
        "PASSWORD",
    ],
)
@pytest.mark.parametrize("ide", IDS)
def test_auth_switches_of_every_ide_are_refused_whatever_the_ide(name: str, ide: str) -> None:
    assert name in OPERATOR_MANAGED_ENV
    with pytest.raises(ValidationError, match=f"must not set operator-managed variables: {name}"):
        WorkspaceSpec.model_validate(
            {"user": "alice@example.com", "ide": ide, "env": [{"name": name, "value": ""}]}
        )
