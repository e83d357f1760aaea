"""Real nodes of the local cluster: containerd + runc, kubelet, kube-proxy and
kube-router (NetworkPolicy) per node.

Design (like kind's node containers, without containers): each real node is a
network namespace (/run/netns/<node>) joined to the host bridge by a veth, holding
the node's address. Its containerd, kubelet, kube-proxy and kube-router run in that
namespace (`nsenter --net`, which keeps the host's /sys, unlike `ip netns exec`), so
the iptables chains and ipsets the kubelet, kube-proxy and kube-router write, the CNI
bridge and the pods' routes all live and die with the namespace. Each node has its
own directory under the cluster's state (containerd root/state/socket, runc root,
kubelet root, pod logs, CNI config and IP allocations, certificates) and its own
cgroup root, so two nodes never share anything but the kernel. kwokctl supervises
the processes (`python -m devtools.nodes run ...` sets a node up and execs the real
binary), so they stop with `kwokctl delete cluster`; `teardown` removes what they
leave: shims and containers, mounts, cgroups, the namespaces, veths and the bridge.

Pure functions render every configuration (unit-tested); thin functions start and
clean up.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools import services
from devtools.network import (
    BRIDGE,
    BRIDGE_PREFIX_LENGTH,
    CLUSTER_DNS,
    CLUSTER_DOMAIN,
    HOST_ADDRESS,
    POD_CIDR,
    REAL_NODE_LABEL,
    REAL_NODE_VALUE,
    REAL_NODES,
    REGISTRY,
    RealNode,
)

COMPONENTS = ("containerd", "kubelet", "kube-proxy", services.KUBE_ROUTER)
# The one local image every node imports at start: busybox-static, used as the pod
# sandbox ("pause") image and by tests that need a shell in a real container.
BUSYBOX_IMAGE = "localhost/rspark/busybox:static"
BUSYBOX_BINARY = Path("/bin/busybox")
# What the pause container runs: wait for SIGTERM, reap nothing else.
PAUSE_COMMAND = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
CNI_BIN_DIR = "/usr/lib/cni"
# libcni caches each attachment's result here (the pod's namespace path inside).
CNI_CACHE_DIR = Path("/var/lib/cni/results")
# The kubelet links every container's log here (the links point into our pod logs dir).
CONTAINER_LOG_LINKS = Path("/var/log/containers")
# Paths the kubelet and containerd use whatever their configuration says: the device
# plugin socket, and the shims' sockets.
KUBELET_DEVICE_SOCKET = Path("/var/lib/kubelet/device-plugins/kubelet.sock")
SHIM_SOCKETS = Path("/run/containerd/s")
# Host-wide kernel settings the kubelet sets on start (protectKernelDefaults: false);
# saved before the nodes start and put back when they are gone.
KUBELET_SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
CGROUP_FS = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
KUBELET_PORT = 10250
# runc, iptables, mount and friends, wherever the caller's PATH stops.
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
WAIT_SECONDS = 300.0


@dataclass(frozen=True)
class NodeSetup:
    """Where one node keeps its files and how it reaches the control plane."""

    node: RealNode
    nodes_dir: Path  # the cluster's node state, one directory per node
    pki: Path  # the cluster CA that kwokctl generated (ca.crt, ca.key)
    bin_dir: Path  # kubelet, kube-proxy (hack/tools.sh)
    api_port: int  # kube-apiserver's port, reached at HOST_ADDRESS

    @property
    def root(self) -> Path:
        return self.nodes_dir / self.node.name

    @property
    def api_server(self) -> str:
        return f"https://{HOST_ADDRESS}:{self.api_port}"

    @property
    def netns(self) -> Path:
        return NETNS_DIR / self.node.name

    @property
    def cgroup_root(self) -> str:
        return f"/{self.node.name}"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def registry_hosts_dir(self) -> Path:
        return self.root / "registry-hosts"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs_dir(self) -> Path:
        return self.root / "pod-logs"

    @property
    def image_archive(self) -> Path:
        return self.nodes_dir / "busybox.oci.tar"

    def args(self) -> list[str]:
        return [self.node.name, str(self.nodes_dir), str(self.pki), str(self.bin_dir),
                str(self.api_port)]  # fmt: skip

    @classmethod
    def from_args(cls, name: str, nodes_dir: str, pki: str, bin_dir: str, port: str) -> NodeSetup:
        node = next(n for n in REAL_NODES if n.name == name)
        return cls(node, Path(nodes_dir), Path(pki), Path(bin_dir), int(port))


def veth_name(node: RealNode) -> str:
    """The host end of the node's veth (interface names hold 15 characters)."""
    return f"veth-{node.name.removeprefix('rspark-')}"[:15]


