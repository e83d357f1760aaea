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
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from rspark_operator import contract, idle, names
from rspark_operator.api import Workspace
from rspark_operator.builders.hardening import SIGNIN_RESOURCES, signin_security_context
from rspark_operator.builders.metadata import Manifest, child
from rspark_operator.builders.url import ingress_path, tls_secret
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


def signin_enabled(settings: OperatorSettings) -> bool:
    return settings.signin == "oidc"


def allowed_users(ws: Workspace) -> list[str]:
    """spec.user and spec.access, as the proxy compares them (lower case), once each."""
    return sorted({person.lower() for person in (ws.spec.user, *ws.spec.access)})


def build_signin_config_map(ws: Workspace) -> Manifest:
    config_map = child(ws, "v1", "ConfigMap", names.signin_config_map_name(ws.name))
    config_map["data"] = {ALLOWED_KEY: "".join(f"{person}\n" for person in allowed_users(ws))}
    return config_map


def proxy_args(ws: Workspace, settings: OperatorSettings) -> list[str]:
    """oauth2-proxy's command line for this workspace.

    The proxy sees the path as the IDE does: with the URL prefix when the IDE serves
    under it, without when the Ingress strips it; its callback is named by path only,
    so it takes the browser's host and scheme (any ingress port, any host)."""
    ide = IDES[ws.spec.ide]
    prefix = ingress_path(ws, settings)
    local_prefix = prefix if ide.serves_under_prefix else "/"
    issuer = settings.oidc_issuer_url or ""
    return [
        "--provider=oidc",
        f"--oidc-issuer-url={issuer}",
        f"--client-id={settings.oidc_client_id}",
        f"--client-secret-file={SECRET_DIR}/{CLIENT_SECRET_KEY}",
        f"--cookie-secret-file={SECRET_DIR}/{COOKIE_SECRET_KEY}",
        "--code-challenge-method=S256",
        f"--oidc-email-claim={settings.oidc_user_claim}",
        f"--authenticated-emails-file={CONFIG_DIR}/{ALLOWED_KEY}",
        f"--http-address=0.0.0.0:{ide.port}",
        f"--upstream=http://{LOOPBACK}:{ide.proxied_port}/",
        f"--proxy-prefix={local_prefix}{PROXY_PATH}",
        f"--redirect-url={prefix}{PROXY_PATH}/callback",
        f"--cookie-path={prefix}",
        f"--cookie-secure={str(tls_secret(ws, settings) is not None).lower()}",
        # Straight to the provider's login page; after sign_out, back to the provider's
        # end of session (rd=...), which must be an allowed redirect.
        "--skip-provider-button=true",
        f"--whitelist-domain={urllib.parse.urlsplit(issuer).netloc}",
        "--reverse-proxy=true",
        "--silence-ping-logging=true",
        f"--logging-filename={contract.SIGNIN_LOG_DIR}/{contract.SIGNIN_LOG_FILE}",
        f"--logging-max-size={LOG_MAX_MEGABYTES}",
        "--logging-max-backups=1",
        "--logging-local-time=false",
        f"--request-logging-format={idle.REQUEST_LOG_FORMAT}",
        # On its pages, the 403 of someone signed in but not on the list included.
        f"--footer=Workspace {ws.namespace}/{ws.name}: only its owner and the people in its "
        "spec.access may enter. Ask its owner to add you.",
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
