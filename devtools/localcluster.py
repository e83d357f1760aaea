"""The local development and test cluster: `python -m devtools.localcluster up|down|status`.

kwokctl (`--runtime binary`) runs and supervises every process: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, the kwok controller
(simulated nodes and kubelets), the S3 server and the volume provisioner, all
bound to 127.0.0.1; a relay that exposes the API server and S3 on the cluster
bridge (devtools.forward), the real nodes' containerd, kubelet, kube-proxy and
kube-router (devtools.nodes), each in its node's network namespace, and the cluster
services: CoreDNS, Traefik and the image registry (devtools.services). The binaries come from
hack/tools.sh (built once per version, cached under ~/.cache/rspark-operator).

`up --kwok-only` (`make cluster-up KWOK_ONLY=1`): the control plane, the kwok nodes, S3
and the provisioner, all on 127.0.0.1, and nothing else: no bridge, relay, real node,
CoreDNS, Traefik or registry. For the scale benchmarks (bench/operator_scale.py), whose
pods are all simulated: the node services would only share the API server's cores.
It binds nothing but free ports on 127.0.0.1, makes no bridge, and keeps its kwokctl
workdir and state in this checkout's .local, so it can run beside another checkout's
cluster with real nodes.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from devtools import nodes, services
from devtools.forward import Forward
from devtools.network import CLUSTER_DNS, HOST_ADDRESS, REAL_NODES, REGISTRY, SERVICE_RANGE
from devtools.provisioner import PROVISIONER_NAME, WAIT_FOR_FIRST_CONSUMER
from devtools.s3 import (
    HOST,
    S3Credentials,
    S3Ports,
    bound_unix_sockets,
    free_port_pair,
    remove_files,
    wait_for_s3,
    weed_binary,
    weed_command,
    write_identities,
)

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
BIN = LOCAL / "bin"
KUBECONFIG = LOCAL / "kubeconfig"
S3_ENV = LOCAL / "s3.env"
INGRESS_ENV = LOCAL / services.INGRESS_ENV_FILE
KWOK_WORKDIR = LOCAL / "kwok"
CLUSTER_NAME = "rspark"
CLUSTER_DIR = KWOK_WORKDIR / "clusters" / CLUSTER_NAME
STATE_DIR = LOCAL / "state"
# Written by `up --kwok-only`: the cluster has neither real nodes nor their services.
KWOK_ONLY_MARK = STATE_DIR / "kwok-only"
NODES_DIR = STATE_DIR / "nodes"
# The provisioner's volumes: a folder per real node, one shared by the kwok nodes.
VOLUMES_DIR = STATE_DIR / "volumes"
PKI_DIR = CLUSTER_DIR / "pki"
FORWARD_BINARY = BIN / "rspark-bridge-forward"
NODE_NAMES = ("kwok-node-a", "kwok-node-b")
# Room for the scale benchmark's 10,000 workspaces (bench/operator_scale.py) on the two:
# a workspace pod asks 110m CPU and 320Mi (its agent 100m and 256Mi).
NODE_RESOURCES = {"cpu": "1000", "memory": "4Ti", "pods": "6000", "ephemeral-storage": "1Ti"}
BUCKET = "rspark"
STORAGE_CLASS = "standard"
PROVISIONER_BINARY = BIN / "rspark-local-provisioner"
# kwok's Stage resources: node setup and heartbeat, and the fast pod lifecycle.
# Read from the pinned kwok module.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
# The test cluster notices a node whose simulated kubelet stops within 20 s, not 40 s
# or more (kwokctl multiplies every heartbeat setting by `heartbeatFactor`, default 5).
# The kwok-only cluster of the scale benchmarks keeps kwokctl's defaults, made for
# scale: at 20 s, a lease renewal delayed by a saturated API server can get a node
# marked NotReady, and the node controller then rewrites every pod on it
# (bench/operator_scale.py counts such nodes in each run).
FAST_NODE_FAILURE = {
    "heartbeatFactor": 1,
    "nodeLeaseDurationSeconds": 20,
    "kubeControllerManagerNodeMonitorPeriodMilliseconds": 2000,
    "kubeControllerManagerNodeMonitorGracePeriodMilliseconds": 20000,
}
# Nodes with this label have a (simulated) kubelet: kwok manages them.
KUBELET_LABEL = "rspark.dev/simulated-kubelet"
# The simulated kubelet does not finish deleting a pod with this annotation.
SHUTTING_DOWN_ANNOTATION = "rspark.dev/test-shutting-down"


def log(message: str) -> None:
    print(f"[cluster] {message}", flush=True)


def tool_env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "KWOK_WORKDIR": str(KWOK_WORKDIR),
        "KUBECONFIG": str(KUBECONFIG),
    }


def run(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=tool_env(), check=check, text=True, capture_output=capture, timeout=600
    )


def kubectl(*args: str, stdin: str | None = None, timeout: float = 120) -> str:
    result = subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(KUBECONFIG), *args],
        input=stdin,
        env=tool_env(),
        check=True,
        text=True,
        capture_output=True,
        timeout=timeout,
    )
    return result.stdout


def kwok_module_dir() -> Path:
    cache = Path(os.environ.get("RSPARK_CACHE", Path.home() / ".cache" / "rspark-operator"))
    out = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"],
        cwd=ROOT / "hack" / "kwok",
        env={**os.environ, "GOMODCACHE": str(cache / "go" / "mod"), "GOFLAGS": "-mod=mod"},
        check=True,
        text=True,
        capture_output=True,
    )
    return Path(out.stdout.strip())


def api_is_up() -> bool:
    if not KUBECONFIG.exists():
        return False
    try:
        return kubectl("get", "--raw", "/readyz").strip() == "ok"
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return False


def cluster_exists() -> bool:
    out = run(str(BIN / "kwokctl"), "get", "clusters", check=False).stdout
    return CLUSTER_NAME in out.split()


def s3_credentials() -> S3Credentials:
    values = dict(line.split("=", 1) for line in S3_ENV.read_text().splitlines() if "=" in line)
    return S3Credentials(
        access_key=values["AWS_ACCESS_KEY_ID"],
        secret_key=values["AWS_SECRET_ACCESS_KEY"],
        endpoint=values["S3_ENDPOINT"],
        bucket=values["S3_BUCKET"],
    )


def is_kwok_only() -> bool:
    """Whether the cluster of this checkout was made by `up --kwok-only`."""
    return KWOK_ONLY_MARK.exists()


def tears_real_nodes_down(kwok_only: bool, bridge_owner: str | None) -> bool:
    """Whether `down` removes what real nodes leave (namespaces, veths, cgroups, mounts):
    not when this cluster had none, nor while another checkout's cluster owns the
    bridge (those are its nodes', under the same fixed names)."""
    return not kwok_only and bridge_owner in (None, str(ROOT))


def node_setups(api_port: int) -> list[nodes.NodeSetup]:
    return [nodes.NodeSetup(node, NODES_DIR, PKI_DIR, BIN, api_port) for node in REAL_NODES]


def bridge_forwards(api_port: int, s3_ports: S3Ports) -> list[Forward]:
    """The API server and S3, reachable from pods at the same ports on HOST_ADDRESS."""
    return [Forward(HOST_ADDRESS, port, HOST, port) for port in (api_port, s3_ports.s3)]


def node_components(api_port: int) -> list[dict[str, Any]]:
    """containerd, kubelet and kube-proxy of each real node, as kwokctl components."""
    return [
        {
            "name": f"{setup.node.name}-{component}",
            "binary": str(nodes.component_wrapper(BIN, ROOT, sys.executable, setup, component)),
            "args": [],
            "workDir": str(CLUSTER_DIR),
        }
        for setup in node_setups(api_port)
        for component in nodes.COMPONENTS
    ]


def kwokctl_configuration(
    s3: S3Credentials,
    s3_ports: S3Ports,
    api_port: int,
    service_ports: services.ServicePorts,
    kwok_only: bool,
) -> list[dict[str, Any]]:
    """The KwokctlConfiguration plus the kwok Stages, as YAML documents."""
    identities = STATE_DIR / "s3-identities.json"
    write_identities(identities, s3.access_key, s3.secret_key)
    (STATE_DIR / "s3").mkdir(parents=True, exist_ok=True)
    write_provisioner_wrapper()
    write_module_wrapper(FORWARD_BINARY, "devtools.forward")
    real_nodes = [] if kwok_only else [
        {
            "name": "bridge-forward",
            "binary": str(FORWARD_BINARY),
            "args": [str(f) for f in bridge_forwards(api_port, s3_ports)],
            "workDir": str(CLUSTER_DIR),
        },
        *node_components(api_port),
        *services.components(services_layout(), service_ports),
    ]  # fmt: skip
    config: dict[str, Any] = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {
            "runtime": "binary",
            "bindAddress": "127.0.0.1",
            "kubeApiserverBinary": str(BIN / "kube-apiserver"),
            "kubeControllerManagerBinary": str(BIN / "kube-controller-manager"),
            "kubeSchedulerBinary": str(BIN / "kube-scheduler"),
            "kubectlBinary": str(BIN / "kubectl"),
            "kwokControllerBinary": str(BIN / "kwok"),
            "etcdBinary": str(BIN / "etcd"),
            "kubeAuthorization": True,
            "kubeAdmission": True,
            "securePort": True,
            "kubeApiserverPort": api_port,
            # Pods and kubelets reach the API server on the bridge (devtools.forward);
            # in-cluster clients (KUBERNETES_SERVICE_HOST) at the `kubernetes` Service's
            # ClusterIP, the first address of the Service range.
            "kubeApiserverCertSANs": [HOST_ADDRESS, str(ipaddress.ip_network(SERVICE_RANGE)[1])],
            **({} if kwok_only else FAST_NODE_FAILURE),
        },
        # kwok acts as the kubelet of labelled nodes only, so that removing the label
        # stops a node's kubelet dead (see tests.support.kube.fail_node).
        "componentsPatches": [
            # kube-apiserver's default Service range is a /24: 254 Services, fewer than
            # the scale benchmark's workspaces (one ClusterIP Service each).
            # The `kubernetes` Service points at the bridge address; real kubelets
            # authenticate as nodes (Node authorizer, NodeRestriction); the API server
            # reaches kubelets at their node address and checks their serving
            # certificates against the cluster CA.
            {
                "name": "kube-apiserver",
                "extraArgs": [
                    {"key": key, "value": value}
                    for key, value in (
                        ("service-cluster-ip-range", SERVICE_RANGE),
                        ("advertise-address", HOST_ADDRESS),
                        ("enable-admission-plugins", "NodeRestriction"),
                        ("kubelet-preferred-address-types", "InternalIP"),
                        ("kubelet-certificate-authority", str(PKI_DIR / "ca.crt")),
                        ("kubelet-client-certificate", str(PKI_DIR / "admin.crt")),
                        ("kubelet-client-key", str(PKI_DIR / "admin.key")),
                    )
                ],
            },
            {
                "name": "kwok-controller",
                "extraArgs": [
                    {"key": "manage-all-nodes", "value": "false"},
                    {"key": "manage-nodes-with-label-selector", "value": KUBELET_LABEL},
                ],
            },
        ],
        "components": [
            {
                "name": "s3",
                "binary": weed_binary(),
                "args": weed_command(STATE_DIR / "s3", s3_ports, identities, STATE_DIR)[1:],
                "workDir": str(CLUSTER_DIR),
            },
            {
                "name": "volume-provisioner",
                "binary": str(PROVISIONER_BINARY),
                "args": [
                    "--kubeconfig",
                    str(CLUSTER_DIR / "kubeconfig.yaml"),
                    "--root",
                    str(VOLUMES_DIR),
                ],
                "workDir": str(CLUSTER_DIR),
            },
            *real_nodes,
        ],
    }
    stages_dir = kwok_module_dir() / "kustomize" / "stage"
    stages = [yaml.safe_load((stages_dir / name).read_text()) for name in KWOK_STAGES]
    for stage in stages:
        if stage["metadata"]["name"] == "pod-delete":
            # A pod marked as still shutting down stays Terminating (a slow RStudio stop).
            stage["spec"]["selector"]["matchExpressions"].append(
                {
                    "key": f'.metadata.annotations["{SHUTTING_DOWN_ANNOTATION}"]',
                    "operator": "DoesNotExist",
                }
            )
    return [config, *stages]


