"""Waking on a visit: where the URL leads (the Ingress, the waker's Service and
EndpointSlice), which workspace a request is for, the password and its cookie, the
page, and the reconcile that switches the URL to the waker and back."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from rspark_operator import main, names, waker
from rspark_operator.builders import build_children, build_ingress
from rspark_operator.builders.signin import (
    allowed_users,
    proxy_args,
    waker_proxy_args,
)
from rspark_operator.builders.waker import MANAGED_BY_LABEL, SERVICE_NAME_LABEL
from rspark_operator.conditions import timestamp
from rspark_operator.settings import SettingsError, load_settings
from rspark_operator.status import Reason
from tests.unit.fakeapi import FakeApi
from tests.unit.test_idle_reconcile import agent_reports, phase, run_at, running_with
from tests.unit.test_reconcile import NAME, NAMESPACE, NOW, POD, pod_ready
from tests.unit.test_signin import ISSUER, oidc
from tests.unit.workspaces import settings, workspace

pytestmark = pytest.mark.unit

WAKER = settings(waker_address="0.0.0.0:8081", waker_ip="10.244.0.7")
INGRESS = ("Ingress", NAMESPACE, NAME)


def condition(type_: str, status: str, reason: str = "", at: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "lastTransitionTime": at}


@pytest.mark.parametrize(
    ("status", "to_waker"),
    [
        ({"phase": "Idle"}, True),
        # Woken: the new pod is not Ready, the agent's verdict is still the old pod's.
        ({"phase": "Pending", "conditions": [condition("Idle", "True")]}, True),
        ({"phase": "Running", "conditions": [condition("Idle", "True")]}, False),
        ({"phase": "Pending", "conditions": [condition("Idle", "False")]}, False),
        ({"phase": "Pending"}, False),
        ({"phase": "Suspended"}, False),
        ({}, False),
    ],
)
def test_the_url_goes_to_the_waker_while_stopped_and_until_the_next_pod_is_ready(
    status: dict[str, Any], to_waker: bool
) -> None:
    assert waker.status_routed_to_waker(status) is to_waker


def backend(ingress: dict[str, Any]) -> dict[str, Any]:
    path = ingress["spec"]["rules"][0]["http"]["paths"][0]
    return {"service": path["backend"]["service"]["name"], "path": path["path"],
            "type": path["pathType"]}  # fmt: skip


@pytest.mark.parametrize("ide", ["rstudio", "jupyterlab"])
def test_the_ingress_leads_to_the_waker_with_the_whole_path(ide: str) -> None:
    ws = workspace(ide=ide)
    path_mode = settings(ingress_mode="path")
    assert backend(build_ingress(ws, path_mode, to_waker=True)) == {
        "service": names.waker_service_name("demo"),
        "path": "/team/demo/",
        "type": "Prefix",
    }
    assert backend(build_ingress(ws, path_mode))["service"] == names.rstudio_service_name("demo")


def test_the_waker_service_has_no_selector_and_its_slice_is_the_operator_pod() -> None:
    children = {(c["kind"], c["metadata"]["name"]): c for c in build_children(workspace(), WAKER)}
    service = children[("Service", "demo-waker")]
    assert "selector" not in service["spec"]
    assert service["spec"]["ports"][0]["port"] == 8787
    endpoints = children[("EndpointSlice", "demo-waker")]
    assert endpoints["metadata"]["labels"][SERVICE_NAME_LABEL] == "demo-waker"
    assert endpoints["metadata"]["labels"][MANAGED_BY_LABEL] == "rspark-operator"
    assert endpoints["addressType"] == "IPv4"
    assert endpoints["endpoints"][0]["addresses"] == ["10.244.0.7"]
    assert endpoints["ports"] == [{"name": "http", "port": 8081, "protocol": "TCP"}]
    assert endpoints["metadata"]["ownerReferences"]
    # Off: neither, and the Ingress always leads to the IDE.
    plain = build_children(workspace(), settings(), to_waker=True)
    assert not [c for c in plain if c["metadata"]["name"] == "demo-waker"]
    (ingress,) = [c for c in plain if c["kind"] == "Ingress"]
    assert backend(ingress)["service"] == "demo-rstudio"


def test_the_waker_needs_its_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSPARK_SNAPSHOT_REPOSITORY_BASE", "s3:http://s3/rspark")
    monkeypatch.setenv("RSPARK_WAKER_ADDRESS", "0.0.0.0:8081")
    with pytest.raises(SettingsError, match="RSPARK_WAKER_IP"):
        load_settings()
    monkeypatch.setenv("RSPARK_WAKER_IP", "not an address")
    with pytest.raises(SettingsError, match="RSPARK_WAKER_IP"):
        load_settings()
    monkeypatch.setenv("RSPARK_WAKER_IP", "fd00::7")
    assert load_settings().waker_port == 8081


ROUTES = [
    waker.Route("rspark.localhost", "/team/alice/", "team", "alice"),
    waker.Route("rspark.localhost", "/team/alice-2/", "team", "alice-2"),
    waker.Route("bob-team.rspark.localhost", "/", "team", "bob"),
]


@pytest.mark.parametrize(
    ("host", "path", "found"),
    [
        ("rspark.localhost", "/team/alice/lab/tree/a.ipynb", "alice"),
        ("rspark.localhost:8080", "/team/alice", "alice"),
        ("rspark.localhost", "/team/alice-2/", "alice-2"),
        ("bob-team.rspark.localhost", "/rpc/get_events", "bob"),
        ("rspark.localhost", "/team/carol/", None),
        ("other.localhost", "/team/alice/", None),
    ],
)
def test_a_request_is_for_the_workspace_of_its_host_and_longest_prefix(
    host: str, path: str, found: str | None
) -> None:
    route = waker.find_workspace(ROUTES, host, path)
    assert (route.name if route else None) == found


def test_the_password_and_its_cookie() -> None:
    assert waker.password_ok("correct horse", "correct horse")
    assert not waker.password_ok("correct", "correct horse")
    assert not waker.password_ok("", "")  # no password in the Secret: nobody
    cookie = waker.wake_cookie("correct horse", "uid-1")
    assert waker.cookie_ok(cookie, "correct horse", "uid-1")
    assert not waker.cookie_ok(cookie, "new password", "uid-1")
    assert not waker.cookie_ok(cookie, "correct horse", "uid-2")  # another workspace
    assert not waker.cookie_ok(None, "correct horse", "uid-1")


def test_a_wake_is_asked_once_per_stop() -> None:
    stopped = {"conditions": [condition("Idle", "True", at=timestamp(NOW))]}
    later = {names.RESTART_ANNOTATION: timestamp(NOW + timedelta(minutes=1))}
    earlier = {names.RESTART_ANNOTATION: timestamp(NOW - timedelta(days=1))}
    assert waker.wake_asked(later, stopped)
    assert not waker.wake_asked(earlier, stopped)
    assert not waker.wake_asked({}, stopped)
    assert not waker.wake_asked(later, {})


def ready(reason: str, message: str = "") -> dict[str, Any]:
    return {"type": "Ready", "status": "False", "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("status", "asked", "now"),
    [
        ({"phase": "Idle"}, False, 0),
        ({"phase": "Idle"}, True, 1),
        ({"phase": "Pending", "conditions": [ready(Reason.POD_MISSING)]}, True, 1),
        ({"phase": "Pending", "conditions": [ready(Reason.RESTORING)]}, True, 2),
        ({"phase": "Pending", "conditions": [ready(Reason.POD_NOT_READY)]}, True, 3),
    ],
)
def test_the_progress_follows_the_status(status: dict[str, Any], asked: bool, now: int) -> None:
    steps, _ = waker.progress(status, wake_asked=asked)
    assert [step["state"] for step in steps] == [
        "done" if i < now else "now" if i == now else "" for i in range(len(waker.STEPS))
    ]


def test_the_page_asks_for_the_password_then_shows_the_progress() -> None:
    route = waker.Route("h", "/team/<b>/", "team", "<b>")
    status = {"phase": "Idle", "conditions": [ready(Reason.IDLE, "no activity since <t>")]}
    form = waker.render_page(route, status, ask_password=True, wrong=True)
    assert 'name="password"' in form and 'id="wrong"' in form
    assert "&lt;b&gt;" in form and "<b>" not in form  # escaped
    assert "poll()" not in form  # nothing to poll before the password
    waking = waker.render_page(route, status, ask_password=False, wake_asked=True)
    assert 'name="password"' not in waking
    assert waker.WAKER_HEADER in waking and "no activity since &lt;t&gt;" in waking
    refused = waker.render_page(route, status, ask_password=False, refused="<i>bob")
    assert "&lt;i&gt;bob" in refused and "<i>" not in refused and "poll()" not in refused
    assert waker.state(status, wake_asked=True)["steps"][1]["state"] == "now"


def ingress_service(fake: FakeApi) -> str:
    return str(backend(fake.objects[INGRESS])["service"])


def stopped_and_woken(fake: FakeApi) -> datetime:
    """A workspace stopped for idleness, its URL at the waker, then woken: the new pod
    created, not Ready yet. When it was woken."""
    running_with(fake, stopAfter="1h")
    run_at(fake, NOW, WAKER, children=True)
    assert ingress_service(fake) == "demo-rstudio"
    assert ("EndpointSlice", NAMESPACE, "demo-waker") in fake.objects
    agent_reports(fake, "True", NOW)
    stop = NOW + timedelta(minutes=61)
    run_at(fake, stop, WAKER)  # a status refresh (pod event) is enough
    assert phase(fake) == "Idle"
    assert ingress_service(fake) == "demo-waker"
    fake.finish_termination(*POD)
    run_at(fake, stop + timedelta(hours=1), WAKER, children=True)  # resync: stays
    assert ingress_service(fake) == "demo-waker"
    woken = stop + timedelta(hours=2)
    fake.objects[("RStudioWorkspace", NAMESPACE, NAME)]["metadata"]["annotations"] = {
        names.RESTART_ANNOTATION: timestamp(woken)
    }
    run_at(fake, woken, WAKER)
    assert phase(fake) == "Pending"
    assert ingress_service(fake) == "demo-waker"  # the new pod is not Ready yet
    fake.objects[POD]["metadata"]["creationTimestamp"] = timestamp(woken)
    return woken


@pytest.mark.parametrize("agent_first", [False, True])
def test_the_reconcile_switches_the_url_to_the_waker_and_back_once_ready(
    agent_first: bool,
) -> None:
    """`agent_first`: the new pod's agent reports Active before the IDE is Ready (its
    status event reconciles while Pending): the URL still comes back to the IDE."""
    fake = FakeApi()
    woken = stopped_and_woken(fake)
    if agent_first:
        agent_reports(fake, "False", woken + timedelta(seconds=2))
        run_at(fake, woken + timedelta(seconds=3), WAKER)
        assert phase(fake) == "Pending"
        assert ingress_service(fake) == "demo-waker"
    pod_ready(fake)
    run_at(fake, woken + timedelta(seconds=40), WAKER)
    assert phase(fake) == "Running"
    assert ingress_service(fake) == "demo-rstudio"


BODY = {
    "metadata": {"name": "alice", "namespace": "team", "uid": "uid-1"},
    "status": {"phase": "Idle", "conditions": [ready(Reason.IDLE, "no activity since then")]},
}
ALICE = waker.Route("rspark.localhost", "/team/alice/", "team", "alice")


def test_only_the_password_wakes_and_its_cookie_follows_the_progress() -> None:
    def visit(**kwargs: Any) -> waker.Answer:
        kwargs.setdefault("path", "/team/alice/lab?x=1")
        return waker.answer(ALICE, BODY, waker.Visit(**kwargs), password="pw", oidc=False)

    first = visit()
    assert (first.code, first.wake) == (200, False) and 'name="password"' in first.text
    wrong = visit(posted="nope")
    assert (wrong.code, wrong.wake, wrong.headers) == (403, False, {})
    right = visit(posted="pw")
    assert (right.code, right.wake) == (303, True)
    assert right.headers["Location"] == "/team/alice/lab?x=1"
    name, _, rest = right.headers["Set-Cookie"].partition("=")
    value = rest.split(";")[0]
    assert name == waker.COOKIE_PREFIX + "alice"
    assert "Path=/team/alice/" in rest and "HttpOnly" in rest and "Secure" not in rest
    page = visit(cookie=value)
    assert (page.code, page.wake) == (200, True) and "poll()" in page.text
    polled = visit(cookie=value, wants_json=True)
    assert polled.content_type == "application/json" and '"phase": "Idle"' in polled.text
    changed = waker.answer(ALICE, BODY, waker.Visit("/", cookie=value), password="new", oidc=False)
    assert not changed.wake and 'name="password"' in changed.text
    secure = waker.Route("h", "/", "team", "alice", secure=True)
    posted = waker.answer(secure, BODY, waker.Visit("/", posted="pw"), password="pw", oidc=False)
    assert "; Secure" in posted.headers["Set-Cookie"]


OIDC_WAKER = oidc(waker_address="127.0.0.1:8081", waker_ip="10.244.0.7")


def test_with_oidc_sign_in_only_the_people_allowed_in_wake_it() -> None:
    """The identity the sign-in proxy passes decides, compared as the workspace's own
    proxy compares it; a password wakes nothing."""
    ws = workspace(name="alice", user="Alice@Example.org", access=["carol@example.org"])
    allowed = allowed_users(ws)

    def visit(person: str | None, **kwargs: Any) -> waker.Answer:
        the_visit = waker.Visit("/lab", person=person, **kwargs)
        return waker.answer(ALICE, BODY, the_visit, password="", oidc=True, allowed=allowed)

    for person in ("alice@example.org", "ALICE@example.org", "carol@example.org"):
        page = visit(person)
        assert (page.code, page.wake) == (200, True) and "poll()" in page.text, person
    polled = visit("carol@example.org", wants_json=True)
    assert polled.wake and polled.content_type == "application/json"
    for stranger in ("bob@example.org", "", None):
        refused = visit(stranger, posted="pw")
        assert (refused.code, refused.wake) == (403, False), stranger
        assert 'id="refused"' in refused.text and "spec.access" in refused.text
        assert "poll()" not in refused.text and 'name="password"' not in refused.text
    assert "bob@example.org" in visit("bob@example.org").text


def test_with_oidc_the_waker_is_reached_through_its_sign_in_proxy() -> None:
    args = waker_proxy_args(OIDC_WAKER)
    assert "--upstream=http://127.0.0.1:8081/" in args
    assert "--http-address=0.0.0.0:4180" in args
    assert f"--oidc-issuer-url={ISSUER}" in args and "--client-id=rspark-workspaces" in args
    # Every signed-in person through, with who they are (the claim the workspaces'
    # proxies compare); the waker decides.
    assert "--email-domain=*" in args and "--pass-user-headers=true" in args
    assert "--oidc-email-claim=email" in args
    assert "--oidc-email-claim=preferred_username" in waker_proxy_args(
        oidc(waker_address="127.0.0.1:8081", waker_ip="10.244.0.7",
             oidc_user_claim="preferred_username")
    )  # fmt: skip
    # In host mode its callback is the workspace's own (the one registered for it).
    ws = workspace()
    own = [a for a in proxy_args(ws, OIDC_WAKER) if a.startswith("--redirect-url=")]
    assert own == ["--redirect-url=/oauth2/callback"]
    assert "--redirect-url=/oauth2/callback" in args and "--cookie-path=/" in args
    children = {(c["kind"], c["metadata"]["name"]): c for c in build_children(ws, OIDC_WAKER)}
    slice_ = children[("EndpointSlice", "demo-waker")]
    assert slice_["ports"] == [{"name": "http", "port": 4180, "protocol": "TCP"}]
    ingress = build_ingress(ws, OIDC_WAKER, to_waker=True)
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/"
    # In path mode too the Ingress leads only the workspace's prefix there (the
    # callback's Ingress is the platform's: one per host, never one per workspace).
    path_mode = OIDC_WAKER.model_copy(update={"ingress_mode": "path"})
    paths = build_ingress(ws, path_mode, to_waker=True)["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["backend"]["service"]["name"]) for p in paths] == [
        ("/team/demo/", "demo-waker")
    ]


def test_with_oidc_the_waker_listens_only_on_the_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "RSPARK_SNAPSHOT_REPOSITORY_BASE": "s3:http://s3/rspark",
        "RSPARK_SIGNIN": "oidc",
        "RSPARK_OIDC_ISSUER_URL": ISSUER,
        "RSPARK_OIDC_CLIENT_ID": "rspark-workspaces",
        "RSPARK_WAKER_IP": "10.244.0.7",
    }.items():
        monkeypatch.setenv(name, value)
    for address in ("0.0.0.0:8081", "10.244.0.7:8081", "waker:8081"):
        monkeypatch.setenv("RSPARK_WAKER_ADDRESS", address)
        with pytest.raises(SettingsError, match="RSPARK_WAKER_ADDRESS"):
            load_settings()
    for address in ("127.0.0.1:8081", "localhost:8081"):
        monkeypatch.setenv("RSPARK_WAKER_ADDRESS", address)
        assert load_settings().waker_port == 8081
    # The platform prints its proxy's arguments from the operator's settings.
    main.main(["--waker-proxy-args"])
    printed = capsys.readouterr().out.splitlines()
    assert printed == waker_proxy_args(load_settings())
    assert "--upstream=http://localhost:8081/" in printed  # where the waker listens


@pytest.mark.parametrize("flag", ["--waker-proxy", "--waker-proxy-args"])
@pytest.mark.parametrize(
    "waker", [{}, {"RSPARK_WAKER_ADDRESS": "0.0.0.0:8081", "RSPARK_WAKER_IP": "10.0.0.7"}]
)
def test_the_wakers_proxy_is_refused_without_oidc_and_a_waker(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    waker: dict[str, str],
) -> None:
    for name, value in {
        "RSPARK_SNAPSHOT_REPOSITORY_BASE": "s3:http://s3/rspark",
        "RSPARK_SNAPSHOT_MODE": "direct",
        **waker,
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main.main([flag])
    assert exited.value.code == 2
    assert "RSPARK_SIGNIN=oidc and RSPARK_WAKER_ADDRESS" in capsys.readouterr().err
