"""The Spark side of the Spark UI under the workspace's URL, with a real Spark 3.5.3 UI.

A request as the sign-in proxy forwards it (`spark_ui_route`: prefix stripped, the
prefix in its header) gets links and redirects under the workspace's URL; one without
the header (kubectl port-forward) gets plain ones.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import requests

from devtools.spark import SPARK_S3A, free_port, spark_venv
from rspark_operator.api import Workspace
from rspark_operator.builders.spark import UI_PORTS, SparkUiRoute, spark_ui_route
from tests.support.spark import SETTINGS, session_env
from tests.unit.workspaces import workspace

# A session that keeps its UI up until its standard input closes.
SESSION = """
import sys
from pyspark.sql import SparkSession
spark = (
    SparkSession.builder.master("local[1]")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.ui.port", sys.argv[1])
    .getOrCreate()
)
spark.range(10).count()
print("ready", flush=True)
sys.stdin.read()
spark.stop()
"""
START_TIMEOUT_SECONDS = 300
# Path mode: the workspace under /<namespace>/<name>/ of one shared host.
PATH_MODE = SETTINGS.model_copy(update={"ingress_mode": "path", "ingress_domain": "example.test"})


def path_mode_workspace() -> Workspace:
    return workspace(name="alice", namespace="team-a")


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a running session's UI (spark-defaults.conf as rendered)."""
    workdir = tmp_path_factory.mktemp("ui")
    port = free_port()
    process = subprocess.Popen(
        [str(spark_venv(SPARK_S3A) / "bin" / "python"), "-c", SESSION, str(port)],
        env=session_env(path_mode_workspace(), {}, workdir, PATH_MODE),
        cwd=workdir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        assert process.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stdin.close()
        process.wait(timeout=START_TIMEOUT_SECONDS)


def route() -> SparkUiRoute:
    return spark_ui_route(path_mode_workspace(), PATH_MODE)


def test_the_route_is_the_first_applications_ui_under_the_workspace_path() -> None:
    assert route().path == "/team-a/alice/spark/"
    assert route().port == UI_PORTS.first
    assert route().headers == {"X-Forwarded-Context": "/team-a/alice/spark"}


def test_proxied_requests_get_links_and_redirects_under_the_workspace_url(ui: str) -> None:
    redirect = requests.get(f"{ui}/", headers=route().headers, allow_redirects=False, timeout=30)
    assert redirect.status_code == 302
    # spark.ui.proxyRedirectUri: the workspace's scheme and host (path mode: the shared one).
    assert redirect.headers["Location"] == "http://example.test/team-a/alice/spark/jobs/"
    page = requests.get(f"{ui}/jobs/", headers=route().headers, timeout=30)
    assert page.status_code == 200
    assert 'href="/team-a/alice/spark/stages/"' in page.text


def test_direct_requests_keep_plain_links(ui: str) -> None:
    page = requests.get(f"{ui}/jobs/", timeout=30)
    assert page.status_code == 200
    assert 'href="/stages/"' in page.text
    assert "/team-a/alice/spark" not in page.text
