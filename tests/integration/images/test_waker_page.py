"""The waker's page in Chromium, without the cluster: a server on 127.0.0.1 answers a
workspace's URL with the waker's own answers (`waker.answer`) until the test turns
the URL over to "the IDE", as the ingress controller does once the Ingress leads to
the new pod. The page asks for the password, shows the progress, keeps polling
through the switch's 502 and opens the IDE by itself. With oidc sign-in (the identity
its proxy passes): the page of someone allowed in follows the IDE's own sign-in to the
provider, another origin; someone else gets the refusal."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from rspark_operator import waker
from rspark_operator.status import Reason
from tests.support.browser import ARTIFACTS, chromium

PREFIX = "/team/alice/"
PASSWORD = "correct horse battery"
IDE_PAGE = "<html><head><title>JupyterLab</title></head><body>the IDE</body></html>"
PROVIDER_PATH = "/provider"
PROVIDER_PAGE = "<html><head><title>Sign in</title></head><body>the provider</body></html>"
ALLOWED = ("alice@example.org",)
ROUTE = waker.Route("127.0.0.1", PREFIX, "team", "alice")


class Url:
    """Who answers the URL: the waker (with the workspace's status), a 502 (the route
    switching) or the IDE."""

    def __init__(self) -> None:
        self.answering = "waker"
        self.status: dict[str, Any] = {"phase": "Idle"}
        self.wakes = 0
        self.switching_answers = 0
        # With oidc sign-in: who the proxy in front says the visitor is.
        self.person: str | None = None
        self.provider = ""  # the provider's page, on another origin than the workspace's


def handler(url: Url) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.reply(None)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            self.reply((form.get(waker.PASSWORD_FIELD) or [""])[0])

        def reply(self, posted: str | None) -> None:
            if self.path == PROVIDER_PATH:
                self.send(200, "text/html", PROVIDER_PAGE, {})
                return
            if url.answering == "signin":  # the IDE's proxy: to the provider, elsewhere
                self.send(302, "text/plain", "", {"Location": url.provider})
                return
            if url.answering == "ide":
                self.send(200, "text/html", IDE_PAGE, {})
                return
            if url.answering == "switching":
                url.switching_answers += 1
                self.send(502, "text/plain", "Bad Gateway", {})
                return
            cookie = self.headers.get("Cookie", "").partition("=")[2] or None
            wants_json = "application/json" in self.headers.get("Accept", "")
            oidc = url.person is not None
            visit = waker.Visit(
                self.path, posted=posted, cookie=cookie, wants_json=wants_json, person=url.person
            )
            body = {"metadata": {"uid": "uid-1"}, "status": url.status}
            answer = waker.answer(ROUTE, body, visit, password=PASSWORD, oidc=oidc, allowed=ALLOWED)
            url.wakes += answer.wake and (posted is not None or (oidc and not wants_json))
            headers = {waker.WAKER_HEADER: "1", **answer.headers}
            self.send(answer.code, answer.content_type, answer.text, headers)

        def send(self, code: int, kind: str, text: str, headers: dict[str, str]) -> None:
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def served() -> Iterator[tuple[str, Url]]:
    url = Url()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(url))
    url.provider = f"http://localhost:{server.server_address[1]}{PROVIDER_PATH}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}{PREFIX}", url
    server.shutdown()


def test_the_page_asks_the_password_shows_the_progress_and_opens_the_ide(
    served: tuple[str, Url],
) -> None:
    address, url = served
    with chromium(ARTIFACTS / "waker-page") as browser:
        browser.driver.get(address)
        browser.visible((By.ID, "password")).send_keys("not it")
        browser.visible((By.ID, "wake")).click()
        browser.visible((By.ID, "wrong"))
        assert url.wakes == 0
        browser.visible((By.ID, "password")).send_keys(PASSWORD)
        browser.visible((By.ID, "wake")).click()
        browser.visible((By.ID, "progress"))
        browser.screenshot("waking")
        assert url.wakes == 1
        url.status = {"phase": "Pending",
                      "conditions": [{"type": "Ready", "reason": Reason.RESTORING,
                                      "message": "restoring the home"}]}  # fmt: skip
        browser.wait(30).until(
            lambda driver: driver.find_element(By.ID, "step-3").get_attribute("class") == "now"
        )
        assert browser.driver.find_element(By.ID, "message").text == "restoring the home"
        browser.screenshot("restoring")
        url.answering = "switching"
        browser.wait(30).until(lambda driver: url.switching_answers >= 2)
        assert browser.driver.find_element(By.ID, "progress")  # still the page, not the 502
        url.answering = "ide"
        browser.wait(30).until(lambda driver: driver.title == "JupyterLab")
        assert browser.driver.current_url == address
        browser.screenshot("in-the-ide")


def test_with_oidc_the_page_follows_the_ides_sign_in_and_refuses_others(
    served: tuple[str, Url],
) -> None:
    address, url = served
    url.person = "bob@example.org"
    with chromium(ARTIFACTS / "waker-page-oidc") as browser:
        browser.driver.get(address)
        assert "bob@example.org" in browser.visible((By.ID, "refused")).text
        browser.screenshot("bob-refused")
        assert url.wakes == 0
        url.person = "alice@example.org"
        browser.driver.get(address)
        browser.visible((By.ID, "progress"))
        browser.screenshot("alice-waking")
        assert url.wakes > 0
        # Ready: the IDE's own proxy sends the poll to the provider, on another origin.
        url.answering = "signin"
        browser.wait(30).until(lambda driver: driver.title == "Sign in")
        assert browser.driver.current_url.startswith("http://localhost:")
        browser.screenshot("on-to-the-ides-sign-in")
