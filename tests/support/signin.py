"""Sign-in at a workspace's URL as alice and bob see it in Chromium: Keycloak's login
form, the sign-in proxy's 403 page, JupyterLab behind it, signing out. And the real
sign-in proxy as a plain process, configured as the operator configures the pod's,
and the platform's in front of the waker."""

from __future__ import annotations

import secrets
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import yaml
from selenium.webdriver.common.by import By

from devtools import keycloak
from devtools.images import go_tool
from rspark_operator import contract
from rspark_operator.api import Workspace
from rspark_operator.builders.signin import (
    ALLOWED_KEY,
    CLIENT_SECRET_KEY,
    CONFIG_DIR,
    COOKIE_SECRET_KEY,
    IDE_ROUTE_ID,
    PING_PATH,
    PROXY_PATH,
    SECRET_DIR,
    build_signin_config_map,
    proxy_args,
    proxy_config_key,
    waker_proxy_args,
)
from rspark_operator.ide import LOOPBACK
from rspark_operator.settings import OperatorSettings
from tests.support.browser import Browser, chromium
from tests.support.kube import wait_until

# Keycloak's login form (its keycloak.v2 theme) and its logout confirmation.
USERNAME = (By.ID, "username")
PASSWORD = (By.ID, "password")
LOGIN = (By.ID, "kc-login")
CONFIRM_LOGOUT = (By.ID, "kc-logout")
# JupyterLab's launcher: one card per kernel and tool, whatever the kernels.
LAUNCHER_CARD = (By.CSS_SELECTOR, ".jp-LauncherCard")
# The kubelet refreshes a mounted ConfigMap within its sync period (a minute) plus
# its cache's lifetime; the proxy re-reads its list as soon as the file changes.
ACCESS_PROPAGATION_SECONDS = 180


def provider_as_secure(issuer: str) -> str:
    """Keycloak sets its login cookies Secure (SameSite=None) even over plain http; a
    browser keeps Secure cookies only from a secure context, which the local cluster's
    provider (http on the bridge address, not a loopback one) is not and a production
    one (https) is. The tests' browser counts that one origin as secure."""
    return (
        f"--unsafely-treat-insecure-origin-as-secure=http://{urllib.parse.urlsplit(issuer).netloc}"
    )


def sign_in(browser: Browser, person: keycloak.Person) -> None:
    """On the provider's login form: the person's name and password."""
    browser.visible(USERNAME).send_keys(person.username)
    browser.visible(PASSWORD).send_keys(person.password)
    browser.screenshot(f"{person.username}-login-form")
    browser.visible(LOGIN).click()


def on_login_page(browser: Browser, issuer: str) -> bool:
    browser.visible(USERNAME)
    return browser.driver.current_url.startswith(issuer)


def walk_through(artifacts: Path, url: str, issuer: str, add_bob: Callable[[], None]) -> None:
    """Unauthenticated: the provider's login page. alice signs in and reaches her
    JupyterLab; bob, signed in, gets the proxy's 403 page; `add_bob` lists him and he
    gets in; alice signs out of the proxy and the provider and must sign in again."""
    secure = provider_as_secure(issuer)
    with chromium(artifacts / "alice", secure) as alice:
        alice.driver.get(url)
        assert on_login_page(alice, issuer)
        alice.screenshot("unauthenticated-login-page")
        sign_in(alice, keycloak.ALICE)
        alice.visible(LAUNCHER_CARD, timeout=120)
        assert alice.driver.current_url.startswith(url)
        alice.screenshot("alice-in-her-jupyterlab")

        with chromium(artifacts / "bob", secure) as bob:
            bob.driver.get(url)
            assert on_login_page(bob, issuer)
            sign_in(bob, keycloak.BOB)
            bob.wait(60).until(lambda driver: "403" in driver.title)
            page = bob.driver.find_element(By.TAG_NAME, "body").text
            assert "Forbidden" in page and "spec.access" in page, page
            bob.screenshot("bob-forbidden")

            add_bob()

            def bob_is_in() -> bool:
                """Through the provider (bob's session there signs him in at once): the
                403 page again, or JupyterLab."""
                bob.driver.get(url)
                bob.wait(60).until(
                    lambda driver: "403" in driver.title or driver.find_elements(*LAUNCHER_CARD)
                )
                return "403" not in bob.driver.title

            wait_until("bob reaches alice's JupyterLab", bob_is_in, ACCESS_PROPAGATION_SECONDS, 5)
            bob.visible(LAUNCHER_CARD, timeout=120)
            bob.screenshot("bob-in-after-spec-access")

        # Sign out: the proxy's session, then the provider's.
        end_session = keycloak.logout_url(url, issuer)
        alice.driver.get(
            f"{url}{PROXY_PATH}/sign_out?rd={urllib.parse.quote(end_session, safe='')}"
        )
        alice.visible(CONFIRM_LOGOUT).click()
        assert on_login_page(alice, issuer)
        alice.screenshot("alice-signed-out")
        alice.driver.get(url)
        assert on_login_page(alice, issuer)
        alice.screenshot("alice-must-sign-in-again")


