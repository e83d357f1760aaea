"""Waking an idle workspace on a visit to its URL: what the waker decides and shows.

While a workspace is stopped for idleness, and until its next pod is Ready, its
Ingress sends its URL to the Service `<name>-waker` (`routed_to_waker`), whose
EndpointSlice points at the waker, an HTTP server in the operator's process
(`wakeserver.py`); any ingress controller follows an Ingress backend. The waker
tells the workspace from the request's host and path (`find_workspace`) and wakes it
only for someone allowed in, with the same restart annotation as `kubectl rspark
restart`. With RSPARK_SIGNIN=ide-password it asks for the workspace's password (the
one in its passwords Secret). With RSPARK_SIGNIN=oidc the platform's sign-in proxy
stands in front of the waker (`builders/signin.waker_proxy_args`): it signs the
visitor in at the identity provider and passes who they are in `IDENTITY_HEADER`;
the waker lets in the people the workspace's own proxy lets in
(`signin.allowed_users`) and answers anyone else 403. Its page (`render_page`,
jinja2) shows the progress and opens the IDE as soon as the URL stops being the
waker's (the waker's answers carry `WAKER_HEADER`).
Pure: no I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2

from rspark_operator import names
from rspark_operator.conditions import IDLE, READY, find, parse_timestamp
from rspark_operator.status import Reason

# On every answer of the waker: the page's script stops polling when the IDE answers.
WAKER_HEADER = "X-Rspark-Waker"
# The cookie that says this browser gave the password (per workspace, its path).
COOKIE_PREFIX = "rspark-wake-"
# With oidc sign-in: who the visitor is, set by the sign-in proxy in front of the waker
# (oauth2-proxy's --pass-user-headers; the claim RSPARK_OIDC_USER_CLAIM names), which
# replaces whatever the request carried under that name.
IDENTITY_HEADER = "X-Forwarded-Email"
POLL_MILLISECONDS = 2000
PASSWORD_FIELD = "password"

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("rspark_operator", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def routed_to_waker(phase: object, conditions: Iterable[Mapping[str, Any]]) -> bool:
    """Whether the workspace's URL goes to the waker: stopped for idleness (phase Idle),
    or woken and its new pod not Ready yet (the agent's Idle condition, among
    `conditions`, is still the stopped pod's, and the phase is not Running)."""
    if phase == "Idle":
        return True
    idle = find([dict(c) for c in conditions], IDLE)
    return bool(idle and idle.get("status") == "True" and phase != "Running")


def status_routed_to_waker(status: Mapping[str, Any]) -> bool:
    return routed_to_waker(status.get("phase"), status.get("conditions") or [])


@dataclass(frozen=True)
class Route:
    """Where a workspace is reached, and which it is."""

    host: str
    prefix: str
    namespace: str
    name: str
    secure: bool = False  # https: its cookies are Secure


def find_workspace(routes: Iterable[Route], host: str, path: str) -> Route | None:
    """The workspace a request is for: its host, and the longest prefix of its path
    (the host may carry a port; a prefix "/team/alice/" also takes "/team/alice")."""
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    matching = [
        route for route in routes if route.host == host and (path + "/").startswith(route.prefix)
    ]
    return max(matching, key=lambda route: len(route.prefix), default=None)


def wake_cookie(password: str, uid: str) -> str:
    """The cookie's value once the password was given: bound to the workspace's uid and
    its password (a new password, or another workspace of that name, needs it again)."""
    return hmac.new(password.encode(), uid.encode(), hashlib.sha256).hexdigest()


def cookie_ok(given: str | None, password: str, uid: str) -> bool:
    return given is not None and hmac.compare_digest(given, wake_cookie(password, uid))


def password_ok(given: str, password: str) -> bool:
    return bool(password) and hmac.compare_digest(given.encode(), password.encode())


def wake_asked(annotations: Mapping[str, str], status: Mapping[str, Any]) -> bool:
    """A wake was asked after the workspace stopped: its restart annotation is newer
    than the agent's last activity (the Idle condition's time)."""
    idle = find(list(status.get("conditions") or []), IDLE) or {}
    try:
        requested = parse_timestamp(annotations.get(names.RESTART_ANNOTATION, ""))
        since = parse_timestamp(str(idle.get("lastTransitionTime", "")))
    except ValueError:
        return False
    return requested > since


STEPS = (
    "Stopped while idle",
    "Starting its pod",
    "Restoring its home",
    "Starting the IDE",
)


def progress(status: Mapping[str, Any], *, wake_asked: bool) -> tuple[list[dict[str, str]], str]:
    """The steps (done, now, to come) and the Ready condition's message."""
    ready = find(list(status.get("conditions") or []), READY) or {}
    reason = ready.get("reason")
    if status.get("phase") == "Idle":
        current = 1 if wake_asked else 0
    elif reason == Reason.RESTORING:
        current = 2
    elif reason == Reason.POD_NOT_READY or status.get("phase") == "Running":
        current = 3
    else:
        current = 1
    steps = [
        {"label": label, "state": "done" if i < current else "now" if i == current else ""}
        for i, label in enumerate(STEPS)
    ]
    return steps, str(ready.get("message", ""))


def render_page(
    route: Route,
    status: Mapping[str, Any],
    *,
    ask_password: bool,
    wrong: bool = False,
    refused: str | None = None,
    wake_asked: bool = False,
) -> str:
    """The waker's page: the password form, the refusal of a signed-in person who may
    not enter (`refused`: who they are), or the progress of the wake."""
    steps, message = progress(status, wake_asked=wake_asked)
    asleep = ask_password or refused is not None
    title = "Workspace asleep" if asleep else "Waking your workspace"
    return _TEMPLATES.get_template("waking.html").render(
        title=title,
        namespace=route.namespace,
        name=route.name,
        ask_password=ask_password,
        wrong=wrong,
        refused=refused,
        steps=steps,
        message=message,
        header=WAKER_HEADER,
        poll_ms=POLL_MILLISECONDS,
    )


def state(status: Mapping[str, Any], *, wake_asked: bool) -> dict[str, Any]:
    """What the page's script polls for: the steps and the message."""
    steps, message = progress(status, wake_asked=wake_asked)
    return {"phase": status.get("phase", ""), "steps": steps, "message": message}


@dataclass(frozen=True)
class Answer:
    """What the waker answers a request, and whether it wakes the workspace first."""

    code: int
    content_type: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    wake: bool = False


@dataclass(frozen=True)
class Visit:
    """A request to a workspace's URL, as the waker reads it: its path, the password
    posted (None: a GET), the cookie it carries, whether it polls for JSON, and who
    the sign-in proxy says the visitor is (`IDENTITY_HEADER`; oidc sign-in only)."""

    path: str
    posted: str | None = None
    cookie: str | None = None
    wants_json: bool = False
    person: str | None = None


def answer(
    route: Route,
    body: Mapping[str, Any],
    visit: Visit,
    *,
    password: str,
    oidc: bool,
    allowed: Collection[str] = (),
) -> Answer:
    """The waker's answer to a visit of a workspace (`body`) whose password is
    `password`. With oidc sign-in, the visitor's identity decides instead: `allowed`
    is who may enter (`signin.allowed_users`, lower case, as the workspace's proxy
    compares them); anyone else, or no identity at all, is refused and wakes nothing."""
    status = body.get("status") or {}
    if oidc:
        person = (visit.person or "").strip()
        if not person or person.lower() not in allowed:
            page = render_page(route, status, ask_password=False, refused=person or "nobody")
            return Answer(403, "text/html", page)
        return _waking(route, status, visit)
    uid = str(body["metadata"]["uid"])
    given = visit.cookie
    headers = {}
    if visit.posted is not None:
        if not password_ok(visit.posted, password):
            page = render_page(route, status, ask_password=True, wrong=True)
            return Answer(403, "text/html", page)
        given = wake_cookie(password, uid)
        secure = "; Secure" if route.secure else ""
        name = COOKIE_PREFIX + route.name
        headers["Set-Cookie"] = (
            f"{name}={given}; Path={route.prefix}; HttpOnly; SameSite=Lax{secure}"
        )
    if not cookie_ok(given, password, uid):
        return Answer(200, "text/html", render_page(route, status, ask_password=True))
    if visit.posted is not None:  # back with GET, so that reloading the page posts nothing
        return Answer(303, "text/plain", "", {**headers, "Location": visit.path}, wake=True)
    return _waking(route, status, visit)


def _waking(route: Route, status: Mapping[str, Any], visit: Visit) -> Answer:
    """Someone allowed in: the wake, and its progress (the page, or its JSON)."""
    if visit.wants_json:
        return Answer(200, "application/json", json.dumps(state(status, wake_asked=True)),
                      wake=True)  # fmt: skip
    page = render_page(route, status, ask_password=False, wake_asked=True)
    return Answer(200, "text/html", page, wake=True)