# --- pure: configurations ---


def containerd_config(setup: NodeSetup) -> str:
    """containerd 1.6 configuration (version 2) for one node: its own root, state,
    socket and runc root; CRI with the local busybox sandbox image, oom_score_adj
    restricted (this VM refuses negative scores), runc with cgroupfs, pod network
    namespaces under its state directory, and the local registry over plain HTTP."""
    root = setup.root
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    return f"""version = 2
root = "{root / "containerd" / "root"}"
state = "{root / "containerd" / "state"}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{setup.containerd_socket}"

[ttrpc]
  address = "{root / "containerd-ttrpc.sock"}"

[metrics]
  address = ""

{cri}
  sandbox_image = "{BUSYBOX_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false

{cri[:-1]}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

{cri[:-1]}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{cri[:-1]}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{root / "runc"}"

{cri[:-1]}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{setup.cni_conf_dir}"
  max_conf_num = 1

{cri[:-1]}.registry]
  config_path = "{setup.registry_hosts_dir}"
"""


def registry_hosts(registry: str = REGISTRY) -> str:
    """containerd's hosts.toml for the local registry: plain HTTP, pull and resolve."""
    return f"""server = "http://{registry}"

[host."http://{registry}"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
"""


def cni_conflist(setup: NodeSetup) -> dict[str, Any]:
    """bridge + host-local (+ portmap): pod addresses from the node's CIDR, the IP
    allocations inside the cluster's state, no masquerade (every address is local)."""
    return {
        "cniVersion": "1.0.0",
        "name": setup.node.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": setup.node.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(setup.root / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubeconfig(setup: NodeSetup, user: str) -> dict[str, Any]:
    """A kubeconfig for one of the node's identities (certificate files under certs/)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": setup.api_server,
                    "certificate-authority": str(setup.pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(setup.certs / f"{user}.crt"),
                    "client-key": str(setup.certs / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }


def kubelet_config(setup: NodeSetup) -> dict[str, Any]:
    """KubeletConfiguration: serves on the node address with a certificate signed by
    the cluster CA, authenticates the API server by the same CA, cgroupfs under the
    node's own cgroup root, pod logs in the node's directory, registers tainted."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": setup.node.address,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "tlsCertFile": str(setup.certs / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(setup.certs / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(setup.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{setup.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": setup.cgroup_root,
        "podLogsDir": str(setup.pod_logs_dir),
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "failSwapOn": False,
        "registerWithTaints": [
            {"key": REAL_NODE_LABEL, "value": REAL_NODE_VALUE, "effect": "NoSchedule"}
        ],
        # The machine's disk is shared and often well used: no eviction or image
        # garbage collection on disk usage (the local busybox image cannot be pulled;
        # a disk pressure eviction deletes unused images whatever the GC thresholds),
        # as kind does.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "0%",
            "imagefs.available": "0%",
            "nodefs.inodesFree": "0%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "maxPods": 110,
    }


def kubelet_args(setup: NodeSetup) -> list[str]:
    return [
        f"--config={setup.root / 'kubelet.yaml'}",
        f"--kubeconfig={setup.root / 'kubelet.kubeconfig'}",
        f"--root-dir={setup.kubelet_dir}",
        f"--cert-dir={setup.certs}",
        f"--hostname-override={setup.node.name}",
        f"--node-ip={setup.node.address}",
        f"--node-labels={REAL_NODE_LABEL}={REAL_NODE_VALUE}",
    ]


def kube_proxy_config(setup: NodeSetup) -> dict[str, Any]:
    """KubeProxyConfiguration: iptables mode inside the node's namespace; leaves the
    host-wide conntrack settings alone (a namespace cannot change them)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(setup.root / "kube-proxy.kubeconfig")},
        "hostnameOverride": setup.node.name,
        "bindAddress": setup.node.address,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


@dataclass(frozen=True)
class Identity:
    """A certificate the node holds: file stem, subject, extended usage, SANs."""

    stem: str
    common_name: str
    organization: str | None
    usage: str  # clientAuth or serverAuth
    ip_sans: tuple[str, ...] = ()
    dns_sans: tuple[str, ...] = ()

    def subject(self) -> str:
        organization = f"/O={self.organization}" if self.organization else ""
        return f"{organization}/CN={self.common_name}"

    def extensions(self) -> str:
        """An openssl extension section for this certificate."""
        lines = [
            "basicConstraints = critical, CA:FALSE",
            "keyUsage = critical, digitalSignature, keyEncipherment",
            f"extendedKeyUsage = {self.usage}",
        ]
        sans = [f"IP:{ip}" for ip in self.ip_sans] + [f"DNS:{name}" for name in self.dns_sans]
        if sans:
            lines.append(f"subjectAltName = {', '.join(sans)}")
        return "\n".join(lines) + "\n"


def identities(node: RealNode) -> tuple[Identity, ...]:
    """The node's identities: kubelet (system:node:<name> in system:nodes, for the Node
    authorizer and NodeRestriction), the kubelet's serving certificate (for `kubectl
    logs/exec`, checked against the cluster CA), kube-proxy (system:kube-proxy,
    bound to system:node-proxier by the default RBAC) and kube-router (the read-only
    user of services.kube_router_rbac)."""
    return (
        Identity("kubelet", f"system:node:{node.name}", "system:nodes", "clientAuth"),
        Identity(
            "kubelet-serving",
            f"system:node:{node.name}",
            "system:nodes",
            "serverAuth",
            ip_sans=(node.address,),
            dns_sans=(node.name,),
        ),
        Identity("kube-proxy", "system:kube-proxy", None, "clientAuth"),
        Identity(services.KUBE_ROUTER, services.KUBE_ROUTER_USER, None, "clientAuth"),
    )


VETH_PEER = ("type", "veth", "peer", "name", "eth0", "netns")


def host_network_commands(nodes: tuple[RealNode, ...], owner: str) -> list[list[str]]:
    """`ip` commands that make the bridge (tagged with its owner), and for each node a
    network namespace with a veth on the bridge holding the node address, routes to
    every other node's pods, and forwarding on; routes from the host to each node's
    pods."""
    commands = [
        ["ip", "link", "add", BRIDGE, "type", "bridge"],
        ["ip", "link", "set", BRIDGE, "alias", owner],
        ["ip", "addr", "add", f"{HOST_ADDRESS}/{BRIDGE_PREFIX_LENGTH}", "dev", BRIDGE],
        ["ip", "link", "set", BRIDGE, "up"],
    ]
    for node in nodes:
        inside = ["ip", "-n", node.name]
        commands += [
            ["ip", "netns", "add", node.name],
            ["ip", "link", "add", veth_name(node), *VETH_PEER, node.name],
            ["ip", "link", "set", veth_name(node), "master", BRIDGE, "up"],
            [*inside, "link", "set", "lo", "up"],
            [*inside, "addr", "add", f"{node.address}/{BRIDGE_PREFIX_LENGTH}", "dev", "eth0"],
            [*inside, "link", "set", "eth0", "up"],
            [*inside, "route", "add", "default", "via", HOST_ADDRESS],
            *(
                [*inside, "route", "add", other.pod_cidr, "via", other.address]
                for other in nodes
                if other != node
            ),
            ["ip", "route", "add", node.pod_cidr, "via", node.address, "dev", BRIDGE],
        ]
    return commands


# Set inside each node's namespace: routing for its pods, and bridged pod traffic
# through iptables (kube-proxy's Service rules between pods on one bridge).
NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}


# --- pure: the busybox image ---


def _tar_bytes(entries: list[tarfile.TarInfo], payloads: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in entries:
            data = payloads.get(info.name)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _entry(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, size, link, 0
    return info


def busybox_layer(busybox: bytes, applets: list[str]) -> bytes:
    """One layer: /bin/busybox, a link per applet, and the directories a pod expects."""
    entries = [
        _entry(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755)
        for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "var", "root")
    ]
    entries.append(_entry("bin/busybox", tarfile.REGTYPE, 0o755, len(busybox)))
    entries += [
        _entry(f"bin/{a}", tarfile.SYMTYPE, 0o777, link="busybox")
        for a in sorted(set(applets) - {"busybox"})
    ]
    passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    group = b"root:x:0:\nnogroup:x:65534:\n"
    entries.append(_entry("etc/passwd", tarfile.REGTYPE, 0o644, len(passwd)))
    entries.append(_entry("etc/group", tarfile.REGTYPE, 0o644, len(group)))
    payloads = {"bin/busybox": busybox, "etc/passwd": passwd, "etc/group": group}
    return _tar_bytes(entries, payloads)


def oci_archive(layer: bytes, command: list[str], name: str) -> bytes:
    """An OCI image layout as a tar (what `ctr images import` takes): one uncompressed
    layer, its config and manifest, and an index naming the image."""

    def blob(data: bytes) -> tuple[str, bytes]:
        return f"sha256:{hashlib.sha256(data).hexdigest()}", data

    layer_digest, _ = blob(layer)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": command, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }, sort_keys=True).encode()  # fmt: skip
    config_digest, _ = blob(config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}],
    }, sort_keys=True).encode()  # fmt: skip
    manifest_digest, _ = blob(manifest)
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
        }],
    }, sort_keys=True).encode()  # fmt: skip
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for digest, data in (blob(layer), blob(config), blob(manifest)):
        files[f"blobs/sha256/{digest.removeprefix('sha256:')}"] = data
    entries = [_entry(d, tarfile.DIRTYPE, 0o755) for d in ("blobs", "blobs/sha256")]
    entries += [_entry(n, tarfile.REGTYPE, 0o644, len(d)) for n, d in files.items()]
    return _tar_bytes(entries, files)


# --- thin: the host network, images, certificates, processes ---


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, text=True, capture_output=True, timeout=120)


def bridge_owner() -> str | None:
    """The owner written on the bridge (a worktree path), None when there is no bridge."""
    result = sh("ip", "-j", "link", "show", BRIDGE, check=False)
    if result.returncode != 0:
        return None
    return str(json.loads(result.stdout)[0].get("ifalias", ""))


def network_up(owner: str) -> None:
    """Make the bridge and the nodes' namespaces (before kwokctl binds to the bridge)."""
    if os.geteuid() != 0:
        raise RuntimeError("the real nodes need root: network namespaces, mounts, cgroups")
    found = bridge_owner()
    if found is not None:
        raise RuntimeError(
            f"bridge {BRIDGE} exists (owner {found!r}): another local cluster with real "
            "nodes runs on this machine, or `make cluster-down` did not finish"
        )
    for command in host_network_commands(REAL_NODES, owner):
        sh(*command)
    for node in REAL_NODES:
        for key, value in NODE_SYSCTLS.items():
            sh("nsenter", f"--net={NETNS_DIR / node.name}", "sysctl", "-q", "-w", f"{key}={value}")


def sysctls_file(nodes_dir: Path) -> Path:
    return nodes_dir / "host-sysctls.json"


def save_host_sysctls(nodes_dir: Path) -> None:
    values = {key: sh("sysctl", "-n", key).stdout.strip() for key in KUBELET_SYSCTLS}
    nodes_dir.mkdir(parents=True, exist_ok=True)
    sysctls_file(nodes_dir).write_text(json.dumps(values))


def restore_host_sysctls(nodes_dir: Path) -> None:
    saved = sysctls_file(nodes_dir)
    if saved.exists():
        for key, value in json.loads(saved.read_text()).items():
            sh("sysctl", "-q", "-w", f"{key}={value}")
        saved.unlink()


def write_busybox_image(path: Path) -> None:
    applets = sh(str(BUSYBOX_BINARY), "--list").stdout.split()
    layer = busybox_layer(BUSYBOX_BINARY.read_bytes(), applets)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(oci_archive(layer, PAUSE_COMMAND, BUSYBOX_IMAGE))


def issue_certificates(setup: NodeSetup, stems: tuple[str, ...]) -> None:
    """The named identities' keys and certificates, signed by the cluster CA (openssl).
    Each component issues its own, so two never write the same files."""
    setup.certs.mkdir(parents=True, exist_ok=True)
    for identity in identities(setup.node):
        key, cert = setup.certs / f"{identity.stem}.key", setup.certs / f"{identity.stem}.crt"
        if identity.stem not in stems or cert.exists():
            continue
        csr, extensions = setup.certs / f"{identity.stem}.csr", setup.certs / f"{identity.stem}.ext"
        extensions.write_text(identity.extensions())
        sh("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
           "-subj", identity.subject(), "-out", str(csr))  # fmt: skip
        sh("openssl", "x509", "-req", "-in", str(csr), "-CA", str(setup.pki / "ca.crt"),
           "-CAkey", str(setup.pki / "ca.key"), "-set_serial", str(int.from_bytes(os.urandom(8))),
           "-days", "365", "-extfile", str(extensions), "-out", str(cert))  # fmt: skip
        csr.unlink()
        extensions.unlink()


def make_cgroup_root(setup: NodeSetup) -> None:
    """The node's cgroup root in every hierarchy (the kubelet refuses a missing one)."""
    for hierarchy in cgroup_hierarchies():
        target = hierarchy / setup.cgroup_root.strip("/")
        target.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):  # a v1 cpuset starts empty
            if (target / name).exists() and not (target / name).read_text().strip():
                (target / name).write_text((hierarchy / name).read_text())


def cgroup_hierarchies() -> list[Path]:
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    return [
        Path(fields[1])
        for fields in (line.split() for line in mounts)
        if fields[2] in ("cgroup", "cgroup2") and fields[1].startswith(f"{CGROUP_FS}")
    ]


def exec_in_node(setup: NodeSetup, binary: str, args: list[str]) -> None:
    """Replace this process with `binary` in the node's network namespace."""
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = ":".join([path, *SYSTEM_PATH]) if path else ":".join(SYSTEM_PATH)
    nsenter = shutil.which("nsenter") or "nsenter"
    os.execv(nsenter, [nsenter, f"--net={setup.netns}", "--", binary, *args])


def write_yaml(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1))  # JSON is YAML


def run_containerd(setup: NodeSetup) -> None:
    setup.root.mkdir(parents=True, exist_ok=True)
    setup.containerd_config.write_text(containerd_config(setup))
    hosts = setup.registry_hosts_dir / REGISTRY / "hosts.toml"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    hosts.write_text(registry_hosts())
    write_yaml(setup.cni_conf_dir / "10-bridge.conflist", cni_conflist(setup))
    exec_in_node(setup, shutil.which("containerd") or "containerd",
                 ["--config", str(setup.containerd_config)])  # fmt: skip


def run_kubelet(setup: NodeSetup) -> None:
    issue_certificates(setup, ("kubelet", "kubelet-serving"))
    write_yaml(setup.root / "kubelet.kubeconfig", kubeconfig(setup, "kubelet"))
    write_yaml(setup.root / "kubelet.yaml", kubelet_config(setup))
    make_cgroup_root(setup)
    ctr = ("ctr", "--address", str(setup.containerd_socket), "--namespace", "k8s.io")
    # The socket of a killed containerd stays until the next one listens again.
    deadline = time.monotonic() + WAIT_SECONDS
    while sh(*ctr, "version", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"containerd at {setup.containerd_socket} did not answer")
        time.sleep(0.2)
    sh(*ctr, "images", "import", str(setup.image_archive))
    exec_in_node(setup, str(setup.bin_dir / "kubelet"), kubelet_args(setup))


def run_kube_proxy(setup: NodeSetup) -> None:
    issue_certificates(setup, ("kube-proxy",))
    write_yaml(setup.root / "kube-proxy.kubeconfig", kubeconfig(setup, "kube-proxy"))
    write_yaml(setup.root / "kube-proxy.yaml", kube_proxy_config(setup))
    exec_in_node(setup, str(setup.bin_dir / "kube-proxy"),
                 [f"--config={setup.root / 'kube-proxy.yaml'}"])  # fmt: skip


def run_kube_router(setup: NodeSetup) -> None:
    """kube-router's firewall: NetworkPolicy as iptables chains and ipsets in the node.

    It reads its Node once at start and exits when it cannot: wait until the kubelet
    has registered the node and kube-router's RBAC lets it read it."""
    issue_certificates(setup, (services.KUBE_ROUTER,))
    config = setup.root / f"{services.KUBE_ROUTER}.kubeconfig"
    write_yaml(config, kubeconfig(setup, services.KUBE_ROUTER))
    get_node = (str(setup.bin_dir / "kubectl"), "--kubeconfig", str(config),
                "get", "node", setup.node.name)  # fmt: skip
    deadline = time.monotonic() + WAIT_SECONDS
    while sh(*get_node, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"node {setup.node.name} not readable as {services.KUBE_ROUTER}")
        time.sleep(1)
    exec_in_node(setup, str(setup.bin_dir / services.KUBE_ROUTER),
                 services.kube_router_args(setup.node.name, config))  # fmt: skip


RUNNERS = {
    "containerd": run_containerd,
    "kubelet": run_kubelet,
    "kube-proxy": run_kube_proxy,
    services.KUBE_ROUTER: run_kube_router,
}


def component_wrapper(
    bin_dir: Path, root: Path, python: str, setup: NodeSetup, component: str
) -> Path:
    """A script per node component: kwokctl names pid and log files after the binary."""
    wrapper = bin_dir / f"{setup.node.name}-{component}"
    wrapper.write_text(
        f"#!/bin/sh\ncd {root}\n"
        f"exec {python} -m devtools.nodes run {component} {' '.join(setup.args())}\n"
    )
    wrapper.chmod(0o755)
    return wrapper


# --- thin: teardown ---


def _processes() -> Iterator[tuple[int, str, str]]:
    """(pid, command line, cgroups) of every process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            yield int(entry.name), cmdline, (entry / "cgroup").read_text()


def node_processes(nodes_dir: Path, chosen: tuple[RealNode, ...] = REAL_NODES) -> list[int]:
    """Processes of the chosen nodes: anything started with a node's files (containerd,
    its shims, the kubelet, kube-proxy) and anything in a node's cgroups (containers)."""
    files = [f"{nodes_dir / node.name}/" for node in chosen]
    cgroups = [f":/{node.name}{end}" for node in chosen for end in ("/", "\n")]
    return [
        pid
        for pid, cmdline, groups in _processes()
        if pid != os.getpid()
        and (any(f in cmdline for f in files) or any(c in groups for c in cgroups))
    ]


def kill_node_processes(nodes_dir: Path, chosen: tuple[RealNode, ...] = REAL_NODES) -> list[int]:
    """SIGKILL every process of the chosen nodes (a node that loses power)."""
    killed = node_processes(nodes_dir, chosen)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while node_processes(nodes_dir, chosen) and time.monotonic() < deadline:
        time.sleep(0.1)
    return killed


def node_mounts(nodes_dir: Path) -> list[str]:
    """Mount points under the nodes' directories and their namespaces, deepest first."""
    points = [
        line.split()[4].encode().decode("unicode_escape")
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    ]
    ours = [str(nodes_dir)] + [str(NETNS_DIR / node.name) for node in REAL_NODES]
    return sorted(
        {p for p in points if any(p == o or p.startswith(o + "/") for o in ours)},
        key=lambda p: -p.count("/"),
    )


def remove_cgroups() -> None:
    for hierarchy in cgroup_hierarchies():
        for node in REAL_NODES:
            top = hierarchy / node.name
            if not top.is_dir():
                continue
            for directory in sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            ):
                directory.rmdir()
            top.rmdir()


def teardown(nodes_dir: Path, owner: str) -> list[str]:
    """Remove everything the real nodes leave once their supervised processes are gone.
    Returns what it found left behind (for the log)."""
    found: list[str] = []
    killed = kill_node_processes(nodes_dir)
    if killed:
        found.append(f"{len(killed)} node process(es)")
    mounts = node_mounts(nodes_dir)
    for point in mounts:
        if sh("umount", point, check=False).returncode != 0:
            sh("umount", "--lazy", point, check=False)
    if mounts:
        found.append(f"{len(mounts)} mount(s)")
    for node in REAL_NODES:
        if (NETNS_DIR / node.name).exists():
            sh("ip", "netns", "delete", node.name, check=False)
        if sh("ip", "link", "show", veth_name(node), check=False).returncode == 0:
            sh("ip", "link", "delete", veth_name(node), check=False)
    if bridge_owner() == owner:
        sh("ip", "link", "delete", BRIDGE)
        found.append(f"bridge {BRIDGE}")
    remove_cgroups()
    restore_host_sysctls(nodes_dir)
    for cached in cni_cache_entries(nodes_dir):
        cached.unlink()
    if CONTAINER_LOG_LINKS.is_dir():
        for link in CONTAINER_LOG_LINKS.iterdir():
            if link.is_symlink() and str(link.readlink()).startswith(str(nodes_dir)):
                link.unlink()
    KUBELET_DEVICE_SOCKET.unlink(missing_ok=True)
    for socket_path in stale_sockets(SHIM_SOCKETS):  # the killed shims'
        socket_path.unlink()
    # The directories they made, when nothing else is in them.
    for directory in (CNI_CACHE_DIR, CNI_CACHE_DIR.parent, CONTAINER_LOG_LINKS,
                      KUBELET_DEVICE_SOCKET.parent, KUBELET_DEVICE_SOCKET.parent.parent,
                      SHIM_SOCKETS, SHIM_SOCKETS.parent):  # fmt: skip
        with contextlib.suppress(FileNotFoundError, OSError):
            directory.rmdir()
    # `ip netns add` made /run/netns a mount point of its own: undo it when empty.
    if NETNS_DIR.is_dir() and not any(NETNS_DIR.iterdir()):
        sh("umount", str(NETNS_DIR), check=False)
        with contextlib.suppress(OSError):
            NETNS_DIR.rmdir()
    return found


def stale_sockets(directory: Path) -> list[Path]:
    """Unix sockets in `directory` that nobody listens on any more."""
    stale = []
    for path in directory.glob("*") if directory.is_dir() else []:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                stale.append(path)
            except OSError:
                continue
    return stale


def cni_cache_entries(nodes_dir: Path) -> list[Path]:
    """libcni's cached results for the nodes' pods (their namespaces are in nodes_dir)."""
    if not CNI_CACHE_DIR.is_dir():
        return []
    return [entry for entry in CNI_CACHE_DIR.iterdir() if str(nodes_dir) in entry.read_text()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="set a node component up and exec it (kwokctl runs this)")
    run.add_argument("component", choices=COMPONENTS)
    run.add_argument("setup", nargs=5)
    arguments = parser.parse_args()
    RUNNERS[arguments.component](NodeSetup.from_args(*arguments.setup))


if __name__ == "__main__":
    main()
