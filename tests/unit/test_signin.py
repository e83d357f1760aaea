"""Sign-in at the workspace's URL: the proxy in front of the IDE, its list, its settings."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from rspark_operator import contract, idle, names
from rspark_operator.builders import build_children, build_pod
from rspark_operator.builders.pod import IDE_PASSWORD_KEY
from rspark_operator.builders.signin import (
    ALLOWED_KEY,
    CONFIG_DIR,
    IDE_ROUTE_ID,
    SIGNIN_CONTAINER,
    SPARK_UI_PATH,
    allowed_users,
    proxy_args,
    proxy_config,
    proxy_config_key,
    spark_ui_url,
)
from rspark_operator.builders.spark import UI_PORTS
from rspark_operator.builders.url import workspace_url
from rspark_operator.ide import (
    HEALTHCHECK_COMMAND,
    IDES,
    LOOPBACK,
    PASSWORD_ENV,
    SPARK_UI_URL_ENV,
    IdeName,
)
from rspark_operator.settings import SettingsError, load_settings
from tests.unit.workspaces import settings, workspace

pytestmark = pytest.mark.unit

Manifest = dict[str, Any]
ISSUER = "http://10.200.0.1:8180/realms/rspark"


def oidc(**overrides: Any) -> Any:
    return settings(
        signin="oidc", oidc_issuer_url=ISSUER, oidc_client_id="rspark-workspaces", **overrides
    )


def containers(pod: Manifest) -> dict[str, Manifest]:
    return {c["name"]: c for c in pod["spec"]["containers"]}


def env_of(container: Manifest) -> dict[str, Any]:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container["env"]}


def args_of(container: Manifest) -> dict[str, str]:
    pairs = (arg.removeprefix("--").split("=", 1) for arg in container["args"])
    return dict(pairs)


def signin_config_map(children: list[Manifest]) -> Manifest:
    (found,) = [
        c for c in children if c["metadata"]["name"] == names.signin_config_map_name("demo")
    ]
    return found


@pytest.mark.parametrize("ide", list(IDES))
def test_the_proxy_takes_the_ide_port_and_the_ide_listens_on_loopback_without_login(
    ide: IdeName,
) -> None:
    row = IDES[ide]
    pod = build_pod(workspace(ide=ide), oidc())
    by_name = containers(pod)
    proxy, main = by_name[SIGNIN_CONTAINER], by_name["ide"]
    assert proxy["ports"] == [{"name": "http", "containerPort": row.port}]
    assert "http" not in {port["name"] for port in main["ports"]}
    config = proxy_config(workspace(ide=ide), oidc())
    assert config["server"] == {"bindAddress": f"0.0.0.0:{row.port}"}
    (ide_route,) = [u for u in config["upstreamConfig"]["upstreams"] if u["id"] == IDE_ROUTE_ID]
    assert ide_route == {
        "id": IDE_ROUTE_ID,
        "path": "/",
        "uri": f"http://{LOOPBACK}:{row.proxied_port}/",
    }
    assert row.proxied_port != row.port
    env = env_of(main)
    # No password: the IDE's own login is off, told by the image's own variables.
    assert PASSWORD_ENV not in env
    assert row.proxied_env(row.proxied_port).items() <= env.items()
    assert LOOPBACK in row.proxied_env(row.proxied_port).values()
    # The kubelet cannot reach 127.0.0.1 in the pod: the image checks itself.
    assert main["readinessProbe"]["exec"] == {"command": list(HEALTHCHECK_COMMAND)}
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/ping", "port": "http"}


def test_the_ide_password_login_stays_without_the_proxy() -> None:
    pod = build_pod(workspace(), settings())
    assert set(containers(pod)) == {"ide"}
    main = containers(pod)["ide"]
    assert env_of(main)[PASSWORD_ENV]["secretKeyRef"]["key"] == IDE_PASSWORD_KEY
    children = build_children(workspace(), settings())
    assert names.signin_config_map_name("demo") not in {c["metadata"]["name"] for c in children}


def test_only_the_owner_and_spec_access_pass() -> None:
    ws = workspace(access=["Bob@Example.org", "carol@example.org", "alice@example.com"])
    assert allowed_users(ws) == ["alice@example.com", "bob@example.org", "carol@example.org"]
    config_map = signin_config_map(build_children(ws, oidc()))
    assert config_map["data"][ALLOWED_KEY] == (
        "alice@example.com\nbob@example.org\ncarol@example.org\n"
    )
    proxy = containers(build_pod(ws, oidc()))[SIGNIN_CONTAINER]
    assert args_of(proxy)["authenticated-emails-file"] == f"{CONFIG_DIR}/{ALLOWED_KEY}"
    assert "email-domain" not in args_of(proxy)


def test_a_change_of_spec_access_changes_the_config_map_not_the_pod() -> None:
    before, after = workspace(), workspace(access=["bob@example.org"])
    assert build_pod(before, oidc()) == build_pod(after, oidc())
    old = signin_config_map(build_children(before, oidc()))
    new = signin_config_map(build_children(after, oidc()))
    assert old["data"][ALLOWED_KEY] != new["data"][ALLOWED_KEY]
    assert set(old["data"]) == set(new["data"])


def test_the_proxy_configuration_is_in_the_config_map_under_its_digest() -> None:
    """The proxy reads it at start only: a change of it names another file, so the pod
    changes with it (and is replaced); an unchanged one leaves the pod as it is."""
    ws = workspace()
    key = proxy_config_key(ws, oidc())
    data = signin_config_map(build_children(ws, oidc()))["data"]
    assert yaml.safe_load(data[key]) == proxy_config(ws, oidc())
    proxy = containers(build_pod(ws, oidc()))[SIGNIN_CONTAINER]
    assert args_of(proxy)["alpha-config"] == f"{CONFIG_DIR}/{key}"
    moved = oidc(oidc_user_claim="preferred_username")
    assert proxy_config_key(ws, moved) != key
    assert build_pod(ws, moved) != build_pod(ws, oidc())


def test_the_proxy_reads_its_secrets_from_files_and_runs_restricted() -> None:
    pod = build_pod(workspace(), oidc(oidc_secret="idp"))
    proxy = containers(pod)[SIGNIN_CONTAINER]
    assert "env" not in proxy
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounted = {m["name"]: volumes[m["name"]] for m in proxy["volumeMounts"]}
    (secret,) = [v["secret"] for v in mounted.values() if "secret" in v]
    assert secret["secretName"] == "idp"
    assert {item["key"] for item in secret["items"]} == {"client-secret", "cookie-secret"}
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
    assert proxy["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert proxy["resources"]["limits"]["memory"]


def test_the_proxy_logs_each_request_into_a_file_the_agent_reads() -> None:
    """oauth2-proxy's own flags (pkg/apis/options/logging.go of 7.15.6): one line a
    request in the agent's format, UTC, the file kept small; the agent mounts the
    proxy's volume read-only."""
    pod = build_pod(workspace(), oidc())
    proxy = containers(pod)[SIGNIN_CONTAINER]
    agent = pod["spec"]["initContainers"][0]
    args = args_of(proxy)
    log_file = f"{contract.SIGNIN_LOG_DIR}/{contract.SIGNIN_LOG_FILE}"
    assert args["logging-filename"] == log_file
    assert args["request-logging-format"] == idle.REQUEST_LOG_FORMAT
    assert args["logging-local-time"] == "false"
    assert (args["logging-max-size"], args["logging-max-backups"]) == ("1", "1")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    (written,) = [m for m in proxy["volumeMounts"] if m["mountPath"] == contract.SIGNIN_LOG_DIR]
    (read,) = [m for m in agent["volumeMounts"] if m["mountPath"] == contract.SIGNIN_LOG_DIR]
    assert written["name"] == read["name"] and read["readOnly"] and not written["readOnly"]
    assert volumes[read["name"]]["emptyDir"]["sizeLimit"]
    # The agent reads the file the proxy writes (mode 0600): the same uid.
    assert proxy["securityContext"]["runAsUser"] == agent["securityContext"]["runAsUser"]
    plain = build_pod(workspace(), settings())["spec"]["initContainers"][0]
    assert contract.SIGNIN_LOG_DIR not in {m["mountPath"] for m in plain["volumeMounts"]}


