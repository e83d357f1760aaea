"""How RStudio and the Spark driver are reached: Services, Ingress and the URL."""

from __future__ import annotations

from typing import Any

from rspark_operator import names
from rspark_operator.api import Workspace
from rspark_operator.builders.metadata import Manifest, child, rstudio_pod_selector
from rspark_operator.builders.pod import RSTUDIO_PORT
from rspark_operator.builders.spark import BLOCK_MANAGER_PORT, DRIVER_PORT, SPARK_UI_PORT
from rspark_operator.settings import OperatorSettings

ROOT_PATH_HEADER = "X-RStudio-Root-Path"
NGINX = "nginx.ingress.kubernetes.io"


def _port(name: str, number: int) -> dict[str, Any]:
    return {"name": name, "port": number, "targetPort": number, "protocol": "TCP"}


def build_rstudio_service(ws: Workspace) -> Manifest:
    service = child(ws, "v1", "Service", names.rstudio_service_name(ws.name))
    service["spec"] = {
        "type": "ClusterIP",
        "selector": rstudio_pod_selector(ws),
        "ports": [_port("http", RSTUDIO_PORT)],
    }
    return service


def build_spark_driver_service(ws: Workspace) -> Manifest:
    service = child(ws, "v1", "Service", names.spark_driver_service_name(ws.name))
    service["spec"] = {
        "clusterIP": "None",
        # Executors resolve the driver while the pod is not ready yet (SPARK-32975).
        "publishNotReadyAddresses": True,
        "selector": rstudio_pod_selector(ws),
        "ports": [
            _port("spark-driver", DRIVER_PORT),
            _port("spark-blockmgr", BLOCK_MANAGER_PORT),
            _port("spark-ui", SPARK_UI_PORT),
        ],
    }
    return service


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


def _tls_secret(ws: Workspace, settings: OperatorSettings) -> str | None:
    return ws.spec.ingress.tls_secret_name or settings.ingress_tls_secret


def workspace_url(ws: Workspace, settings: OperatorSettings) -> str:
    scheme = "https" if _tls_secret(ws, settings) else "http"
    return f"{scheme}://{ingress_host(ws, settings)}{ingress_path(ws, settings)}"


def build_ingress(ws: Workspace, settings: OperatorSettings) -> Manifest:
    host, prefix = ingress_host(ws, settings), ingress_path(ws, settings)
    annotations = {
        # RStudio keeps websockets open and accepts uploads of any size.
        f"{NGINX}/proxy-read-timeout": "3600",
        f"{NGINX}/proxy-body-size": "0",
    }
    path: dict[str, Any] = {"path": "/", "pathType": "Prefix"}
    if prefix != "/":
        # RStudio serves from "/": strip the prefix and tell RStudio about it.
        annotations |= {
            f"{NGINX}/use-regex": "true",
            f"{NGINX}/rewrite-target": "/$2",
            f"{NGINX}/configuration-snippet": (f"proxy_set_header {ROOT_PATH_HEADER} {prefix};"),
        }
        path = {"path": f"{prefix.rstrip('/')}(/|$)(.*)", "pathType": "ImplementationSpecific"}
    path["backend"] = {
        "service": {
            "name": names.rstudio_service_name(ws.name),
            "port": {"number": RSTUDIO_PORT},
        }
    }
    spec: dict[str, Any] = {"rules": [{"host": host, "http": {"paths": [path]}}]}
    ingress_class = ws.spec.ingress.class_name or settings.ingress_class
    if ingress_class:
        spec["ingressClassName"] = ingress_class
    tls_secret = _tls_secret(ws, settings)
    if tls_secret:
        spec["tls"] = [{"hosts": [host], "secretName": tls_secret}]
    ingress = child(
        ws, "networking.k8s.io/v1", "Ingress", names.ingress_name(ws.name), annotations=annotations
    )
    ingress["spec"] = spec
    return ingress
