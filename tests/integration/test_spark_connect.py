"""A `connect` SparkProfile end to end, against Spark's own Connect server (a plain process).

The workspace and its profile go through the operator's validation and profile
choice; the IDE container's environment and spark-defaults.conf are what the
builders render. A PySpark client started with only that environment (the Secret's
key resolved the way the kubelet does) runs a query; with a wrong token the server
refuses it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from devtools.spark import SPARK_CONNECT, ConnectServer, spark_venv
from rspark_operator import names
from rspark_operator.api import Workspace, WorkspaceSpec
from rspark_operator.builders.pod import IDE_CONTAINER, IDE_PASSWORD_KEY, build_pod
from rspark_operator.builders.spark import SPARK_DEFAULTS_FILE, build_spark_config_map
from rspark_operator.ide import SPARK_CONF_DIR_ENV
from rspark_operator.profiles import choose_profile
from rspark_operator.settings import OperatorSettings

TOKEN = "a-pre-shared-token-of-the-platform"
SECRET, KEY = "spark-connect", "token"
QUERY = (
    "from pyspark.sql import SparkSession\n"
    "spark = SparkSession.builder.getOrCreate()\n"
    "print(spark.range(100).selectExpr('sum(id) AS total').collect()[0].total)\n"
)
CLIENT_TIMEOUT_SECONDS = 300


@pytest.fixture(scope="module")
def venv() -> Path:
    return spark_venv(SPARK_CONNECT)


@pytest.fixture(scope="module")
def server(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServer]:
    connect = ConnectServer(venv, tmp_path_factory.mktemp("connect"), TOKEN)
    connect.start()
    try:
        yield connect
    finally:
        connect.stop()


def connect_workspace(endpoint: str) -> Workspace:
    """A workspace of namespace team under a `connect` profile, as the operator attaches it."""
    profile = {
        "metadata": {"name": "shared-connect"},
        "spec": {
            "kind": "connect",
            "connect": {"endpoint": endpoint, "tokenSecret": {"name": SECRET, "key": KEY}},
        },
    }
    ws = Workspace(
        name="alice",
        namespace="team",
        uid="uid-alice",
        generation=1,
        spec=WorkspaceSpec.model_validate(
            {"user": "alice@example.com", "spark": {"profile": "shared-connect"}}
        ),
    )
    return choose_profile(ws, None, lambda _: profile, dict)


def resolve(env: list[dict[str, Any]], secrets: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """The container's variables as the kubelet sets them (secretKeyRef from `secrets`)."""
    values = {}
    for var in env:
        if "value" in var:
            values[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            values[var["name"]] = secrets[(ref["name"], ref["key"])]
    return values


def run_client(
    venv: Path, workdir: Path, token: str, endpoint: str
) -> subprocess.CompletedProcess[str]:
    """PySpark in a process whose Spark settings are only what the operator renders."""
    ws = connect_workspace(endpoint)
    settings = OperatorSettings(snapshot_repository_base="s3:http://s3.test/rspark")
    conf_dir = workdir / "conf"
    conf_dir.mkdir(exist_ok=True)
    data = build_spark_config_map(ws, settings)["data"]
    (conf_dir / SPARK_DEFAULTS_FILE).write_text(data[SPARK_DEFAULTS_FILE])
    container = next(
        c for c in build_pod(ws, settings)["spec"]["containers"] if c["name"] == IDE_CONTAINER
    )
    secrets = {
        (SECRET, KEY): token,
        (names.passwords_secret_name(ws.name), IDE_PASSWORD_KEY): "a password",
    }
    rendered = resolve(container["env"], secrets)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        **rendered,
        SPARK_CONF_DIR_ENV: str(conf_dir),
    }
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", QUERY],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_SECONDS,
        check=False,
    )


def test_a_workspace_under_a_connect_profile_runs_a_query(
    venv: Path, server: ConnectServer, tmp_path: Path
) -> None:
    result = run_client(venv, tmp_path, TOKEN, server.endpoint)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4950"


def test_a_wrong_token_is_refused(venv: Path, server: ConnectServer, tmp_path: Path) -> None:
    result = run_client(venv, tmp_path, "not-the-token", server.endpoint)
    assert result.returncode != 0
    assert "UNAUTHENTICATED" in result.stderr or "Invalid authentication token" in result.stderr, (
        result.stderr
    )
