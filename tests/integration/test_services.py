"""The local cluster's services are real: CoreDNS answers from the API server, Traefik
routes an Ingress to its backend's endpoints, the registry takes a push and a pull."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools import dns, services
from devtools.localcluster import kubectl
from devtools.network import CLUSTER_DNS, CLUSTER_DOMAIN, HOST_ADDRESS, REGISTRY
from tests.support.kube import wait_until
from tests.support.services import host_ingress, ingress_get

pytestmark = pytest.mark.integration


def apply(namespace: str, *objects: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(objects))


def service(name: str, *, headless: bool = False, port: int = 80) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"port": port, "protocol": "TCP"}]}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def endpoint_slice(
    service_name: str, address: str, port: int, hostname: str | None = None
) -> dict[str, Any]:
    """The endpoints of a Service without a selector, written as a controller would."""
    endpoint: dict[str, Any] = {"addresses": [address], "conditions": {"ready": True}}
    if hostname:
        endpoint["hostname"] = hostname
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-1",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": [endpoint],
        "ports": [{"port": port, "protocol": "TCP"}],
    }


def resolves_to(name: str) -> tuple[str, ...]:
    answer = dns.resolve(CLUSTER_DNS, name)
    return answer.addresses if answer.rcode == dns.RCODE_NOERROR else ()


def test_cluster_dns_answers_services_and_headless_endpoints(
    local_cluster: Path, namespace: str
) -> None:
    pod_ip = "10.244.1.77"
    apply(
        namespace,
        service("plain"),
        service("driver", headless=True, port=7078),
        endpoint_slice("driver", pod_ip, 7078, hostname="driver-0"),
    )
    cluster_ip = json.loads(kubectl("get", "service", "plain", "-n", namespace, "-o", "json"))[
        "spec"
    ]["clusterIP"]
    zone = f"{namespace}.svc.{CLUSTER_DOMAIN}"

    assert wait_until("the ClusterIP", lambda: resolves_to(f"plain.{zone}")) == (cluster_ip,)
    assert wait_until("the headless Service", lambda: resolves_to(f"driver.{zone}")) == (pod_ip,)
    assert resolves_to(f"driver-0.driver.{zone}") == (pod_ip,)
    srv = dns.resolve(CLUSTER_DNS, f"driver.{zone}", dns.TYPE_SRV)
    assert srv.targets == ((7078, f"driver-0.driver.{zone}"),)

    assert dns.resolve(CLUSTER_DNS, f"absent.{zone}").rcode == dns.RCODE_NXDOMAIN
    # No upstream: a name outside the cluster is refused, never forwarded.
    assert dns.resolve(CLUSTER_DNS, "pypi.org").rcode == dns.RCODE_REFUSED


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    """An HTTP server on the host's bridge address, where the ingress controller (and
    pods) can reach it: the port it listens on."""
    server = http.server.ThreadingHTTPServer((HOST_ADDRESS, 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_ingress_controller_routes_a_host_to_its_backend(
    local_cluster: Path, namespace: str, backend: int
) -> None:
    host = f"{namespace}.rspark.test"
    ingress = host_ingress("web", host, "web", 80)
    apply(namespace, service("web"), endpoint_slice("web", HOST_ADDRESS, backend), ingress)
    # The default IngressClass was given to the Ingress at admission.
    admitted = json.loads(kubectl("get", "ingress", "web", "-n", namespace, "-o", "json"))
    assert admitted["spec"]["ingressClassName"] == services.INGRESS_CLASS

    routed = wait_until("the route", lambda: (r := ingress_get(host, "/a/b"))[0] == 200 and r)
    assert routed == (200, "hello from /a/b")
    assert ingress_get(f"unknown-{namespace}.rspark.test")[0] == 404


def registry_call(
    method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    url = path if path.startswith("http") else f"http://{REGISTRY}{path}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status), dict(response.headers), response.read()


def push_blob(repository: str, blob: bytes) -> str:
    """A monolithic upload (OCI distribution API: POST, then PUT with the digest)."""
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    _, headers, _ = registry_call("POST", f"/v2/{repository}/blobs/uploads/")
    location = headers["Location"]
    separator = "&" if "?" in location else "?"
    status, _, _ = registry_call(
        "PUT",
        f"{location}{separator}digest={digest}",
        blob,
        {"Content-Type": "application/octet-stream"},
    )
    assert status == 201
    return digest


def test_registry_takes_a_push_and_a_pull(local_cluster: Path) -> None:
    assert registry_call("GET", "/v2/")[0] == 200
    # Fixed names and contents: each run stores the same blobs, so the cache keeps no litter.
    repository = "rspark/registry-probe"
    layer = b"not really a tar, the registry does not look\n"
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    media = "application/vnd.oci.image.manifest.v1+json"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": push_blob(repository, config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": push_blob(repository, layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    status, headers, _ = registry_call(
        "PUT", f"/v2/{repository}/manifests/1", manifest, {"Content-Type": media}
    )
    assert status == 201
    manifest_digest = headers["Docker-Content-Digest"]
    try:
        _, _, pulled = registry_call(
            "GET", f"/v2/{repository}/manifests/1", headers={"Accept": media}
        )
        assert pulled == manifest
        layer_digest = json.loads(pulled)["layers"][0]["digest"]
        assert registry_call("GET", f"/v2/{repository}/blobs/{layer_digest}")[2] == layer
        tags = json.loads(registry_call("GET", f"/v2/{repository}/tags/list")[2])
        assert tags == {"name": repository, "tags": ["1"]}
    finally:
        registry_call("DELETE", f"/v2/{repository}/manifests/{manifest_digest}")
