"""cluster-up is a no-op on a running cluster; every cluster process listens on loopback
(or, for the relay, the cluster DNS and the registry pods use, on the cluster's own
bridge); cluster-down leaves no process, listening port, mount, network namespace,
veth, bridge, cgroup, iptables or nftables rule, ipset, CNI state or pod log link
behind. A kwok-only cluster (the scale benchmarks') has no bridge, real node or node
service, listens on loopback alone and leaves nothing behind either."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client

from devtools import dns, localcluster, nodes
from devtools.deploy import OperatorProcess
from devtools.network import BRIDGE, HOST_ADDRESS, REAL_NODES, REGISTRY, RealNode
from devtools.nodes import (
    CGROUP_FS,
    CONTAINER_LOG_LINKS,
    KUBELET_DEVICE_SOCKET,
    NETNS_DIR,
    SHIM_SOCKETS,
    cni_cache_entries,
    sysctls_file,
    veth_name,
)
from devtools.s3 import bound_unix_sockets
from tests.support.kube import wait_until
from tests.support.nodes import friends_only_policy, run_probes

# kwokctl supervises: etcd, apiserver, controller-manager, scheduler, kwok, S3,
# provisioner, the bridge relay, CoreDNS, Traefik, the registry, and containerd,
# kubelet, kube-proxy, kube-router per real node.
CLUSTER_PROCESSES = 11 + 4 * len(REAL_NODES)
# Of those, these listen on the host's network (the nodes listen in their namespaces):
# at least the control plane's 7 ports, CoreDNS's 2, Traefik's 2, the registry's 1.
HOST_LISTENERS = 12
# What pods reach on the bridge address besides the relay's ports.
BRIDGE_SERVICES = (f"{HOST_ADDRESS}:{dns.PORT}", REGISTRY)
RELAY = localcluster.FORWARD_BINARY.name
# A kwok-only cluster: etcd, apiserver, controller-manager, scheduler, kwok, S3, provisioner.
KWOK_ONLY_PROCESSES = 7


def listening() -> list[tuple[str, set[int]]]:
    """Listening TCP and bound UDP sockets: (address:port, owning pids), from `ss`."""
    lines = subprocess.run(
        ["ss", "-H", "-ltunp"], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    return [(line.split()[4], {int(p) for p in re.findall(r"pid=(\d+)", line)}) for line in lines]


def listeners() -> list[tuple[int, set[int]]]:
    """Listening sockets: (port, owning pids)."""
    return [(int(address.rsplit(":", 1)[1]), owners) for address, owners in listening()]


def relay_pid() -> int:
    return int((localcluster.CLUSTER_DIR / "pids" / f"{RELAY}.pid").read_text().strip())


def ticks_since_boot() -> int:
    """Now, in the unit of a process's start time (/proc/<pid>/stat)."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return int(uptime * os.sysconf("SC_CLK_TCK"))


