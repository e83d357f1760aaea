"""Spark on Kubernetes from a JupyterLab workspace on the real nodes, driven from R
through reticulate and pyspark; and the workspace's NetworkPolicy, enforced by
kube-router, around the driver and the IDE."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions

from devtools.deploy import browser_url, ide_password
from devtools.network import REAL_NODES
from rspark_operator import names
from rspark_operator.builders.signin import SPARK_UI_PATH
from rspark_operator.builders.spark import DRIVER_PORT
from rspark_operator.ide import IDES, SPARK_UI_URL_ENV
from tests.integration.e2e.spark_session import RSparkSession
from tests.integration.e2e.test_jupyterlab import ide_exec
from tests.support.browser import Browser, chromium
from tests.support.kube import wait_until

# A connection kube-router's policy drops gets no answer: give up after this.
CONNECT_TIMEOUT_SECONDS = 5
PROBE = (
    "import socket, sys\n"
    "s = socket.socket()\n"
    f"s.settimeout({CONNECT_TIMEOUT_SECONDS})\n"
    "try:\n"
    "    s.connect((sys.argv[1], int(sys.argv[2])))\n"
    "    print('open')\n"
    "except OSError as error:\n"
    "    print('closed', error)\n"
)


def executor_pods(core: client.CoreV1Api, namespace: str, workspace: str) -> list[Any]:
    selector = (
        f"{names.WORKSPACE_LABEL}={workspace},"
        f"{names.COMPONENT_LABEL}={names.SPARK_EXECUTOR_COMPONENT}"
    )
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def reaches(namespace: str, pod: str, address: str, port: int) -> bool:
    """Whether `pod`'s IDE container opens a TCP connection to address:port."""
    answer = ide_exec(namespace, pod, "python3", "-c", PROBE, address, str(port)).strip()
    return answer == "open"


# The Executors tab's table (Spark 3.5's executorspage-template.html): its first column
# is the executor's id, "driver" for the driver.
EXECUTOR_ID_CELLS = (By.CSS_SELECTOR, "#active-executors-table tbody tr td:first-child")
# The page's "Loading Executors Page..." overlay (jQuery blockUI) while its requests run.
LOADING = (By.CSS_SELECTOR, ".blockUI")
# The label Spark gives each executor pod: its executor id.
EXECUTOR_ID_LABEL = "spark-exec-id"


def the_spark_ui_in_the_browser(browser: Browser, ui_url: str, executors: set[str]) -> None:
    """The running application's UI at the address the operator gives the IDE
    (<workspace URL>spark), as its user opens it: the jobs page with the session's
    job, then the Executors tab, whose table the page fills from Spark's REST API
    under the same prefix: the driver and the session's `executors` (their ids)."""
    ui = f"{ui_url}/"
    browser.driver.get(ui_url)
    browser.wait(60).until(lambda driver: "Spark Jobs" in driver.title)
    assert browser.driver.current_url in (ui_url, ui)
    link = browser.driver.find_element(By.CSS_SELECTOR, "a[href*='job/?id=']")
    assert (link.get_attribute("href") or "").startswith(f"{ui}jobs/job/?id="), link
    browser.screenshot("spark-ui-jobs")
    browser.driver.find_element(By.LINK_TEXT, "Executors").click()
    browser.wait(60).until(lambda driver: "Executors" in driver.title)
    assert browser.driver.current_url == f"{ui}executors/"

    def listed(driver: Any) -> bool:
        ids = {cell.text for cell in driver.find_elements(*EXECUTOR_ID_CELLS)}
        return {"driver", *executors} <= ids

    try:
        browser.wait(60).until(listed)
        browser.wait(30).until(expected_conditions.invisibility_of_element_located(LOADING))
    finally:
        browser.screenshot("spark-ui-executors")


def test_spark_from_r_runs_executors_on_the_real_nodes_behind_the_network_policy(
    kube: client.ApiClient,
    workspace_namespace: str,
    real_workspaces: Callable[..., dict[str, Any]],
    artifacts: Path,
) -> None:
    """Client mode from R (reticulate + pyspark) with the operator's spark-defaults only:
    executors are pods on the real nodes, owned by the workspace pod, that call the
    driver back through its headless Service; they are gone after. While the session
    runs, its Spark UI opens in Chromium at the address the operator gives the IDE
    (RSPARK_SPARK_UI_URL, <workspace URL>spark), through the ingress controller,
    behind JupyterLab's login. Meanwhile another workspace's pod cannot
    open the driver's port nor the IDE's; the ingress controller's address (the
    host's bridge address, where Traefik sends from) can."""
    ns = workspace_namespace
    core = client.CoreV1Api(kube)
    ws = real_workspaces("alice")
    real_workspaces("bob")
    alice = core.read_namespaced_pod(names.pod_name("alice"), ns)
    driver_service = core.read_namespaced_service(names.spark_driver_service_name("alice"), ns)
    assert driver_service.spec.cluster_ip == "None"

    with RSparkSession(ns, alice.metadata.name, "policy") as report:
        assert report["master"].startswith("k8s://")

        executors = [p for p in executor_pods(core, ns, "alice") if p.status.phase == "Running"]
        assert executors, "no running executor while the session holds them"
        for executor in executors:
            assert executor.spec.node_name in {n.name for n in REAL_NODES}
            owner = executor.metadata.owner_references[0]
            assert (owner.kind, owner.name, owner.uid) == (
                "Pod",
                alice.metadata.name,
                alice.metadata.uid,
            )

        ui_url = ide_exec(ns, alice.metadata.name, "printenv", SPARK_UI_URL_ENV).strip()
        assert ui_url == f"{ws['status']['url']}{SPARK_UI_PATH}"
        with chromium(artifacts) as browser:
            browser.jupyterlab_login(browser_url(ws["status"]["url"]), ide_password(ns, "alice"))
            ids = {e.metadata.labels[EXECUTOR_ID_LABEL] for e in executors}
            the_spark_ui_in_the_browser(browser, browser_url(ui_url), ids)

        bob = names.pod_name("bob")
        ide_port = IDES["jupyterlab"].port
        assert not reaches(ns, bob, alice.status.pod_ip, DRIVER_PORT)
        assert not reaches(ns, bob, alice.status.pod_ip, ide_port)
        with socket.create_connection((alice.status.pod_ip, ide_port), timeout=10):
            pass  # from this machine's bridge address, as Traefik connects
    wait_until("the executors gone", lambda: not executor_pods(core, ns, "alice"), timeout=120)
