"""JupyterLab workspaces on the local cluster's real nodes: create to Ready and to the
first page, with an empty home (the baseline) and with a 1 GiB home to restore, and
the memory of the local cluster.

In one run, on one real node (the operator's node selector names it, so that only
the first workspace pulls the images):

1. `cold`: a workspace with an empty home, the images not yet on the node;
   1 GiB written into its home; the workspace deleted (the agent's last snapshot
   at shutdown holds the 1 GiB; its claim goes, its Secrets and snapshots stay);
2. `empty` (the baseline): a new workspace with an empty home, images on the node;
3. `restore`: the first workspace created again: a new empty volume, the agent
   restores the 1 GiB before the IDE starts.

Create to Ready: from the create call to `status.phase` Running (the pod Ready);
create to first page: to the first answer of JupyterLab (200 or its redirect to the
sign-in page) at the workspace's URL through Traefik. Memory: the resident memory
(RSS) of every process of each cluster component (kwokctl's pid files, with their
children), of the containerd shims and of the workspace containers, with the two
workspaces running.

The cluster must be up (`make cluster-up`) and held by this run alone:

    .local/venv/bin/python -m bench.real_nodes   # writes its section of docs/benchmarks.md
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kubernetes import client, config

from bench.operator_scale import write_section
from devtools import localcluster
from devtools.deploy import (
    OperatorProcess,
    credentials_secret,
    ingress_address,
    install_crds,
    operator_environment,
    push_images,
    real_node_settings,
)
from devtools.network import REAL_NODES
from rspark_operator import names, waker
from rspark_operator.builders.pod import HOME
from rspark_operator.conditions import HOME_RESTORED, find
from tests.integration.e2e.conftest import E2E_RESOURCES, E2E_SPARK
from tests.integration.e2e.test_jupyterlab import ide_exec
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, sample

SECTION = "real_nodes"
NAMESPACE = "bench-real"
NODE = REAL_NODES[0]
HOME_GIB = 1
# The 1 GiB home: large incompressible files and many small text ones, as an R
# user's home mixes data files and a package library.
FILL = f"""
import os
from pathlib import Path
root = Path("{HOME}/bench")
for i in range(12):
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / f"part-{{i}}.bin").write_bytes(os.urandom(64 * 2**20))
line = b"fit <- lm(y ~ x, data = df) # spark_read_parquet(sc, path)\\n"
for i in range(4096):
    folder = root / "lib" / f"pkg{{i // 64}}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"f{{i}}.R").write_bytes(line * (65536 // len(line) + 1))
"""
TIMEOUT_SECONDS = 900


@dataclass
class Start:
    name: str
    ready_seconds: float
    page_seconds: float
    note: str = ""


def first_page(url: str, started: float) -> float:
    """Seconds from `started` to JupyterLab's first answer at `url`, through Traefik (not
    the operator's waker, which answers there while the workspace wakes)."""
    parts = urlsplit(url)
    target = f"http://{ingress_address()}{parts.path or '/'}"

    def answers() -> bool:
        request = urllib.request.Request(target, headers={"Host": parts.netloc})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status == 200 and waker.WAKER_HEADER not in response.headers
        except urllib.error.HTTPError as error:
            return error.code in (301, 302, 303, 307, 308)
        except (urllib.error.URLError, OSError):
            return False

    wait_until(f"the first page of {url}", answers, timeout=TIMEOUT_SECONDS, interval=0.2)
    return time.monotonic() - started


def start(workspaces: Workspaces, name: str, note: str = "") -> Start:
    """Create the workspace; seconds to Running and to its first page."""
    manifest = sample(name, ide="jupyterlab", resources=E2E_RESOURCES, spark=E2E_SPARK)
    started = time.monotonic()
    workspaces.create(manifest)
    running = workspaces.wait_phase(name, "Running", timeout=TIMEOUT_SECONDS)
    ready = time.monotonic() - started
    page = first_page(running["status"]["url"], started)
    return Start(name, ready, page, note)


def delete_and_wait(core: client.CoreV1Api, workspaces: Workspaces, name: str) -> None:
    """Delete the workspace; return once its pod (after the last snapshot) and claim are gone."""
    workspaces.delete(name)

    def gone() -> bool:
        claims = core.list_namespaced_persistent_volume_claim(NAMESPACE).items
        home = names.home_claim_name(name)
        return not workspaces.pods(name) and all(c.metadata.name != home for c in claims)

    wait_until(f"{name}'s pod and claim gone", gone, timeout=TIMEOUT_SECONDS)


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, RSS bytes, what it is: its cgroups and command line)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cgroups = (stat.parent / "cgroup").read_text()
            command = (stat.parent / "cmdline").read_bytes()[:200].decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        pages = int(fields[21])  # rss, field 24 of stat
        table[int(stat.parent.name)] = (int(fields[1]), pages * 4096, cgroups + command)
    return table


