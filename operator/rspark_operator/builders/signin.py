"""Sign-in at the workspace's URL (RSPARK_SIGNIN=oidc): oauth2-proxy in the workspace pod.

The proxy listens on the IDE's port, the one the Service and the Ingress name, so
sign-in works behind any ingress controller; the IDE listens on 127.0.0.1 behind it
with its own login off (`ide.Ide.proxied_env`). The proxy signs people in at the
platform's identity provider and lets through only those listed in the ConfigMap
`<name>-signin`: spec.user and spec.access, one per line. It re-reads that file when
the kubelet updates the mounted ConfigMap (within about a minute), so a change of
spec.access changes the ConfigMap only, never the pod. Someone signed in but not on
the list gets the proxy's 403 page; a person removed from the list loses access at
their next request (the proxy checks its list on every request, not only at sign-in).

The proxy logs into a file of an emptyDir the snapshot agent reads (`contract.SIGNIN_LOG_DIR`):
its request lines tell the agent when a person last used the IDE (`idle.request_activity`),
and the agent passes its other lines (sign-in attempts, its messages) on to its own log.

Behind the same sign-in, `<workspace URL>spark/` is the Spark UI of the session's first
Spark application (`spark_ui_routes`). Routes and request headers are oauth2-proxy's
alpha configuration (the one way to strip a path prefix and set a header), so the
provider and the listening address are there too (`proxy_config`), in the same
ConfigMap under a name that carries its digest: a change of it is a change of the pod.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import yaml

from rspark_operator import contract, idle, names
from rspark_operator.api import Workspace
from rspark_operator.builders.hardening import SIGNIN_RESOURCES, signin_security_context
from rspark_operator.builders.metadata import Manifest, child
from rspark_operator.builders.spark import UI_PORTS
from rspark_operator.builders.url import ingress_path, tls_secret, workspace_url
from rspark_operator.ide import IDES, LOOPBACK
from rspark_operator.settings import OperatorSettings

SIGNIN_CONTAINER = "signin-proxy"
CONFIG_VOLUME = "signin"
SECRET_VOLUME = "signin-secret"
LOG_VOLUME = "signin-log"
# The log's file moves aside at 1 MB (oauth2-proxy's --logging-max-size, in MB) and one
# old file is kept: at most about 2 MB, within the volume's limit.
LOG_MAX_MEGABYTES = 1
LOG_VOLUME_LIMIT = "4Mi"
CONFIG_DIR = "/etc/rspark-signin"
SECRET_DIR = "/etc/rspark-signin-secret"
# The ConfigMap's key: who may pass, one identity a line (oauth2-proxy's
# authenticated-emails file, whatever claim RSPARK_OIDC_USER_CLAIM names).
ALLOWED_KEY = "allowed-users"
# The keys of the platform's Secret (RSPARK_OIDC_SECRET).
CLIENT_SECRET_KEY = "client-secret"
COOKIE_SECRET_KEY = "cookie-secret"
# oauth2-proxy's own liveness endpoint (no sign-in, not proxied).
PING_PATH = "/ping"
# Under the workspace's URL: the proxy's endpoints (sign_out, callback...).
PROXY_PATH = "oauth2"
# Under the workspace's URL: the Spark UI. Spark's UI serves from "/" and puts the
# prefix named by X-Forwarded-Context before its links; a request without the header
# (`kubectl port-forward`) gets plain links. Its bare root redirects to an absolute
# URL without the prefix, so the proxy sends that root to the jobs page itself.
SPARK_UI_PATH = "spark"
SPARK_UI_HOME = "/jobs/"
FORWARDED_CONTEXT_HEADER = "X-Forwarded-Context"
OIDC_PROVIDER_ID = "oidc"
# oauth2-proxy's command in the operator's image (images/operator/Dockerfile), which
# `rspark-operator --waker-proxy` runs in front of the waker.
WAKER_PROXY_COMMAND = "oauth2-proxy"
# The route to the IDE (oauth2-proxy's request log names the route of each request).
IDE_ROUTE_ID = "ide"
# The platform's sign-in proxy in front of the waker (`waker_proxy_args`): its
# endpoints at the root of the browser's host (in host mode the workspace's own
# callback URL; in path mode the platform's Ingress of that path on the shared host
# leads it there), its session cookie under a name of its own.
WAKER_PROXY_PREFIX = f"/{PROXY_PATH}"
WAKER_COOKIE = "_rspark_waker"


def signin_enabled(settings: OperatorSettings) -> bool:
    return settings.signin == "oidc"


def allowed_users(ws: Workspace) -> list[str]:
    """spec.user and spec.access, as the proxy compares them (lower case), once each."""
    return sorted({person.lower() for person in (ws.spec.user, *ws.spec.access)})


def build_signin_config_map(ws: Workspace, settings: OperatorSettings) -> Manifest:
    config_map = child(ws, "v1", "ConfigMap", names.signin_config_map_name(ws.name))
    config_map["data"] = {
        ALLOWED_KEY: "".join(f"{person}\n" for person in allowed_users(ws)),
        proxy_config_key(ws, settings): render_proxy_config(ws, settings),
    }
    return config_map


@dataclass(frozen=True)
class Route:
    """Requests whose path (as the proxy sees it) matches `pattern` go to `target` on
    the pod's loopback, their path rewritten to `rewrite` (None: kept as it is)."""

    id: str
    pattern: str
    target: str
    rewrite: str | None = None

    def upstream(self) -> dict[str, str]:
        upstream = {"id": self.id, "path": self.pattern, "uri": self.target}
        if self.rewrite is not None:
            upstream["rewriteTarget"] = self.rewrite
        return upstream


