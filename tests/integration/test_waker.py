"""Waking on a visit, on the local cluster: the operator with its waker on the bridge
address, a workspace stopped for idleness (kwok nodes, so the test writes the agent's
Idle report itself), and requests through the real ingress controller (Traefik),
which follows the Ingress to the waker's Service and EndpointSlice and back. With
oidc sign-in: the real Keycloak, oauth2-proxy and Chromium."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from kubernetes import client
from selenium.webdriver.common.by import By

from devtools import keycloak
from devtools.deploy import browser_url, ingress_address
from devtools.network import HOST_ADDRESS
from devtools.services import free_port
from rspark_operator import names, waker
from rspark_operator.builders.pod import IDE_PASSWORD_KEY
from rspark_operator.builders.signin import WAKER_COOKIE
from rspark_operator.ide import LOOPBACK
from rspark_operator.idle import SHORTEST_IDLE_QUIET
from rspark_operator.quantity import parse_duration
from rspark_operator.settings import OperatorSettings
from tests.integration.e2e.test_signin import signin_secret
from tests.integration.test_idle import (
    QUICK_IDLE,
    agent_client,
    agent_reports,
    awake_again,
    idle_since,
)
from tests.support.browser import ARTIFACTS, chromium
from tests.support.kube import wait_until
from tests.support.signin import on_login_page, provider_as_secure, sign_in, waker_proxy
from tests.support.workspaces import Workspaces, sample

# The waker's page: the refusal, the progress of the wake.
REFUSED = (By.ID, "refused")
PROGRESS = (By.ID, "progress")


def backend(kube: client.ApiClient, namespace: str) -> str:
    ingress = client.NetworkingV1Api(kube).read_namespaced_ingress("alice", namespace)
    return str(ingress.spec.rules[0].http.paths[0].backend.service.name)


def idle_alice(kube: client.ApiClient, namespace: str, port: int, **spec: Any) -> str:
    """The workspace alice (`spec`) Running, then stopped for idleness after the
    shortest stopAfter (the operator's RSPARK_IDLE_QUIET=1m; the agent's report written
    here), its URL led to the waker (EndpointSlice: `port` on the host's
    bridge address). Its URL."""
    workspaces = Workspaces(kube, namespace)
    workspaces.create(sample("alice", idle={"stopAfter": SHORTEST_IDLE_QUIET}, **spec))
    running = workspaces.wait_phase("alice", "Running")
    assert backend(kube, namespace) == names.rstudio_service_name("alice")
    slice_ = client.DiscoveryV1Api(kube).read_namespaced_endpoint_slice("alice-waker", namespace)
    assert slice_.endpoints[0].addresses == [HOST_ADDRESS] and slice_.ports[0].port == port
    started = workspaces.running_pod("alice").metadata.creation_timestamp
    agent = agent_client(kube, namespace, "alice")
    agent_reports(agent, namespace, {"conditions": [idle_since(started - timedelta(hours=1))]})
    quiet = parse_duration(SHORTEST_IDLE_QUIET).total_seconds()
    workspaces.wait_phase("alice", "Idle", timeout=quiet + 120)
    wait_until("the Ingress to the waker", lambda: backend(kube, namespace) == "alice-waker")
    return str(running["status"]["url"])


def test_a_visit_with_the_password_wakes_an_idle_workspace(
    kube: client.ApiClient, workspace_namespace: str, operator_with: Callable[..., Any]
) -> None:
    namespace = workspace_namespace
    port = free_port(HOST_ADDRESS)
    operator_with(waker_address=f"{HOST_ADDRESS}:{port}", waker_ip=HOST_ADDRESS, **QUICK_IDLE)
    workspaces = Workspaces(kube, namespace)
    host = idle_alice(kube, namespace, port).split("/")[2]
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
    awake_again(kube, namespace)
    wait_until("the Ingress to the IDE", lambda: backend(kube, namespace) == "alice-rstudio")
    wait_until("the IDE's route", lambda: from_waker() is None)


def test_with_oidc_sign_in_only_someone_allowed_in_wakes_it(
    kube: client.ApiClient,
    workspace_namespace: str,
    operator_with: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """RSPARK_SIGNIN=oidc: the real Keycloak, the platform's oauth2-proxy in front of
    the waker (a process on the bridge address, as the operator is one here: in a
    cluster both are containers of the operator's pod), Chromium through Traefik. An
    anonymous visit goes to the sign-in; bob, signed in but not allowed, gets the 403
    page, also when he sends alice's identity himself, and wakes nothing; alice signs
    in and her visit wakes it."""
    namespace = workspace_namespace
    waker_port, proxy_port = free_port(), free_port(HOST_ADDRESS)
    values = {
        "signin": "oidc",
        "oidc_issuer_url": keycloak.ISSUER_URL,
        "oidc_client_id": keycloak.CLIENT_ID,
        "waker_address": f"{LOOPBACK}:{waker_port}",
        "waker_ip": HOST_ADDRESS,
        "waker_proxy_port": str(proxy_port),
        **QUICK_IDLE,
    }
    settings = OperatorSettings.model_validate(
        {"snapshot_repository_base": "s3:http://s3/x", **values}
    )
    provider = keycloak.KeycloakProcess(tmp_path / "keycloak.log")
    provider.start()
    try:
        with waker_proxy(settings, tmp_path, f"{HOST_ADDRESS}:{proxy_port}"):
            operator_with(**values)
            signin_secret(namespace)
            url = idle_alice(kube, namespace, proxy_port, user=keycloak.ALICE.email)
            visit_idle_workspace(kube, namespace, browser_url(url))
    finally:
        provider.stop()


def visit_idle_workspace(kube: client.ApiClient, namespace: str, url: str) -> None:
    workspaces = Workspaces(kube, namespace)

    def asked() -> str | None:
        annotations = (workspaces.get("alice") or {})["metadata"].get("annotations") or {}
        return annotations.get(names.RESTART_ANNOTATION)

    host = urllib.parse.urlsplit(url).netloc

    def get(**kwargs: Any) -> requests.Response:
        """As the browser asks, by the ingress controller's address (this machine's
        resolver does not know *.localhost; Chromium does)."""
        headers = {"Host": host, **kwargs.pop("headers", {})}
        return requests.get(
            f"http://{ingress_address()}/", headers=headers, allow_redirects=False, timeout=10,
            **kwargs,
        )  # fmt: skip

    def at_sign_in() -> requests.Response | None:
        answer = get()
        return answer if answer.status_code == 302 else None

    anonymous = wait_until("the waker's sign-in through the ingress controller", at_sign_in)
    assert anonymous.headers["Location"].startswith(keycloak.ISSUER_URL)
    secure = provider_as_secure(keycloak.ISSUER_URL)
    artifacts = ARTIFACTS / "waker-oidc"
    with chromium(artifacts / "bob", secure) as bob:
        bob.driver.get(url)
        assert on_login_page(bob, keycloak.ISSUER_URL)
        sign_in(bob, keycloak.BOB)
        refused = bob.visible(REFUSED).text
        assert keycloak.BOB.email in refused and "spec.access" in refused, refused
        bob.screenshot("bob-refused")
        # His session, with alice's identity in the header: the proxy replaces it.
        cookies = {c["name"]: c["value"] for c in bob.driver.get_cookies()}
        assert WAKER_COOKIE in cookies
        forged = get(cookies=cookies, headers={waker.IDENTITY_HEADER: keycloak.ALICE.email})
        assert forged.status_code == 403 and keycloak.BOB.email in forged.text
    assert asked() is None
    with chromium(artifacts / "alice", secure) as alice:
        alice.driver.get(url)
        assert on_login_page(alice, keycloak.ISSUER_URL)
        sign_in(alice, keycloak.ALICE)
        alice.visible(PROGRESS)
        assert alice.driver.current_url == url and alice.driver.title.startswith("Waking")
        alice.screenshot("alice-waking")
        assert asked() is not None
    awake_again(kube, namespace)
    wait_until("the Ingress to the IDE", lambda: backend(kube, namespace) == "alice-rstudio")
