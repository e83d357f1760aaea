"""The Spark UI under the workspace's URL, behind its sign-in, with the real parts and no
cluster: oauth2-proxy 7.15.6 run with the configuration the operator writes
(`builders/signin.py`), Keycloak as the provider, a real Spark 3.5.3 UI, and Chromium.

A JupyterLab workspace in path mode (the proxy sees the URL prefix, as it does behind
the Ingress): `<prefix>spark/` refuses whoever has not signed in, shows alice the
jobs page once she has, and every link of the UI stays under the prefix; the same UI
reached directly (`kubectl port-forward`) keeps its plain links and its root.

Everything listens on the loopback: Keycloak on an address of its own (its port is
fixed, and another worktree's tests may hold it on 127.0.0.1), the UI on the port the
operator routes to (`UI_PORTS.first`), which must be free.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from selenium.webdriver.common.by import By

from devtools import keycloak
from devtools.spark import free_port
from rspark_operator.api import Workspace
from rspark_operator.builders.signin import SPARK_UI_PATH
from rspark_operator.builders.url import ingress_path
from rspark_operator.settings import OperatorSettings
from tests.support.browser import ARTIFACTS, chromium
from tests.support.signin import on_login_page, provider_as_secure, sign_in, signin_proxy
from tests.support.spark import SETTINGS, spark_ui_session
from tests.unit.workspaces import workspace

HOST = "127.0.0.1"
PROVIDER_HOST = "127.0.0.3"


def signin_settings(issuer: str) -> OperatorSettings:
    return SETTINGS.model_copy(
        update={
            "ingress_mode": "path",
            "ingress_domain": "example.test",
            "signin": "oidc",
            "oidc_issuer_url": issuer,
            "oidc_client_id": keycloak.CLIENT_ID,
        }
    )


def alices_workspace() -> Workspace:
    return workspace(name="alice", namespace="team-a", ide="jupyterlab", user=keycloak.ALICE.email)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("keycloak")
    process = keycloak.KeycloakProcess(logs / "keycloak.log", address=PROVIDER_HOST)
    process.start()
    try:
        yield process.issuer
    finally:
        process.stop()


@pytest.fixture(scope="module")
def spark_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with spark_ui_session(alices_workspace(), tmp_path_factory.mktemp("session")) as ui:
        yield ui


@pytest.fixture(scope="module")
def workspace_url(
    provider: str, spark_ui: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The sign-in proxy as the operator configures it for alice's workspace: her
    workspace's URL (no IDE behind it: this test is about the Spark UI)."""
    ws, settings = alices_workspace(), signin_settings(provider)
    port = free_port()
    workdir = tmp_path_factory.mktemp("signin")
    with signin_proxy(ws, settings, workdir, port, ide_port=free_port()):
        yield f"http://{HOST}:{port}{ingress_path(ws, settings)}"


def test_the_spark_ui_is_refused_without_sign_in(workspace_url: str, provider: str) -> None:
    for path in ("", "/", "/jobs/", "/api/v1/applications", "/static/webui.js"):
        response = requests.get(f"{workspace_url}{SPARK_UI_PATH}{path}", allow_redirects=False)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith(provider), path
        assert "Spark" not in response.text


def test_alice_signs_in_and_sees_the_spark_ui_under_her_workspace_url(
    workspace_url: str, provider: str
) -> None:
    ui = f"{workspace_url}{SPARK_UI_PATH}/"
    with chromium(ARTIFACTS / "spark-ui-signin", provider_as_secure(provider)) as alice:
        alice.driver.get(ui)
        assert on_login_page(alice, provider)
        alice.screenshot("spark-ui-asks-for-sign-in")
        sign_in(alice, keycloak.ALICE)
        alice.wait(60).until(lambda driver: "Spark Jobs" in driver.title)
        assert alice.driver.current_url == ui
        assert "collect at" in alice.driver.find_element(By.TAG_NAME, "body").text
        alice.screenshot("spark-ui-jobs")
        alice.driver.find_element(By.LINK_TEXT, "Stages").click()
        alice.wait(60).until(lambda driver: "Stages for All Jobs" in driver.title)
        assert alice.driver.current_url == f"{ui}stages/"
        alice.screenshot("spark-ui-stages")
        # A job's page, through a link the UI built (with a query string).
        alice.driver.find_element(By.LINK_TEXT, "Jobs").click()
        alice.wait(60).until(lambda driver: "Spark Jobs" in driver.title)
        link = alice.driver.find_element(By.CSS_SELECTOR, "a[href*='job/?id=']")
        href = link.get_attribute("href")
        assert href is not None and href.startswith(f"{ui}jobs/job/?id="), href
        link.click()
        alice.wait(60).until(lambda driver: "Details for Job" in driver.title)
        alice.screenshot("spark-ui-job-details")


def test_the_port_forwarded_ui_keeps_its_root_and_plain_links(spark_ui: str) -> None:
    root = requests.get(f"{spark_ui}/", allow_redirects=False, timeout=30)
    assert root.status_code == 302
    assert root.headers["Location"] == f"{spark_ui}/jobs/"
    jobs = requests.get(root.headers["Location"], timeout=30)
    assert jobs.status_code == 200
    assert 'href="/stages/"' in jobs.text
    assert "/team-a/alice" not in jobs.text