def services_layout() -> services.ServicesLayout:
    return services.ServicesLayout(BIN, STATE_DIR, CLUSTER_DIR, CLUSTER_DIR / "kubeconfig.yaml")


def write_provisioner_wrapper() -> None:
    write_module_wrapper(PROVISIONER_BINARY, "devtools.provisioner")


def write_module_wrapper(path: Path, module: str) -> None:
    """kwokctl names a component's pid file after its binary, so give it its own."""
    path.write_text(f'#!/bin/sh\ncd {ROOT}\nexec {sys.executable} -m {module} "$@"\n')
    path.chmod(0o755)


def node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                KUBELET_LABEL: "running",
            },
        },
        # As a kubelet reports them, ephemeral storage included (pods request it).
        "status": {"allocatable": NODE_RESOURCES, "capacity": NODE_RESOURCES},
    }


def storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER_NAME,
        "reclaimPolicy": "Delete",
        # The provisioner places a volume by its first pod's node (node-local on a real
        # node, see devtools.provisioner), as production local volumes are.
        "volumeBindingMode": WAIT_FOR_FIRST_CONSUMER,
        "allowVolumeExpansion": True,
    }


def create_bucket(s3: S3Credentials, ports: S3Ports) -> None:
    """Create the bucket through weed's admin shell (no S3 client library needed)."""
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(
            # -logdir: its log files, else in /tmp, go with the cluster's state.
            [weed_binary(), f"-logdir={STATE_DIR}", "shell", f"-master=127.0.0.1:{ports.master}"],
            input=f"s3.bucket.create -name {s3.bucket}\n",
            text=True,
            capture_output=True,
            timeout=60,
            check=False,
        )
        output = result.stdout + result.stderr
        if (result.returncode == 0 and "error" not in output.lower()) or "already exist" in output:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not create bucket {s3.bucket}: {output}")
        time.sleep(1)


