"""The local cluster's services for its real nodes, run as host processes by kwokctl.

- CoreDNS: the cluster DNS on CLUSTER_DNS:53 (UDP and TCP). It answers cluster.local and
  the reverse zones of the Service and pod ranges from the API server, and refuses every
  other name: it has no upstream, so no query leaves the machine.
- Traefik: the ingress controller (its Kubernetes Ingress provider) on 127.0.0.1:PORT; the
  IngressClass `traefik`, marked default, hands it every Ingress. It routes to pod IPs.
- docker-registry (Debian's package): the image registry on REGISTRY, plain HTTP, storing
  under the cache so that pushed images survive cluster-down.
- kube-router, firewall only: NetworkPolicy enforcement, one per real node, run inside
  the node's network namespace by devtools.nodes (its arguments and RBAC are here).

The render functions are pure; `components` writes their files and returns the entries
of the KwokctlConfiguration's `components`, which kwokctl starts, supervises and stops.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devtools import dns
from devtools.network import (
    CLUSTER_DNS,
    CLUSTER_DOMAIN,
    POD_CIDR,
    REGISTRY,
    SERVICE_RANGE,
)

LOOPBACK = "127.0.0.1"
INGRESS_CLASS = "traefik"
INGRESS_CONTROLLER = "traefik.io/ingress-controller"  # the controller name Traefik claims
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
# .local/ingress.env holds one line, INGRESS_HTTP=127.0.0.1:PORT.
INGRESS_ENV_FILE = "ingress.env"
INGRESS_HTTP_KEY = "INGRESS_HTTP"
REGISTRY_BINARY = "/usr/bin/docker-registry"  # from Debian's docker-registry package
KUBE_ROUTER = "kube-router"
# The user kube-router authenticates as (a client certificate's common name): what its
# ClusterRole grants, read-only, is all its firewall watches.
KUBE_ROUTER_USER = "rspark:kube-router"


def cache_dir() -> Path:
    """~/.cache/rspark-operator, or $RSPARK_CACHE: what outlives a cluster."""
    return Path(os.environ.get("RSPARK_CACHE", Path.home() / ".cache" / "rspark-operator"))


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on `host` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServicePorts:
    """The services' ports on 127.0.0.1 (DNS and the registry have fixed addresses)."""

    ingress_http: int = field(default_factory=free_port)
    ingress_ping: int = field(default_factory=free_port)  # Traefik's own entry point
    dns_ready: int = field(default_factory=free_port)  # CoreDNS's ready plugin

    @property
    def ingress_address(self) -> str:
        return f"{LOOPBACK}:{self.ingress_http}"


@dataclass(frozen=True)
class ServicesLayout:
    """Where the services' binaries, files and kwokctl bookkeeping live."""

    bin_dir: Path  # coredns, traefik and kube-router, linked there by hack/tools.sh
    state_dir: Path  # rendered configuration files
    work_dir: Path  # kwokctl's cluster directory: pid files (named after each binary), logs
    kubeconfig: Path  # the API server as host processes reach it
    registry_root: Path = field(default_factory=lambda: cache_dir() / "registry")


def corefile(kubeconfig: Path, ready_port: int) -> str:
    """CoreDNS's Corefile: one server block for the cluster's zones and nothing else.

    A name in no zone of a server block gets REFUSED from CoreDNS itself, so there is
    no upstream and no `forward`. No cache: a Service created a moment ago resolves."""
    zones = " ".join(f"{zone}:{dns.PORT}" for zone in (CLUSTER_DOMAIN, SERVICE_RANGE, POD_CIDR))
    return (
        f"{zones} {{\n"
        f"    bind {CLUSTER_DNS}\n"
        "    errors\n"
        f"    ready {LOOPBACK}:{ready_port}\n"
        "    kubernetes {\n"
        f"        kubeconfig {kubeconfig}\n"
        "        pods insecure\n"
        "        ttl 5\n"
        "    }\n"
        "    loadbalance\n"
        "}\n"
    )


