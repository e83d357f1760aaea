"""The real nodes' configurations, rendered by pure functions (devtools.nodes)."""

from __future__ import annotations

import io
import ipaddress
import json
import tarfile
import tomllib
from pathlib import Path

from devtools import localcluster, nodes, services
from devtools.forward import Forward
from devtools.network import (
    BRIDGE,
    CLUSTER_DNS,
    CLUSTER_DOMAIN,
    HOST_ADDRESS,
    POD_CIDR,
    REAL_NODE_LABEL,
    REAL_NODE_VALUE,
    REAL_NODES,
    REGISTRY,
)

SETUPS = [
    nodes.NodeSetup(node, Path("/state/nodes"), Path("/kwok/pki"), Path("/bin"), 6443)
    for node in REAL_NODES
]
CRI = "io.containerd.grpc.v1.cri"


def test_each_node_has_its_own_containerd_files_and_the_settings_this_vm_needs() -> None:
    configs = [tomllib.loads(nodes.containerd_config(setup)) for setup in SETUPS]
    paths = [
        (c["root"], c["state"], c["grpc"]["address"], c["ttrpc"]["address"],
         c["plugins"][CRI]["containerd"]["runtimes"]["runc"]["options"]["Root"])
        for c in configs
    ]  # fmt: skip
    assert len({p for group in paths for p in group}) == 5 * len(SETUPS)
    for setup, config, group in zip(SETUPS, configs, paths, strict=True):
        assert all(p.startswith(f"{setup.root}/") for p in group)
        cri = config["plugins"][CRI]
        assert cri["restrict_oom_score_adj"] is True  # this VM refuses negative scores
        assert cri["netns_mounts_under_state_dir"] is True
        assert cri["sandbox_image"] == nodes.BUSYBOX_IMAGE
        assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
        assert cri["cni"]["conf_dir"] == str(setup.cni_conf_dir)
        assert cri["registry"]["config_path"] == str(setup.registry_hosts_dir)


def test_the_registry_is_pulled_over_plain_http() -> None:
    hosts = tomllib.loads(nodes.registry_hosts())
    assert hosts["server"] == f"http://{REGISTRY}"
    assert hosts["host"][f"http://{REGISTRY}"]["capabilities"] == ["pull", "resolve"]


def test_pod_addresses_come_from_the_node_cidr_and_stay_in_the_cluster_state() -> None:
    for setup in SETUPS:
        conflist = nodes.cni_conflist(setup)
        bridge = conflist["plugins"][0]
        assert conflist["name"] == setup.node.name
        assert bridge["type"] == "bridge" and bridge["ipMasq"] is False
        assert bridge["ipam"]["ranges"] == [[{"subnet": setup.node.pod_cidr}]]
        assert bridge["ipam"]["dataDir"].startswith(f"{setup.root}/")
        subnet = ipaddress.ip_network(setup.node.pod_cidr)
        assert subnet.subnet_of(ipaddress.ip_network(POD_CIDR))  # type: ignore[arg-type]


def test_kubelet_registers_tainted_and_serves_on_the_node_address() -> None:
    for setup in SETUPS:
        config = nodes.kubelet_config(setup)
        assert config["address"] == setup.node.address
        assert config["registerWithTaints"] == [
            {"key": REAL_NODE_LABEL, "value": REAL_NODE_VALUE, "effect": "NoSchedule"}
        ]
        assert config["cgroupDriver"] == "cgroupfs"
        assert config["cgroupRoot"] == f"/{setup.node.name}"
        assert config["clusterDNS"] == [CLUSTER_DNS]
        assert config["clusterDomain"] == CLUSTER_DOMAIN
        assert config["podLogsDir"].startswith(f"{setup.root}/")
        assert config["authentication"]["anonymous"]["enabled"] is False
        assert config["authorization"]["mode"] == "Webhook"
        assert config["containerRuntimeEndpoint"] == f"unix://{setup.containerd_socket}"
        args = nodes.kubelet_args(setup)
        assert f"--node-ip={setup.node.address}" in args
        assert f"--node-labels={REAL_NODE_LABEL}={REAL_NODE_VALUE}" in args
        assert f"--root-dir={setup.kubelet_dir}" in args


def test_node_identities_are_what_the_node_authorizer_expects() -> None:
    node = REAL_NODES[0]
    by_stem = {identity.stem: identity for identity in nodes.identities(node)}
    assert by_stem["kubelet"].subject() == f"/O=system:nodes/CN=system:node:{node.name}"
    assert by_stem["kubelet"].usage == "clientAuth"
    serving = by_stem["kubelet-serving"].extensions()
    assert f"IP:{node.address}" in serving and "serverAuth" in serving
    assert by_stem["kube-proxy"].subject() == "/CN=system:kube-proxy"
    # kube-router is the user its read-only ClusterRole is bound to.
    binding = services.kube_router_rbac()[1]
    kube_router = by_stem[services.KUBE_ROUTER]
    assert kube_router.subject() == f"/CN={binding['subjects'][0]['name']}"
    assert kube_router.usage == "clientAuth"