def wait_for(what: str, check: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


def nodes_ready(names: tuple[str, ...]) -> bool:
    out = json.loads(kubectl("get", "nodes", "-o", "json"))
    ready = [
        n["metadata"]["name"]
        for n in out["items"]
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in n.get("status", {}).get("conditions", [])
        )
    ]
    return all(name in ready for name in names)


def up(kwok_only: bool = False) -> None:
    """Bring the cluster up (kwok_only: see the module's docstring), or say it is up;
    a cluster up in the other mode is an error."""
    if cluster_exists() and api_is_up():
        running = "kwok-only" if is_kwok_only() else "with real nodes"
        if is_kwok_only() != kwok_only:
            raise RuntimeError(
                f"the cluster is up {running}, not as asked: make cluster-down first"
            )
        log(f"already up ({running}): kubeconfig {KUBECONFIG.relative_to(ROOT)} "
            "(make cluster-down to stop)")  # fmt: skip
        return
    if cluster_exists():
        log("found a stopped or broken cluster: deleting it first")
        down()
    started = time.monotonic()
    for path in (KWOK_WORKDIR, STATE_DIR):
        shutil.rmtree(path, ignore_errors=True)
    STATE_DIR.mkdir(parents=True)
    if nodes.bridge_owner() == str(ROOT):
        log("found the real nodes' network of a stopped cluster: removing it first")
        nodes.teardown(NODES_DIR, owner=str(ROOT))
    if kwok_only:
        KWOK_ONLY_MARK.touch()
    else:
        log(f"network: bridge, {len(REAL_NODES)} node namespaces, busybox image")
        nodes.save_host_sysctls(NODES_DIR)
        nodes.network_up(owner=str(ROOT))
        nodes.write_busybox_image(NODES_DIR / "busybox.oci.tar")
    ports = S3Ports()
    api_port = free_port_pair()
    s3 = S3Credentials(
        access_key="rspark" + secrets.token_hex(4),
        secret_key=secrets.token_hex(20),
        # Pods reach S3 through the relay on the bridge; a kwok-only cluster has neither.
        endpoint=f"http://{HOST if kwok_only else HOST_ADDRESS}:{ports.s3}",
        bucket=BUCKET,
    )
    config_path = STATE_DIR / "kwokctl.yaml"
    service_ports = services.ServicePorts()
    config = kwokctl_configuration(s3, ports, api_port, service_ports, kwok_only)
    config_path.write_text(yaml.safe_dump_all(config))
    log("creating the cluster with kwokctl (runtime binary)")
    result = run(
        str(BIN / "kwokctl"), "create", "cluster", "--name", CLUSTER_NAME,
        "--config", str(config_path), "--kubeconfig", str(KUBECONFIG), "--wait", "2m",
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"kwokctl create cluster failed:\n{result.stdout}\n{result.stderr}")
    objects = [*map(node, NODE_NAMES), storage_class()]
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))
    if not kwok_only:
        kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(services.cluster_objects()))
        services.wait_until_ready(service_ports)
        INGRESS_ENV.write_text(services.ingress_env(service_ports))
    ready = NODE_NAMES if kwok_only else (*NODE_NAMES, *(n.name for n in REAL_NODES))
    wait_for("nodes Ready", lambda: nodes_ready(ready), timeout=300)
    wait_for_s3(s3.endpoint)
    create_bucket(s3, ports)
    S3_ENV.write_text("".join(f"{k}={v}\n" for k, v in s3.env().items()))
    log(f"up in {time.monotonic() - started:.1f}s: kube-apiserver, etcd, kube-controller-manager,")
    log(f"  kube-scheduler, kwok ({len(NODE_NAMES)} nodes), S3 at {s3.endpoint} bucket {BUCKET},")
    if kwok_only:
        log(f"  StorageClass {STORAGE_CLASS}; kwok only: no bridge, real node, DNS or ingress")
        log(f"  export KUBECONFIG={KUBECONFIG}; S3 settings in {S3_ENV}")
        return
    log(f"  real nodes {', '.join(n.name for n in REAL_NODES)} (containerd, kubelet, kube-proxy,")
    log(f"  kube-router), CoreDNS at {CLUSTER_DNS}, registry at {REGISTRY},")
    log(f"  Traefik at {service_ports.ingress_address} (in {INGRESS_ENV.relative_to(ROOT)})")
    log(f"  StorageClass {STORAGE_CLASS} (node-local on real nodes), restic in .local/bin")
    log(f"  export KUBECONFIG={KUBECONFIG}; S3 settings in {S3_ENV}")


