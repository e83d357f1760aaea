"""The real nodes run real containers: containerd, the CNI bridge, kube-proxy, kubelet
logs and exec, node credentials, NetworkPolicy (kube-router), the cluster DNS and the
registry from pods; kwok's pods stay on kwok's nodes."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devtools import localcluster
from devtools.network import (
    CLUSTER_DOMAIN,
    HOST_ADDRESS,
    REAL_NODE_LABEL,
    REAL_NODE_VALUE,
    REAL_NODES,
    REGISTRY,
    RealNode,
)
from devtools.s3 import S3Credentials
from tests.support.kube import node_is_ready, wait_until
from tests.support.nodes import (
    PROBE_PORT,
    friends_only_policy,
    probe_pod,
    run_probes,
    start_real_node,
    stop_real_node,
)
from tests.support.services import host_ingress, ingress_get


def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(localcluster.BIN / "kubectl"), "--kubeconfig", str(localcluster.KUBECONFIG), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def exec_in(namespace: str, pod: str, script: str) -> str:
    result = kubectl("exec", "-n", namespace, pod, "--", "/bin/sh", "-c", script)
    assert result.returncode == 0, result.stderr
    return result.stdout


def answers_from(namespace: str, pod: str, url: str) -> str | None:
    """What `url` answers from inside `pod` within 3 s, None when it does not (busybox's
    `wget -T` crashes here: `timeout` bounds it instead)."""
    result = kubectl("exec", "-n", namespace, pod, "--", "timeout", "3", "wget", "-q", "-O-", url)
    return result.stdout if result.returncode == 0 else None


@pytest.fixture
def probes(kube: client.ApiClient, namespace: str) -> dict[str, Any]:
    """One running probe pod per real node, by node name."""
    return run_probes(client.CoreV1Api(kube), namespace)


def test_real_nodes_are_ready_tainted_labelled_and_run_containerd(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    version = client.VersionApi(kube).get_code().git_version
    for node in REAL_NODES:
        found = core.read_node(node.name)
        assert node_is_ready(found)
        info = found.status.node_info
        assert info.container_runtime_version.startswith("containerd://")
        assert info.kubelet_version == version  # kube-proxy: from the same build (hack/kube)
        assert found.metadata.labels[REAL_NODE_LABEL] == REAL_NODE_VALUE
        taints = [(t.key, t.value, t.effect) for t in found.spec.taints or []]
        assert (REAL_NODE_LABEL, REAL_NODE_VALUE, "NoSchedule") in taints
        addresses = {(a.type, a.address) for a in found.status.addresses}
        assert ("InternalIP", node.address) in addresses


def test_pods_get_addresses_from_their_node_and_reach_each_other_the_api_and_s3(
    kube: client.ApiClient, probes: dict[str, Any], namespace: str, cluster_s3: S3Credentials
) -> None:
    server_version = client.VersionApi(kube).get_code().git_version
    s3_endpoint = cluster_s3.endpoint
    for node in REAL_NODES:
        pod = probes[node.name]
        assert pod.spec.node_name == node.name
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(node.pod_cidr)
    for node, other in zip(REAL_NODES, reversed(REAL_NODES), strict=True):
        # Across nodes: the node namespaces route each other's pod ranges.
        answer = exec_in(
            namespace,
            f"probe-{node.name}",
            f"wget -q -O- http://{probes[other.name].status.pod_ip}:8080/",
        )
        assert answer.strip() == other.name
        # The `kubernetes` Service: kube-proxy's rules in the node send its ClusterIP to
        # the API server on the bridge; the API server answers with its version.
        version = exec_in(
            namespace,
            f"probe-{node.name}",
            "wget -q -O- --no-check-certificate "
            "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/version",
        )
        assert json.loads(version)["gitVersion"] == server_version
        # S3 on the bridge: the gateway answers (403 without credentials).
        s3 = exec_in(namespace, f"probe-{node.name}", f"wget -S -O- {s3_endpoint}/ 2>&1; true")
        assert "HTTP/1.1 403" in s3, s3


def test_logs_and_exec_go_through_the_kubelet(probes: dict[str, Any], namespace: str) -> None:
    for node in REAL_NODES:
        logs = kubectl("logs", "-n", namespace, f"probe-{node.name}")
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout.strip() == f"serving on {node.name}"
        assert exec_in(namespace, f"probe-{node.name}", "cat /tmp/index.html").strip() == node.name


def test_a_node_may_not_change_another_node(kube: client.ApiClient) -> None:
    """NodeRestriction: the kubelet's own credentials label its node, not the other."""
    own, other = REAL_NODES
    kubeconfig = localcluster.NODES_DIR / own.name / "kubelet.kubeconfig"

    def label(node: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(localcluster.BIN / "kubectl"), "--kubeconfig", str(kubeconfig),
             "label", "--overwrite", "node", node, "rspark.dev/probe=yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    refused = label(other.name)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused
    allowed = label(own.name)
    assert allowed.returncode == 0, allowed.stderr
    client.CoreV1Api(kube).patch_node(
        own.name, {"metadata": {"labels": {"rspark.dev/probe": None}}}
    )


def test_pods_without_the_toleration_land_on_kwok_nodes(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    names = [f"kwok-{i}" for i in range(4)]
    for name in names:
        core.create_namespaced_pod(namespace, {
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": "example.invalid/probe:1"}]},
        })  # fmt: skip

    def placed() -> list[str] | None:
        nodes = [core.read_namespaced_pod(name, namespace).spec.node_name for name in names]
        return nodes if all(nodes) else None

    assert set(wait_until("pods scheduled", placed)) <= set(localcluster.NODE_NAMES)


def node_namespace_has_kube_chains(node: RealNode) -> bool:
    rules = subprocess.run(
        ["nsenter", f"--net=/run/netns/{node.name}", "iptables-save"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return all(
        chain in rules for chain in ("KUBE-SERVICES", "KUBE-FIREWALL", "KUBE-ROUTER-FORWARD")
    )


def test_kubelet_kube_proxy_and_kube_router_rules_live_in_the_node_namespaces(
    local_cluster: Path,
) -> None:
    assert all(node_namespace_has_kube_chains(node) for node in REAL_NODES)


def test_network_policy_admits_only_the_pods_it_names(
    kube: client.ApiClient, probes: dict[str, Any], namespace: str
) -> None:
    """kube-router on the target's node enforces the policy across nodes."""
    caller, target = REAL_NODES
    url = f"http://{probes[target.name].status.pod_ip}:{PROBE_PORT}/"

    def answer() -> str | None:
        return answers_from(namespace, f"probe-{caller.name}", url)

    assert wait_until("the other probe answers", answer).strip() == target.name
    client.NetworkingV1Api(kube).create_namespaced_network_policy(namespace, friends_only_policy())
    wait_until("the policy refuses a stranger", lambda: answer() is None)
    client.CoreV1Api(kube).patch_namespaced_pod(
        f"probe-{caller.name}", namespace, {"metadata": {"labels": {"role": "friend"}}}
    )
    assert wait_until("the policy admits a friend", answer).strip() == target.name


def test_the_ingress_controller_passes_a_policy_only_from_its_cidr(
    kube: client.ApiClient, probes: dict[str, Any], namespace: str
) -> None:
    """Traefik runs on the host: its requests reach pods from the bridge address, not
    from a namespace, so under a policy only an ipBlock peer lets them through (what
    RSPARK_INGRESS_CONTROLLER_CIDRS adds to the workspace policy)."""
    host = f"{namespace}.rspark.test"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "probes"},
        "spec": {"selector": {"app": "probe"}, "ports": [{"port": PROBE_PORT}]},
    }
    core, net = client.CoreV1Api(kube), client.NetworkingV1Api(kube)
    core.create_namespaced_service(namespace, service)
    net.create_namespaced_ingress(namespace, host_ingress("probes", host, "probes", PROBE_PORT))
    nodes = {node.name for node in REAL_NODES}

    def served() -> bool:
        status, body = ingress_get(host)
        return status == 200 and body.strip() in nodes

    wait_until("the ingress controller reaches the probes", served)
    policy = friends_only_policy()
    net.create_namespaced_network_policy(namespace, policy)
    wait_until("the policy refuses the ingress controller", lambda: ingress_get(host)[0] == 502)
    policy["spec"]["ingress"][0]["from"].append({"ipBlock": {"cidr": f"{HOST_ADDRESS}/32"}})
    net.replace_namespaced_network_policy(policy["metadata"]["name"], namespace, policy)
    wait_until("the policy admits the ingress controller's address", served)


def test_pods_resolve_services_through_the_cluster_dns(
    kube: client.ApiClient, probes: dict[str, Any], namespace: str
) -> None:
    cluster_ip = client.CoreV1Api(kube).read_namespaced_service("kubernetes", "default")
    name = f"kubernetes.default.svc.{CLUSTER_DOMAIN}"
    for node in REAL_NODES:
        answer = exec_in(namespace, f"probe-{node.name}", f"nslookup {name}")
        assert f"Address: {cluster_ip.spec.cluster_ip}" in answer, answer


def test_pods_reach_the_registry(probes: dict[str, Any], namespace: str) -> None:
    for node in REAL_NODES:
        answer = answers_from(namespace, f"probe-{node.name}", f"http://{REGISTRY}/v2/")
        assert answer is not None and answer.strip() == "{}"


def test_a_pod_moves_off_a_real_node_that_loses_power(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    labels = {"app": "mover"}
    template = probe_pod(REAL_NODES[0])["spec"]
    template["nodeSelector"] = {REAL_NODE_LABEL: REAL_NODE_VALUE}  # either real node
    template["tolerations"] += [
        {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
    ]
    client.AppsV1Api(kube).create_namespaced_deployment(namespace, {
        "metadata": {"name": "mover"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": template}},
    })  # fmt: skip

    def running() -> list[Any]:
        pods = core.list_namespaced_pod(namespace, label_selector="app=mover").items
        return [
            p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]

    first = wait_until("the pod Running", running, timeout=180)[0]
    lost = next(node for node in REAL_NODES if node.name == first.spec.node_name)
    assert stop_real_node(lost)
    try:
        moved = wait_until(
            "a replacement Running on the other node",
            lambda: [p for p in running() if p.spec.node_name != lost.name],
            timeout=240,
        )
        other = next(n for n in REAL_NODES if n != lost)
        assert ipaddress.ip_address(moved[0].status.pod_ip) in ipaddress.ip_network(other.pod_cidr)
    finally:
        start_real_node(core, lost)
