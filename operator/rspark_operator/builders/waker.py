"""Where an idle workspace's URL leads: the Service `<name>-waker`, without a selector,
and its EndpointSlice, the waker's address (the operator pod, RSPARK_WAKER_IP; with
RSPARK_SIGNIN=oidc, the port of the sign-in proxy in front of the waker). The
Ingress names it as its backend while the workspace is routed to the waker
(`waker.routed_to_waker`, `network.build_ingress`)."""

from __future__ import annotations

from rspark_operator import names
from rspark_operator.api import Workspace
from rspark_operator.builders.metadata import Manifest, child
from rspark_operator.builders.signin import signin_enabled
from rspark_operator.ide import IDES
from rspark_operator.settings import OperatorSettings

PORT_NAME = "http"
# The label that ties an EndpointSlice to its Service, and the one that keeps
# Kubernetes' EndpointSlice controller off ours.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "rspark-operator"


def build_waker_service(ws: Workspace) -> Manifest:
    """On the IDE's port, as the IDE's Service: the Ingress changes only its name."""
    service = child(ws, "v1", "Service", names.waker_service_name(ws.name))
    port = IDES[ws.spec.ide].port
    service["spec"] = {
        "type": "ClusterIP",
        "ports": [{"name": PORT_NAME, "port": port, "targetPort": port, "protocol": "TCP"}],
    }
    return service


def build_waker_endpoints(ws: Workspace, settings: OperatorSettings) -> Manifest:
    name = names.waker_service_name(ws.name)
    endpoints = child(
        ws,
        "discovery.k8s.io/v1",
        "EndpointSlice",
        name,
        extra_labels={SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY},
    )
    address = str(settings.waker_ip)
    endpoints["addressType"] = "IPv6" if ":" in address else "IPv4"
    endpoints["endpoints"] = [{"addresses": [address], "conditions": {"ready": True}}]
    port = settings.waker_proxy_port if signin_enabled(settings) else settings.waker_port
    endpoints["ports"] = [{"name": PORT_NAME, "port": port, "protocol": "TCP"}]
    return endpoints
