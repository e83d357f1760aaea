"""How the IDE and the Spark driver are reached: Services, Ingress and the URL."""

from __future__ import annotations

from typing import Any

from rspark_operator import names
from rspark_operator.api import Workspace
from rspark_operator.builders.metadata import Manifest, child, workspace_pod_selector
from rspark_operator.builders.spark import SPARK_PORT_RANGES
from rspark_operator.builders.url import ingress_host, ingress_path, tls_secret
from rspark_operator.ide import IDES
from rspark_operator.settings import OperatorSettings

NGINX = "nginx.ingress.kubernetes.io"


def _port(name: str, number: int) -> dict[str, Any]:
    return {"name": name, "port": number, "targetPort": number, "protocol": "TCP"}


def build_ide_service(ws: Workspace) -> Manifest:
    service = child(ws, "v1", "Service", names.rstudio_service_name(ws.name))
    service["spec"] = {
        "type": "ClusterIP",
        "selector": workspace_pod_selector(ws),
        "ports": [_port("http", IDES[ws.spec.ide].port)],
    }
    return service


def build_spark_driver_service(ws: Workspace) -> Manifest:
    service = child(ws, "v1", "Service", names.spark_driver_service_name(ws.name))
    service["spec"] = {
        "clusterIP": "None",
        # Executors resolve the driver while the pod is not ready yet (SPARK-32975).
        "publishNotReadyAddresses": True,
        "selector": workspace_pod_selector(ws),
        # Every port of every Spark application the session may run (builders.spark).
        "ports": [
            _port(f"{ports.name}-{port}", port)
            for ports in SPARK_PORT_RANGES
            for port in ports.ports
        ],
    }
    return service


def build_ingress(ws: Workspace, settings: OperatorSettings, *, to_waker: bool = False) -> Manifest:
    """The workspace's URL to its IDE; `to_waker`: to the waker (builders/waker.py), with
    the whole path (the waker tells the workspace from its host and path)."""
    host, prefix, ide = ingress_host(ws, settings), ingress_path(ws, settings), IDES[ws.spec.ide]
    annotations = {
        # The IDEs keep websockets open and accept uploads of any size.
        f"{NGINX}/proxy-read-timeout": "3600",
        f"{NGINX}/proxy-body-size": "0",
    }
    path: dict[str, Any] = {"path": prefix, "pathType": "Prefix"}
    if prefix != "/" and not ide.serves_under_prefix and not to_waker:
        # The IDE serves from "/": strip the prefix; the IDE learns it from
        # ide.ROOT_PATH_ENV, so no configuration snippet (ingress-nginx refuses
        # snippets by default) is needed.
        annotations |= {f"{NGINX}/use-regex": "true", f"{NGINX}/rewrite-target": "/$2"}
        path = {"path": f"{prefix.rstrip('/')}(/|$)(.*)", "pathType": "ImplementationSpecific"}
    service = names.waker_service_name if to_waker else names.rstudio_service_name
    path["backend"] = {"service": {"name": service(ws.name), "port": {"number": ide.port}}}
    spec: dict[str, Any] = {"rules": [{"host": host, "http": {"paths": [path]}}]}
    ingress_class = ws.spec.ingress.class_name or settings.ingress_class
    if ingress_class:
        spec["ingressClassName"] = ingress_class
    tls_secret_name = tls_secret(ws, settings)
    if tls_secret_name:
        spec["tls"] = [{"hosts": [host], "secretName": tls_secret_name}]
    ingress = child(
        ws, "networking.k8s.io/v1", "Ingress", names.ingress_name(ws.name), annotations=annotations
    )
    ingress["spec"] = spec
    return ingress
