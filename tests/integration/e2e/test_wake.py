"""Idle workspaces on the real nodes: after the shortest stopAfter of real idleness
(the agent's own verdict, nothing written for it) they stop with a last snapshot that
holds a file written before; a visit in Chromium through Traefik shows the waker's
page (its password, then the progress) and lands in JupyterLab with the file there.
With `releaseVolume: true` the home claim is gone while idle and the wake restores the
home from object storage. Meanwhile a workspace whose R cell is still running (the
kernel busy, sleeping: no CPU used) with the browser closed is not stopped, nor one
whose Spark job (started from a shell, its task sleeping) runs longer than stopAfter.

The operator runs on this machine with its waker on the bridge address; Traefik, a
process of this machine too, follows the Ingress to the waker's Service and
EndpointSlice (as in tests/integration/test_waker.py on the kwok nodes)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from kubernetes import client
from selenium.webdriver.common.by import By

from devtools.deploy import browser_url, ide_password, ingress_address, waker_settings
from devtools.localcluster import BIN, KUBECONFIG, tool_env
from rspark_operator import waker
from rspark_operator.builders.pod import HOME, IDE_CONTAINER
from rspark_operator.builders.spark import SPARK_UI_PORT
from rspark_operator.conditions import HOME_RESTORED, IDLE, find, parse_timestamp
from rspark_operator.idle import NO_ACTIVITY
from rspark_operator.lifecycle import VOLUME_RELEASED
from rspark_operator.quantity import parse_duration
from rspark_operator.status import Reason
from tests.integration.e2e.conftest import (
    E2E_RESOURCES,
    E2E_SPARK,
    E2E_STOP_AFTER,
    FIRST_START_SECONDS,
)
from tests.integration.e2e.test_jupyterlab import files_of_last_snapshot_before, ide_exec
from tests.integration.test_idle import QUICK_IDLE, workspace_events
from tests.support.browser import KERNEL_BUSY, chromium, listed_file
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, restic_env, sample


def operator_settings() -> dict[str, str]:
    return {**waker_settings(), **QUICK_IDLE}


OPERATOR_SETTINGS = operator_settings
FILE = "written-before-idle.txt"
STOP_AFTER = parse_duration(E2E_STOP_AFTER)
# The stop (the IDE's shutdown, the last snapshot) and, with releaseVolume, the
# verified snapshot before the claim goes, after the agent's verdict.
STOP_SECONDS = 300
# From the password to JupyterLab's login page: the new pod, and the restore.
WAKE_SECONDS = 300


def no_pod(workspaces: Workspaces, name: str) -> bool:
    return not workspaces.pods(name)


def named(events: list[Any], name: str) -> bool:
    return any(event.involved_object.name == name for event in events)


def waker_answers(url: str) -> bool:
    """Whether the waker answers `url` through the ingress controller (its Ingress
    switched, Traefik followed it)."""
    parts = urlsplit(url)
    answer = requests.get(
        f"http://{ingress_address()}{parts.path}", headers={"Host": parts.netloc},
        allow_redirects=False, timeout=10,
    )  # fmt: skip
    return waker.WAKER_HEADER in answer.headers


# R, from `kubectl exec` (no kernel, no browser): a local Spark application whose one
# task sleeps (no CPU) far past stopAfter; the agent reads its driver UI's REST API.
SPARK_JOB_SECONDS = 1800
# A look of the agent more than stopAfter: when an idle workspace has been stopped.
AGENT_CHECK = timedelta(seconds=60)
SPARK_JOB = f"""
library(reticulate)
pyspark <- import("pyspark.sql")
spark <- pyspark$SparkSession$builder$master("local[1]")$getOrCreate()
py_run_string("import time
from pyspark.sql import SparkSession
SparkSession.builder.getOrCreate().sparkContext.parallelize([1], 1).foreach(
    lambda _: time.sleep({SPARK_JOB_SECONDS}))")
"""
# What the agent asks (agent/activity.read_spark), asked from the IDE container.
RUNNING_JOBS = f"""
import json, urllib.request
base = "http://127.0.0.1:{SPARK_UI_PORT}/api/v1/applications"
(app,) = json.load(urllib.request.urlopen(base))
print(len(json.load(urllib.request.urlopen(f"{{base}}/{{app['id']}}/jobs?status=running"))))
"""


def spark_jobs_running(namespace: str, pod: str) -> int:
    try:
        return int(ide_exec(namespace, pod, "python3", "-c", RUNNING_JOBS))
    except (subprocess.CalledProcessError, ValueError):
        return 0  # the session is starting: no UI yet


def wake_in_the_browser(url: str, password: str, artifacts: Path) -> None:
    """The visit, as its user makes it: the waker's page asks the workspace's password,
    shows the progress, and opens JupyterLab by itself, whose own sign-in leads to the
    launcher and the file browser listing FILE."""
    with chromium(artifacts) as browser:
        browser.driver.get(url)
        assert browser.driver.title.startswith("Workspace asleep"), browser.driver.title
        browser.visible((By.ID, "password")).send_keys(password)
        browser.screenshot("waker-password")
        browser.visible((By.ID, "wake")).click()
        browser.visible((By.ID, "progress"))
        assert browser.driver.title.startswith("Waking"), browser.driver.title
        browser.screenshot("waker-progress")
        browser.jupyterlab_sign_in(password, timeout=WAKE_SECONDS)
        browser.visible(listed_file(FILE))
        browser.screenshot("file-listed")


# First pulls, the quiet, the stops, two wakes: past the default 600 s.
@pytest.mark.timeout(1500)
def test_idle_workspaces_stop_and_a_visit_wakes_them_with_their_home(
    kube: client.ApiClient,
    workspace_namespace: str,
    real_workspaces: Callable[..., dict[str, Any]],
    artifacts: Path,
) -> None:
    namespace = workspace_namespace
    core = client.CoreV1Api(kube)
    workspaces = Workspaces(kube, namespace)
    releases = {"alice": False, "bob": True}
    # carol's R cell keeps its kernel busy, sleeping, after her browser is closed.
    carol = real_workspaces("carol", idle={"stopAfter": E2E_STOP_AFTER})
    with chromium(artifacts / "carol") as browser:
        browser.jupyterlab_login(
            browser_url(carol["status"]["url"]), ide_password(namespace, "carol")
        )
        browser.start_r_cell("Sys.sleep(3600)")
        browser.visible(KERNEL_BUSY)
        browser.screenshot("cell-running")
    # dave's Spark job, started from a shell, runs past stopAfter.
    real_workspaces("dave", idle={"stopAfter": E2E_STOP_AFTER})
    dave_pod = workspaces.running_pod("dave").metadata.name
    spark_job = subprocess.Popen(
        [str(BIN / "kubectl"), "--kubeconfig", str(KUBECONFIG), "exec", dave_pod, "-n", namespace,
         "-c", IDE_CONTAINER, "--", "Rscript", "-e", SPARK_JOB],
        env=tool_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until("dave's Spark job runs", lambda: spark_jobs_running(namespace, dave_pod) == 1, 180)
    spark_started = datetime.now(UTC)
    # Created together, once carol and dave are busy: they go idle together.
    for name, release in releases.items():
        idle = {"stopAfter": E2E_STOP_AFTER, "releaseVolume": release}
        workspaces.create(
            sample(name, ide="jupyterlab", resources=E2E_RESOURCES, spark=E2E_SPARK, idle=idle)
        )
    running = {
        name: workspaces.wait_phase(name, "Running", FIRST_START_SECONDS) for name in releases
    }
    written = {}
    for name in releases:
        pod = workspaces.running_pod(name).metadata.name
        # Before the write: the agent may snapshot it before `kubectl exec` returns.
        written[name] = datetime.now(UTC)
        ide_exec(namespace, pod, "sh", "-c", f"echo {name} > {HOME}/{FILE}")

    # Real idleness: the agent reports it, the operator stops the pod after a last snapshot.
    for name in releases:
        stopped = workspaces.wait_phase(name, "Idle", STOP_AFTER.total_seconds() + STOP_SECONDS)
        verdict = find(stopped["status"]["conditions"], IDLE) or {}
        assert verdict.get("status") == "True" and verdict.get("reason") == NO_ACTIVITY, verdict
        wait_until(f"{name}'s pod gone", partial(no_pod, workspaces, name), STOP_SECONDS)
    stopped_at = datetime.now(UTC)
    # carol's cell still runs, and dave's Spark job: not stopped. His job must first
    # outlast stopAfter (and a check more), by when, without it, he would be stopped.
    outlasted = spark_started + STOP_AFTER + AGENT_CHECK - datetime.now(UTC)
    time.sleep(max(outlasted.total_seconds(), 0))
    for name in ("carol", "dave"):
        status = (workspaces.get(name) or {})["status"]
        assert status["phase"] == "Running", status
        assert (find(status["conditions"], IDLE) or {}).get("status") != "True", status
    assert spark_jobs_running(namespace, dave_pod) == 1
    assert workspaces.running_pod("dave").metadata.name == dave_pod
    spark_job.terminate()
    spark_job.wait(timeout=30)
    for name in releases:
        assert named(workspace_events(core, namespace, Reason.IDLE_STOPPING), name)
        # The stop's last snapshot ran after the write (status times are whole seconds;
        # the last snapshot may have been taken earlier, when it found nothing new).
        snapshot = ((workspaces.get(name) or {}).get("status") or {}).get("lastSnapshot") or {}
        assert parse_timestamp(snapshot["finalAt"]) > written[name], snapshot
        files = files_of_last_snapshot_before(restic_env(kube, namespace, name), stopped_at)
        assert any(path.endswith(f"/{FILE}") for path in files), sorted(files)
    # bob's home lives in object storage only while he is idle.
    wait_until("bob's claim released", lambda: workspaces.home_claim_gone("bob"), STOP_SECONDS)
    assert named(workspace_events(core, namespace, VOLUME_RELEASED), "bob")
    assert not workspaces.home_claim_gone("alice")

    for name in releases:
        url = browser_url(running[name]["status"]["url"])
        wait_until(f"the waker at {name}'s URL", partial(waker_answers, url))
        wake_in_the_browser(url, ide_password(namespace, name), artifacts / name)
        pod = workspaces.running_pod(name).metadata.name
        assert ide_exec(namespace, pod, "cat", f"{HOME}/{FILE}") == f"{name}\n"
    assert not workspaces.home_claim_gone("bob")
    restored = find((workspaces.get("bob") or {})["status"]["conditions"], HOME_RESTORED) or {}
    assert restored.get("status") == "True", restored
