"""How a workspace reaches Spark Connect and s3a://: variables from Secrets, Spark conf."""

from __future__ import annotations

from typing import Any

import pytest

from rspark_operator.builders.pod import IDE_CONTAINER, build_pod
from rspark_operator.builders.spark import spark_properties
from rspark_operator.contract import S3_CREDENTIAL_KEYS
from rspark_operator.ide import CONNECT_TOKEN_ENV, SPARK_REMOTE_ENV, SPARK_UI_URL_ENV
from rspark_operator.validation import InvalidSpecError, parse_workspace
from tests.unit.test_profiles import CONNECT, SMALL, under
from tests.unit.workspaces import settings, workspace

pytestmark = pytest.mark.unit

ENDPOINT = CONNECT["connect"]["endpoint"]


def ide_env(ws: Any) -> dict[str, dict[str, Any]]:
    pod = build_pod(ws, settings())
    (ide,) = (c for c in pod["spec"]["containers"] if c["name"] == IDE_CONTAINER)
    return {var["name"]: var for var in ide["env"]}


def secret_ref(var: dict[str, Any]) -> tuple[str, str]:
    ref = var["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_a_connect_profile_gives_the_ide_its_endpoint_and_only_its_token_key() -> None:
    env = ide_env(under(workspace(), "shared", CONNECT))
    assert env[SPARK_REMOTE_ENV] == {"name": SPARK_REMOTE_ENV, "value": ENDPOINT}
    assert secret_ref(env[CONNECT_TOKEN_ENV]) == ("spark-connect", "token")


def test_a_connect_profile_without_a_token_sets_no_token() -> None:
    spec = {"kind": "connect", "connect": {"endpoint": ENDPOINT}}
    env = ide_env(under(workspace(), "open", spec))
    assert env[SPARK_REMOTE_ENV]["value"] == ENDPOINT
    assert CONNECT_TOKEN_ENV not in env


def test_a_kubernetes_profile_sets_no_spark_connect_variables() -> None:
    env = ide_env(under(workspace(), "small", SMALL))
    assert SPARK_REMOTE_ENV not in env and CONNECT_TOKEN_ENV not in env


def test_a_connect_profile_has_no_spark_ui_in_the_workspace() -> None:
    """The Connect server is the driver: the workspace serves no UI to link to."""
    assert SPARK_UI_URL_ENV in ide_env(under(workspace(ide="jupyterlab"), "small", SMALL))
    assert SPARK_UI_URL_ENV not in ide_env(under(workspace(ide="jupyterlab"), "shared", CONNECT))


@pytest.mark.parametrize("name", [SPARK_REMOTE_ENV, CONNECT_TOKEN_ENV, SPARK_UI_URL_ENV])
def test_spark_connect_variables_are_the_operators(name: str) -> None:
    body = {
        "metadata": {"name": "demo", "namespace": "team", "uid": "u", "generation": 1},
        "spec": {"user": "alice@example.com", "env": [{"name": name, "value": "x"}]},
    }
    with pytest.raises(InvalidSpecError, match=name):
        parse_workspace(body, settings())


def test_s3_credentials_come_from_the_named_secret_into_the_ide_only() -> None:
    ws = workspace(spark={"s3": {"credentialsSecret": "alice-s3"}})
    env = ide_env(ws)
    assert [secret_ref(env[key]) for key in S3_CREDENTIAL_KEYS] == [
        ("alice-s3", key) for key in S3_CREDENTIAL_KEYS
    ]
    conf = spark_properties(ws, settings())
    # AWS: no endpoint, buckets as host names; no credential in spark-defaults.conf.
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "false"
    assert "spark.hadoop.fs.s3a.endpoint" not in conf
    assert not any("secret" in key or "access.key" in key for key in conf)


@pytest.mark.parametrize(
    ("endpoint", "ssl"),
    [("http://10.200.0.1:8333", "false"), ("https://s3.example.com", "true")],
)
def test_an_s3_endpoint_is_written_for_the_driver_and_executors(endpoint: str, ssl: str) -> None:
    ws = workspace(spark={"s3": {"credentialsSecret": "alice-s3", "endpoint": endpoint}})
    conf = spark_properties(ws, settings())
    assert conf["spark.hadoop.fs.s3a.endpoint"] == endpoint
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == ssl


def test_s3_settings_reach_a_connect_workspace_too() -> None:
    ws = workspace(spark={"s3": {"endpoint": "http://10.200.0.1:8333", "pathStyleAccess": False}})
    conf = spark_properties(under(ws, "shared", CONNECT), settings())
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "false"
    assert not set(S3_CREDENTIAL_KEYS).intersection(ide_env(ws))


def test_s3_credentials_are_set_once() -> None:
    body = {
        "metadata": {"name": "demo", "namespace": "team", "uid": "u", "generation": 1},
        "spec": {
            "user": "alice@example.com",
            "env": [{"name": "AWS_ACCESS_KEY_ID", "value": "x"}],
            "spark": {"s3": {"credentialsSecret": "alice-s3"}},
        },
    }
    with pytest.raises(InvalidSpecError, match="remove it from spec"):
        parse_workspace(body, settings())


@pytest.mark.parametrize("endpoint", ["s3.example.com", "ftp://s3.example.com", "http://a b"])
def test_an_s3_endpoint_is_an_http_url(endpoint: str) -> None:
    body = {
        "metadata": {"name": "demo", "namespace": "team", "uid": "u", "generation": 1},
        "spec": {"user": "alice@example.com", "spark": {"s3": {"endpoint": endpoint}}},
    }
    with pytest.raises(InvalidSpecError, match="endpoint"):
        parse_workspace(body, settings())


def test_the_snapshots_bucket_key_is_not_an_s3_secret_for_spark() -> None:
    secret = settings().snapshot_credentials_secret
    body = {
        "metadata": {"name": "demo", "namespace": "team", "uid": "u", "generation": 1},
        "spec": {"user": "alice@example.com", "spark": {"s3": {"credentialsSecret": secret}}},
    }
    with pytest.raises(InvalidSpecError, match="snapshots' key"):
        parse_workspace(body, settings())
