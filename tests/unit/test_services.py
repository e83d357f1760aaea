"""The local cluster's services: what their configuration says, and the DNS client's wire format."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from devtools import dns, services
from devtools.network import CLUSTER_DNS, REGISTRY, SERVICE_RANGE

pytestmark = pytest.mark.unit

PORTS = services.ServicePorts(ingress_http=18080, ingress_ping=18081, dns_ready=18181)


def test_corefile_serves_only_the_cluster_zones_on_the_cluster_dns_address() -> None:
    text = services.corefile(Path("/k/config"), ready_port=18181)
    header = text.splitlines()[0]
    assert header == "cluster.local:53 10.96.0.0/16:53 10.244.0.0/16:53 {"
    assert f"    bind {CLUSTER_DNS}\n" in text
    assert "kubeconfig /k/config\n" in text
    assert "ready 127.0.0.1:18181\n" in text
    # No upstream: names outside these zones are refused by CoreDNS itself.
    assert "forward" not in text and "proxy" not in text
    assert text.count("{") == text.count("}") == 2


def test_registry_listens_on_the_registry_address_and_stores_under_the_given_root() -> None:
    config = services.registry_config(Path("/cache/registry"))
    assert config["http"]["addr"] == REGISTRY
    assert config["storage"]["filesystem"]["rootdirectory"] == "/cache/registry"
    assert "auth" not in config


def test_traefik_serves_ingresses_on_loopback_and_calls_nobody() -> None:
    args = services.traefik_args(PORTS)
    assert "--entryPoints.web.address=127.0.0.1:18080" in args
    assert "--entryPoints.traefik.address=127.0.0.1:18081" in args
    assert "--providers.kubernetesIngress=true" in args
    assert "--global.checkNewVersion=false" in args
    assert "--global.sendAnonymousUsage=false" in args
    addresses = [arg.split("=", 1)[1] for arg in args if ".address=" in arg]
    assert all(address.startswith("127.0.0.1:") for address in addresses)


def test_ingress_env_names_the_traefik_http_address() -> None:
    assert services.ingress_env(PORTS) == "INGRESS_HTTP=127.0.0.1:18080\n"


def test_the_ingress_class_is_traefiks_and_the_default() -> None:
    ingress_class = services.cluster_objects()[0]
    assert ingress_class["kind"] == "IngressClass"
    assert ingress_class["metadata"]["name"] == services.INGRESS_CLASS
    assert ingress_class["metadata"]["annotations"] == {
        "ingressclass.kubernetes.io/is-default-class": "true"
    }
    assert ingress_class["spec"]["controller"] == "traefik.io/ingress-controller"


def test_kube_router_runs_its_firewall_only_as_the_named_node() -> None:
    args = services.kube_router_args("rspark-node-a", Path("/n/kubeconfig"))
    assert {"--run-firewall=true", "--run-router=false", "--run-service-proxy=false"} <= set(args)
    assert "--hostname-override=rspark-node-a" in args
    assert "--kubeconfig=/n/kubeconfig" in args
    assert f"--service-cluster-ip-range={SERVICE_RANGE}" in args


def test_kube_router_may_read_what_its_firewall_watches_and_change_nothing() -> None:
    role, binding = services.kube_router_rbac()
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted[("networking.k8s.io", "networkpolicies")] == {"get", "list", "watch"}
    assert granted[("", "pods")] == {"get", "list", "watch"}
    assert all(verbs == {"get", "list", "watch"} for verbs in granted.values())
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "rspark:kube-router"}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_components_have_distinct_binaries(tmp_path: Path) -> None:
    """kwokctl names each component's pid file after its binary."""
    layout = services.ServicesLayout(
        bin_dir=tmp_path / "bin",
        state_dir=tmp_path / "state",
        work_dir=tmp_path / "work",
        kubeconfig=tmp_path / "kubeconfig",
        registry_root=tmp_path / "registry",
    )
    (tmp_path / "bin").mkdir()
    names = [Path(entry["binary"]).name for entry in services.components(layout, PORTS)]
    assert len(set(names)) == len(names) == 3
    assert (tmp_path / "state" / "Corefile").read_text() == services.corefile(
        tmp_path / "kubeconfig", PORTS.dns_ready
    )


def answer_packet(query_id: int, name: str, rcode: int, records: list[tuple[int, bytes]]) -> bytes:
    """A server's answer: the question echoed, then records whose names point at it."""
    question = dns.query_packet(name, dns.TYPE_A, query_id)[12:]
    header = struct.pack(">HHHHHH", query_id, 0x8400 | rcode, 1, len(records), 0, 0)
    body = b"".join(
        struct.pack(">HHHIH", 0xC00C, rtype, dns.CLASS_IN, 5, len(data)) + data
        for rtype, data in records
    )
    return header + question + body


def test_dns_query_packet_encodes_the_question() -> None:
    packet = dns.query_packet("a.b.svc", dns.TYPE_SRV, 0x1234)
    assert packet[:12] == bytes.fromhex("123401000001000000000000")
    assert packet[12:] == b"\x01a\x01b\x03svc\x00\x00\x21\x00\x01"


def test_dns_answer_reads_a_and_srv_records_through_compression() -> None:
    srv_target = b"\x00\x00\x00\x0a\x1f\x90" + b"\x04host\xc0\x0c"  # priority, weight, port 8080
    packet = answer_packet(
        7,
        "x.ns.svc.cluster.local",
        dns.RCODE_NOERROR,
        [(dns.TYPE_A, socket.inet_aton("10.244.1.5")), (dns.TYPE_SRV, srv_target)],
    )
    answer = dns.parse_answer(packet, 7)
    assert answer == dns.Answer(
        rcode=dns.RCODE_NOERROR,
        addresses=("10.244.1.5",),
        targets=((8080, "host.x.ns.svc.cluster.local"),),
    )


def test_dns_answer_carries_the_rcode_and_checks_the_id() -> None:
    packet = answer_packet(9, "example.org", dns.RCODE_REFUSED, [])
    assert dns.parse_answer(packet, 9).rcode == dns.RCODE_REFUSED
    with pytest.raises(ValueError, match="does not match"):
        dns.parse_answer(packet, 10)
