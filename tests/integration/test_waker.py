"""Waking on a visit, on the local cluster: the operator with its waker on the bridge
address, a workspace stopped for idleness (kwok nodes, so the test writes the agent's
Idle report itself), and requests through the real ingress controller (Traefik),
which follows the Ingress to the waker's Service and EndpointSlice and back."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from kubernetes import client

from devtools.deploy import ingress_address
from devtools.network import HOST_ADDRESS
from devtools.services import free_port
from rspark_operator import names, waker
from rspark_operator.builders.pod import IDE_PASSWORD_KEY
from rspark_operator.idle import QUIET_BEFORE_REPORT
from tests.integration.test_idle import agent_client, agent_reports, idle_since
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, sample


def backend(kube: client.ApiClient, namespace: str) -> str:
    ingress = client.NetworkingV1Api(kube).read_namespaced_ingress("alice", namespace)
    return str(ingress.spec.rules[0].http.paths[0].backend.service.name)


def test_a_visit_with_the_password_wakes_an_idle_workspace(
    kube: client.ApiClient, workspace_namespace: str, operator_with: Callable[..., Any]
) -> None:
    namespace = workspace_namespace
    port = free_port(HOST_ADDRESS)
    operator_with(waker_address=f"{HOST_ADDRESS}:{port}", waker_ip=HOST_ADDRESS)
    workspaces = Workspaces(kube, namespace)
    minutes = int(QUIET_BEFORE_REPORT.total_seconds() // 60)  # the shortest stopAfter
    workspaces.create(sample("alice", idle={"stopAfter": f"{minutes}m"}))
    running = workspaces.wait_phase("alice", "Running")
    assert backend(kube, namespace) == names.rstudio_service_name("alice")
    slice_ = client.DiscoveryV1Api(kube).read_namespaced_endpoint_slice("alice-waker", namespace)
    assert slice_.endpoints[0].addresses == [HOST_ADDRESS] and slice_.ports[0].port == port
    host = running["status"]["url"].split("/")[2]
    started = workspaces.running_pod("alice").metadata.creation_timestamp
    agent = agent_client(kube, namespace, "alice")
    agent_reports(agent, namespace, {"conditions": [idle_since(started - timedelta(hours=1))]})
    workspaces.wait_phase("alice", "Idle", timeout=QUIET_BEFORE_REPORT.total_seconds() + 120)
    wait_until("the Ingress to the waker", lambda: backend(kube, namespace) == "alice-waker")
    session = requests.Session()
    url = f"http://{ingress_address()}/"

    def visit(**kwargs: Any) -> requests.Response:
        method = "POST" if "data" in kwargs else "GET"
        return session.request(
            method, url, headers={"Host": host, **kwargs.pop("headers", {})},
            allow_redirects=False, timeout=10, **kwargs,
        )  # fmt: skip

    # Through Traefik to the waker: its page asks for the password.
    def from_waker() -> requests.Response | None:
        answer = visit()
        return answer if answer.headers.get(waker.WAKER_HEADER) else None

    page = wait_until("the waker's page through the ingress controller", from_waker)
    assert page.status_code == 200 and 'name="password"' in page.text
    assert visit(data={"password": "not it"}).status_code == 403
    assert names.RESTART_ANNOTATION not in (workspaces.get("alice") or {})["metadata"].get(
        "annotations", {}
    )
    secret = client.CoreV1Api(kube).read_namespaced_secret(
        names.passwords_secret_name("alice"), namespace
    )
    password = base64.b64decode(secret.data[IDE_PASSWORD_KEY]).decode()
    before = datetime.now(UTC).replace(microsecond=0)
    woken = visit(data={"password": password})
    assert woken.status_code == 303, woken.text
    assert session.cookies.get(waker.COOKIE_PREFIX + "alice")
    annotations = (workspaces.get("alice") or {})["metadata"]["annotations"]
    asked = annotations[names.RESTART_ANNOTATION]
    assert datetime.fromisoformat(asked) >= before
    progress = visit(headers={"Accept": "application/json"})
    assert progress.headers.get(waker.WAKER_HEADER) and progress.json()["steps"]
    # Once per stop: the page's polls and another visit write nothing more.
    assert visit(data={"password": password}).status_code == 303
    again = (workspaces.get("alice") or {})["metadata"]["annotations"]
    assert again[names.RESTART_ANNOTATION] == asked
    # Awake: the Ingress leads to the IDE again; the waker no longer answers there.
    workspaces.wait_phase("alice", "Running", timeout=120)
    wait_until("the Ingress to the IDE", lambda: backend(kube, namespace) == "alice-rstudio")
    wait_until("the IDE's route", lambda: from_waker() is None)
