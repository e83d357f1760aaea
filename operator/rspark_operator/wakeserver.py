"""The waker's HTTP server, in the operator's process (RSPARK_WAKER_ADDRESS): the
pages of idle workspaces, and the wake itself (`waker.py` decides and renders).

Per request: the workspace, found by its host and path in a table of every
workspace's URL (listed again at most every `ROUTES_SECONDS`), read again; with
RSPARK_SIGNIN=ide-password its passwords Secret; with RSPARK_SIGNIN=oidc who may
enter it (`signin.allowed_users`) and who the sign-in proxy in front says the
visitor is (`waker.IDENTITY_HEADER`). A wake is the restart annotation
(`names.restart_patch`), written once per stop: only when the workspace is stopped
and no wake was asked since.
"""

from __future__ import annotations

import http.cookies
import logging
import threading
import time
import urllib.parse
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rspark_operator import names, waker
from rspark_operator.api import GROUP, KIND, VERSION
from rspark_operator.builders.pod import IDE_PASSWORD_KEY
from rspark_operator.builders.signin import allowed_users, signin_enabled
from rspark_operator.builders.url import ingress_host, ingress_path, url_scheme
from rspark_operator.cluster import KubeError, secret_text
from rspark_operator.conditions import timestamp
from rspark_operator.kube import Kube, url
from rspark_operator.settings import OperatorSettings
from rspark_operator.validation import InvalidSpecError, parse_workspace

log = logging.getLogger("rspark.waker")

ROUTES_SECONDS = 30.0
# A request for no known workspace lists them again, at most this often.
MISS_SECONDS = 5.0
MERGE_PATCH = "application/merge-patch+json"
# A password form is small: more is not one.
MAX_FORM_BYTES = 4096


class Routes:
    """Every workspace's host and prefix, listed again when older than ROUTES_SECONDS or
    when a request matches none (a workspace made since; at most every MISS_SECONDS)."""

    def __init__(self, api: Kube, settings: OperatorSettings) -> None:
        self.api = api
        self.settings = settings
        self.routes: list[waker.Route] = []
        self.listed = float("-inf")
        self.lock = threading.Lock()

    def find(self, host: str, path: str) -> waker.Route | None:
        with self.lock:
            found = waker.find_workspace(self.routes, host, path)
            age = time.monotonic() - self.listed
            if (found is None and age > MISS_SECONDS) or age > ROUTES_SECONDS:
                self.routes = self._list()
                self.listed = time.monotonic()
                found = waker.find_workspace(self.routes, host, path)
            return found

    def _list(self) -> list[waker.Route]:
        namespaces = self.settings.watch_namespaces or [""]
        paths = [url(f"{GROUP}/{VERSION}", KIND, namespace) for namespace in namespaces]
        routes = []
        for path in paths:
            for body in self.api.request("GET", path).get("items", []):
                try:
                    ws = parse_workspace(body, self.settings)
                except InvalidSpecError:
                    continue
                routes.append(
                    waker.Route(
                        ingress_host(ws, self.settings),
                        ingress_path(ws, self.settings),
                        ws.namespace,
                        ws.name,
                        secure=url_scheme(ws, self.settings) == "https",
                    )
                )
        return routes


class Waker(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: Kube, settings: OperatorSettings) -> None:
        host, _, port = settings.waker_address.rpartition(":")
        super().__init__((host or "0.0.0.0", int(port)), Handler)
        self.api = api
        self.settings = settings
        self.routes = Routes(api, settings)

    def password(self, route: waker.Route) -> str:
        secret = self.api.get(
            "v1", "Secret", route.namespace, names.passwords_secret_name(route.name)
        )
        return secret_text(secret or {}, IDE_PASSWORD_KEY) or ""

    def allowed(self, body: dict[str, Any]) -> list[str]:
        try:
            return allowed_users(parse_workspace(body, self.settings))
        except InvalidSpecError:
            return []

    def wake(self, body: dict[str, Any], who: str) -> None:
        """The restart annotation, once per stop."""
        status = body.get("status") or {}
        annotations = body["metadata"].get("annotations") or {}
        if status.get("phase") != "Idle" or waker.wake_asked(annotations, status):
            return
        metadata = body["metadata"]
        stamp = timestamp(datetime.now(UTC))
        self.api.request(
            "PATCH",
            url(f"{GROUP}/{VERSION}", body["kind"], metadata["namespace"], metadata["name"]),
            body=names.restart_patch(stamp),
            content_type=MERGE_PATCH,
        )
        log.info("waking %s/%s: a visit of %s", metadata["namespace"], metadata["name"], who)


class Handler(BaseHTTPRequestHandler):
    server: Waker
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(form=None)

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_FORM_BYTES)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode(errors="replace"))
        self._answer(form=form)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _answer(self, form: dict[str, list[str]] | None) -> None:
        path = urllib.parse.urlsplit(self.path).path
        try:
            route = self.server.routes.find(self.headers.get("Host", ""), path)
            body = route and self.server.api.get(
                f"{GROUP}/{VERSION}", KIND, route.namespace, route.name
            )
            if route is None or not body:
                self._send(404, "text/plain", "No workspace here.\n")
                return
            oidc = signin_enabled(self.server.settings)
            visit = waker.Visit(
                path=self.path,
                posted=None if form is None else (form.get(waker.PASSWORD_FIELD) or [""])[0],
                cookie=_cookie(self.headers.get("Cookie", ""), waker.COOKIE_PREFIX + route.name),
                wants_json="application/json" in self.headers.get("Accept", ""),
                person=self.headers.get(waker.IDENTITY_HEADER) if oidc else None,
            )
            password = "" if oidc else self.server.password(route)
            allowed = self.server.allowed(body) if oidc else []
            reply = waker.answer(route, body, visit, password=password, oidc=oidc, allowed=allowed)
            if reply.wake:
                self.server.wake(body, visit.person or "someone with its password")
            self._send(reply.code, reply.content_type, reply.text, reply.headers)
        except KubeError as error:
            log.warning("waker: %s", error)
            self._send(503, "text/plain", "The workspace cannot be read now; try again.\n")

    def _send(
        self, code: int, content_type: str, text: str, headers: dict[str, str] | None = None
    ) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header(waker.WAKER_HEADER, "1")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _cookie(header: str, name: str) -> str | None:
    try:
        cookies = http.cookies.SimpleCookie(header)
    except http.cookies.CookieError:
        return None
    return cookies[name].value if name in cookies else None


def serve(api: Kube, settings: OperatorSettings) -> Waker:
    """The waker on RSPARK_WAKER_ADDRESS, in a thread of its own."""
    server = Waker(api, settings)
    threading.Thread(target=server.serve_forever, name="waker", daemon=True).start()
    log.info("waker on %s", settings.waker_address)
    return server