def local_prefix(ws: Workspace, settings: OperatorSettings) -> str:
    """The URL prefix as the proxy sees it: the IDE's when it serves under it, else
    none (the Ingress strips it)."""
    return ingress_path(ws, settings) if IDES[ws.spec.ide].serves_under_prefix else "/"


def spark_ui_context(ws: Workspace, settings: OperatorSettings) -> str:
    """Where the browser sees the Spark UI: Spark's links start with it."""
    return f"{ingress_path(ws, settings)}{SPARK_UI_PATH}"


def spark_ui_url(ws: Workspace, settings: OperatorSettings) -> str | None:
    """<workspace URL>spark, where a browser opens the session's Spark UI; None where
    nothing serves it: a `connect` profile (the driver is the server), or an IDE with
    its own login that has no route to it (RStudio)."""
    connect = ws.profile is not None and ws.profile.spec.connect is not None
    if connect or not (signin_enabled(settings) or IDES[ws.spec.ide].serves_spark_ui):
        return None
    return f"{workspace_url(ws, settings)}{SPARK_UI_PATH}"


def spark_ui_routes(ws: Workspace, settings: OperatorSettings) -> list[Route]:
    """<prefix>spark and <prefix>spark/ to the UI's jobs page; <prefix>spark/<path> to
    the UI's /<path>."""
    here = "^" + re.escape(f"{local_prefix(ws, settings)}{SPARK_UI_PATH}")
    ui = f"http://{LOOPBACK}:{UI_PORTS.first}/"
    return [
        Route("spark-ui-home", f"{here}/?$", ui, SPARK_UI_HOME),
        Route("spark-ui", f"{here}/(.+)$", ui, "/$1"),
    ]


def proxy_routes(ws: Workspace, settings: OperatorSettings) -> list[Route]:
    ide = IDES[ws.spec.ide]
    ide_route = Route(IDE_ROUTE_ID, "/", f"http://{LOOPBACK}:{ide.proxied_port}/")
    return [ide_route, *spark_ui_routes(ws, settings)]


def proxy_config(ws: Workspace, settings: OperatorSettings) -> dict[str, Any]:
    """oauth2-proxy's alpha configuration: where it listens, the provider, the routes,
    and the one header it adds (to every request it passes: the IDEs ignore it)."""
    return {
        "server": {"bindAddress": f"0.0.0.0:{IDES[ws.spec.ide].port}"},
        "providers": [
            {
                "id": OIDC_PROVIDER_ID,
                "provider": "oidc",
                "clientID": settings.oidc_client_id,
                "clientSecretFile": f"{SECRET_DIR}/{CLIENT_SECRET_KEY}",
                "code_challenge_method": "S256",
                "oidcConfig": {
                    "issuerURL": settings.oidc_issuer_url,
                    "emailClaim": settings.oidc_user_claim,
                },
            }
        ],
        "upstreamConfig": {"upstreams": [route.upstream() for route in proxy_routes(ws, settings)]},
        "injectRequestHeaders": [
            {
                "name": FORWARDED_CONTEXT_HEADER,
                # oauth2-proxy 7.15.6 reads a YAML string into the value's bytes as
                # they are (its documentation says base64; the test with the real
                # proxy, tests/integration/test_spark_ui_signin.py, holds it to this).
                "values": [{"secretSource": {"value": spark_ui_context(ws, settings)}}],
            }
        ],
    }


def render_proxy_config(ws: Workspace, settings: OperatorSettings) -> str:
    return yaml.safe_dump(proxy_config(ws, settings), sort_keys=True)


def proxy_config_key(ws: Workspace, settings: OperatorSettings) -> str:
    """The ConfigMap's key of the alpha configuration, named by its digest: the proxy
    reads it once, at start, so the pod that reads it names its content."""
    digest = hashlib.sha256(render_proxy_config(ws, settings).encode()).hexdigest()[:12]
    return f"proxy-{digest}.yaml"