def test_cluster_up_again_is_a_noop(
    local_cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = localcluster.cluster_processes()
    localcluster.up()
    assert "already up" in capsys.readouterr().out
    assert localcluster.cluster_processes() == before


def test_every_cluster_process_listens_on_loopback_only(local_cluster: Path) -> None:
    """Loopback, except on the bridge: the relay, the cluster DNS and the registry."""
    pids = set(localcluster.cluster_processes())
    assert len(pids) == CLUSTER_PROCESSES
    ours = [(address, owners) for address, owners in listening() if owners & pids]
    assert ours, "no listening socket found for the cluster processes"
    elsewhere = [
        address
        for address, owners in ours
        if not address.startswith("127.0.0.1:")
        and address not in BRIDGE_SERVICES
        and not (address.startswith(f"{HOST_ADDRESS}:") and owners == {relay_pid()})
    ]
    assert elsewhere == []
    on_bridge = {address for address, _ in ours if address.startswith(f"{HOST_ADDRESS}:")}
    assert set(BRIDGE_SERVICES) <= on_bridge


def test_stragglers_are_killed_after_a_bounded_wait() -> None:
    # A process that ignores SIGTERM, as a component stuck in shutdown would.
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    stuck = subprocess.Popen([sys.executable, "-c", code])
    try:
        started = localcluster.process_start(stuck.pid)
        assert started is not None
        begun = time.monotonic()
        killed = localcluster.stop_stragglers({stuck.pid: started}, grace=1.0)
        assert killed == [stuck.pid]
        assert 1.0 <= time.monotonic() - begun < 10
        assert stuck.wait(timeout=10) == -9
    finally:
        stuck.kill()
        stuck.wait()


def test_stragglers_leave_processes_that_reused_a_pid_alone() -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        started = localcluster.process_start(other.pid)
        assert started is not None
        assert localcluster.stop_stragglers({other.pid: started - 1}, grace=0.2) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.restarts_cluster
def test_cluster_down_leaves_no_process_or_port_then_up_brings_it_back(
    local_cluster: Path, kube: client.ApiClient
) -> None:
    """Runs last in a session (tests/integration/conftest.py): after it the cluster is a
    new one, and session fixtures made for the old one (clients, credentials) are stale."""
    processes = localcluster.cluster_processes()
    assert len(processes) == CLUSTER_PROCESSES
    ports = {port for port, owners in listeners() if owners & set(processes)}
    assert len(ports) >= HOST_LISTENERS
    # Real containers running on both nodes: what they mount and start must go too.
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": "t-cluster-down"}})  # goes with the cluster
    run_probes(core, "t-cluster-down")
    # A policy on them: kube-router makes its ipsets in the nodes' namespaces.
    client.NetworkingV1Api(kube).create_namespaced_network_policy(
        "t-cluster-down", friends_only_policy()
    )
    wait_until(
        "kube-router's ipsets in each node", lambda: all(map(kube_router_ipsets, REAL_NODES))
    )
    node_dirs = [localcluster.NODES_DIR / node.name for node in REAL_NODES]
    assert mounts_under(node_dirs)
    assert any(f":/{REAL_NODES[0].name}/" in cgroups for _, _, cgroups in processes_now())
    host_sysctls = json.loads(sysctls_file(localcluster.NODES_DIR).read_text())
    sockets = bound_unix_sockets(processes)
    assert any(str(path).startswith("/tmp/seaweedfs-") for path in sockets)  # S3's
    for operator in list(OperatorProcess.running):  # they talk to the cluster that goes
        operator.stop()
    try:
        down_leaves_no_process_or_port(processes, ports)
        for written in (localcluster.KUBECONFIG, localcluster.S3_ENV, localcluster.INGRESS_ENV):
            assert not written.exists()
        assert real_node_leftovers(node_dirs) == []
        assert [path for path in sockets if path.exists()] == []
        assert {key: sysctl(key) for key in host_sysctls} == host_sysctls
    finally:
        localcluster.up()
    assert localcluster.api_is_up()
    assert len(localcluster.cluster_processes()) == CLUSTER_PROCESSES
    assert not set(localcluster.cluster_processes()) & set(processes)


def down_leaves_no_process_or_port(processes: dict[int, int], ports: set[int]) -> None:
    before = ticks_since_boot()
    localcluster.down()
    assert localcluster.still_running(processes) == []
    # Only a process started before down() can be ours: a port may be taken
    # again since by a new process (another cluster on this machine).
    left = [
        (port, owners)
        for port, owners in listeners()
        if port in ports
        and any((localcluster.process_start(pid) or sys.maxsize) <= before for pid in owners)
    ]
    assert left == []


def kube_router_ipsets(node: RealNode | None = None) -> list[str]:
    """The names of kube-router's ipsets in `node`'s namespace, or on the host."""
    inside = ["nsenter", f"--net={NETNS_DIR / node.name}"] if node else []
    names = command_output(*inside, "ipset", "list", "-n").splitlines()
    return [name for name in names if name.removeprefix("inet6:").startswith("KUBE-")]


def mounts_under(directories: list[Path]) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if any(p.startswith(f"{d}/") or p == str(d) for d in directories)]


