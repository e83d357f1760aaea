"""The local cluster's own network: one host bridge, two real nodes, pod and Service ranges.

Every address here lives on interfaces the cluster creates itself (the bridge, veths,
network namespaces); servers the pods must reach (API server, S3, image registry,
cluster DNS) listen on HOST_ADDRESS, and nothing is routed off the machine.
"""

from __future__ import annotations

from dataclasses import dataclass

BRIDGE = "rspark0"
HOST_ADDRESS = "10.200.0.1"
BRIDGE_PREFIX_LENGTH = 24
POD_CIDR = "10.244.0.0/16"
SERVICE_RANGE = "10.96.0.0/16"
# CoreDNS listens here; every real node's kubelet hands it to pods as their resolver.
CLUSTER_DNS = HOST_ADDRESS
CLUSTER_DOMAIN = "cluster.local"
# The local image registry (plain HTTP): images are named REGISTRY/rspark/<name>:<tag>.
REGISTRY_PORT = 5000
REGISTRY = f"{HOST_ADDRESS}:{REGISTRY_PORT}"
# Real nodes carry this label and a NoSchedule taint with the same key and value, so
# only pods that mean to run real containers land there; kwok nodes keep the rest.
REAL_NODE_LABEL = "rspark.dev/node-kind"
REAL_NODE_VALUE = "real"


@dataclass(frozen=True)
class RealNode:
    name: str
    address: str  # the node's own address on the bridge (its kubelet's node IP)
    pod_cidr: str


REAL_NODES = (
    RealNode("rspark-node-a", "10.200.0.11", "10.244.1.0/24"),
    RealNode("rspark-node-b", "10.200.0.12", "10.244.2.0/24"),
)
