"""A `connect` SparkProfile end to end, against Spark's own Connect server (a plain process).

The workspace and its profile go through the operator's validation and profile
choice; the IDE container's environment and spark-defaults.conf are what the
builders render. A PySpark client started with only that environment (the Secret's
key resolved the way the kubelet does) runs a query; with a wrong token the server
refuses it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.spark import SPARK_CONNECT, ConnectServer, spark_venv
from rspark_operator.api import Workspace, WorkspaceSpec
from rspark_operator.profiles import choose_profile
from tests.support.spark import session_env

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


def run_client(
    venv: Path, workdir: Path, token: str, endpoint: str
) -> subprocess.CompletedProcess[str]:
    """PySpark in a process whose Spark settings are only what the operator renders."""
    env = session_env(connect_workspace(endpoint), {(SECRET, KEY): token}, workdir)
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