def test_kubeconfigs_reach_the_api_server_on_the_bridge() -> None:
    config = nodes.kubeconfig(SETUPS[0], "kubelet")
    assert config["clusters"][0]["cluster"]["server"] == f"https://{HOST_ADDRESS}:6443"
    assert config["users"][0]["user"]["client-certificate"].endswith("certs/kubelet.crt")


def test_kube_proxy_runs_iptables_mode_for_the_pod_range() -> None:
    config = nodes.kube_proxy_config(SETUPS[1])
    assert config["mode"] == "iptables"
    assert config["clusterCIDR"] == POD_CIDR
    assert config["hostnameOverride"] == REAL_NODES[1].name
    assert config["conntrack"]["maxPerCore"] == 0  # host-wide: left alone


def test_network_commands_join_each_node_namespace_to_the_bridge_and_route_pods() -> None:
    commands = [" ".join(c) for c in nodes.host_network_commands(REAL_NODES, "/owner")]
    assert commands[0] == f"ip link add {BRIDGE} type bridge"
    for node in REAL_NODES:
        assert f"ip netns add {node.name}" in commands
        assert f"ip -n {node.name} addr add {node.address}/24 dev eth0" in commands
        assert f"ip route add {node.pod_cidr} via {node.address} dev {BRIDGE}" in commands
        for other in REAL_NODES:
            if other != node:
                route = f"ip -n {node.name} route add {other.pod_cidr} via {other.address}"
                assert route in commands
    assert all(len(nodes.veth_name(node)) <= 15 for node in REAL_NODES)


def read_tar(data: bytes) -> dict[str, tarfile.TarInfo | bytes]:
    """Regular files as their bytes, everything else as its TarInfo."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: (tar.extractfile(m).read() if m.isfile() else m)  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def test_busybox_image_is_an_oci_layout_ctr_can_import() -> None:
    layer = nodes.busybox_layer(b"\x7fELF fake", ["sh", "sleep", "busybox"])
    files = read_tar(nodes.oci_archive(layer, ["/bin/sh"], "x/y:z"))

    def blob(digest: str) -> bytes:
        data = files[f"blobs/sha256/{digest.removeprefix('sha256:')}"]
        assert isinstance(data, bytes)
        return data

    index = json.loads(files["index.json"])  # type: ignore[arg-type]
    entry = index["manifests"][0]
    assert entry["annotations"]["io.containerd.image.name"] == "x/y:z"
    manifest = json.loads(blob(entry["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    assert config["config"]["Cmd"] == ["/bin/sh"]
    layer_digest = manifest["layers"][0]["digest"]
    assert config["rootfs"]["diff_ids"] == [layer_digest]
    rootfs = read_tar(blob(layer_digest))
    link = rootfs["bin/sh"]
    assert isinstance(link, tarfile.TarInfo) and link.issym() and link.linkname == "busybox"
    assert rootfs["bin/busybox"] == b"\x7fELF fake"
    assert oci_is_reproducible(layer)


def oci_is_reproducible(layer: bytes) -> bool:
    return nodes.oci_archive(layer, ["a"], "n:t") == nodes.oci_archive(layer, ["a"], "n:t")


def test_forward_spec_round_trips() -> None:
    forward = Forward.parse(f"{HOST_ADDRESS}:6443=127.0.0.1:6443")
    assert forward == Forward(HOST_ADDRESS, 6443, "127.0.0.1", 6443)
    assert Forward.parse(str(forward)) == forward


def test_node_setup_round_trips_through_the_component_command_line() -> None:
    for setup in SETUPS:
        assert nodes.NodeSetup.from_args(*setup.args()) == setup


def test_cluster_down_leaves_real_nodes_it_did_not_make_alone() -> None:
    ours, theirs = str(localcluster.ROOT), "/work/another-checkout"
    # A cluster with real nodes: its own bridge, or what is left once the bridge is gone.
    assert localcluster.tears_real_nodes_down(kwok_only=False, bridge_owner=ours)
    assert localcluster.tears_real_nodes_down(kwok_only=False, bridge_owner=None)
    # A kwok-only cluster made none; the same fixed names on the host are another's.
    assert not localcluster.tears_real_nodes_down(kwok_only=True, bridge_owner=None)
    assert not localcluster.tears_real_nodes_down(kwok_only=True, bridge_owner=theirs)
    assert not localcluster.tears_real_nodes_down(kwok_only=False, bridge_owner=theirs)
