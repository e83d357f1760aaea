"""Where a workspace is reached: its host, path prefix and URL."""

from __future__ import annotations

from rspark_operator.api import Workspace
from rspark_operator.settings import OperatorSettings


def ingress_host(ws: Workspace, settings: OperatorSettings) -> str:
    if ws.spec.ingress.host:
        return ws.spec.ingress.host
    if settings.ingress_mode == "path":
        return settings.ingress_domain
    return templated_host(ws, settings)


def templated_host(ws: Workspace, settings: OperatorSettings) -> str:
    return settings.ingress_host_template.format(
        name=ws.name, namespace=ws.namespace, domain=settings.ingress_domain
    )


def ingress_path(ws: Workspace, settings: OperatorSettings) -> str:
    """The URL path prefix, always ending with '/' ("/" when RStudio owns the host)."""
    if ws.spec.ingress.path:
        return ws.spec.ingress.path.rstrip("/") + "/"
    if settings.ingress_mode == "path":
        return settings.ingress_path_template.format(name=ws.name, namespace=ws.namespace)
    return "/"


def tls_secret(ws: Workspace, settings: OperatorSettings) -> str | None:
    return ws.spec.ingress.tls_secret_name or settings.ingress_tls_secret


def url_scheme(ws: Workspace, settings: OperatorSettings) -> str:
    return "https" if tls_secret(ws, settings) else "http"


def workspace_url(ws: Workspace, settings: OperatorSettings) -> str:
    return f"{url_scheme(ws, settings)}://{ingress_host(ws, settings)}{ingress_path(ws, settings)}"