# The URL prefix as the proxy sees it and as the browser does.
URL_CASES = pytest.mark.parametrize(
    ("ide", "mode", "seen", "browser"),
    [
        ("jupyterlab", "host", "/", "/"),
        ("rstudio", "host", "/", "/"),
        # JupyterLab serves under the prefix: the proxy sees it too.
        ("jupyterlab", "path", "/team/demo/", "/team/demo/"),
        # The Ingress strips the prefix before RStudio's proxy; the browser keeps it.
        ("rstudio", "path", "/", "/team/demo/"),
    ],
)


@URL_CASES
def test_the_proxy_paths_follow_the_url(ide: IdeName, mode: str, seen: str, browser: str) -> None:
    args = args_of({"args": proxy_args(workspace(ide=ide), oidc(ingress_mode=mode))})
    assert args["proxy-prefix"] == f"{seen}oauth2"
    # A path alone: the proxy takes the browser's host and port.
    assert args["redirect-url"] == f"{browser}oauth2/callback"
    assert args["cookie-path"] == browser


def test_cookies_are_secure_with_tls_and_sign_out_may_return_to_the_provider() -> None:
    plain = args_of({"args": proxy_args(workspace(), oidc())})
    assert plain["cookie-secure"] == "false"
    tls = args_of({"args": proxy_args(workspace(), oidc(ingress_tls_secret="wildcard"))})
    assert tls["cookie-secure"] == "true"
    assert plain["whitelist-domain"] == "10.200.0.1:8180"
    (provider,) = proxy_config(workspace(), oidc())["providers"]
    assert provider["oidcConfig"] == {"issuerURL": ISSUER, "emailClaim": "email"}
    assert provider["clientID"] == "rspark-workspaces"
    assert provider["code_challenge_method"] == "S256"
    assert provider["clientSecretFile"].endswith("/client-secret")