@contextmanager
def signin_proxy(
    ws: Workspace, settings: OperatorSettings, workdir: Path, port: int, ide_port: int
) -> Iterator[Path]:
    """oauth2-proxy with the workspace's arguments and ConfigMap, its mounts moved under
    `workdir`, on LOOPBACK:`port` rather than the pod's address, its route to the IDE
    to LOOPBACK:`ide_port`; the client secret is Keycloak's. Yields its list of who may
    pass (a file to rewrite as the kubelet does)."""
    mounts = {
        SECRET_DIR: workdir / "secret",
        CONFIG_DIR: workdir / "config",
        contract.SIGNIN_LOG_DIR: workdir / "signin-log",
    }
    for directory in mounts.values():
        directory.mkdir()

    def moved(text: str) -> str:
        # The Secret's directory first: the ConfigMap's is a prefix of its name.
        for pod_path, here in mounts.items():
            text = text.replace(pod_path, str(here))
        return text

    for key, value in build_signin_config_map(ws, settings)["data"].items():
        (mounts[CONFIG_DIR] / key).write_text(value)
    config_file = mounts[CONFIG_DIR] / proxy_config_key(ws, settings)
    config = yaml.safe_load(config_file.read_text())
    config["server"]["bindAddress"] = f"{LOOPBACK}:{port}"
    (ide,) = [u for u in config["upstreamConfig"]["upstreams"] if u["id"] == IDE_ROUTE_ID]
    ide["uri"] = f"http://{LOOPBACK}:{ide_port}/"
    config_file.write_text(moved(yaml.safe_dump(config)))
    (mounts[SECRET_DIR] / CLIENT_SECRET_KEY).write_text(keycloak.CLIENT_SECRET)
    (mounts[SECRET_DIR] / COOKIE_SECRET_KEY).write_text(secrets.token_hex(16))
    with running_proxy(
        [moved(arg) for arg in proxy_args(ws, settings)], workdir, f"{LOOPBACK}:{port}"
    ):
        yield mounts[CONFIG_DIR] / ALLOWED_KEY


@contextmanager
def running_proxy(args: list[str], workdir: Path, address: str) -> Iterator[None]:
    """The real oauth2-proxy with `args`, until it answers its ping on `address`; its
    log in `workdir`."""
    (binary, _), *_ = go_tool("oauth2-proxy", "")
    log_path = workdir / "proxy.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([str(binary), *args], stdout=log, stderr=subprocess.STDOUT)

        def answers() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                return requests.get(f"http://{address}{PING_PATH}", timeout=5).ok
            except requests.ConnectionError:
                return False

        try:
            wait_until("the sign-in proxy answers", answers, 60, 0.2)
            yield
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextmanager
def waker_proxy(settings: OperatorSettings, workdir: Path, address: str) -> Iterator[None]:
    """The platform's sign-in proxy in front of the waker (`waker_proxy_args`), on
    `address` rather than the pod's, the platform's Secret (Keycloak's client secret)
    in `workdir`."""
    secret_dir = workdir / "secret"
    secret_dir.mkdir()
    (secret_dir / CLIENT_SECRET_KEY).write_text(keycloak.CLIENT_SECRET)
    (secret_dir / COOKIE_SECRET_KEY).write_text(secrets.token_hex(16))
    listen = f"--http-address=0.0.0.0:{settings.waker_proxy_port}"
    args = [
        f"--http-address={address}" if arg == listen else arg.replace(SECRET_DIR, str(secret_dir))
        for arg in waker_proxy_args(settings)
    ]
    assert f"--http-address={address}" in args
    with running_proxy(args, workdir, address):
        yield