def processes_now() -> list[tuple[int, str, str]]:
    """(pid, command line, cgroups) of every process."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append((int(entry.name), cmdline, (entry / "cgroup").read_text()))
            except OSError:
                continue
    return found


def command_output(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout


def real_node_leftovers(node_dirs: list[Path]) -> list[str]:
    """Whatever the real nodes left on the host, described; [] when nothing."""
    left = [f"mount {point}" for point in mounts_under(node_dirs)]
    for pid, cmdline, cgroups in processes_now():
        if any(f":/{node.name}/" in cgroups for node in REAL_NODES) or any(
            str(d) in cmdline for d in node_dirs
        ):
            left.append(f"process {pid}: {cmdline}")
    namespaces = command_output("ip", "netns", "list")
    links = command_output("ip", "-o", "link", "show")
    for node in REAL_NODES:
        left += [f"network namespace {node.name}"] * (node.name in namespaces)
        left += [f"veth {veth_name(node)}"] * (f" {veth_name(node)}@" in links)
        left += [f"cgroup {h}" for h in CGROUP_FS.glob(f"*/{node.name}")]
    left += [f"bridge {BRIDGE}"] * (f" {BRIDGE}:" in links)
    left += [f"CNI cache {c}" for c in cni_cache_entries(localcluster.NODES_DIR)]
    left += [f"kubelet socket {KUBELET_DEVICE_SOCKET}"] * KUBELET_DEVICE_SOCKET.exists()
    left += [f"shim socket {s}" for s in SHIM_SOCKETS.glob("*")]
    for dump in (("iptables-save",), ("ip6tables-save",), ("nft", "list", "ruleset")):
        left += [f"{dump[0]}: {line}" for line in command_output(*dump).splitlines()
                 if "KUBE-" in line or "CNI-" in line]  # fmt: skip
    # kube-router's ipsets live in the nodes' namespaces: none may be on the host.
    left += [f"ipset {name}" for name in kube_router_ipsets()]
    if CONTAINER_LOG_LINKS.is_dir():
        left += [f"log link {link}" for link in CONTAINER_LOG_LINKS.iterdir()
                 if any(str(link.readlink()).startswith(str(d)) for d in node_dirs)]  # fmt: skip
    return left


def sysctl(key: str) -> str:
    return command_output("sysctl", "-n", key).strip()


@pytest.mark.restarts_cluster
def test_a_kwok_only_cluster_runs_on_loopback_alone_and_leaves_nothing() -> None:
    """`make cluster-up KWOK_ONLY=1`, then down; the session's cluster, if any, comes back."""
    was_up = localcluster.api_is_up()
    if was_up:
        for operator in list(OperatorProcess.running):
            operator.stop()
        localcluster.down()
    try:
        localcluster.up(kwok_only=True)
        processes = localcluster.cluster_processes()
        assert len(processes) == KWOK_ONLY_PROCESSES
        ours = [address for address, owners in listening() if owners & set(processes)]
        assert ours
        assert [address for address in ours if not address.startswith("127.0.0.1:")] == []
        found = json.loads(localcluster.kubectl("get", "nodes", "-o", "json"))["items"]
        assert {n["metadata"]["name"] for n in found} == set(localcluster.NODE_NAMES)
        assert localcluster.nodes_ready(localcluster.NODE_NAMES)
        assert nodes.bridge_owner() != str(localcluster.ROOT)
        assert not localcluster.INGRESS_ENV.exists()
        with pytest.raises(RuntimeError, match="make cluster-down first"):
            localcluster.up()
        ports = {port for port, owners in listeners() if owners & set(processes)}
        down_leaves_no_process_or_port(processes, ports)
        for written in (localcluster.KUBECONFIG, localcluster.S3_ENV, localcluster.STATE_DIR):
            assert not written.exists()
    finally:
        if localcluster.is_kwok_only():
            localcluster.down()
        if was_up:
            localcluster.up()