def process_start(pid: int) -> int | None:
    """When the process started (clock ticks since boot); None when it is gone or a zombie.

    A pid alive with another start time belongs to another process: never signal it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3
    return None if fields[0] in ("Z", "X") else int(fields[19])  # starttime is field 22


def cluster_processes() -> dict[int, int]:
    """The processes kwokctl runs for the cluster (from its pid files): pid -> start time."""
    processes = {}
    for pid_file in (CLUSTER_DIR / "pids").glob("*.pid"):
        pid = int(pid_file.read_text().strip())
        started = process_start(pid)
        if started is not None:
            processes[pid] = started
    return processes


def still_running(processes: dict[int, int]) -> list[int]:
    return [pid for pid, started in processes.items() if process_start(pid) == started]


def stop_stragglers(processes: dict[int, int], grace: float = 15.0) -> list[int]:
    """Wait up to `grace` seconds for the processes to end, then SIGKILL those left.
    Returns the pids it had to kill."""
    deadline = time.monotonic() + grace
    while still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = still_running(processes)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def down() -> None:
    processes = cluster_processes()
    sockets = bound_unix_sockets(processes)  # S3's, in /tmp
    real_nodes = tears_real_nodes_down(is_kwok_only(), nodes.bridge_owner())
    try:
        if not cluster_exists():
            log("no cluster to stop")
        else:
            run(str(BIN / "kwokctl"), "delete", "cluster", "--name", CLUSTER_NAME, capture=False)
            log("cluster deleted")
    finally:
        killed = stop_stragglers(processes)
        if killed:
            log(f"killed {len(killed)} process(es) kwokctl left running: {sorted(killed)}")
        removed = nodes.teardown(NODES_DIR, owner=str(ROOT)) if real_nodes else []
        if removed:
            log(f"removed what the real nodes left: {', '.join(removed)}")
        remove_files([KUBECONFIG, S3_ENV, INGRESS_ENV, *sockets])
        shutil.rmtree(STATE_DIR, ignore_errors=True)


def status() -> None:
    state = "up" if api_is_up() else ("stopped" if cluster_exists() else "absent")
    log(f"cluster {CLUSTER_NAME}: {state}{' (kwok-only)' if is_kwok_only() else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--kwok-only", action="store_true", help="up: no real nodes nor their services"
    )
    args = parser.parse_args()
    if args.command == "up":
        up(kwok_only=args.kwok_only)
    else:
        {"down": down, "status": status}[args.command]()


if __name__ == "__main__":
    main()
