"""Operator at scale: N workspaces until every one is Running with all its children.

For each N, in the same run and on the same local cluster:
- operator: create N RStudioWorkspaces (C threads) with `rspark-operator` running;
- baseline: create the same N workspaces with no operator, and apply the objects the
  builders render for them directly with server-side apply (same C threads).
Both end when every workspace pod is Running and every child exists. Reported:
wall time and the ratio operator/baseline, the operator's peak RSS, and API
requests per workspace (kube-apiserver's apiserver_request_total, all clients).

Usage: python -m bench.operator_scale [N ...]   (default 100 500 1000)
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

from devtools import localcluster
from devtools.deploy import (
    OperatorProcess,
    credentials_secret,
    install_crds,
    operator_environment,
)
from rspark_operator.api import GROUP, PLURAL, VERSION
from rspark_operator.builders import build_children, build_passwords_secret, build_pod
from rspark_operator.kube import Kube, url
from rspark_operator.settings import OperatorSettings
from rspark_operator.validation import parse_workspace
from tests.support.workspaces import sample

CONCURRENCY = 16
# Small requests, so that 1000 workspaces fit on the two simulated nodes.
RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
CHILDREN_PER_WORKSPACE = 11  # 9 children, the password Secret and the pod
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "operator_scale"


@dataclass
class Run:
    seconds: float
    requests: int
    peak_rss_mb: float | None = None


def api() -> client.ApiClient:
    api_client = config.new_client_from_config(str(localcluster.KUBECONFIG))
    api_client.user_agent = "rspark-bench"
    return api_client


def apiserver_requests(api_client: client.ApiClient) -> int:
    """Total requests the API server has served (all clients, all verbs)."""
    text = Kube(api_client).raw_get("/metrics")
    return sum(
        int(float(value))
        for value in re.findall(r"^apiserver_request_total\{[^}]*\} (\S+)$", text, re.M)
    )


def create_namespace(api_client: client.ApiClient, name: str) -> None:
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": name}})
    credentials_secret(name, localcluster.s3_credentials())


def delete_namespace(api_client: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api_client)
    core.delete_namespace(name)
    while any(ns.metadata.name == name for ns in core.list_namespace().items):
        time.sleep(1)


def create_workspaces(api_client: client.ApiClient, namespace: str, n: int) -> list[dict[str, Any]]:
    custom = client.CustomObjectsApi(api_client)

    def create(index: int) -> dict[str, Any]:
        created: dict[str, Any] = custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, sample(f"ws{index:04d}", resources=RESOURCES)
        )
        return created

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(create, range(n)))


def all_running(api_client: client.ApiClient, namespace: str, n: int) -> bool:
    """Read as plain JSON: the client's model classes would make this poll, once a
    second over thousands of objects, a CPU load that competes with what it measures."""
    kube = Kube(api_client)

    def items(api_version: str, kind: str, selector: str = "") -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else []
        path = url(api_version, kind, namespace)
        found: list[dict[str, Any]] = kube.request("GET", path, query=query)["items"]
        return found

    managed = "app.kubernetes.io/managed-by=rspark-operator"
    pods = items("v1", "Pod", managed)
    if sum(1 for p in pods if p.get("status", {}).get("phase") == "Running") < n:
        return False
    claims = items("v1", "PersistentVolumeClaim")
    services = items("v1", "Service", managed)
    ingresses = items("networking.k8s.io/v1", "Ingress")
    return (
        sum(1 for c in claims if c.get("status", {}).get("phase") == "Bound") >= n
        and len(services) >= 2 * n
        and len(ingresses) >= n
    )


def wait(what: str, check: Callable[[], bool], timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(1)


def operator_run(api_client: client.ApiClient, n: int) -> Run:
    namespace = f"bench-op-{n}"
    create_namespace(api_client, namespace)
    log = localcluster.LOCAL / "logs" / f"bench-operator-{n}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)  # this run's log only
    process = OperatorProcess(log, operator_environment(localcluster.s3_credentials()))
    process.start()
    try:
        before = apiserver_requests(api_client)
        started = time.monotonic()
        create_workspaces(api_client, namespace, n)
        wait(f"{n} workspaces Running", lambda: all_running(api_client, namespace, n))
        seconds = time.monotonic() - started
        requests = apiserver_requests(api_client) - before
        peak = process.peak_rss_mb()
        delete_namespace(api_client, namespace)
    finally:
        process.stop()
    return Run(seconds, requests, peak)


def baseline_run(api_client: client.ApiClient, n: int) -> Run:
    namespace = f"bench-base-{n}"
    create_namespace(api_client, namespace)
    settings = OperatorSettings(
        snapshot_repository_base=f"s3:{localcluster.s3_credentials().endpoint}/rspark"
    )
    kube = Kube(api_client)
    before = apiserver_requests(api_client)
    started = time.monotonic()
    workspaces = create_workspaces(api_client, namespace, n)

    def apply_all(body: dict[str, Any]) -> None:
        ws = parse_workspace(body, settings)
        kube.create(
            build_passwords_secret(ws, secrets.token_urlsafe(32), secrets.token_urlsafe(18))
        )
        for manifest in [*build_children(ws, settings), build_pod(ws, settings)]:
            kube.apply(manifest)

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(apply_all, workspaces))
    wait(f"{n} baseline pods Running", lambda: all_running(api_client, namespace, n))
    seconds = time.monotonic() - started
    requests = apiserver_requests(api_client) - before
    delete_namespace(api_client, namespace)
    return Run(seconds, requests)


def report(rows: list[tuple[int, Run, Run]]) -> str:
    lines = [
        "## Operator at scale (`bench/operator_scale.py`)",
        "",
        f"Local cluster (kwok nodes), {CONCURRENCY} threads creating workspaces, operator "
        f"with {CONCURRENCY} workers; baseline = the same rendered objects applied directly "
        "with server-side apply. Time = until every pod is Running and every child exists. "
        "Requests = kube-apiserver `apiserver_request_total` over the run, every client "
        "(kwok, scheduler and controllers included), per workspace.",
        "",
        "| N | operator s | baseline s | ratio | operator peak RSS MB "
        "| requests/ws operator | requests/ws baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, op, base in rows:
        lines.append(
            f"| {n} | {op.seconds:.1f} | {base.seconds:.1f} | {op.seconds / base.seconds:.2f} "
            f"| {op.peak_rss_mb:.0f} | {op.requests / n:.1f} | {base.requests / n:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Replace this benchmark's section of docs/benchmarks.md, keeping the others."""
    start, end = f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->"
    block = f"{start}\n{text}\n{end}"
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    if start in current:
        before, rest = current.split(start, 1)
        current = before + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 500, 1000])
    sizes = parser.parse_args().sizes
    localcluster.up()
    install_crds()
    api_client = api()
    rows = []
    for n in sizes:
        base = baseline_run(api_client, n)
        print(f"N={n} baseline {base.seconds:.1f}s {base.requests / n:.1f} req/ws", flush=True)
        op = operator_run(api_client, n)
        print(
            f"N={n} operator {op.seconds:.1f}s {op.requests / n:.1f} req/ws "
            f"peak {op.peak_rss_mb:.0f} MB ratio {op.seconds / base.seconds:.2f}",
            flush=True,
        )
        rows.append((n, op, base))
    write_section(report(rows))
    print(report(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
