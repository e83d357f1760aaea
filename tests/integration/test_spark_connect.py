"""A `connect` SparkProfile end to end, against Spark's own Connect server (a plain process).

The workspace and its profile go through the operator's validation and profile
choice; the IDE container's environment and spark-defaults.conf are what the
builders render. A PySpark 4 client started with only that environment (the Secret's
key resolved the way the kubelet does) runs a query; with a wrong token the server
refuses it. The JupyterLab image's PySpark 3.5.3, with its pinned libraries, runs a
query on a server that asks for no token.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.spark import (
    ROOT,
    SPARK_CONNECT,
    SPARK_S3A,
    ConnectServer,
    hashed_venv,
    spark_home,
    spark_venv,
)
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
JUPYTERLAB_REQUIREMENTS = ROOT / "images" / "jupyterlab" / "requirements.txt"


@pytest.fixture(scope="module")
def venv() -> Path:
    return spark_venv(SPARK_CONNECT)


def start_server(venv: Path, workdir: Path, token: str | None) -> Iterator[ConnectServer]:
    connect = ConnectServer(venv, workdir, token)
    connect.start()
    try:
        yield connect
    finally:
        connect.stop()


@pytest.fixture(scope="module")
def server(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServer]:
    yield from start_server(venv, tmp_path_factory.mktemp("connect"), TOKEN)


@pytest.fixture(scope="module")
def open_server(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServer]:
    """A server that asks for no token (a private network's)."""
    yield from start_server(venv, tmp_path_factory.mktemp("open-connect"), None)


@pytest.fixture(scope="module")
def jupyterlab_python(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The JupyterLab image's Python (its pinned environment) and the directory that
    makes its Spark distribution, pyspark 3.5.3, importable (the image's .pth)."""
    venv = hashed_venv(JUPYTERLAB_REQUIREMENTS, "jupyterlab-test")
    site = tmp_path_factory.mktemp("spark-python")
    (site / "pyspark").symlink_to(spark_home(spark_venv(SPARK_S3A)))
    return venv / "bin" / "python", site


def connect_workspace(endpoint: str, token: bool = True) -> Workspace:
    """A workspace of namespace team under a `connect` profile, as the operator attaches it."""
    connect: dict[str, Any] = {"endpoint": endpoint}
    if token:
        connect["tokenSecret"] = {"name": SECRET, "key": KEY}
    profile = {
        "metadata": {"name": "shared-connect"},
        "spec": {"kind": "connect", "connect": connect},
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
    python: Path, ws: Workspace, workdir: Path, token: str | None = None, **image_env: str
) -> subprocess.CompletedProcess[str]:
    """PySpark in a process whose Spark settings are only what the operator renders."""
    secrets = {(SECRET, KEY): token} if token is not None else {}
    env = session_env(ws, secrets, workdir)
    return subprocess.run(
        [str(python), "-c", QUERY],
        env={**env, **image_env},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_SECONDS,
        check=False,
    )


def test_a_workspace_under_a_connect_profile_runs_a_query(
    venv: Path, server: ConnectServer, tmp_path: Path
) -> None:
    ws = connect_workspace(server.endpoint)
    result = run_client(venv / "bin" / "python", ws, tmp_path, TOKEN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4950"


def test_a_wrong_token_is_refused(venv: Path, server: ConnectServer, tmp_path: Path) -> None:
    ws = connect_workspace(server.endpoint)
    result = run_client(venv / "bin" / "python", ws, tmp_path, "not-the-token")
    assert result.returncode != 0
    assert "UNAUTHENTICATED" in result.stderr or "Invalid authentication token" in result.stderr, (
        result.stderr
    )


def test_the_jupyterlab_images_pyspark_runs_a_query_on_a_server_without_token(
    jupyterlab_python: tuple[Path, Path], open_server: ConnectServer, tmp_path: Path
) -> None:
    # PySpark 3.5.3 sends a token only over TLS, which Spark's server does not speak:
    # from the images, a server without a token or one behind a TLS proxy.
    python, spark_python = jupyterlab_python
    ws = connect_workspace(open_server.endpoint, token=False)
    result = run_client(python, ws, tmp_path, PYTHONPATH=str(spark_python))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4950"