def memory() -> dict[str, int]:
    """RSS bytes by cluster component, then the containerd shims and each node's
    workspace containers (counted apart, never in a component's tree)."""
    table = process_table()
    groups = {
        **{f"{node.name} pods (containers)": f"/{node.name}/kubepods" for node in REAL_NODES},
        "containerd shims": "containerd-shim",
    }
    apart = {group: [pid for pid, (_, _, what) in table.items() if marker in what]
             for group, marker in groups.items()}  # fmt: skip
    excluded = {pid for pids in apart.values() for pid in pids}
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (parent, _, _) in table.items():
        children[parent].append(pid)

    def tree(pid: int) -> int:
        if pid in excluded or pid not in table:
            return 0
        return table[pid][1] + sum(tree(child) for child in children[pid])

    found = {
        pid_file.stem: tree(int(pid_file.read_text().strip()))
        for pid_file in sorted((localcluster.CLUSTER_DIR / "pids").glob("*.pid"))
    }
    for group, pids in apart.items():
        found[group] = sum(table[pid][1] for pid in pids)
    return found


def report(starts: list[Start], rss: dict[str, int], restored: str, home_bytes: int) -> str:
    cold, empty, restore = starts
    lines = [
        "## Real nodes: create to Ready and to the first page (`bench/real_nodes.py`)",
        "",
        f"A JupyterLab workspace (requests {E2E_RESOURCES['requests']}) on real node "
        f"{NODE.name}, one run, on the shared 2-core machine. Create to Ready: to "
        "`status.phase` Running; to the first page: to JupyterLab's first answer at the "
        "workspace's URL through Traefik. The baseline is an empty home with the images "
        "already on the node, in the same run.",
        "",
        "| workspace | create to Ready (s) | / baseline | create to first page (s) | / baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    for run in (empty, restore, cold):
        ready = run.ready_seconds / empty.ready_seconds
        page = run.page_seconds / empty.page_seconds
        lines.append(
            f"| {run.note} | {run.ready_seconds:.1f} | {ready:.2f}x | {run.page_seconds:.1f} "
            f"| {page:.2f}x |"
        )
    lines += [
        "",
        f"- The restored home: {home_bytes / 2**30:.2f} GiB (`du` in the IDE container); "
        f"the agent: {restored}.",
        "",
        "Memory of the local cluster with those two workspaces running (RSS of every "
        "process of each component, its children included):",
        "",
        "| component | RSS (MB) |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {value / 2**20:.0f} |" for name, value in rss.items()]
    total = sum(rss.values())
    lines += [f"| **total** | **{total / 2**20:.0f}** |", ""]
    return "\n".join(lines)


def main() -> None:
    localcluster.up()
    refs = push_images(("jupyterlab", "agent", "spark"))
    install_crds()
    s3 = localcluster.s3_credentials()
    api = config.new_client_from_config(str(localcluster.KUBECONFIG))
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    credentials_secret(NAMESPACE, s3)
    settings = {
        **real_node_settings(refs),
        "workspace_node_selector": json.dumps({"kubernetes.io/hostname": NODE.name}),
    }
    log_path = localcluster.LOCAL / "logs" / "operator-bench-real-nodes.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    operator = OperatorProcess(log_path, operator_environment(s3, **settings))
    operator.start()
    workspaces = Workspaces(api, NAMESPACE)
    try:
        cold = start(workspaces, "bench-a", "empty home, images pulled onto the node (cold)")
        print(f"cold: {cold}", flush=True)
        ide_exec(NAMESPACE, names.pod_name("bench-a"), "python3", "-c", FILL)
        delete_and_wait(core, workspaces, "bench-a")
        empty = start(workspaces, "bench-b", "empty home (baseline)")
        print(f"empty: {empty}", flush=True)
        restore = start(workspaces, "bench-a", f"{HOME_GIB} GiB home restored from S3")
        print(f"restore: {restore}", flush=True)
        status = (workspaces.get("bench-a") or {})["status"]
        restored = find(status["conditions"], HOME_RESTORED) or {}
        du = ide_exec(NAMESPACE, names.pod_name("bench-a"), "du", "-sb", f"{HOME}/bench")
        rss = memory()
        text = report(
            [cold, empty, restore],
            rss,
            f"{restored.get('reason')}, {restored.get('message')}",
            int(du.split()[0]),
        )
    finally:
        operator.stop()
    write_section(text, SECTION)
    print(text, file=sys.stderr)


if __name__ == "__main__":
    main()