def proxy_args(ws: Workspace, settings: OperatorSettings) -> list[str]:
    """oauth2-proxy's command line for this workspace.

    The proxy sees the path as the IDE does: with the URL prefix when the IDE serves
    under it, without when the Ingress strips it; its callback is named by path only,
    so it takes the browser's host and scheme (any ingress port, any host)."""
    prefix = ingress_path(ws, settings)
    return [
        f"--alpha-config={CONFIG_DIR}/{proxy_config_key(ws, settings)}",
        f"--cookie-secret-file={SECRET_DIR}/{COOKIE_SECRET_KEY}",
        f"--authenticated-emails-file={CONFIG_DIR}/{ALLOWED_KEY}",
        f"--proxy-prefix={local_prefix(ws, settings)}{PROXY_PATH}",
        f"--redirect-url={prefix}{PROXY_PATH}/callback",
        f"--cookie-path={prefix}",
        f"--cookie-secure={str(tls_secret(ws, settings) is not None).lower()}",
        *_browser_args(settings),
        f"--logging-filename={contract.SIGNIN_LOG_DIR}/{contract.SIGNIN_LOG_FILE}",
        f"--logging-max-size={LOG_MAX_MEGABYTES}",
        "--logging-max-backups=1",
        "--logging-local-time=false",
        f"--request-logging-format={idle.REQUEST_LOG_FORMAT}",
        # On its pages, the 403 of someone signed in but not on the list included.
        f"--footer=Workspace {ws.namespace}/{ws.name}: only its owner and the people in its "
        "spec.access may enter. Ask its owner to add you.",
    ]


def _browser_args(settings: OperatorSettings) -> list[str]:
    """Straight to the provider's login page; after sign_out, back to the provider's
    end of session (rd=...), which must be an allowed redirect; behind the ingress."""
    return [
        "--skip-provider-button=true",
        f"--whitelist-domain={urllib.parse.urlsplit(settings.oidc_issuer_url or '').netloc}",
        "--reverse-proxy=true",
        "--silence-ping-logging=true",
    ]


def waker_proxy_args(settings: OperatorSettings) -> list[str]:
    """oauth2-proxy's command line in front of the waker (`waker.py`), a container next
    to the operator's: the same provider and client as the workspaces' proxies, the
    platform's Secret (RSPARK_OIDC_SECRET) mounted at SECRET_DIR. It lets every signed-in
    person through with who they are (`waker.IDENTITY_HEADER`, the claim
    RSPARK_OIDC_USER_CLAIM names, as the workspaces' proxies compare it) and the
    request's host; the waker decides who may wake which workspace. Its callback is
    the browser's host at WAKER_PROXY_PREFIX."""
    return [
        f"--http-address=0.0.0.0:{settings.waker_proxy_port}",
        f"--upstream=http://{settings.waker_address}/",
        f"--provider={OIDC_PROVIDER_ID}",
        f"--oidc-issuer-url={settings.oidc_issuer_url}",
        f"--client-id={settings.oidc_client_id}",
        f"--client-secret-file={SECRET_DIR}/{CLIENT_SECRET_KEY}",
        f"--cookie-secret-file={SECRET_DIR}/{COOKIE_SECRET_KEY}",
        "--code-challenge-method=S256",
        f"--oidc-email-claim={settings.oidc_user_claim}",
        "--email-domain=*",
        "--pass-user-headers=true",
        f"--proxy-prefix={WAKER_PROXY_PREFIX}",
        f"--redirect-url={WAKER_PROXY_PREFIX}/callback",
        f"--cookie-name={WAKER_COOKIE}",
        "--cookie-path=/",
        f"--cookie-secure={str(settings.ingress_tls_secret is not None).lower()}",
        *_browser_args(settings),
    ]


def signin_container(ws: Workspace, settings: OperatorSettings) -> dict[str, Any]:
    ide = IDES[ws.spec.ide]
    return {
        "name": SIGNIN_CONTAINER,
        "image": settings.signin_proxy_image,
        "args": proxy_args(ws, settings),
        "ports": [{"name": "http", "containerPort": ide.port}],
        "readinessProbe": {"httpGet": {"path": PING_PATH, "port": "http"}, "periodSeconds": 5},
        "resources": SIGNIN_RESOURCES,
        "securityContext": signin_security_context(),
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": SECRET_VOLUME, "mountPath": SECRET_DIR, "readOnly": True},
            signin_log_mount(read_only=False),
        ],
    }


def signin_log_mount(*, read_only: bool) -> dict[str, Any]:
    """The proxy's log: written by the proxy, read by the agent."""
    return {"name": LOG_VOLUME, "mountPath": contract.SIGNIN_LOG_DIR, "readOnly": read_only}


def signin_volumes(ws: Workspace, settings: OperatorSettings) -> list[dict[str, Any]]:
    return [
        {"name": CONFIG_VOLUME, "configMap": {"name": names.signin_config_map_name(ws.name)}},
        {
            "name": SECRET_VOLUME,
            "secret": {
                "secretName": settings.oidc_secret,
                "items": [
                    {"key": key, "path": key} for key in (CLIENT_SECRET_KEY, COOKIE_SECRET_KEY)
                ],
                # Group-readable: the pod's fsGroup is the proxy's group.
                "defaultMode": 0o440,
            },
        },
        {"name": LOG_VOLUME, "emptyDir": {"sizeLimit": LOG_VOLUME_LIMIT}},
    ]