def registry_config(root: Path) -> dict[str, Any]:
    """docker-registry's configuration: plain HTTP on REGISTRY, blobs under `root`."""
    return {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
        "http": {"addr": REGISTRY, "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }


def traefik_args(ports: ServicePorts) -> list[str]:
    """Traefik's command line: Ingresses of its class, served on 127.0.0.1 only.

    An Ingress whose Service has no ready endpoint answers 503 rather than 404
    (allowEmptyServices), so a stopped workspace is told apart from a wrong host."""
    return [
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        f"--entryPoints.web.address={ports.ingress_address}",
        f"--entryPoints.traefik.address={LOOPBACK}:{ports.ingress_ping}",
        "--ping=true",
        "--providers.kubernetesIngress=true",
        "--providers.kubernetesIngress.allowEmptyServices=true",
        "--log.level=INFO",
        "--accessLog=true",
    ]


def kube_router_args(node_name: str, kubeconfig: Path) -> list[str]:
    """kube-router as a NetworkPolicy firewall only: no routing, no service proxy, no CNI."""
    return [
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--enable-cni=false",
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={node_name}",
        f"--service-cluster-ip-range={SERVICE_RANGE}",
        "--health-port=0",
        "--metrics-port=0",
    ]


def kube_router_rbac() -> list[dict[str, Any]]:
    """What kube-router's firewall reads (pods, namespaces, nodes, NetworkPolicies and
    the Service objects its informers list), granted to KUBE_ROUTER_USER."""
    read = ["get", "list", "watch"]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": KUBE_ROUTER_USER},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods", "namespaces", "nodes", "services", "endpoints"],
                "verbs": read,
            },
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": KUBE_ROUTER_USER},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": KUBE_ROUTER_USER,
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBE_ROUTER_USER}
        ],
    }
    return [role, binding]


def ingress_class() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": INGRESS_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "spec": {"controller": INGRESS_CONTROLLER},
    }


def cluster_objects() -> list[dict[str, Any]]:
    """The objects cluster-up creates for the services."""
    return [ingress_class(), *kube_router_rbac()]


def ingress_env(ports: ServicePorts) -> str:
    return f"{INGRESS_HTTP_KEY}={ports.ingress_address}\n"


def components(layout: ServicesLayout, ports: ServicePorts) -> list[dict[str, Any]]:
    """Write the services' files; return their entries of the KwokctlConfiguration."""
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    layout.registry_root.mkdir(parents=True, exist_ok=True)
    corefile_path = layout.state_dir / "Corefile"
    corefile_path.write_text(corefile(layout.kubeconfig, ports.dns_ready))
    registry_path = layout.state_dir / "registry.yaml"
    registry_path.write_text(yaml.safe_dump(registry_config(layout.registry_root)))
    return [
        {
            "name": "coredns",
            "binary": str(layout.bin_dir / "coredns"),
            "args": ["-conf", str(corefile_path)],
            "workDir": str(layout.work_dir),
        },
        {
            "name": "traefik",
            "binary": str(layout.bin_dir / "traefik"),
            "args": traefik_args(ports),
            "workDir": str(layout.work_dir),
            "envs": [{"name": "KUBECONFIG", "value": str(layout.kubeconfig)}],
        },
        {
            "name": "registry",
            "binary": REGISTRY_BINARY,
            "args": ["serve", str(registry_path)],
            "workDir": str(layout.work_dir),
        },
    ]


def answers(url: str) -> bool:
    """Whether `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def readiness_checks(ports: ServicePorts) -> dict[str, str]:
    """What answers 200 once each service is ready, by service."""
    return {
        "coredns": f"http://{LOOPBACK}:{ports.dns_ready}/ready",
        "traefik": f"http://{LOOPBACK}:{ports.ingress_ping}/ping",
        "registry": f"http://{REGISTRY}/v2/",
    }


def wait_until_ready(ports: ServicePorts, timeout: float = 60.0) -> None:
    """Wait until CoreDNS has synced with the API server, Traefik answers its ping and
    the registry its API root; raise naming those that did not."""
    pending = readiness_checks(ports)
    deadline = time.monotonic() + timeout
    while pending:
        pending = {name: url for name, url in pending.items() if not answers(url)}
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {timeout}s: {', '.join(sorted(pending))}")
        if pending:
            time.sleep(0.5)