def rewritten(config: dict[str, Any], path: str) -> tuple[str, str] | None:
    """Where the proxy sends `path` (as it sees it), oauth2-proxy's way: the rewrite
    routes first, the longest pattern first; a plain route is a path prefix."""
    upstreams = config["upstreamConfig"]["upstreams"]
    rewrites = sorted((u for u in upstreams if "rewriteTarget" in u), key=lambda u: -len(u["path"]))
    for upstream in rewrites:
        if re.search(upstream["path"], path):
            target = re.sub(upstream["path"], upstream["rewriteTarget"].replace("$", "\\"), path)
            return upstream["uri"], target
    plain = [u for u in upstreams if "rewriteTarget" not in u and path.startswith(u["path"])]
    return (plain[0]["uri"], path) if plain else None


@URL_CASES
def test_the_spark_ui_is_under_the_workspace_url_with_its_prefix_stripped(
    ide: IdeName, mode: str, seen: str, browser: str
) -> None:
    config = proxy_config(workspace(ide=ide), oidc(ingress_mode=mode))
    ui = f"http://{LOOPBACK}:{UI_PORTS.first}/"
    seen, context = f"{seen}spark", f"{browser}spark"
    # The UI's bare root would redirect off the prefix: the proxy goes to its jobs page.
    assert rewritten(config, seen) == (ui, "/jobs/")
    assert rewritten(config, f"{seen}/") == (ui, "/jobs/")
    assert rewritten(config, f"{seen}/stages/stage/") == (ui, "/stages/stage/")
    assert rewritten(config, f"{seen}/static/webui.js") == (ui, "/static/webui.js")
    # Not the UI: a longer name, the IDE's own paths.
    ide_uri = f"http://{LOOPBACK}:{IDES[ide].proxied_port}/"
    assert rewritten(config, f"{seen}ly/") == (ide_uri, f"{seen}ly/")
    assert rewritten(config, f"{seen.removesuffix('spark')}lab/") == (
        ide_uri,
        f"{seen.removesuffix('spark')}lab/",
    )
    (header,) = config["injectRequestHeaders"]
    assert header["name"] == "X-Forwarded-Context"
    (value,) = header["values"]
    assert value == {"secretSource": {"value": context}}


UI_URL_CASES = pytest.mark.parametrize(
    ("ide", "signin", "mode", "url"),
    [
        ("jupyterlab", "oidc", "host", "http://demo-team.rspark.localhost/spark"),
        ("rstudio", "oidc", "host", "http://demo-team.rspark.localhost/spark"),
        ("rstudio", "oidc", "path", "http://rspark.localhost/team/demo/spark"),
        # JupyterLab's own login: jupyter-server-proxy serves the UI behind it.
        ("jupyterlab", "ide-password", "host", "http://demo-team.rspark.localhost/spark"),
        ("jupyterlab", "ide-password", "path", "http://rspark.localhost/team/demo/spark"),
        # RStudio's own login: nothing serves <prefix>spark/, so no link to it.
        ("rstudio", "ide-password", "host", None),
    ],
)


@UI_URL_CASES
def test_the_ide_is_told_where_the_browser_opens_the_spark_ui(
    ide: IdeName, signin: str, mode: str, url: str | None
) -> None:
    chosen = oidc(ingress_mode=mode) if signin == "oidc" else settings(ingress_mode=mode)
    ws = workspace(ide=ide)
    assert spark_ui_url(ws, chosen) == url
    env = env_of(containers(build_pod(ws, chosen))["ide"])
    assert env.get(SPARK_UI_URL_ENV) == url
    if url is not None:
        assert url == workspace_url(ws, chosen) + SPARK_UI_PATH


@pytest.mark.parametrize("bad", ["bob,carol@example.org", "bob carol", "#bob", ""])
def test_an_access_entry_is_one_identity(bad: str) -> None:
    with pytest.raises(ValidationError):
        workspace(access=[bad])


def test_oidc_settings_are_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSPARK_SIGNIN", "oidc")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "RSPARK_OIDC_ISSUER_URL=None: required with RSPARK_SIGNIN=oidc" in message
    assert "RSPARK_OIDC_CLIENT_ID=None: required with RSPARK_SIGNIN=oidc" in message

    monkeypatch.setenv("RSPARK_OIDC_ISSUER_URL", "login.example.com/realms/x")
    monkeypatch.setenv("RSPARK_OIDC_CLIENT_ID", "rspark")
    with pytest.raises(SettingsError, match=r"RSPARK_OIDC_ISSUER_URL=.*not an http"):
        load_settings()

    monkeypatch.setenv("RSPARK_OIDC_ISSUER_URL", ISSUER)
    loaded = load_settings()
    assert (loaded.signin, loaded.oidc_issuer_url, loaded.oidc_secret) == (
        "oidc",
        ISSUER,
        "rspark-oidc",
    )


def test_the_ide_password_is_the_default_and_needs_no_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().signin == "ide-password"
    monkeypatch.setenv("RSPARK_SIGNIN", "saml")
    with pytest.raises(SettingsError, match="RSPARK_SIGNIN='saml'"):
        load_settings()
