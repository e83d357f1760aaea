"""Real nodes in tests: busybox pods that tolerate their taint, and node power loss."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from devtools import localcluster
from devtools.deploy import REAL_NODE_TOLERATION
from devtools.network import REAL_NODES, RealNode
from devtools.nodes import BUSYBOX_IMAGE, kill_node_processes
from tests.support.kube import node_is_ready, wait_until

# Each probe pod serves its node's name over HTTP on PROBE_PORT and stays up.
PROBE_PORT = 8080
SERVE = (
    f'echo "$NODE" > /tmp/index.html && echo "serving on $NODE" '
    f"&& exec httpd -f -p {PROBE_PORT} -h /tmp"
)


def probe_pod(node: RealNode) -> dict[str, Any]:
    """A pod pinned to `node` that serves the node's name on PROBE_PORT."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"probe-{node.name}", "labels": {"app": "probe"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node.name},
            "tolerations": [REAL_NODE_TOLERATION],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", SERVE],
                    "env": [
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
                    ],
                }
            ],
        },
    }


def friends_only_policy() -> dict[str, Any]:
    """Probes take connections on their port from pods labelled role=friend only."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "friends-only"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "probe"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"role": "friend"}}}],
                    "ports": [{"protocol": "TCP", "port": PROBE_PORT}],
                }
            ],
        },
    }


def run_probes(core: client.CoreV1Api, namespace: str) -> dict[str, Any]:
    """Start a probe pod on each real node; return them, Running, by node name."""
    for node in REAL_NODES:
        core.create_namespaced_pod(namespace, probe_pod(node))

    def running() -> dict[str, Any] | None:
        pods = {
            node.name: core.read_namespaced_pod(f"probe-{node.name}", namespace)
            for node in REAL_NODES
        }
        return pods if all(p.status.phase == "Running" for p in pods.values()) else None

    return wait_until("a running probe pod on each real node", running, timeout=180)


def stop_real_node(node: RealNode) -> list[int]:
    """A real node loses power: its containerd, shims, containers, kubelet and
    kube-proxy are killed (SIGKILL). Returns the pids killed."""
    return kill_node_processes(localcluster.NODES_DIR, (node,))


def start_real_node(core: client.CoreV1Api, node: RealNode) -> None:
    """The node boots again: kwokctl starts every component that is not running."""
    localcluster.run(
        str(localcluster.BIN / "kwokctl"), "start", "cluster", "--name", localcluster.CLUSTER_NAME
    )
    wait_until(f"node {node.name} Ready", lambda: node_is_ready(core.read_node(node.name)))
